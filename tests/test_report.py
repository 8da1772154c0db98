"""The run report: the bounded time series, the one-pass aggregation, and the page itself,
opened in a real headless Chromium (Debian's `chromium`) for known runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

from peerflow.merge import write_manifest
from peerflow.message import Message, Step
from peerflow.report import build_report, config_record, report_path
from peerflow.report.aggregate import Timeline, aggregate, error_kind, output_paths
from peerflow.report.charts import log_histogram, nice_ticks
from peerflow.sink import OutputRecord
from peerflow.stats import RunStats
from peerflow.timeseries import (
    Sampler,
    Thinned,
    columns_of,
    read_timeseries,
    timeseries_path,
    write_timeseries,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headless import CHROMIUM, open_page

ROOT = Path(__file__).resolve().parent.parent
CORAL_SIM = ROOT / "examples" / "coral" / "coral_sim.yaml"
NR_SIM = ROOT / "examples" / "natural_reasoning" / "nr_sim.yaml"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium): the report is checked "
    "in a real headless browser",
)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peerflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of an output, with its errors and rejected files (`success_only`)."""
    return [
        json.loads(line)
        for file in output_paths(path)
        for line in file.read_text().splitlines()
        if line.strip()
    ]


# --- the time series ---------------------------------------------------------------------


def test_thinning_keeps_evenly_spaced_samples_within_the_cap() -> None:
    series = Thinned(cap=8)
    for n in range(1000):
        series.offer({"n": n})
        assert len(series.samples) <= 8
    kept = [s["n"] for s in series.samples]
    stride = series.stride
    assert stride & (stride - 1) == 0 and stride > 1  # a power of two
    assert kept[0] == 0
    assert all(b - a == stride for a, b in itertools.pairwise(kept))
    assert all(n % stride == 0 for n in kept)
    assert 4 <= len(kept) <= 8  # halving leaves at least half the cap
    series.close({"n": 999})  # the final totals always end the series
    assert series.samples[-1] == {"n": 999} and len(series.samples) <= 8


def test_thinning_close_on_a_full_series_replaces_the_last_sample() -> None:
    series = Thinned(cap=4)
    for n in range(4):
        series.offer({"n": n})
    series.close({"n": 99})
    assert [s["n"] for s in series.samples] == [0, 1, 2, 99]


