"""The report page: one Jinja template with its CSS and script inline (no external asset).

The script only draws the trace view, from rows embedded as JSON; everything else is
rendered here, so the page reads the same with scripts off. Row contents are model output
and user data: the template autoescapes, and the script sets `textContent`, never HTML.
"""

from __future__ import annotations

CSS = """
:root { --fg:#1d2330; --muted:#5b6474; --line:#dfe3ea; --bg:#f6f7f9; --card:#fff;
  --ok:#1a7f37; --err:#c62828; --rej:#b26a00; --accent:#3366cc; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--fg); background:var(--bg); }
header { background:#1d2330; color:#fff; padding:14px 24px; }
header h1 { margin:0; font-size:20px; }
header .sub { color:#c9d1de; font-size:13px; margin-top:2px; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line);
  padding:6px 24px; font-size:13px; }
nav a { margin-right:14px; color:var(--accent); text-decoration:none; }
main { max-width:1240px; margin:0 auto; padding:12px 24px 48px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:14px 18px; margin:14px 0; }
h2 { font-size:17px; margin:0 0 10px; }
h3 { font-size:14px; margin:14px 0 6px; }
p.note, .note { color:var(--muted); font-size:12.5px; margin:4px 0 8px; }
.sim { background:#b3261e; color:#fff; padding:12px 24px; font-weight:600; font-size:15px; }
.sim small { display:block; font-weight:400; font-size:12.5px; opacity:.9; }
.badge { display:inline-block; padding:1px 7px; border-radius:10px; font-size:11.5px;
  font-weight:600; background:#e8ecf3; color:#334; }
.badge.sim { background:#b3261e; color:#fff; padding:1px 7px; font-size:11.5px; }
.badge.ok { background:#dcf3e3; color:var(--ok); }
.badge.error { background:#fde2e1; color:var(--err); }
.badge.rejected { background:#fdf0d8; color:var(--rej); }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(150px,1fr)); gap:10px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 10px; background:#fbfcfd; }
.card .v { font-size:20px; font-weight:650; }
.card .l { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { color:var(--muted); font-weight:600; background:#fafbfc; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.bar { width:28%; }
.bar span { display:block; height:10px; background:var(--accent); border-radius:2px;
  min-width:1px; }
.bar span.ok { background:var(--ok); }
.bar span.error { background:var(--err); }
.bar span.rejected { background:var(--rej); }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:8px 18px; }
svg.chart { width:100%; height:auto; display:block; }
svg .ctitle { font-size:13px; font-weight:600; fill:var(--fg); }
svg .tick, svg .legend { font-size:11px; fill:var(--muted); }
svg .cnote { font-size:12px; fill:var(--muted); }
svg .grid { stroke:#eceff3; }
svg .axis { stroke:#9aa3b2; }
pre { background:#f3f5f8; border:1px solid var(--line); border-radius:4px; padding:8px;
  overflow:auto; font-size:12.5px; white-space:pre-wrap; word-break:break-word; margin:4px 0; }
pre.config { max-height:420px; }
code { font-size:12.5px; }
a[data-trace] { white-space:nowrap; }
details > summary { cursor:pointer; color:var(--accent); }
.controls { display:flex; gap:8px; flex-wrap:wrap; align-items:center; margin-bottom:8px; }
.controls input, .controls select { font:inherit; padding:4px 6px; border:1px solid #c5ccd8;
  border-radius:4px; }
#trace-select { min-width:340px; }
#trace-search { min-width:240px; }
.step { border:1px solid var(--line); border-left:4px solid var(--accent); border-radius:4px;
  margin:8px 0; padding:6px 10px; }
.step.failed { border-left-color:var(--err); }
.step.task { border-left-color:#9aa3b2; }
.step .head { display:flex; flex-wrap:wrap; gap:4px 14px; font-size:12.5px; color:var(--muted); }
.step .head b { color:var(--fg); }
.gantt { position:relative; height:6px; background:#eef1f5; border-radius:3px; margin:5px 0 3px; }
.gantt i { position:absolute; top:0; height:6px; background:var(--accent); border-radius:3px;
  min-width:2px; }
.step.failed .gantt i { background:var(--err); }
.tool { margin:4px 0; }
.tool .name { font-family:ui-monospace,Menlo,Consolas,monospace; font-weight:600; }
.tool.error .name { color:var(--err); }
.ended { margin:6px 0; padding:6px 10px; border-radius:4px; background:#fdf0d8; }
.ended.error { background:#fde2e1; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var rows = JSON.parse(document.getElementById("pf-traces").textContent);
  var byId = {};
  rows.forEach(function (r) { byId[r.id] = r; });
  var select = document.getElementById("trace-select");
  var search = document.getElementById("trace-search");
  var status = document.getElementById("trace-status");
  var view = document.getElementById("trace-view");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function secs(v) {
    if (!(v > 0)) return "0";
    if (v < 1e-3) return (v * 1e6).toPrecision(3) + " \u00b5s";
    if (v < 1) return (v * 1e3).toPrecision(3) + " ms";
    if (v < 120) return v.toPrecision(3) + " s";
    return (v / 60).toPrecision(3) + " min";
  }
  function pretty(text) {
    if (typeof text !== "string") return JSON.stringify(text, null, 2);
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }
  function fill() {
    var q = search.value.trim().toLowerCase();
    var want = status.value;
    var current = select.value;
    select.textContent = "";
    var shown = 0;
    rows.forEach(function (r) {
      if (want && r.status !== want) return;
      var hay = (r.id + " " + (r.reason || "") + " " + r.status).toLowerCase();
      if (q && hay.indexOf(q) < 0) return;
      var label = r.id + " \u00b7 " + r.status + (r.reason ? " \u00b7 " + r.reason : "");
      var o = el("option", null, label);
      o.value = r.id;
      select.appendChild(o);
      shown += 1;
    });
    document.getElementById("trace-count").textContent = shown + " of " + rows.length + " rows";
    if (byId[current] && select.querySelector('option[value="' + CSS.escape(current) + '"]')) {
      select.value = current;
    }
  }
  function toolCalls(step, box) {
    (step.tool_calls || []).forEach(function (call) {
      var fn = call["function"] || {};
      var t = el("div", "tool");
      t.appendChild(el("span", "name", "\u2192 " + (fn.name || call.name || "?")));
      t.appendChild(el("span", "note", "  " + (call.id || "")));
      t.appendChild(el("pre", null, pretty(fn.arguments !== undefined ? fn.arguments : call)));
      box.appendChild(t);
    });
    (step.tool_results || []).forEach(function (res) {
      var t = el("div", "tool" + (res.is_error ? " error" : ""));
      t.appendChild(el("span", "name",
        "\u2190 " + (res.name || "?") + (res.is_error ? " (error)" : "")));
      t.appendChild(el("span", "note", "  " + (res.tool_call_id || "")));
      t.appendChild(el("pre", null, pretty(res.content)));
      box.appendChild(t);
    });
  }
  function show(id) {
    var r = byId[id];
    view.textContent = "";
    if (!r) return;
    var created = r.created || 0;
    var total = Math.max((r.finished || 0) - created, 1e-9);
    var head = el("div", "tracehead");
    var h = el("h3", null, r.id + " ");
    h.appendChild(el("span", "badge " + r.status, r.status));
    head.appendChild(h);
    var tok = r.tokens || {};
    head.appendChild(el("div", "note",
      "ended: " + (r.reason || r.status) + " \u00b7 end to end " + secs(total) +
      " \u00b7 tokens " + (tok.prompt || 0) + " prompt / " + (tok.completion || 0) +
      " completion \u00b7 trial " + (r.trial || 0) + " \u00b7 seed " + (r.seed || 0)));
    view.appendChild(head);
    if (r.error) {
      var e = el("div", "ended error");
      e.appendChild(el("b", null, "error (" + (r.error.stage || "?") + ", " +
        (r.error.kind || "?") + (r.error.role ? ", role " + r.error.role : "") + "): "));
      e.appendChild(el("span", "errtext", r.error.message || ""));
      view.appendChild(e);
    }
    if (r.rejection) {
      var j = el("div", "ended");
      j.appendChild(el("b", null, "rejected by " + r.rejection.role + ": " + r.rejection.reason));
      if (r.rejection.detail !== undefined) {
        j.appendChild(el("pre", null, pretty(r.rejection.detail)));
      }
      view.appendChild(j);
    }
    var rowBox = el("details");
    rowBox.appendChild(el("summary", null, "input row"));
    rowBox.appendChild(el("pre", null, JSON.stringify(r.row, null, 2)));
    view.appendChild(rowBox);
    if (r.metrics) {
      var m = el("details");
      m.appendChild(el("summary", null, "metrics"));
      m.appendChild(el("pre", null, JSON.stringify(r.metrics, null, 2)));
      view.appendChild(m);
    }
    var prevEnd = created;
    var n = 0;
    (r.history || []).forEach(function (step, i) {
      var isTask = step.role === "task";
      var failed = step.ok === false;
      var box = el("div", "step" + (isTask ? " task" : "") + (failed ? " failed" : ""));
      box.setAttribute("data-role", step.role);
      var hd = el("div", "head");
      hd.appendChild(el("b", null, "#" + i + " " + step.role));
      if (!isTask) {
        n += 1;
        var start = step.started ? step.started - created : 0;
        var lat = step.latency || 0;
        hd.appendChild(el("span", null, "at +" + secs(start)));
        hd.appendChild(el("span", null, "waited " + secs(Math.max(step.started - prevEnd, 0))));
        hd.appendChild(el("span", "took", "took " + secs(lat)));
        if (step.started) prevEnd = step.started + lat;
        if (step.usage) {
          hd.appendChild(el("span", "tokens", "tokens " + (step.usage.prompt_tokens || 0) +
            " \u2192 " + (step.usage.completion_tokens || 0)));
        }
        if (step.model) hd.appendChild(el("span", null, step.model));
        if (step.finish_reason) hd.appendChild(el("span", null, "finish: " + step.finish_reason));
        if (step.attempts > 1) hd.appendChild(el("span", null, step.attempts + " attempts"));
        if (failed) hd.appendChild(el("span", "badge error", "failed"));
        var g = el("div", "gantt");
        var bar = el("i");
        bar.style.left = Math.min(100, Math.max(0, start / total * 100)).toFixed(2) + "%";
        bar.style.width = Math.min(100, lat / total * 100).toFixed(2) + "%";
        g.appendChild(bar);
        box.appendChild(hd);
        box.appendChild(g);
      } else {
        box.appendChild(hd);
      }
      var echoed = (step.tool_results || []).some(function (res) {
        return res.content === step.content;
      });
      if (step.content && !echoed) box.appendChild(el("pre", "content", step.content));
      toolCalls(step, box);
      if (step.data) {
        var d = el("details");
        d.appendChild(el("summary", null, "data"));
        d.appendChild(el("pre", null, JSON.stringify(step.data, null, 2)));
        box.appendChild(d);
      }
      if (step.error) box.appendChild(el("pre", "errtext", step.error));
      view.appendChild(box);
    });
    view.setAttribute("data-row", r.id);
    view.setAttribute("data-steps", String(n));
  }
  function pick(id) {
    if (!byId[id]) return false;
    search.value = "";
    status.value = "";
    fill();
    select.value = id;
    show(id);
    return true;
  }
  select.addEventListener("change", function () { show(select.value); });
  search.addEventListener("input", function () { fill(); if (select.value) show(select.value); });
  status.addEventListener("change", function () { fill(); if (select.value) show(select.value); });
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest ? ev.target.closest("a[data-trace]") : null;
    if (!a) return;
    if (pick(a.getAttribute("data-trace"))) {
      ev.preventDefault();
      document.getElementById("traces").scrollIntoView();
    }
  });
  window.peerflowShowTrace = pick;
  fill();
  var hash = decodeURIComponent(location.hash || "");
  if (!(hash.indexOf("#trace=") === 0 && pick(hash.slice(7))) && select.value) {
    show(select.value);
  }
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{{ title }}</title>
<style>{{ css }}</style></head>
<body>
<header><h1>{{ title }}</h1>
<div class="sub">{{ subtitle }}</div></header>
{% if simulated %}
<div class="sim" id="simulated">SIMULATED LLM: {{ simulated | join(", ") }}
<small>Replies and timings of {{ "this service" if simulated | length == 1 else "these services" }}
come from peerflow's simulator (a measuring instrument), not from a model: the numbers here
describe the pipeline, not a model's quality.</small></div>
{% endif %}
<nav>{% for anchor, label in nav %}<a href="#{{ anchor }}">{{ label }}</a>{% endfor %}</nav>
<main>
<section id="overview"><h2>Overview</h2>
<div class="cards">{% for c in cards %}
<div class="card" data-k="{{ c.key }}"><div class="v">{{ c.value }}</div>
<div class="l">{{ c.label }}</div></div>{% endfor %}</div>
{% for line in notes %}<p class="note">{{ line }}</p>{% endfor %}
</section>

<section id="throughput"><h2>Throughput and in flight over time</h2>
<p class="note">{{ time_note }}</p>
<div class="grid2">{% for svg in time_charts %}<div>{{ svg }}</div>{% endfor %}</div>
</section>

<section id="latency"><h2>Latency per role</h2>
<table><tr><th>role</th><th class="n">steps</th><th class="n">errors</th><th class="n">retries</th>
<th class="n">mean</th><th class="n">p50</th><th class="n">p95</th><th class="n">p99</th>
<th class="n">max</th><th class="n">queued p50</th><th class="n">queued p95</th></tr>
{% for r in roles %}<tr data-role="{{ r.name }}"><td>{{ r.name }}</td>
<td class="n">{{ r.steps }}</td>
<td class="n">{{ r.errors }}</td><td class="n">{{ r.retries }}</td><td class="n">{{ r.mean }}</td>
<td class="n">{{ r.p50 }}</td><td class="n">{{ r.p95 }}</td><td class="n">{{ r.p99 }}</td>
<td class="n">{{ r.max }}</td><td class="n">{{ r.q50 }}</td><td class="n">{{ r.q95 }}</td></tr>
{% endfor %}</table>
<p class="note">A step's latency is its agent's time (an LLM step includes its HTTP call and
retries). Queued is the wait before a step: from the end of the task's previous step to
this one's start, i.e. time in the role's inbox.</p>
<div class="grid2">{% for svg in latency_charts %}<div>{{ svg }}</div>{% endfor %}</div>
<h3>Queue times</h3>
<div class="grid2">{% for svg in queue_charts %}<div>{{ svg }}</div>{% endfor %}</div>
<h3>Where a task's time goes</h3>
<table><tr><th>part</th><th class="n">median</th><th class="n">P90</th><th class="n">P99</th>
<th>what it is</th></tr>
{% for part in split %}<tr><td>{{ part.name }}</td><td class="n">{{ part.v[0] }}%</td>
<td class="n">{{ part.v[1] }}%</td><td class="n">{{ part.v[2] }}%</td><td>{{ part.what }}</td></tr>
{% endfor %}</table>
<p class="note">Shares of each task's end-to-end time (created to record), over all tasks.
Task end to end: {{ task_latency }}.</p>
</section>

<section id="tokens"><h2>Tokens per role</h2>
<table><tr><th>role</th><th class="n">prompt</th><th class="n">completion</th>
<th class="n">total</th><th class="n">share</th>{% if priced %}<th class="n">cost</th>{% endif %}
<th></th></tr>
{% for t in tokens %}<tr data-role="{{ t.name }}"><td>{{ t.name }}</td>
<td class="n">{{ t.prompt }}</td><td class="n">{{ t.completion }}</td>
<td class="n">{{ t.total }}</td><td class="n">{{ t.share }}</td>
{% if priced %}<td class="n">{{ t.cost }}</td>{% endif %}
<td class="bar"><span style="width:{{ t.width }}%"></span></td></tr>{% endfor %}
<tr><th>all roles</th><th class="n" id="tokens-prompt">{{ tokens_total.prompt }}</th>
<th class="n" id="tokens-completion">{{ tokens_total.completion }}</th>
<th class="n">{{ tokens_total.total }}</th><th></th>{% if priced %}<th></th>{% endif %}
<th></th></tr></table>
{% if tools %}<h3>Tool calls</h3>
<table><tr><th>tool</th><th class="n">calls</th><th class="n">errors</th></tr>
{% for t in tools %}<tr><td><code>{{ t.name }}</code></td><td class="n">{{ t.calls }}</td>
<td class="n">{{ t.errors }}</td></tr>{% endfor %}</table>{% endif %}
</section>

<section id="outcomes"><h2>Status, endings and funnel</h2>
<div class="grid2"><div><h3>Status</h3>
<table><tr><th>status</th><th class="n">rows</th><th class="n">share</th><th></th></tr>
{% for s in statuses %}<tr data-status="{{ s.name }}">
<td><span class="badge {{ s.name }}">{{ s.name }}</span></td>
<td class="n">{{ s.n }}</td><td class="n">{{ s.share }}</td>
<td class="bar"><span class="{{ s.name }}" style="width:{{ s.width }}%"></span></td></tr>
{% endfor %}</table></div>
<div><h3>Why tasks ended</h3>
<table><tr><th>reason</th><th class="n">rows</th><th class="n">share</th><th></th></tr>
{% for s in reasons %}<tr><td>{{ s.name }}</td><td class="n">{{ s.n }}</td>
<td class="n">{{ s.share }}</td>
<td class="bar"><span style="width:{{ s.width }}%"></span></td></tr>{% endfor %}</table></div></div>
<h3>Funnel</h3>
{% if funnel %}<table><tr><th>role</th><th class="n">reached</th><th class="n">rejected</th>
<th class="n">failed</th><th class="n">passed</th><th>rejection reasons</th>
<th class="n">tokens</th></tr>
{% for f in funnel %}<tr><td>{{ f.role }}</td><td class="n">{{ f.reached }}</td>
<td class="n">{{ f.rejected }}</td><td class="n">{{ f.failed }}</td>
<td class="n">{{ f.passed }}</td>
<td>{% for reason, seen in f.reasons %}{{ reason }}: {{ seen }}<br>{% endfor %}</td>
<td class="n">{{ f.tokens }}</td></tr>{% endfor %}
<tr><th>accepted</th><th class="n">{{ accepted }}</th>
<th colspan="5">{{ accepted_share }} of rows</th></tr>
</table>{% else %}<p class="note">No row was rejected or failed at a role.</p>{% endif %}
</section>

<section id="errors"><h2>Errors by kind</h2>
{% if errors %}<table><tr><th>kind</th><th class="n">tasks</th><th class="n">failed steps</th>
<th>roles</th><th>example rows</th></tr>
{% for g in errors %}<tr class="errgroup"><td><b>{{ g.type }}</b>
{% if g.transient %}<span class="badge">transient {{ g.transient }}</span>{% endif %}
<div class="note"><code>{{ g.kind }}</code></div></td>
<td class="n">{{ g.tasks }}</td><td class="n">{{ g.steps }}</td><td>{{ g.roles }}</td>
<td>{% for ex in g.examples %}{% if ex.traced %}
{%- set link = "#trace=" ~ ex.id %}<a href="{{ link }}" data-trace="{{ ex.id }}">{{ ex.id }}</a>
{%- else %}{{ ex.id }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
{% endfor %}</table>
<p class="note">Grouped by message with URLs, numbers, ids and long quoted text taken out;
tasks: rows that ended with it; failed steps: every step that failed with it (a task may
go on after a failed step). Linked rows open in the trace view.</p>
{% else %}<p class="note" id="no-errors">No errors.</p>{% endif %}
</section>

{% if metrics %}<section id="metrics"><h2>Workflow metrics</h2>
<table><tr><th>metric</th><th class="n">mean</th></tr>
{% for k, v in metrics %}<tr><td>{{ k }}</td><td class="n">{{ v }}</td></tr>{% endfor %}</table>
</section>{% endif %}

{% if difficulty %}<section id="difficulty"><h2>Difficulty</h2>
<p class="note">{{ difficulty.note }}</p>
<div class="charts">{{ difficulty.chart }}</div>
{% if difficulty.solvers %}<table><tr><th>solver</th><th class="n">ability</th>
<th class="n">se</th><th class="n">accuracy</th></tr>
{% for name, a, se, acc in difficulty.solvers %}<tr><td>{{ name }}</td><td class="n">{{ a }}</td>
<td class="n">{{ se }}</td><td class="n">{{ acc }}</td></tr>{% endfor %}</table>{% endif %}
</section>{% endif %}

<section id="services"><h2>Services</h2>
{% if services %}<table><tr><th>service</th><th>what it is</th></tr>
{% for s in services %}<tr data-service="{{ s.name }}"><td>{{ s.name }}</td>
<td>{% if s.simulated %}<span class="badge sim">SIMULATED</span> {% endif %}
{{- s.label }}</td></tr>{% endfor %}
</table>{% else %}
<p class="note">No summary beside the output: the services are unknown.</p>{% endif %}
{% if models %}<h3>Models named in the replies</h3>
<table><tr><th>model</th><th class="n">steps</th></tr>
{% for m, n in models %}<tr><td><code>{{ m }}</code></td><td class="n">{{ n }}</td></tr>
{% endfor %}</table>{% endif %}
</section>

<section id="config"><h2>Config</h2>
<p>fingerprint <code id="fingerprint">{{ fingerprint }}</code>
{%- if version %} · peerflow {{ version }}{% endif %}</p>
{% for line in fingerprint_notes %}<p class="note">{{ line }}</p>{% endfor %}
{% if config %}<pre class="config">{{ config }}</pre>{% else %}<p class="note">The config was
not recorded with this output (a summary from an older peerflow, or none).</p>{% endif %}
{% if runs %}<h3>Runs on this output</h3>
<table><tr><th>started</th><th>outcome</th><th class="n">records</th><th class="n">wall</th>
<th class="n">tokens</th><th>summary</th></tr>
{% for r in runs %}<tr><td>{{ r.started }}</td><td>{{ r.outcome }}</td>
<td class="n">{{ r.records }}</td><td class="n">{{ r.wall }}</td>
<td class="n">{{ r.tokens }}</td><td><code>{{ r.summary }}</code></td></tr>
{% endfor %}</table>{% endif %}
</section>

<section id="traces"><h2>Trace view</h2>
<p class="note">{{ trace_note }}</p>
<div class="controls">
<input id="trace-search" type="search" placeholder="search row id or ending"
 aria-label="search rows">
<select id="trace-status" aria-label="status"><option value="">any status</option>
<option value="ok">ok</option><option value="error">error</option>
<option value="rejected">rejected</option></select>
<select id="trace-select" aria-label="row"></select>
<span class="note" id="trace-count"></span></div>
<div id="trace-view"></div>
</section>
<p class="note">Written by peerflow {{ writer }} at {{ generated }} from {{ output }}.</p>
</main>
<script type="application/json" id="pf-traces">{{ traces }}</script>
<script>{{ script }}</script>
</body></html>
"""
