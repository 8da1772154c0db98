"""The overhead benchmark's split of a task's time, and a tiny real run of it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_overhead

from peerflow.message import Step
from peerflow.sink import OutputRecord


def record(created: float, steps: list[tuple[float, float]], finished: float) -> OutputRecord:
    history = [Step(role="task", content="q", started=created)]
    history += [Step(role="a", content="x", started=s, latency=d) for s, d in steps]
    return OutputRecord(
        id="t", status="ok", row={}, history=history, created=created, finished=finished
    )


def test_a_task_splits_into_admission_agents_and_queued() -> None:
    # admitted at 100, first step at 101 for 2 s, a 1 s gap, a 4 s step, written 2 s later
    shares = bench_overhead.task_shares(record(100.0, [(101.0, 2.0), (104.0, 4.0)], 110.0))
    assert shares == pytest.approx({"e2e": 10.0, "agents": 0.6, "admission": 0.1, "queued": 0.3})
    assert bench_overhead.task_shares(record(100.0, [], 101.0)) is None


def test_the_table_reports_all_tasks_and_the_slowest_tenth() -> None:
    shares = [
        {"e2e": float(i), "agents": 0.9, "queued": 0.05, "admission": 0.05} for i in range(1, 21)
    ]
    shares[-1] = {"e2e": 100.0, "agents": 0.5, "queued": 0.5, "admission": 0.0}
    table = bench_overhead.overhead_table(shares)
    assert table["all"]["agents"][0] == pytest.approx(90.0)
    assert table["slowest_10pct"]["queued"][2] > 40  # the slow task dominates its tenth


def test_a_tiny_dummy_run_accounts_for_every_task(tmp_path: Path) -> None:
    args = argparse.Namespace(
        dummy_rows=300, sim_rows=0, time_scale=1.0, max_in_flight=32, sample=20
    )
    r = bench_overhead.measure("dummy", "local", args)
    assert r["tasks"] == 300 and r["max_in_flight"] == 32
    for part in ("agents", "queued", "admission"):
        median, p90, p99 = r["table"]["all"][part]
        assert 0 <= median <= p90 <= p99 <= 100
    total = sum(r["table"]["all"][p][0] for p in ("agents", "queued", "admission"))
    assert total == pytest.approx(100, abs=15)  # medians of parts need not add up exactly
    assert r["messages_per_s"] > 0 and r["orchestration_bytes_per_s"] > 0