def _message(i: int, role: str = "teacher", tokens: int = 10, status: str = "ok") -> Message:
    step = Step(
        role=role,
        content="x",
        usage={"prompt_tokens": tokens, "completion_tokens": tokens // 2},
        started=1.0,
        latency=0.01,
    )
    return Message(id=f"m{i}", row={}, history=[step], status=status, hops=1)


async def test_sampler_samples_the_counters_until_stopped(tmp_path: Path) -> None:
    stats = RunStats()
    flying = {"n": 0}
    sampler = Sampler(stats, lambda: flying["n"], interval=0.01, cap=16).start()
    for i in range(30):
        flying["n"] = i % 5
        stats.observe(_message(i, role="teacher" if i < 20 else "student"), None)
        await asyncio.sleep(0.005)
    await sampler.stop()
    run = sampler.to_json(runtime="local", outcome="complete")
    assert len(run["rows"]) <= 16
    cols = columns_of(run)
    assert cols["tasks"][-1] == 30 and cols["ok"][-1] == 30
    assert cols["steps:teacher"][-1] == 20 and cols["steps:student"][-1] == 10
    assert cols["prompt_tokens"][-1] == 300 and cols["completion_tokens"][-1] == 150
    assert cols["tasks"] == sorted(cols["tasks"])  # cumulative
    assert cols["t"] == sorted(cols["t"])
    # A role first seen mid-run reads 0 before it appeared.
    assert cols["steps:student"][0] == 0
    assert set(cols["in_flight"]) <= set(range(5))
    out = tmp_path / "o.jsonl"
    for k in range(25):  # the file keeps the newest runs only
        write_timeseries(out, {**run, "k": k})
    runs = read_timeseries(out)
    assert len(runs) == 20 and runs[-1]["k"] == 24
    assert timeseries_path(out).name == "o.jsonl.timeseries.json"


def test_timeline_widens_its_bins_and_keeps_the_totals() -> None:
    tl = Timeline(("ok", "tokens"), max_bins=10)
    for i in range(1000):
        tl.add(5000.0 + i * 0.7, ok=1, tokens=3)
    assert len(tl.bins) <= 10 and tl.width >= 64
    series = tl.series()
    assert sum(series["ok"]) == 1000 and sum(series["tokens"]) == 3000
    assert series["t"][0] == 0


def test_error_kind_takes_out_what_varies() -> None:
    a = (
        "ServiceError: service 'llm': chat completion failed after 1 attempt(s); last attempt "
        "on http://127.0.0.1:47911/v1: HTTP 500: injected server error"
    )
    b = a.replace("47911", "5123").replace("after 1", "after 3")
    c = a.replace("HTTP 500", "HTTP 429")
    d = (
        "ServiceError: service 'llm': HTTP 200 with an unusable body "
        '(\'{"id": "chatcmpl-sim", "choices": [{"index": 0, "mes\')'
    )
    assert error_kind(a) == error_kind(b)
    assert error_kind(a) != error_kind(c)  # a 429 is not a 500
    assert "service 'llm'" in error_kind(d) and "chatcmpl" not in error_kind(d)


def test_chart_helpers_cover_their_range() -> None:
    for lo, hi in ((0, 35), (0, 1), (0, 0.003), (0, 123456)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) <= 8
    svg = log_histogram({-80: 3, -72: 5}, title="t <x>")
    assert svg.startswith("<svg") and "t &lt;x&gt;" in svg and svg.count("<rect") == 2


# --- aggregation over a hand-made output -------------------------------------------------

HOSTILE = "</script><script>window.pwned = 1</script><img src=x onerror='window.pwned=2'>"


def _step(role: str, started: float, latency: float, **kw: Any) -> Step:
    return Step(role=role, started=started, latency=latency, **kw)


def hand_made_records() -> list[OutputRecord]:
    """Six records with known times: created at t0, first step 0.5 s later, and so on."""
    t0 = 1_700_000_000.0
    fail = (
        "ServiceError: service 'llm': chat completion failed after {n} attempt(s); last "
        "attempt on http://127.0.0.1:{port}/v1: HTTP 500: injected server error"
    )
    records = []
    for i in range(2):  # ok: admission 0.5, teacher 1.0, queue 0.25, student 0.5, record 0.25
        c = t0 + i
        records.append(
            OutputRecord(
                id=f"ok-{i}",
                status="ok",
                row={"q": i},
                history=[
                    _step("task", c, 0.0, content="question"),
                    _step(
                        "teacher",
                        c + 0.5,
                        1.0,
                        content=HOSTILE if i == 0 else "answer",
                        usage={"prompt_tokens": 10, "completion_tokens": 20},
                        model="peerflow-simulator/sim",
                    ),
                    _step(
                        "student",
                        c + 1.75,
                        0.5,
                        content="reply",
                        usage={"prompt_tokens": 5, "completion_tokens": 7},
                    ),
                ],
                reason="done",
                created=c,
                finished=c + 2.5,
                tokens={"prompt": 15, "completion": 27},
            )
        )
    for i, (n, port) in enumerate(((1, 5000), (3, 6001))):  # one kind, two messages
        c = t0 + 10 + i
        message = fail.format(n=n, port=port)
        records.append(
            OutputRecord(
                id=f"err-{i}",
                status="error",
                row={"q": 10 + i},
                history=[
                    _step("task", c, 0.0),
                    _step("teacher", c + 0.1, 0.2, ok=False, error=message, attempts=n),
                ],
                error={
                    "stage": "agent",
                    "message": message,
                    "kind": "transient",
                    "status": 500,
                    "attempts": n,
                    "role": "teacher",
                },
                reason="agent",
                created=c,
                finished=c + 0.4,
            )
        )
    c = t0 + 20
    records.append(
        OutputRecord(
            id="rej-0",
            status="rejected",
            row={"q": 20},
            history=[
                _step("task", c, 0.0),
                _step("teacher", c + 0.1, 0.3, usage={"prompt_tokens": 4, "completion_tokens": 2}),
                _step("student", c + 0.4, 0.1, usage={"prompt_tokens": 3, "completion_tokens": 1}),
            ],
            rejection={"role": "student", "reason": "too_short", "step": 2},
            reason="too_short",
            created=c,
            finished=c + 0.6,
            tokens={"prompt": 7, "completion": 3},
        )
    )
    c = t0 + 30
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    result = {"tool_call_id": "c1", "name": "lookup", "content": "nope", "is_error": True}
    records.append(
        OutputRecord(
            id="tool-0",
            status="ok",
            row={"q": 30},
            history=[
                _step("task", c, 0.0),
                _step("teacher", c + 0.1, 0.2, tool_calls=[call]),
                _step("env", c + 0.3, 0.05, tool_results=[result], tool_call_id="c1"),
            ],
            reason="done",
            created=c,
            finished=c + 0.4,
        )
    )
    return records


def write_output(path: Path, records: list[OutputRecord]) -> Path:
    data = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)  # one whole frame, as the sink writes
    path.write_bytes(data)
    return path


