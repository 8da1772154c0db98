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
from test_conformance import RUNTIMES, make_config, run

from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.testing import max_concurrency

ECHO = "peerflow.testing:Echo"


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


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
