"""The scale benchmark end to end, tiny: real simulator processes, real HTTP, real output.

`bench_scale.main` runs the shipped Coral config with 300 tasks in flight against a
simulator peerflow starts itself, samples it a few times a second, and writes its time
series and chart. The assertions are about the measurement being sane, never about speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_scale  # noqa: E402
from scale_bench import analysis, probe  # noqa: E402

IN_FLIGHT = 300
ROWS = 600


def test_tiny_scale_run_samples_a_sane_time_series(tmp_path):
    series_path = tmp_path / "series.json"
    chart = tmp_path / "chart.png"
    out = tmp_path / "out"
    args = ["--in-flight", str(IN_FLIGHT), "--rows", str(ROWS), "--time-scale", "0.05"]
    args += ["--interval", "0.2", "--json", str(series_path)]
    # matplotlib comes with the `bench` extra, not the test install: the chart when it can
    plotting = importlib.util.find_spec("matplotlib") is not None
    args += ["--plot", str(chart)] if plotting else ["--no-plot"]
    result = bench_scale.main([*args, "--out", str(out)])

    data = json.loads(series_path.read_text())
    assert data["plan"]["in_flight"] == IN_FLIGHT and data["plan"]["rows"] == ROWS
    # Sized to the tasks: one replica whose batch holds every request in flight.
    assert data["plan"]["replicas"] == 1 and data["plan"]["max_num_seqs"] == IN_FLIGHT
    assert data["outcome"] == "complete"
    samples, series = data["samples"], data["series"]
    assert len(samples) >= 5 and len(series) == len(samples) - 1
    assert all(s["rss"] > 0 for s in samples)
    assert data["peak_rss"] >= max(s["rss"] for s in samples) > 0
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    # The simulator was found and polled, and its fractions are fractions.
    assert any(s["sims"] for s in samples)
    fractions = [r[k] for r in series for k in ("busy", "occupancy") if r[k] is not None]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions)
    assert max(r["occupancy"] or 0 for r in series) > 0.5  # the engine did work
    # In flight: the runtime's own count reached the target and never exceeded it.
    levels = [s["in_flight"] for s in samples if s["in_flight"] is not None]
    assert max(levels) == IN_FLIGHT == data["in_flight_reached"]
    finished = [s["finished"] for s in samples if s["finished"] is not None]
    assert finished == sorted(finished)
    # Steady state existed; its means are fractions (up to the engine clock's lag).
    steady = data["steady"]
    assert steady is not None and steady["span"] > 0
    assert 0.0 < steady["occupancy"] <= 1.01 and 0.0 < steady["busy"] <= 1.01
    first = next(s for s in samples if s["t"] >= steady["start"])
    assert first["in_flight"] >= analysis.STEADY_FRACTION * IN_FLIGHT
    assert steady["in_flight_mean"] >= 0.9 * IN_FLIGHT
    # Every row ended as exactly one record, read from the output file itself.
    records = [json.loads(line) for line in (out / "coral_scale.jsonl").read_text().splitlines()]
    ids = Counter(r["id"] for r in records)
    assert len(ids) == ROWS and set(ids.values()) == {1}
    assert data["records"] == {"records": ROWS, "unique_ids": ROWS, "by_status": {"ok": ROWS}}
    # The simulators' counters match the records' LLM steps (the last poll may precede the
    # last few replies: the replicas exit with the run).
    llm_steps = sum(1 for r in records for step in r["history"] if step.get("usage"))
    assert 0.9 * llm_steps <= data["llm_steps"] <= llm_steps
    assert not plotting or chart.stat().st_size > 10_000
    assert result["records"] == data["records"]
    # No simulator outlived the run.
    assert probe.sim_children(os.getpid()) == {}


def test_sizing_follows_the_connection_budget():
    # Below the connection cap: one replica, batch = tasks.
    assert bench_scale.size_sims(300, 1024, 20_000) == (1, 300)
    # 50,000 tasks, 1,024 connections per replica, 20,000 descriptors: 17 full replicas.
    assert bench_scale.size_sims(50_000, 1024, 20_000) == (17, 1024)
    # With descriptors to spare, enough replicas for every task.
    assert bench_scale.size_sims(50_000, 1024, 1_000_000) == (49, 1021)


def test_steady_window_spans_target_to_admission_end():
    def s(t, in_flight, finished):
        return {"t": t, "in_flight": in_flight, "finished": finished}

    samples = [s(0, None, None), s(1, 50, 0), s(2, 98, 0), s(3, 100, 10), s(4, 100, 100)]
    samples += [s(5, 60, 140), s(6, 0, 200)]
    assert analysis.steady_window(samples, 100, 200) == (2, 4)
    assert analysis.steady_window(samples, 100, 98) is None  # every row admitted at once
    assert analysis.steady_window(samples, 1000, 200) is None  # target never reached


def test_prometheus_text_is_summed_over_labels():
    text = (
        "# HELP peerflow_steps_total Agent steps run\n"
        'peerflow_steps_total{role="teacher"} 3.0\n'
        'peerflow_steps_total{role="student"} 4.0\n'
        "peerflow_in_flight_tasks 12.0\n"
    )
    assert probe.parse_prometheus(text) == {
        "peerflow_steps_total": 7.0,
        "peerflow_in_flight_tasks": 12.0,
    }
