"""Turns the aggregated output, the summary and the time series into the report page."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from peerflow import __version__
from peerflow.report import charts
from peerflow.report.template import CSS, PAGE, SCRIPT
from peerflow.timeseries import columns_of

# The model name the simulator answers with (`peerflow-simulator/<model>`).
SIMULATOR_MODEL = "peerflow-simulator/"

_SPLIT = {
    "agents": "the steps themselves (an LLM step includes its HTTP call)",
    "queued": "waiting between steps and from the last step to the record",
    "admission": "from admission to the first step's start",
}


def _n(v: float | int | None) -> str:
    """A count with thousands separators (what the report's numbers look like)."""
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}"
    return f"{int(v):,}"


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def is_simulated(label: str) -> bool:
    return str(label).startswith("SIMULATED")


def _time_charts(series: list[dict[str, Any]], agg: dict[str, Any]) -> tuple[list[str], str]:
    """Throughput and in flight: from the newest run's sampled counters, or, for an output
    with no time series (written by an older peerflow), from the records' own times."""
    if series:
        run = series[-1]
        cols = columns_of(run)
        t = cols.get("t", [])
        statuses = [s for s in ("ok", "error", "rejected") if cols.get(s) and cols[s][-1]]
        task_lines = []
        x: list[float] = []
        for name in ["tasks", *(statuses if len(statuses) > 1 else [])]:
            x, ys = charts.rates(t, cols.get(name, []))
            label = "all" if name == "tasks" else name
            task_lines.append((label, ys, charts.STATUS_COLORS[label]))
        out = [charts.line_chart(x, task_lines, title="tasks finished per second")]
        token_lines = []
        for name in ("completion_tokens", "prompt_tokens"):
            x, ys = charts.rates(t, cols.get(name, []))
            token_lines.append((name.split("_")[0], ys))
        out.append(charts.line_chart(x, token_lines, title="tokens per second"))
        out.append(
            charts.line_chart(
                t, [("in flight", cols.get("in_flight", []))], title="tasks in flight"
            )
        )
        spent = cols.get("cost_usd", [])
        if spent and spent[-1] > 0:
            out.append(
                charts.line_chart(t, [("spent", spent)], title="spend, US dollars (cumulative)")
            )
        role_lines = []
        for name in cols:
            if name.startswith("steps:"):
                x, ys = charts.rates(t, cols[name])
                role_lines.append((name[len("steps:") :], ys))
        if role_lines:
            out.append(charts.line_chart(x, role_lines, title="steps per second, per role"))
        runs = len(series)
        note = (
            f"Sampled every {run.get('interval', 1):g} s during the newest run (started "
            f"{_when(run.get('started'))}, {run.get('outcome', 'outcome unknown')}); rates are "
            "between consecutive samples."
            + (f" The output's time series keeps {runs} runs." if runs > 1 else "")
            + " Counts include a task when its record is written."
        )
        return out, note
    timeline = agg.get("timeline") or {}
    width = timeline.get("width", 1.0) or 1.0
    t = [v + width / 2 for v in timeline.get("t", [])]
    finished = [
        sum(vals)
        for vals in zip(*(timeline.get(s, []) for s in ("ok", "error", "rejected")), strict=False)
    ]
    flying, level = [], 0.0
    for started, ended in zip(timeline.get("started", []), finished, strict=False):
        level += started - ended
        flying.append(max(level, 0.0))
    label = "seconds since the first record's task began"
    out = [
        charts.line_chart(
            t,
            [("all", [v / width for v in finished])],
            title="tasks finished per second",
            x_label=label,
        ),
        charts.line_chart(
            t,
            [
                ("completion", [v / width for v in timeline.get("completion_tokens", [])]),
                ("prompt", [v / width for v in timeline.get("prompt_tokens", [])]),
            ],
            title="tokens per second",
            x_label=label,
        ),
        charts.line_chart(t, [("in flight", flying)], title="tasks in flight", x_label=label),
    ]
    note = (
        "No time series was kept beside this output, so these are rebuilt from the records' "
        f"own times ({_n(width)} s bins, all runs on one clock): in flight counts tasks "
        "between their admission and their record."
    )
    return out, note