def test_aggregation_of_a_hand_made_output(tmp_path: Path) -> None:
    out = write_output(tmp_path / "hand.jsonl.zst", hand_made_records())
    agg = aggregate(out).to_json()
    assert agg["records"] == 6
    assert agg["by_status"] == {"ok": 3, "error": 2, "rejected": 1}
    assert agg["tokens"] == {"prompt": 37, "completion": 57}
    teacher, student = agg["roles"]["teacher"], agg["roles"]["student"]
    assert (teacher["prompt_tokens"], teacher["completion_tokens"]) == (24, 42)
    assert (student["prompt_tokens"], student["completion_tokens"]) == (13, 15)
    assert teacher["steps"] == 6 and teacher["errors"] == 2
    # Queue time before a student step: 0.25 s twice (ok rows) and 0 (the rejected row);
    # histograms are log-bucketed (8 per doubling): within 10%.
    assert student["queue_seconds"]["max"] == pytest.approx(0.25)
    assert student["queue_seconds"]["p95"] == pytest.approx(0.25, rel=0.1)
    assert agg["admission_seconds"]["max"] == pytest.approx(0.5)
    # The time split of the ok rows: agents 60%, queued 20%, admission 20% of 2.5 s.
    split = agg["time_split_percent"]
    assert set(split) == {"agents", "queued", "admission"}
    assert all(0 <= v <= 100 for values in split.values() for v in values)
    # The two failures differ only in port and attempt count: one group, both rows.
    [group] = agg["errors"]
    assert group["tasks"] == 2 and group["steps"] == 2 and group["transient"] == 2
    assert group["type"] == "ServiceError" and group["roles"] == {"teacher": 2}
    assert group["examples"] == ["err-0", "err-1"]
    assert agg["tool_calls"] == {"lookup": 1} and agg["tool_errors"] == {"lookup": 1}
    funnel = {s["role"]: s for s in agg["funnel"]["steps"]}
    assert funnel["student"]["rejected"] == 1
    assert funnel["student"]["reasons"]["too_short"]["rows"] == 1
    assert funnel["teacher"]["failed"] == 2
    assert agg["by_reason"]["too_short"] == 1
    assert {r["id"] for r in agg["traces"]} == {r.id for r in hand_made_records()}
    assert sum(agg["timeline"]["ok"]) == 3 and sum(agg["timeline"]["started"]) == 6


def test_trace_rows_are_bounded_and_long_texts_cut(tmp_path: Path) -> None:
    base = hand_made_records()
    many = []
    for i in range(450):
        src = base[i % len(base)]
        many.append(msgspec.structs.replace(src, id=f"{src.id}-{i}"))
    long_text = "y" * 50_000
    many.append(
        msgspec.structs.replace(
            base[0],
            id="long",
            history=[_step("teacher", base[0].created + 1, 1, content=long_text)],
        )
    )
    out = write_output(tmp_path / "many.jsonl", many)
    agg = aggregate(out).to_json()
    note = agg["traces_note"]
    assert note["failed_or_rejected"] == 100 and note["ok"] == 100
    assert note["failed_or_rejected_total"] == 225 and note["ok_total"] == 226
    assert len(agg["traces"]) == 200
    long = [r for r in agg["traces"] if r["id"] == "long"]
    if long:  # it may not be in the ok sample
        assert len(long[0]["history"][0]["content"]) < 2100


def test_sharded_output_is_read_from_its_manifest(tmp_path: Path) -> None:
    records = hand_made_records()
    out = tmp_path / "out.jsonl"
    shards = [tmp_path / "out.shard-000.jsonl", tmp_path / "out.shard-001.jsonl"]
    write_output(shards[0], records[:3])
    write_output(shards[1], records[3:])
    write_manifest(out, shards)
    assert output_paths(out) == shards
    assert aggregate(out).to_json()["records"] == 6
    html = build_report(out).read_text()
    assert 'data-k="records"><div class="v">6</div>' in html


def test_page_escapes_row_contents_and_shows_the_funnel(tmp_path: Path) -> None:
    out = write_output(tmp_path / "hand.jsonl", hand_made_records())
    html = build_report(out).read_text()
    assert report_path(out).exists()
    # Row contents travel as JSON in a script element that no `</script>` can close.
    assert "</script><script>window.pwned" not in html
    assert "\\u003c/script>" in html
    assert "too_short" in html and "lookup" in html
    assert "No summary beside the output" in html  # says what it lacks
    # With no summary, the simulator is still known by the model name it answers with.
    assert 'id="simulated">SIMULATED LLM: peerflow-simulator/sim' in html
    assert 'src="http' not in html and 'href="http' not in html  # no external asset


