"""What only the Ray runtime has: placement errors, crash recovery, offloading, shards, metrics.

The runtime-agnostic behaviour (workflow semantics, exactly-once, resume) is covered for
Ray by tests/test_conformance.py; these tests check the Ray-specific promises on one small
local Ray shared by the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ray = pytest.importorskip("ray")

from peerflow.config import RunConfig, load_config  # noqa: E402
from peerflow.merge import manifest_path, merge_shards, read_manifest  # noqa: E402
from peerflow.pipeline import Pipeline  # noqa: E402
from peerflow.run import run_async  # noqa: E402
from peerflow.runtimes.ray import PlacementError  # noqa: E402
from peerflow.testing import descendant_pids, killing_actors  # noqa: E402

ECHO = "peerflow.testing:Echo"
ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("ray_cluster")


def write_rows(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "n": i}) + "\n")
    return path


def config_data(
    tmp: Path,
    *,
    rows: int = 20,
    roles: dict[str, Any] | None = None,
    workflow: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "ray-test",
        "dataset": {"path": str(write_rows(tmp / "rows.jsonl", rows)), "id_field": "id"},
        "task": {"message": "task {{ n }}"},
        "roles": roles or {"a": {"agent": ECHO}, "b": {"agent": ECHO}},
        "workflow": workflow or {"kind": "sequence", "roles": ["a", "b"]},
        "runtime": {"kind": "ray", "max_in_flight": 16, "progress": False, **(runtime or {})},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return data


async def run(config: RunConfig) -> dict[str, Any]:
    return await run_async(config, pipeline=Pipeline(config), progress=False)


def records(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


async def test_unplaceable_roles_fail_fast_with_a_clear_error(tmp_path: Path) -> None:
    roles = {
        "a": {"agent": ECHO, "resources": {"GPU": 1}},
        "b": {"agent": ECHO, "resources": {"agent_node": 1}},
    }
    config = RunConfig.model_validate(config_data(tmp_path, roles=roles))
    t0 = time.monotonic()
    with pytest.raises(PlacementError) as info:
        await run(config)
    assert time.monotonic() - t0 < 10
    text = str(info.value)
    assert "roles.a.resources" in text and "GPU" in text
    assert "roles.b.resources" in text and "agent_node" in text
    assert not (tmp_path / "out.jsonl").exists() or not records(tmp_path / "out.jsonl")

    # Each actor fits a node, but all of them together do not.
    roles = {
        "a": {"agent": ECHO, "resources": {"CPU": 1}, "num_instances": 3},
        "b": {"agent": ECHO},
    }
    config = RunConfig.model_validate(config_data(tmp_path, roles=roles))
    with pytest.raises(PlacementError, match=r"CPU=3 in total \(a 1 x 3\)"):
        await run(config)


async def test_killed_agent_actors_lose_no_row_and_duplicate_none(tmp_path: Path) -> None:
    echo = {"agent": ECHO, "delay": 0.005, "num_instances": 2}
    data = config_data(
        tmp_path,
        rows=600,
        roles={"a": echo, "b": echo, "c": echo},
        workflow={"kind": "loop", "roles": ["a", "b", "c"], "max_turns": 2},
        runtime={"max_in_flight": 48},
    )
    config = RunConfig.model_validate(data)
    async with killing_actors(["-r:"], every=0.7, seed=3) as killed:
        summary = await run(config)
    kills = len(killed)
    out = records(tmp_path / "out.jsonl")
    ids = [r["id"] for r in out]
    assert kills >= 2
    assert len(ids) == len(set(ids)) == 600
    assert all(r["status"] == "ok" for r in out)
    assert all([s["role"] for s in r["history"]] == ["task"] + ["a", "b", "c"] * 2 for r in out)
    assert summary["ray"]["restarts"], "no restart was observed"


async def test_offloaded_fields_come_back_intact(tmp_path: Path) -> None:
    long = "x" * 3000
    roles = {"a": {"agent": "function", "function": "builtins:repr"}, "b": {"agent": ECHO}}
    results = {}
    for threshold in (None, 512):
        tmp = tmp_path / str(threshold)
        tmp.mkdir()
        data = config_data(
            tmp,
            rows=30,
            roles=roles,
            runtime={"offload_threshold": threshold},
            task={"message": long + " {{ n }}"},
        )
        summary = await run(RunConfig.model_validate(data))
        out = sorted(records(tmp / "out.jsonl"), key=lambda r: r["id"])
        results[threshold] = (summary, out)
        for r in out:
            assert r["history"][0]["content"] == f"{long} {r['row']['n']}"
            assert long in r["history"][1]["content"]  # agent a saw the text, not a marker
            assert "\x00" not in json.dumps(r["history"])
    off, on = results[None][0]["ray"], results[512][0]["ray"]
    assert off["offloaded_fields"] == 0 and on["offloaded_fields"] >= 30
    assert on["inline_bytes_per_hop"] < off["inline_bytes_per_hop"] / 3

    def essence(out: list[dict[str, Any]]) -> list[Any]:
        # Step a's text is a repr with timestamps; the task text and b's answer are not.
        return [
            [(s["role"], s.get("content") if s["role"] != "a" else None) for s in r["history"]]
            for r in out
        ]

    assert essence(results[None][1]) == essence(results[512][1])


async def test_sharded_output_resume_and_merge(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    runtime = {"partitions": 2, "sinks": 2}
    first = config_data(tmp_path, rows=80, runtime=runtime, dataset={"limit": 50})
    await run(RunConfig.model_validate(first))
    shards = read_manifest(out)
    assert len(shards) == 4 and all(p.exists() for p in shards)
    assert not out.exists() or not records(out)
    ids = [r["id"] for p in shards for r in records(p)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(50))

    second = config_data(tmp_path, rows=80, runtime=runtime)
    summary = await run(RunConfig.model_validate(second))
    assert summary["records_written"] == 30
    assert summary["total_records_in_output"] == 80

    result = merge_shards(out)
    merged = [r["id"] for r in records(out)]
    assert sorted(merged) == sorted(f"r{i}" for i in range(80)) and result.records == 80
    assert not any(p.exists() for p in shards)
    assert json.loads(manifest_path(out).read_text())["shards"] == ["out.jsonl"]


async def test_metrics_are_served_while_the_run_goes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    roles = {"a": {"agent": ECHO, "delay": 0.05}, "b": {"agent": ECHO}}
    data = config_data(
        tmp_path, rows=400, roles=roles, runtime={"metrics_port": port, "max_in_flight": 8}
    )
    task = asyncio.ensure_future(run(RunConfig.model_validate(data)))
    text = ""
    while not task.done():
        await asyncio.sleep(0.5)
        try:
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            )
        except OSError:
            continue
        if 'peerflow_messages_in_total{role="a"}' in text:
            break
    summary = await task
    assert 'peerflow_messages_in_total{role="a"}' in text
    assert "peerflow_in_flight_tasks" in text and "peerflow_queue_depth" in text
    assert summary["ray"]["roles"]["a"]["in"] >= 400
    assert summary["roles"]["a"]["steps"] == 400
    assert summary["roles"]["a"]["latency_seconds"]["p50"] > 0.04


def test_killed_driver_resumes_with_one_record_per_id(tmp_path: Path) -> None:
    roles = {"a": {"agent": ECHO, "delay": 0.01}, "b": {"agent": ECHO}}
    data = config_data(tmp_path, rows=600, roles=roles, runtime={"max_in_flight": 8})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "peerflow.cli", "run", str(path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    family: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        family |= descendant_pids(proc.pid)
        if out.exists() and out.read_bytes().count(b"\n") >= 50:  # a last line may be torn
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    for pid in family:  # Ray's node agents outlive a SIGKILLed driver; end the ones it started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    before = out.read_bytes().count(b"\n")  # actors may have written a bit after the driver
    assert 50 <= before < 600
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    ids = [r["id"] for r in records(out)]
    assert len(ids) == len(set(ids)) == 600
    # The combined file holds the newest run's summary at its top level, the output as it
    # stands under `combined`, and the runs that wrote one (the killed run wrote none).
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["finished_before_this_run"] == before
    assert summary["records_written"] == 600 - before
    assert summary["combined"]["records"] == 600
    assert [r["records_written"] for r in summary["runs"]] == [600 - before]
    (own,) = (tmp_path / "out.jsonl.runs").glob("*.json")
    assert json.loads(own.read_text())["finished_before_this_run"] == before


@pytest.mark.slow
async def test_coral_on_the_simulator_gives_the_same_rows_as_local(tmp_path: Path) -> None:
    outputs = {}
    for kind in ("local", "ray"):
        out = tmp_path / f"{kind}.jsonl"
        config = load_config(
            ROOT / "examples" / "coral" / "coral_sim.yaml",
            [
                f"runtime.kind={kind}",
                "runtime.progress=false",
                "dataset.limit=60",
                f"output.path={out}",
                "runtime.max_in_flight=32",
            ],
        )
        await run(config)
        outputs[kind] = {
            r["id"]: [(s["role"], s.get("content"), s.get("data")) for s in r["history"]]
            for r in records(out)
        }
    assert len(outputs["local"]) == 60
    assert outputs["local"] == outputs["ray"]


async def test_a_long_input_document_is_offloaded_once_and_read_at_every_step(
    tmp_path: Path,
) -> None:
    doc = "The derivative of x squared is two x, as the limit of the difference quotient shows. "
    rows = tmp_path / "docs.jsonl"
    with open(rows, "w") as f:
        for i in range(24):
            f.write(json.dumps({"id": f"d{i}", "text": doc * 40 + str(i)}) + "\n")
    lang = {"agent": "language", "threshold": 0.5}
    data = config_data(
        tmp_path,
        roles={"a": lang, "b": lang, "c": {"agent": ECHO}},
        workflow={"kind": "sequence", "roles": ["a", "b", "c"]},
        runtime={"offload_threshold": 1024},
        dataset={"path": str(rows), "fields": {"text": "text"}},
        task={"message": None},
    )
    summary = await run(RunConfig.model_validate(data))
    out = records(tmp_path / "out.jsonl")
    assert len(out) == 24 and all(r["status"] == "ok" for r in out)
    for r in out:
        n = r["id"][1:]
        assert r["row"]["text"] == doc * 40 + n  # the record holds the document itself
        # both language steps read the document (a missing text would fail the step)
        assert [s["data"]["lang"] for s in r["history"][:2]] == ["en", "en"]
    ray_stats = summary["ray"]
    # row and prompt variable share one stored copy: one value per task, put once
    assert ray_stats["offloaded_fields"] == 24
    assert ray_stats["offloaded_bytes"] >= 24 * len(doc) * 40