def context(
    agg: dict[str, Any],
    summary: dict[str, Any] | None,
    series: list[dict[str, Any]],
    output: Path,
) -> dict[str, Any]:
    """Everything the template shows, formatted."""
    summary = summary or {}
    records = agg["records"]
    by_status = agg["by_status"]
    tokens = agg["tokens"]
    services = [
        {"name": name, "label": label, "simulated": is_simulated(label)}
        for name, label in (summary.get("services") or {}).items()
    ]
    simulated = [s["name"] for s in services if s["simulated"]]
    models = agg.get("models") or {}
    if not services:  # no summary: the simulator still names itself in every reply
        simulated = [m for m in models if m.startswith(SIMULATOR_MODEL)]
    tl = agg["task_latency_seconds"]
    cards = [
        ("records", "records in the output", _n(records)),
        ("ok", "ok", _n(by_status.get("ok", 0))),
        ("rejected", "rejected", _n(by_status.get("rejected", 0))),
        ("error", "errors", _n(by_status.get("error", 0))),
        ("success", "ok share", _pct(by_status.get("ok", 0), records)),
        ("steps", "steps", _n(agg["steps"])),
        ("prompt_tokens", "prompt tokens", _n(tokens["prompt"])),
        ("completion_tokens", "completion tokens", _n(tokens["completion"])),
        ("task_p50", "task p50 end to end", charts.fmt_seconds(tl["p50"])),
        ("task_p95", "task p95 end to end", charts.fmt_seconds(tl["p95"])),
    ]
    cost = agg.get("cost") or {}
    priced = bool(cost.get("priced_steps"))
    if priced:
        cards.append(("cost", "cost (USD), priced steps", f"${cost['usd']:,.4f}"))
    for kind, n in (agg.get("tokens_extra") or {}).items():
        cards.append((f"{kind}_tokens", f"{kind.replace('_', ' ')} tokens", _n(n)))
    if summary:
        cards += [
            ("wall", "wall time, newest run", charts.fmt_seconds(summary.get("wall_seconds", 0))),
            (
                "tasks_per_second",
                "tasks/s, newest run",
                f"{summary.get('tasks_per_second', 0):.3g}",
            ),
            (
                "tokens_per_second",
                "completion tokens/s, newest run",
                _n(round(summary.get("completion_tokens_per_second") or 0)),
            ),
        ]
    notes = []
    if summary:
        notes.append(
            f"Newest run: {summary.get('outcome', '?')} (exit status "
            f"{summary.get('exit_code', '?')}), started {_when(summary.get('started'))}, "
            f"{_n(summary.get('records_written'))} records written by it; "
            f"{_n(summary.get('finished_before_this_run'))} were there before."
            + (f" Reason: {summary['reason']}." if summary.get("reason") else "")
        )
    notes.append(
        "Counts, tokens, latencies and errors on this page are over every record in the "
        f"output ({_n(records)}), from all runs that wrote to it."
    )
    time_charts, time_note = _time_charts(series, agg)
    roles, latency_charts, queue_charts = [], [], []
    latency_charts.append(
        charts.log_histogram(
            agg.get("task_latency_buckets") or {},
            title=f"tasks end to end ({_n(records)} records)",
            unit="tasks",
            color="#555f70",
        )
    )
    for i, (name, r) in enumerate(agg["roles"].items()):
        lat, queue = r["latency_seconds"], r.get("queue_seconds") or {}
        roles.append(
            {
                "name": name,
                "steps": _n(r["steps"]),
                "errors": _n(r["errors"]),
                "retries": _n(r["retries"]),
                **{k: charts.fmt_seconds(lat[k]) for k in ("mean", "p50", "p95", "p99", "max")},
                "q50": charts.fmt_seconds(queue["p50"]) if queue else "-",
                "q95": charts.fmt_seconds(queue["p95"]) if queue else "-",
            }
        )
        color = charts.PALETTE[i % len(charts.PALETTE)]
        latency_charts.append(
            charts.log_histogram(
                r.get("latency_buckets") or {},
                title=f"{name}: step latency ({_n(r['steps'])} steps)",
                color=color,
            )
        )
        if r.get("queue_buckets"):
            queue_charts.append(
                charts.log_histogram(
                    r["queue_buckets"], title=f"{name}: queued before a step", color=color
                )
            )
    split = [
        {"name": part, "v": agg["time_split_percent"][part], "what": _SPLIT[part]}
        for part in ("agents", "queued", "admission")
        if part in agg["time_split_percent"]
    ]
    total_tokens = tokens["prompt"] + tokens["completion"]
    role_tokens = sorted(
        ((n, r["prompt_tokens"], r["completion_tokens"]) for n, r in agg["roles"].items()),
        key=lambda x: -(x[1] + x[2]),
    )
    top = max((p + c for _, p, c in role_tokens), default=0) or 1
    token_rows = [
        {
            "name": name,
            "prompt": _n(p),
            "completion": _n(c),
            "total": _n(p + c),
            "share": _pct(p + c, total_tokens),
            "width": round((p + c) / top * 100, 1),
            "cost": f"${cost['by_role'].get(name, 0):,.4f}" if priced else "",
        }
        for name, p, c in role_tokens
        if p + c
    ]
    tool_errors = agg.get("tool_errors") or {}
    tools = [
        {"name": n, "calls": _n(c), "errors": _n(tool_errors.get(n, 0))}
        for n, c in (agg.get("tool_calls") or {}).items()
    ]

    def shares(counts: dict[str, int]) -> list[dict[str, Any]]:
        whole = sum(counts.values())
        peak = max(counts.values(), default=0) or 1
        return [
            {"name": k, "n": _n(v), "share": _pct(v, whole), "width": round(v / peak * 100, 1)}
            for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
        ]

    funnel = agg["funnel"]
    funnel_rows = []
    if any(step["rejected"] or step["failed"] for step in funnel["steps"]):
        funnel_rows = [
            {
                "role": step["role"],
                "reached": _n(step["reached"]),
                "rejected": _n(step["rejected"]),
                "failed": _n(step["failed"]),
                "passed": _n(step["passed"]),
                "reasons": [
                    (reason, f"{_n(seen['rows'])} ({seen['of_reached']:.1%} of reached)")
                    for reason, seen in step["reasons"].items()
                ],
                "tokens": _n(step["tokens"]),
            }
            for step in funnel["steps"]
        ]
    traced = {r["id"] for r in agg["traces"]}
    errors = [
        {
            **g,
            "tasks": _n(g["tasks"]),
            "steps": _n(g["steps"]),
            "roles": ", ".join(f"{k} {v}" for k, v in g["roles"].items()) or "-",
            "examples": [{"id": ex, "traced": ex in traced} for ex in g["examples"]],
        }
        for g in agg["errors"]
    ]
    fingerprint = summary.get("fingerprint") or next(iter(agg["fingerprints"]), "-")
    fingerprint_notes = []
    if len(agg["fingerprints"]) > 1:
        seen = ", ".join(f"{fp[:12]} ({_n(n)})" for fp, n in agg["fingerprints"].items())
        fingerprint_notes.append(f"The records were made with several configs: {seen}.")
    config = summary.get("config")
    runs = [
        {
            "started": _when(r.get("started")),
            "outcome": r.get("outcome", "?"),
            "records": _n(r.get("records_written")),
            "wall": charts.fmt_seconds(r.get("wall_seconds") or 0),
            "tokens": _n(sum((r.get("tokens") or {}).values())),
            "summary": r.get("summary", ""),
        }
        for r in summary.get("runs") or []
    ]
    note = agg["traces_note"]
    trace_note = (
        f"{_n(len(agg['traces']))} rows are embedded: "
        f"{_n(note['failed_or_rejected'])} of the {_n(note['failed_or_rejected_total'])} failed "
        f"or rejected rows (the first ones in the output) and {_n(note['ok'])} of the "
        f"{_n(note['ok_total'])} ok rows (a random sample); long texts are cut. Every row "
        "is in the output file. Pick a row to see each step with its timing, tokens and "
        "tool calls."
    )
    name = summary.get("name") or output.name
    difficulty = difficulty_section(output)
    nav = [
        ("overview", "Overview"),
        ("throughput", "Throughput"),
        ("latency", "Latency"),
        ("tokens", "Tokens"),
        ("outcomes", "Outcomes"),
        ("errors", "Errors"),
        *([("metrics", "Metrics")] if agg["metrics"] else []),
        *([("difficulty", "Difficulty")] if difficulty else []),
        ("services", "Services"),
        ("config", "Config"),
        ("traces", "Trace view"),
    ]
    return {
        "difficulty": difficulty,
        "title": f"peerflow report: {name}",
        "subtitle": (
            f"{summary.get('runtime', '?')} runtime · {output} · written {_when(time.time())}"
        ),
        "simulated": simulated,
        "nav": nav,
        "cards": [{"key": k, "label": label, "value": v} for k, label, v in cards],
        "notes": notes,
        "time_note": time_note,
        "time_charts": [Markup(s) for s in time_charts],
        "roles": roles,
        "latency_charts": [Markup(s) for s in latency_charts],
        "queue_charts": [Markup(s) for s in queue_charts],
        "split": split,
        "task_latency": (
            f"p50 {charts.fmt_seconds(tl['p50'])}, p95 {charts.fmt_seconds(tl['p95'])}, "
            f"max {charts.fmt_seconds(tl['max'])}"
        ),
        "tokens": token_rows,
        "priced": priced,
        "tokens_total": {
            "prompt": _n(tokens["prompt"]),
            "completion": _n(tokens["completion"]),
            "total": _n(total_tokens),
        },
        "tools": tools,
        "statuses": shares(by_status),
        "reasons": shares(agg["by_reason"]),
        "funnel": funnel_rows,
        "accepted": _n(funnel["accepted"]),
        "accepted_share": _pct(funnel["accepted"], funnel["rows"]),
        "errors": errors,
        "metrics": [(k, f"{v:.4g}") for k, v in agg["metrics"].items() if math.isfinite(v)],
        "services": services,
        "models": [(m, _n(n)) for m, n in models.items()],
        "fingerprint": fingerprint,
        "fingerprint_notes": fingerprint_notes,
        "version": summary.get("peerflow", ""),
        "config": json.dumps(config, indent=2) if config else "",
        "runs": runs,
        "trace_note": trace_note,
        "traces": Markup(_script_json(agg["traces"])),
        "generated": _when(time.time()),
        "writer": __version__,
        "output": str(output),
        "css": Markup(CSS),
        "script": Markup(SCRIPT),
    }