def test_config_record_masks_secret_looking_values() -> None:
    from peerflow.config import load_config

    config = load_config(str(CORAL_SIM), ["services.llm.options.api_key=sk-secret"])
    record = config_record(config)
    assert record["services"]["llm"]["options"]["api_key"] == "***"
    assert record["roles"]["teacher"]["sampling"]["max_tokens"] == 1024  # not a secret
    json.dumps(record)


def _echo_config(tmp_path: Path, kind: str = "local", **output: Any) -> Any:
    from peerflow.config import RunConfig

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "n": i}) + "\n" for i in range(12)))
    return RunConfig.model_validate(
        {
            "name": "echo",
            "dataset": {"path": str(rows), "id_field": "id"},
            "task": {"message": "task {{ n }}"},
            "roles": {"a": {"agent": "peerflow.testing:Echo"}},
            "workflow": {"kind": "sequence", "roles": ["a"]},
            "runtime": {"kind": kind, "progress": False},
            "output": {"path": str(tmp_path / "out.jsonl"), **output},
        }
    )


async def test_every_run_writes_its_series_and_report_unless_told_not_to(
    tmp_path: Path, runtime: str
) -> None:
    from peerflow.pipeline import Pipeline
    from peerflow.run import run_async

    config = _echo_config(tmp_path, runtime)
    summary = await run_async(config, pipeline=Pipeline(config), progress=False)
    out = tmp_path / "out.jsonl"
    assert report_path(out).exists()
    assert summary["config"]["roles"]["a"]["agent"] == "peerflow.testing:Echo"
    [series] = read_timeseries(out)
    cols = columns_of(series)
    assert series["outcome"] == "complete" and series["runtime"] == runtime
    assert cols["tasks"][-1] == 12 and cols["ok"][-1] == 12 and cols["steps:a"][-1] == 12
    assert cols["in_flight"][-1] == 0
    html = report_path(out).read_text()
    assert 'data-k="records"><div class="v">12</div>' in html
    if runtime != "local":
        return

    other = tmp_path / "quiet"
    other.mkdir()
    config = _echo_config(other, report=False)
    await run_async(config, pipeline=Pipeline(config), progress=False)
    assert not report_path(other / "out.jsonl").exists()
    assert read_timeseries(other / "out.jsonl")  # the series is always kept


# --- the page in a real browser ------------------------------------------------------------


