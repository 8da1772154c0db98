"""Runtime hardening, on every runtime: back-pressure inside agents, bad routes, counts.

Each test runs a real config on the runtime under test and reads the real output file;
the summary's counts must equal the file's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_conformance import make_config, run

from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.testing import max_concurrency

ECHO = "peerflow.testing:Echo"


def file_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


async def test_agents_never_run_more_steps_than_max_in_flight(tmp_path: Path, runtime: str) -> None:
    log = str(tmp_path / "concurrency.log")
    echo = {"agent": ECHO, "delay": 0.01, "concurrency_log": log}
    config = make_config(
        tmp_path,
        runtime,
        rows=120,
        roles={"a": echo, "b": echo},
        runtime={"max_in_flight": 6},
    )
    _, records = await run(config)
    assert len(records) == 120
    peak = max_concurrency(log)
    assert peak <= 6, peak
    assert peak >= 2, peak  # and steps do overlap


async def test_a_route_to_an_unknown_role_fails_that_task_and_the_run_completes(
    tmp_path: Path, runtime: str
) -> None:
    config = make_config(
        tmp_path,
        runtime,
        rows=20,
        workflow={"kind": "custom", "path": "peerflow.testing:Misroute"},
    )
    summary, records = await asyncio.wait_for(run(config), timeout=120)
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(20))
    bad = [r for r in records if r["status"] != "ok"]
    assert sorted(r["id"] for r in bad) == sorted(f"r{i}" for i in range(1, 20, 2))
    for r in bad:
        assert "'ghost'" in r["error"]["message"]
        assert r["error"]["stage"] == "workflow"
        assert r["error"]["kind"] == "permanent"
    assert summary["by_status"] == file_counts(records)
    assert summary["exit_code"] == 1


async def test_summary_counts_equal_file_counts_with_failures(tmp_path: Path, runtime: str) -> None:
    config = make_config(
        tmp_path,
        runtime,
        rows=40,
        roles={"a": {"agent": ECHO, "fail_when": {"n": 7}}, "b": {"agent": ECHO}},
        extra="not json\n",
    )
    summary, records = await run(config)
    assert len(records) == 41
    assert summary["by_status"] == file_counts(records)
    assert summary["records_written"] == len(records)
    assert summary["output_by_status"] == file_counts(records)


async def test_every_run_keeps_its_own_summary(tmp_path: Path) -> None:
    config = make_config(tmp_path, "local", rows=10, dataset={"limit": 4})
    await run_async(config, pipeline=Pipeline(config), progress=False)
    config = make_config(tmp_path, "local", rows=10)
    await run_async(config, pipeline=Pipeline(config), progress=False)
    await run_async(config, pipeline=Pipeline(config), progress=False)  # empty re-run
    out = Path(config.output.path)
    own = sorted(out.with_name(out.name + ".runs").glob("*.json"))
    assert len(own) == 3
    written = [json.loads(p.read_text())["records_written"] for p in own]
    assert sorted(written) == [0, 4, 6]
    combined = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert [r["records_written"] for r in combined["runs"]] == [4, 6, 0]
    assert combined["records_written"] == 0  # the newest run's own figure
    assert combined["combined"]["records"] == 10
    assert combined["combined"]["records_written"] == 10
    assert combined["combined"]["by_status"] == {"ok": 10}


async def test_duplicate_ids_give_one_record_per_input_line(tmp_path: Path, runtime: str) -> None:
    extra = "".join(json.dumps({"id": f"r{i}", "n": 100 + i}) + "\n" for i in (3, 3, 5))
    config = make_config(tmp_path, runtime, rows=10, extra=extra)
    summary, records = await asyncio.wait_for(run(config), timeout=120)
    assert len(records) == 13 and len({r["id"] for r in records}) == 13
    dups = [r for r in records if "#dup" in r["id"]]
    assert len(dups) == 3
    assert all(r["status"] == "error" and "duplicate id" in r["error"]["message"] for r in dups)
    assert summary["by_status"] == file_counts(records)


async def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    from peerflow.sink import OutputBusy

    echo = {"agent": ECHO, "delay": 0.05}
    config = make_config(tmp_path, "local", rows=40, roles={"a": echo, "b": echo})
    first = asyncio.create_task(run_async(config, pipeline=Pipeline(config), progress=False))
    out = Path(config.output.path)
    while not out.with_name(out.name + ".lock").exists():
        await asyncio.sleep(0.01)
    with pytest.raises(OutputBusy, match="in use by another peerflow run"):
        await run_async(config, pipeline=Pipeline(config), progress=False)
    summary = await first
    assert summary["records_written"] == 40
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["id"] for r in records}) == len(records) == 40


@pytest.mark.parametrize(
    "output",
    [{"flush_bytes": 1}, {"flush_bytes": 1 << 30, "flush_interval": 0.01}],
    ids=["in-a-worker", "in-the-flusher"],
)
async def test_a_failing_sink_stops_the_run_loudly_and_the_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: dict[str, Any]
) -> None:
    """A full disk surfaces as a write error, in a worker or in the periodic flusher: the
    run stops (no hang, nothing swallowed), the summary is written, and the same command
    then finishes."""
    from peerflow import sink as sink_module

    echo = {"agent": ECHO, "delay": 0.002}
    config = make_config(tmp_path, "local", rows=300, roles={"a": echo, "b": echo}, output=output)
    real_flush = sink_module._File.flush
    calls = {"n": 0}

    def flaky_flush(self: Any, fsync: bool = False) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        real_flush(self, fsync)

    monkeypatch.setattr(sink_module._File, "flush", flaky_flush)
    with pytest.raises(OSError, match="No space left"):
        await asyncio.wait_for(run_async(config, pipeline=Pipeline(config), progress=False), 60)
    out = Path(config.output.path)
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["outcome"] == "failed" and summary["exit_code"] == 4
    monkeypatch.setattr(sink_module._File, "flush", real_flush)
    again = await run_async(config, pipeline=Pipeline(config), progress=False)
    assert again["exit_code"] == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["id"] for r in records}) == len(records) == 300
