"""Ray runtime hardening: crashes of every actor kind, repeated ids, busy outputs, failing
services and Ctrl-C. Each run is real (one small local Ray shared by the session) and each
test reads the real output files; the summary's counts must equal the files'.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from peerflow.config import RunConfig  # noqa: E402
from peerflow.merge import shard_path  # noqa: E402
from peerflow.message import Message, from_bytes, to_bytes  # noqa: E402
from peerflow.pipeline import Pipeline  # noqa: E402
from peerflow.run import run_async  # noqa: E402
from peerflow.sink import OutputBusy  # noqa: E402
from peerflow.testing import killing_actors  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_cluster")

ECHO = "peerflow.testing:Echo"
SAFETY = 180.0  # seconds; only turns a hang into a failure


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def rows(n: int, prefix: str = "r") -> list[str]:
    return [json.dumps({"id": f"{prefix}{i}", "n": i}) for i in range(n)]


def make_config(
    tmp: Path,
    lines: list[str],
    *,
    roles: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    **sections: Any,
) -> RunConfig:
    data: dict[str, Any] = {
        "name": "ray-hardening",
        "dataset": {"path": str(write_lines(tmp / "rows.jsonl", lines)), "id_field": "id"},
        "task": {"message": "task {{ n }}"},
        "roles": roles or {"a": {"agent": ECHO}, "b": {"agent": ECHO}},
        "workflow": {"kind": "sequence", "roles": list((roles or {"a": 0, "b": 0}).keys())},
        "runtime": {"kind": "ray", "max_in_flight": 16, "progress": False, **(runtime or {})},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return RunConfig.model_validate(data)


async def run(config: RunConfig, pipeline: Pipeline | None = None) -> dict[str, Any]:
    work = run_async(config, pipeline=pipeline or Pipeline(config), progress=False)
    return await asyncio.wait_for(work, SAFETY)


def read(*paths: Path) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        if path.exists():
            out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


def by_status(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def assert_counts_match(summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
    assert summary["total_records_in_output"] == len(records)
    assert summary["output_by_status"] == by_status(records)


async def until(predicate: Any, timeout: float = 60.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


# --- crashes -----------------------------------------------------------------------------


async def test_killing_role_sink_and_store_actors_loses_and_duplicates_no_row(
    tmp_path: Path,
) -> None:
    """Payloads above the threshold live in the object store; the keeper that owns them
    (payloads lost: their tasks start again), the sink and the role actors are killed in
    turn while the run goes on."""
    long = "x" * 3000
    roles = {
        "a": {"agent": "function", "function": "builtins:repr"},  # a long step: offloaded
        "b": {"agent": ECHO, "delay": 0.02},
    }
    config = make_config(
        tmp_path,
        rows(500),
        roles=roles,
        runtime={"max_in_flight": 16, "offload_threshold": 64},
        task={"message": long + " {{ n }}"},
    )
    kinds = ["-k:", "-s:", "-r:"]
    async with killing_actors(kinds, every=0.8, first=1.0) as killed:
        summary = await run(config)
    assert set(killed) == set(kinds), killed  # a keeper, the sink and a role actor died
    records = read(tmp_path / "out.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 500
    assert all(r["status"] == "ok" for r in records)
    for r in records:
        assert r["history"][0]["content"] == f"{long} {r['row']['n']}"
        assert long in r["history"][1]["content"]
        assert "\x00" not in json.dumps(r["history"])
    assert summary["records_written"] == 500 == summary["by_status"]["ok"]
    assert_counts_match(summary, records)
    # Two long fields per row (1,000); counters a killed actor had not reported yet die
    # with it (a run has lost up to 80% of them under these kills), so only a floor.
    assert summary["ray"]["offloaded_fields"] >= 100
    restarts = summary["ray"]["restarts"]
    assert restarts.get("sink"), restarts


# --- repeated ids ------------------------------------------------------------------------


async def test_duplicate_ids_in_the_input_give_one_record_per_line(tmp_path: Path) -> None:
    lines = [
        *rows(3),  # r0 r1 r2
        json.dumps({"id": "r1", "n": 3}),  # a repeated id
        "not json",  # line 5: the reader names it @line5
        json.dumps({"id": "@line5", "n": 5}),  # a real id equal to the reader-made one
        json.dumps({"id": "r1#dup@line4", "n": 6}),  # a real id equal to a derived one
        *[json.dumps({"id": "r2", "n": 7 + i}) for i in range(20)],  # many copies
        *rows(30, "s"),
    ]
    config = make_config(tmp_path, lines, runtime={"max_in_flight": 4})
    summary = await run(config)
    records = read(tmp_path / "out.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == len(lines)
    assert by_status(records) == {"ok": 3 + 30, "error": len(lines) - 33}
    assert summary["records_written"] == len(lines)
    assert_counts_match(summary, records)


class Repeating(Pipeline):
    """A pipeline that yields some tasks twice, as a reader bug would: once right behind
    the first copy (still in flight) and once at the end (long written)."""

    def tasks(self, finished: Container[str] = frozenset()) -> Iterator[Message]:
        first = None
        for message in super().tasks(finished):
            yield message
            if first is None:
                first = message
                yield from_bytes(to_bytes(message))
        assert first is not None
        yield from_bytes(to_bytes(first))


async def test_a_task_admitted_twice_frees_its_slot_and_is_written_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, rows(40), runtime={"max_in_flight": 4})
    summary = await run(config, Repeating(config))
    records = read(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(40))
    assert summary["ray"]["repeated_ids_dropped"] >= 1
    assert summary["records_written"] == 40
    assert_counts_match(summary, records)


# --- one run per output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("ray", "local"), ("local", "ray"), ("ray-sinks2", "ray-sinks2")],
)
async def test_a_second_run_on_a_busy_output_is_refused_and_writes_nothing(
    tmp_path: Path, first: str, second: str
) -> None:
    def config(kind: str, lines: list[str], folder: str) -> RunConfig:
        runtime: dict[str, Any] = {"kind": kind.split("-")[0], "max_in_flight": 4}
        if kind == "ray-sinks2":
            runtime["sinks"] = 2
        (tmp_path / folder).mkdir()
        roles = {"a": {"agent": ECHO, "delay": 0.02}, "b": {"agent": ECHO}}
        cfg = make_config(tmp_path / folder, lines, roles=roles, runtime=runtime)
        return cfg.model_copy(
            update={"output": cfg.output.model_copy(update={"path": str(tmp_path / "out.jsonl")})}
        )

    out = tmp_path / "out.jsonl"
    shards = [out] if first != "ray-sinks2" else [shard_path(out, i, 2) for i in range(2)]
    busy = asyncio.ensure_future(run(config(first, rows(300), "first")))
    await until(lambda: len(read(*shards)) >= 10 or busy.done())
    assert not busy.done()
    with pytest.raises(OutputBusy):
        await run(config(second, rows(50, "z"), "second"))
    summary = await busy
    records = read(*shards)
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(300))
    assert summary["exit_code"] == 0
    assert len(list((tmp_path / "out.jsonl.runs").glob("*.json"))) == 1


# --- failing services --------------------------------------------------------------------


def llm_config(tmp: Path, n: int, sim: dict[str, Any], **runtime: Any) -> RunConfig:
    data = {
        "name": "ray-fail-fast",
        "dataset": {"path": str(write_lines(tmp / "rows.jsonl", rows(n))), "id_field": "id"},
        "task": {"message": "task {{ n }}"},
        "services": {"llm": {"kind": "sim", "options": {"time_scale": 0, **sim}, "max_retries": 0}},
        "roles": {"solver": {"agent": "llm", "service": "llm", "sampling": {"max_tokens": 16}}},
        "workflow": {"kind": "sequence", "roles": ["solver"]},
        "runtime": {"kind": "ray", "max_in_flight": 4, "progress": False, **runtime},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    return RunConfig.model_validate(data)


async def test_fail_fast_on_ray_stops_the_run_and_a_healthy_rerun_ends_all_ok(
    tmp_path: Path,
) -> None:
    broken = llm_config(tmp_path, 60, {"error_rate": 1.0}, fail_fast=3)
    summary = await run(broken)
    assert summary["outcome"] == "stopped" and summary["exit_code"] == 3
    assert "failed its first 3 requests" in summary["reason"]
    records = read(tmp_path / "out.jsonl")
    assert len(records) < 10  # the rest are left for the next run
    assert all(r["status"] == "error" and r["error"]["kind"] == "transient" for r in records)
    assert summary["records_written"] == len(records)
    assert_counts_match(summary, records)
    watch = summary["ray"]["service_watch"]["llm"]
    assert watch["successes"] == 0 and watch["failures"] >= 3 and watch["tripped"]

    healthy = llm_config(tmp_path, 60, {}, fail_fast=3)
    again = await run(healthy)
    assert again["outcome"] == "complete" and again["exit_code"] == 0
    records = read(tmp_path / "out.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 60
    assert all(r["status"] == "ok" for r in records)
    assert_counts_match(again, records)


async def test_an_outage_on_ray_pauses_admission_and_no_row_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server goes down mid-run (chat and health): the role actor's watch holds its
    calls, the driver pauses admission and says so; once the server is back, every row
    ends ok in the same run."""
    from test_watch import SwitchableServer

    srv = SwitchableServer()
    await srv.start()
    data = {
        "name": "ray-outage",
        "dataset": {"path": str(write_lines(tmp_path / "rows.jsonl", rows(40))), "id_field": "id"},
        "task": {"message": "task {{ n }}"},
        "services": {
            "llm": {"kind": "openai", "model": "m", "endpoints": [srv.url], "max_retries": 0}
        },
        "roles": {"solver": {"agent": "llm", "service": "llm"}},
        "workflow": {"kind": "sequence", "roles": ["solver"]},
        "runtime": {"kind": "ray", "max_in_flight": 4, "progress": False, "outage_timeout": 60},
        "output": {"path": str(tmp_path / "out.jsonl")},
    }

    async def outage() -> None:
        await until(lambda: len(srv.bodies) >= 8)
        srv.down = True
        await asyncio.sleep(2.0)
        srv.down = False

    flip = asyncio.ensure_future(outage())
    try:
        summary = await run(RunConfig.model_validate(data))
    finally:
        flip.cancel()
        await srv.close()
    assert summary["outcome"] == "complete" and summary["exit_code"] == 0
    records = read(tmp_path / "out.jsonl")
    assert len(records) == 40 and all(r["status"] == "ok" for r in records)
    watch = summary["ray"]["service_watch"]["llm"]
    assert watch["outages"] >= 1 and watch["paused_seconds"] > 0 and watch["tripped"] is None
    assert "admission paused" in capsys.readouterr().err