@needs_chromium
async def test_the_browser_check_sees_console_errors_and_exceptions(tmp_path: Path) -> None:
    page_path = tmp_path / "bad.html"
    page_path.write_text(
        "<!DOCTYPE html><html><head><link rel='icon' href='data:,'></head><body>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    async with _open(page_path, tmp_path, "bad") as page:
        found = page.problems()
    assert any("boom" in p for p in found), found
    assert any("undefinedFunction" in p for p in found), found


def _open(html: Path, tmp_path: Path, name: str) -> Any:
    return open_page(html.resolve().as_uri(), tmp_path / f"chromium-{name}")


@needs_chromium
async def test_report_of_a_known_run_in_headless_chromium(tmp_path: Path) -> None:
    out = tmp_path / "coral.jsonl"
    done = await asyncio.to_thread(
        run_cli,
        "run",
        str(CORAL_SIM),
        "dataset.limit=40",
        f"output.path={out}",
        "services.llm.options.error_rate=0.06",
        "services.llm.max_retries=0",
        "--no-progress",
    )
    assert done.returncode in (0, 1), done.stderr
    # The run wrote its time series and its report beside the output.
    assert report_path(out).exists()
    [series] = read_timeseries(out)
    cols = columns_of(series)
    assert cols["tasks"][-1] == 40 and "in_flight" in cols and "steps:teacher" in cols
    # `peerflow report` writes the same page anywhere.
    page_path = tmp_path / "report.html"
    made = await asyncio.to_thread(run_cli, "report", str(out), "-o", str(page_path))
    assert made.returncode == 0, made.stderr
    assert page_path.stat().st_size < 2_000_000

    records = read_records(out)
    ok = sum(r["status"] == "ok" for r in records)
    errors = [r for r in records if r["status"] == "error"]
    prompt = sum((r.get("tokens") or {}).get("prompt", 0) for r in records)
    completion = sum((r.get("tokens") or {}).get("completion", 0) for r in records)
    roles = {s["role"] for r in records for s in r["history"]} - {"task"}

    async with _open(page_path, tmp_path, "coral") as page:
        card = "document.querySelector('[data-k=\"{}\"] .v').textContent"
        assert await page.evaluate(card.format("records")) == "40"
        assert await page.evaluate(card.format("ok")) == f"{ok:,}"
        assert await page.evaluate(card.format("error")) == f"{len(errors):,}"
        assert await page.evaluate(card.format("prompt_tokens")) == f"{prompt:,}"
        assert await page.evaluate(card.format("completion_tokens")) == f"{completion:,}"
        assert await page.evaluate("document.getElementById('tokens-prompt').textContent") == (
            f"{prompt:,}"
        )
        shown = await page.evaluate(
            "[...document.querySelectorAll('#latency tr[data-role]')].map(r => r.dataset.role)"
        )
        assert set(shown) == roles
        banner = await page.evaluate("document.getElementById('simulated').textContent")
        assert "SIMULATED LLM: llm" in banner
        assert await page.evaluate("document.querySelectorAll('#services .badge.sim').length") == 1
        # The time plots are drawn from the sampled series; the config has its fingerprint.
        assert await page.evaluate("document.querySelectorAll('#throughput svg').length") >= 3
        fingerprint = records[0]["fingerprint"]
        assert await page.evaluate("document.getElementById('fingerprint').textContent") == (
            fingerprint
        )
        assert '"time_scale": 0.05' in await page.evaluate(
            "document.querySelector('pre.config').textContent"
        )
        # The trace view: choose a row, see every step of it.
        row = next(r for r in records if r["status"] == "ok")
        view = await page.evaluate(
            f"""(() => {{
                const s = document.getElementById('trace-select');
                s.value = {json.dumps(row["id"])};
                s.dispatchEvent(new Event('change'));
                const v = document.getElementById('trace-view');
                return {{row: v.dataset.row, steps: v.querySelectorAll('.step').length,
                         text: v.textContent,
                         tokens: [...v.querySelectorAll('.step .tokens')].map(e => e.textContent)}};
            }})()"""
        )
        assert view["row"] == row["id"]
        assert view["steps"] == len(row["history"])
        llm = next(s for s in row["history"] if s.get("usage"))
        assert llm["content"][:60] in view["text"]
        usage = llm["usage"]
        assert f"tokens {usage['prompt_tokens']} → {usage['completion_tokens']}" in view["tokens"]
        if errors:  # an error group's example link opens that row
            clicked = await page.evaluate(
                """(() => { const a = document.querySelector('#errors a[data-trace]');
                    a.click(); return [a.dataset.trace,
                    document.getElementById('trace-view').dataset.row]; })()"""
            )
            assert clicked[0] == clicked[1]
            assert clicked[0] in {r["id"] for r in errors}
        assert page.problems() == []


@needs_chromium
async def test_funnel_tools_and_hostile_rows_in_headless_chromium(tmp_path: Path) -> None:
    # A curation run with rejections at four roles (the simulator's rules send rows down
    # every branch), then a hand-made output whose row holds markup meant to run.
    out = tmp_path / "nr.jsonl"
    done = await asyncio.to_thread(
        run_cli, "run", str(NR_SIM), "dataset.limit=40", f"output.path={out}", "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    records = read_records(out)
    rejected = sum(r["status"] == "rejected" for r in records)
    reasons = {r["rejection"]["reason"] for r in records if r.get("rejection")}
    async with _open(report_path(out), tmp_path, "nr") as page:
        assert (
            await page.evaluate("document.querySelector('[data-k=\"rejected\"] .v').textContent")
            == f"{rejected:,}"
        )
        funnel = await page.evaluate("document.querySelector('#outcomes').textContent")
        assert all(reason in funnel for reason in reasons)
        banner = await page.evaluate("document.getElementById('simulated').textContent")
        assert "small" in banner and "big" in banner
        assert page.problems() == []

    hand = write_output(tmp_path / "hand.jsonl", hand_made_records())
    async with _open(build_report(hand), tmp_path, "hand") as page:
        shown = await page.evaluate(
            """(() => { window.peerflowShowTrace('ok-0');
                const v = document.getElementById('trace-view');
                return [v.dataset.row, v.querySelector('pre.content').textContent.length,
                        v.textContent.includes('window.pwned = 1'), typeof window.pwned]; })()"""
        )
        assert shown[0] == "ok-0" and shown[2] is True and shown[3] == "undefined"
        tool = await page.evaluate(
            """(() => { window.peerflowShowTrace('tool-0');
                return [...document.querySelectorAll('#trace-view .tool .name')]
                  .map(e => e.textContent); })()"""
        )
        assert tool == ["→ lookup", "← lookup (error)"]
        assert page.problems() == []
