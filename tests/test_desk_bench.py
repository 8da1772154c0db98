"""The support-desk benchmark's designs do the same work: same requests, same rewards.

Real processes and real HTTP: a simulator, an env server, `peerflow run`, the thread-pool
runner, and a recording proxy in front of the simulator that keeps every request body.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from desk_bench import peerflow_side  # noqa: E402
from desk_bench.baseline import Runner  # noqa: E402
from desk_bench.sweep import read_records  # noqa: E402
from desk_bench.workload import MINI, SUPPORT, expand_tasks, load_workload, read_tasks  # noqa: E402
from recording_proxy import Recorder, canon, simulator  # noqa: E402

SUPPORT_CONFIG = SUPPORT / "support_desk_sim.yaml"


@pytest.fixture
def sim(request):
    script = request.param
    with simulator("--script", script, "--time-scale", "0") as url:
        yield url


@pytest.mark.parametrize(
    "sim", [str(SUPPORT / "sim_agent.py") + ":reply"], indirect=True, ids=["support_desk"]
)
def test_both_designs_send_identical_requests_and_get_equal_rewards(sim, tmp_path):
    if not SUPPORT_CONFIG.is_file():
        pytest.skip("examples/support_desk is not there yet")
    w = load_workload(SUPPORT_CONFIG)
    base = read_tasks(w.tasks_path)
    tasks = tmp_path / "tasks.jsonl"
    expand_tasks(w.tasks_path, tasks, min(len(base), 12))
    rec = Recorder(sim)
    envs = peerflow_side.EnvServers(w.domain_path, 1, 64, 0.0, 0.0, tmp_path / "envs")
    try:
        # peerflow, as the sweep runs it: `peerflow run` against the proxy and env server.
        envs.start()
        out = tmp_path / "peerflow.jsonl"
        over = peerflow_side.overrides(w, tasks, out, [rec.url], envs.urls, 4)
        proc = peerflow_side.launch(w, over, tmp_path / "peerflow.log")
        assert proc.wait(timeout=120) == 0, (tmp_path / "peerflow.log").read_text()[-2000:]
        from_peerflow = rec.bodies[:]
        rec.bodies.clear()
        # The thread pool, on the same tasks.
        runner = Runner(w, [rec.url], out=tmp_path / "threadpool.jsonl")
        assert runner.run_all(read_tasks(tasks), 4) == len(read_tasks(tasks))
        from_threads = rec.bodies[:]
    finally:
        envs.stop()
        rec.close()
    assert from_peerflow, "peerflow sent no request"
    assert Counter(map(canon, from_threads)) == Counter(map(canon, from_peerflow))
    assert {b["seed"] for b in from_threads} == {b["seed"] for b in from_peerflow}
    a = {r["id"]: r for r in read_records(tmp_path / "threadpool.jsonl")}
    b = {r["id"]: r for r in read_records(out)}
    assert set(a) == set(b) and len(a) == 12
    for i in a:
        assert (a[i]["reward"], a[i]["termination"], a[i]["llm_calls"], a[i]["tool_calls"]) == (
            b[i]["reward"],
            b[i]["termination"],
            b[i]["llm_calls"],
            b[i]["tool_calls"],
        ), i
    # The sample is not trivial: some conversation failed a tool call, some reward is 0.
    assert any(r["tool_calls"] for r in a.values())
    assert len({r["reward"] for r in a.values()}) > 1


def test_tiny_sweep_point_runs_both_designs(tmp_path):
    import bench_desk_threadpool as bench

    rows = bench.main(
        [
            "--config",
            str(MINI / "desk.yaml"),
            "--quick",
            "--concurrency",
            "6",
            "--warmup",
            "1",
            "--window",
            "3",
            "--no-plot",
            "--keep",
            str(tmp_path / "work"),
        ]
    )
    assert [r["design"] for r in rows] == ["threadpool", "peerflow"]
    for r in rows:
        assert r["trajectories_window"] > 0 and r["tokens_per_s"] > 0
        assert r["mean_reward"] == 1.0  # the mini desk's script solves every task
        # peerflow counts live environments over 2 env servers read one after the other: a
        # task ending on one while the next starts on the other can be seen twice.
        assert r["peak_in_flight"] <= 6 + (1 if r["design"] == "peerflow" else 0)
    assert rows[0]["peak_threads"] >= 6  # a thread per conversation
