"""The Coral benchmark's designs do the same work: same requests, same agreement.

Real processes and real HTTP: a simulator with the `coral` script, `peerflow run` of the
shipped config, the central orchestrator with both clients (openai SDK and peerflow's),
and a recording proxy in front of the simulator that keeps every request body.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from coral_bench import peerflow_side, report  # noqa: E402
from coral_bench.orchestrator import Orchestrator, make_client  # noqa: E402
from coral_bench.sweep import read_records  # noqa: E402
from coral_bench.workload import expand_tasks, iter_rows, load_workload  # noqa: E402
from recording_proxy import Recorder, canon, simulator  # noqa: E402


@pytest.fixture
def sim():
    args = ["--script", "coral", "--agree-after", "2", "--time-scale", "0"]
    args += ["--output-median", "330", "--output-sigma", "0.5"]
    with simulator(*args) as url:
        yield url


def _outcome(path: Path) -> dict[str, tuple]:
    return {
        r["id"]: (
            r["status"],
            r["agreement"],
            r["agreement_correctness"],
            r["turns"],
            r["llm_calls"],
            r["completion_tokens"],
        )
        for r in read_records(path)
    }


def test_all_designs_send_identical_requests_and_agree_equally(sim, tmp_path):
    pytest.importorskip("openai")
    w = load_workload()
    tasks = tmp_path / "tasks.jsonl"
    n = 10
    expand_tasks(w, tasks, n)
    rec = Recorder(sim)
    bodies: dict[str, list[dict]] = {}
    try:
        out = tmp_path / "peerflow.jsonl"
        over = peerflow_side.overrides(w, tasks, n, out, [rec.url], 4)
        proc = peerflow_side.launch(w, over, tmp_path / "peerflow.log")
        assert proc.wait(timeout=120) == 0, (tmp_path / "peerflow.log").read_text()[-2000:]
        bodies["peerflow"] = rec.bodies[:]
        for kind in ("openai", "peerflow-client"):
            rec.bodies.clear()
            client = make_client(kind.removesuffix("-client"), [rec.url], 4, w)
            orch = Orchestrator(w, client, out=tmp_path / f"{kind}.jsonl")
            assert asyncio.run(orch.run_all(iter_rows(tasks), 4)) == n
            assert orch.failed == 0
            bodies[kind] = rec.bodies[:]
    finally:
        rec.close()
    ref = Counter(map(canon, bodies["peerflow"]))
    assert len(bodies["peerflow"]) > 3 * n  # several turns per debate
    for kind in ("openai", "peerflow-client"):
        assert Counter(map(canon, bodies[kind])) == ref, kind
    # The histories grow: some request has a speaker's own earlier turn in it.
    assert any(m["role"] == "assistant" for b in bodies["openai"] for m in b["messages"])
    a = _outcome(out)
    assert len(a) == n and all(v[0] == "ok" for v in a.values())
    assert _outcome(tmp_path / "openai.jsonl") == a
    assert _outcome(tmp_path / "peerflow-client.jsonl") == a
    # Not trivial: debates of different lengths.
    assert len({v[3] for v in a.values()}) > 1


def test_tiny_sweep_point_of_each_design(tmp_path):
    pytest.importorskip("openai")
    import bench_coral_orchestrator as bench

    rows = bench.main(
        [
            "--quick",
            "--replicas",
            "1",
            "--warmup",
            "1",
            "--window",
            "2.5",
            "--tasks-total",
            "1000",
            "--no-plot",
            "--keep",
            str(tmp_path / "work"),
        ]
    )
    assert [r["design"] for r in rows] == ["orch-openai", "orch-peerflow", "peerflow"]
    for r in rows:
        assert r["concurrency"] == 50
        assert r["tokens_per_s"] > 0 and r["llm_steps"] > 0
        assert r["cpu_us_per_step"] > 0 and r["records"] > 0 and r["failed"] == 0
    lines = report.agreement_check(rows)
    assert len(lines) == 2 and all(line.endswith("EQUAL") for line in lines), lines