# --- Ctrl-C ------------------------------------------------------------------------------


async def test_ctrl_c_stops_the_ray_run_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    roles = {"a": {"agent": ECHO, "delay": 0.02}, "b": {"agent": ECHO}}
    config = make_config(tmp_path, rows(600), roles=roles, runtime={"max_in_flight": 8})
    out = tmp_path / "out.jsonl"
    work = asyncio.ensure_future(run(config))
    await until(lambda: len(read(out)) >= 50 or work.done())
    assert not work.done()
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; run_async handles it
    summary = await work
    assert summary["outcome"] == "interrupted" and summary["exit_code"] == 130
    assert not [n for n in ray.util.list_named_actors() if n.startswith("pf-")]
    records = read(out)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) and 50 <= len(ids) < 600
    assert summary["records_written"] == len(records)
    assert_counts_match(summary, records)

    again = await run(config)
    assert again["exit_code"] == 0
    assert again["finished_before_this_run"] == len(records)
    ids = [r["id"] for r in read(out)]
    assert len(ids) == len(set(ids)) == 600


async def test_a_driver_loop_that_dies_stops_the_run_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a confirmation cannot be handled (an undecodable reply, a bug), slots would never
    be freed: the run must stop with the error, and the same command then finishes."""
    from peerflow.runtimes.ray_driver import Ledger

    real = Ledger.report
    calls = {"n": 0}

    def broken(self: Any, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("cannot read a sink's report")
        return real(self, *args, **kw)

    monkeypatch.setattr(Ledger, "report", broken)
    echo = {"agent": ECHO, "delay": 0.01}
    config = make_config(tmp_path, rows(200), roles={"a": echo, "b": echo})
    with pytest.raises(RuntimeError, match="cannot read a sink's report"):
        await asyncio.wait_for(run(config), SAFETY)
    monkeypatch.setattr(Ledger, "report", real)
    summary = await asyncio.wait_for(run(config), SAFETY)
    assert summary["exit_code"] == 0
    records = read(Path(config.output.path))
    assert len({r["id"] for r in records}) == len(records) == 200


async def test_fail_fast_counts_failures_over_all_role_actors(tmp_path: Path) -> None:
    """Eight solver actors share 120 rows: none fails 30 times on its own, but together
    they do, and the service never answered, so the run stops (exit 3)."""
    config = llm_config(tmp_path, 120, {"error_rate": 1.0}, fail_fast=30)
    data = config.model_dump(exclude={"base_dir"})
    data["roles"] = {
        "pause": {"agent": ECHO, "delay": 0.1},
        "solver": {**data["roles"]["solver"], "num_instances": 8},
    }
    data["workflow"] = {"kind": "sequence", "roles": ["pause", "solver"]}
    summary = await run(RunConfig.model_validate(data))
    assert summary["outcome"] == "stopped" and summary["exit_code"] == 3, summary["reason"]
    assert "across the role actors" in summary["reason"]
    records = read(tmp_path / "out.jsonl")
    assert len(records) < 120
    assert all(r["error"]["kind"] == "transient" for r in records)
