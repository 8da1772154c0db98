"""Coral: a central asyncio orchestrator against peer-to-peer peerflow (the paper's B1).

Reproduces, on SIMULATED LLM replicas, the paper's headline comparison (Fig. 4, Table 1:
P2P at 6.8x the tokens/s of the Collaborative Reasoner implementation, one process
driving thousands of asyncio tasks, with the same agreement correctness). Every design
runs the same debates (the same requests, so the scripted simulator gives the same
replies) against the same simulator processes, 50 tasks in flight per replica:

- orchestrator + openai SDK (`coral_bench/orchestrator.py`): one process, one asyncio
  loop owning every task, `AsyncOpenAI`;
- orchestrator + pf client: the same orchestrator with peerflow's `OpenAIService`
  (separates the architecture from the client);
- peerflow (local) and, at `--ray-at` points, peerflow (ray): `peerflow run
  examples/coral/coral_sim.yaml` against the same replicas.

    .venv/bin/python benchmarks/bench_coral_orchestrator.py            # the full sweep
    .venv/bin/python benchmarks/bench_coral_orchestrator.py --quick    # CI-sized

The headline figure is the CPU time per LLM-backed step of each design's process: it is
what decides how many CPU cores a cluster needs per GPU, and it transfers from this small
machine; tokens/s here is bounded by two shared cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coral_bench import report
from coral_bench.peerflow_side import KNOBS
from coral_bench.sweep import PER_REPLICA, PointSpec, run_point
from coral_bench.workload import CONFIG, REPO, expand_tasks, load_workload
from nr_bench.pools import Pools, PoolSpec

FULL = [1, 2, 4, 8, 16]
QUICK = [1]
DESIGNS = "orch-openai,orch-peerflow,peerflow"


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--replicas", default=None, help="comma list (default 1,2,4,8,16)")
    p.add_argument("--quick", action="store_true", help="one small point, short window (CI)")
    p.add_argument("--designs", default=DESIGNS, help=f"comma list (default {DESIGNS})")
    p.add_argument("--ray-at", default="", help="replica counts at which to add peerflow-ray")
    p.add_argument("--warmup", type=float, default=8.0, help="s after the first request")
    p.add_argument("--window", type=float, default=20.0, help="measured seconds per point")
    p.add_argument("--time-scale", type=float, default=0.5, help="simulator time scale")
    p.add_argument("--output-median", type=float, default=330.0, help="speaker reply tokens")
    p.add_argument("--output-sigma", type=float, default=0.5)
    p.add_argument("--tasks-total", type=int, default=30000)
    p.add_argument("--keep", type=Path, default=None, help="keep outputs in this folder")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", default=None, help="print/plot earlier --json files, no run")
    return p.parse_args(argv)


def sim_spec(a: argparse.Namespace, replicas: int, w: Any) -> PoolSpec:
    """The simulated engine: the config's `coral` script, `agree_after` and seed; the
    simulator's default engine costs (6 ms a step + 0.04 ms per running sequence, 2 ms
    prefill per 1k prompt tokens) at `time_scale`; speaker replies lognormal around
    `output_median` tokens (the paper's ~2k completion tokens per trajectory), the
    extractor's a few tokens (its cap is 32); room for every sequence (no KV queueing)."""
    o = w.sim_options
    return PoolSpec(
        "llm",
        replicas,
        {
            "script": o.get("script", "coral"),
            "agree_after": o.get("agree_after", 2),
            "seed": o.get("seed", 0),
            "time_scale": a.time_scale,
            "output_median": a.output_median,
            "output_sigma": a.output_sigma,
            "max_num_seqs": 256,
            "kv_capacity": 4_000_000,
        },
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    a = _args(argv)
    if a.replot:
        rows: list[dict[str, Any]] = []
        for name in a.replot.split(","):
            rows += json.loads(Path(name).read_text())
        print_results(rows, a)
        return rows
    if a.quick:
        a.warmup, a.window = min(a.warmup, 2.0), min(a.window, 4.0)
        a.time_scale = min(a.time_scale, 0.1)
        a.tasks_total = min(a.tasks_total, 3000)
    points = [int(x) for x in a.replicas.split(",")] if a.replicas else (QUICK if a.quick else FULL)
    designs = [d.strip() for d in a.designs.split(",") if d.strip()]
    ray_at = {int(x) for x in a.ray_at.split(",") if x.strip()}
    w = load_workload(a.config)
    work = a.keep or Path(tempfile.mkdtemp(prefix="coral-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    tasks = work / "tasks.jsonl"
    expand_tasks(w, tasks, a.tasks_total)
    spec = sim_spec(a, max(points), w)
    o = spec.options
    print("=" * 100)
    print("Coral: central asyncio orchestrator vs peerflow -- SIMULATED LLM")
    print("(the simulator is a measuring instrument: engine timing + scripted replies)")
    print("=" * 100)
    print(
        f"config {w.config.relative_to(REPO)}; tasks: {w.dataset.name} repeated to {a.tasks_total}"
    )
    print(
        f"simulator: up to {spec.replicas} replicas (separate processes), script {o['script']}, "
        f"agree_after {o['agree_after']}, seed {o['seed']}, default engine costs x time_scale "
        f"{o['time_scale']}, speaker replies lognormal median {o['output_median']:g} tokens "
        f"sigma {o['output_sigma']:g} (cap 1024), extractor <= 32"
    )
    print(f"{PER_REPLICA} tasks in flight per replica, every design; points: replicas {points}")
    print(f"peerflow knobs: {KNOBS}")
    print(
        "orchestrator: one asyncio loop, a coroutine per task, semaphore = in flight; "
        "openai SDK: AsyncOpenAI per replica on one shared httpx2 pool "
        "(max_connections = max_keepalive = max(1000, 2 x in flight)), default max_retries; "
        "pf client: OpenAIService with the config's max_retries/timeout"
    )
    print(f"warmup {a.warmup:g} s, window {a.window:g} s per point")
    print(
        "NOTE: 2 shared cores; other work (e.g. profiling) may run at the same time. "
        "CPU us per LLM step is the robust figure; tokens/s is bounded by the box."
    )
    pools = Pools([spec])
    rows = []
    t_start = time.time()
    try:
        pools.start()
        for r in points:
            for design in designs + (["peerflow-ray"] if r in ray_at else []):
                ps = PointSpec(design, r, a.warmup, a.window)
                print(f"--- {report.LABELS.get(design, design)} on {r} replicas ...", flush=True)
                try:
                    row = run_point(ps, w, pools, tasks, a.tasks_total, work)
                except Exception as exc:
                    print(f"    FAILED: {type(exc).__name__}: {exc}", flush=True)
                    continue
                rows.append(row)
                print(
                    f"    {row['tokens_per_s']:,.0f} tok/s, {row['traj_per_min']:,.0f} traj/min, "
                    f"{row['llm_steps_per_s']:,.0f} LLM steps/s, CPU {row['design_cpu']:.2f} "
                    f"cores = {row['cpu_us_per_step']:,.0f} us/step, sims "
                    f"{row['sims_cpu']:.2f}, machine {100 * row['machine_busy']:.0f}%",
                    flush=True,
                )
    finally:
        pools.stop()
    print(f"\nsweep took {time.time() - t_start:.0f} s")
    print_results(rows, a)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=str))
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def print_results(rows: list[dict[str, Any]], a: argparse.Namespace) -> None:
    print(
        "\nResults (SIMULATED). tok/s, LLM steps/s: the simulators' /stats over the window; "
        "traj/min: records finished in the window; CPU us/step: the design's process "
        "(with its children) CPU seconds / LLM requests completed in the window, simulators "
        "excluded; CPU in cores; sim idle: replica time with no sequence; seqs/rep: "
        "sequences running per replica; agree corr, LLM/traj, tok/traj: over every record "
        "of the point"
    )
    order = {d: i for i, d in enumerate(report.ORDER)}
    rows = sorted(rows, key=lambda r: (r["replicas"], order.get(r["design"], 9)))
    print(report.table(rows))
    print()
    for line in report.ratios(rows) + report.agreement_check(rows):
        print(line)
    if rows and not a.no_plot:
        path = report.plot(rows, "coral_orchestrator_quick" if a.quick else "coral_orchestrator")
        print(f"plot: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