def difficulty_section(output: Path) -> dict[str, Any] | None:
    """The calibrated difficulty of the items (`peerflow calibrate`), when there is one."""
    import numpy as np

    from peerflow.export.calibrate import difficulty_path, read_calibration_meta

    meta = read_calibration_meta(output)
    path = difficulty_path(output)
    if meta is None or not path.exists():
        return None
    values = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                values.append(float(json.loads(line)["difficulty"]))
    if not values:
        return None
    arr = np.asarray(values)
    counts, edges = np.histogram(arr, bins=min(30, max(5, len(arr) // 10)))
    d = meta.get("difficulty") or {}
    solvers = [
        (name, f"{s['ability']:+.2f}", f"{s['se']:.2f}", f"{s['accuracy']:.1%}")
        for name, s in (meta.get("solver_ability") or {}).items()
    ]
    return {
        "chart": Markup(
            charts.histogram(
                [int(c) for c in counts],
                [float(e) for e in edges],
                title=f"Item difficulty ({len(arr):,} items, {str(meta.get('model')).upper()})",
                x_label="difficulty (logits: a solver of equal ability is right half the time)",
            )
        ),
        "note": (
            f"{_n(len(arr))} items calibrated with {meta.get('solvers')} solver "
            f"configurations; mean {d.get('mean', 0):.2f}, sd {d.get('sd', 0):.2f}, median "
            f"standard error {d.get('median_se', 0):.2f}; {_n(meta.get('all_correct', 0))} "
            f"solved by every solver, {_n(meta.get('none_correct', 0))} by none."
        ),
        "solvers": solvers,
    }


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no `</` or `<!--` can end or confuse it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def render(
    agg: dict[str, Any],
    summary: dict[str, Any] | None,
    series: list[dict[str, Any]],
    output: Path,
) -> str:
    return _env.from_string(PAGE).render(**context(agg, summary, series, output))
