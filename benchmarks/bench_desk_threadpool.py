"""Dual-control support desk: a tau2-bench-style thread pool against peerflow.

Reproduces, on SIMULATED LLM replicas, the paper's tau2-bench comparison (Fig. 7 and
Table 5/10: P2P at 15.4x the official runner's tokens/s, with the same reward). Both
designs run the same conversations (the same requests, so the scripted simulator gives
the same replies and rewards) against the same simulator processes:

- thread pool (`desk_bench/baseline.py`): tau2's runner design, one process, one
  thread per conversation, `requests`, tools and reward in the process;
- peerflow (`peerflow run` of the workload's config, local runtime): tools on env
  servers started here, `runtime.max_in_flight` = concurrency, defaults otherwise.

    .venv/bin/python benchmarks/bench_desk_threadpool.py             # the full sweep
    .venv/bin/python benchmarks/bench_desk_threadpool.py --quick     # CI-sized

The simulator is a measuring instrument (engine timing, scripted replies): the figures
compare the runners on a 2-core machine, never models.
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

from desk_bench import report
from desk_bench.peerflow_side import KNOBS
from desk_bench.sweep import PointSpec, run_point
from desk_bench.workload import REPO, default_paths, expand_tasks, load_workload
from nr_bench.pools import Pools, PoolSpec

FULL = [10, 100, 500, 1000, 1500, 2000]
QUICK = [4, 16]


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    d = default_paths()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=d["config"], help="the workload's config")
    p.add_argument("--domain", type=Path, default=None, help="domain folder (else the config's)")
    p.add_argument("--tasks", type=Path, default=None, help="tasks.jsonl (else the config's)")
    p.add_argument("--script", default=None, help="simulator script file.py:fn (else config's)")
    p.add_argument("--concurrency", default=None, help="comma list (default: the paper's)")
    p.add_argument("--quick", action="store_true", help="small points, short windows (CI)")
    p.add_argument("--designs", default="threadpool,peerflow", help="and/or peerflow-ray")
    p.add_argument("--ray-at", default="", help="concurrencies at which to add peerflow-ray")
    p.add_argument("--warmup", type=float, default=10.0, help="s after the first request")
    p.add_argument("--window", type=float, default=25.0, help="measured seconds per point")
    p.add_argument("--call-latency", type=float, default=0.05, help="s of sleep per tool call")
    p.add_argument("--call-cpu", type=float, default=0.002, help="s of busy CPU per tool call")
    p.add_argument("--env-servers", type=int, default=2, help="env server processes (peerflow)")
    p.add_argument("--replicas", type=int, default=2, help="simulator replicas")
    p.add_argument("--step-ms", type=float, default=80.0, help="simulator step, ms")
    p.add_argument("--max-num-seqs", type=int, default=2048, help="per simulator replica")
    p.add_argument("--tasks-total", type=int, default=0, help="task list size (0: auto)")
    p.add_argument("--keep", type=Path, default=None, help="keep outputs in this folder")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", default=None, help="print/plot earlier --json files, no run")
    return p.parse_args(argv)


def sim_spec(a: argparse.Namespace, script: str) -> PoolSpec:
    """The simulated engine: replies are the script's (a few to ~50 tokens); each decode
    step costs `step_ms` whatever the batch (step_per_seq 0.001 ms), so a call takes
    about tokens x step_ms, and thousands of sequences fit: the simulator has the
    capacity, and latency stays flat while the runners are the ones that saturate."""
    return PoolSpec(
        "llm",
        a.replicas,
        {
            "script": script,
            "time_scale": 1.0,
            "step_base_ms": a.step_ms,
            "step_per_seq_ms": 0.001,
            "prefill_ms_per_1k": 0.5,
            "max_num_seqs": a.max_num_seqs,
            "kv_capacity": 64_000_000,
            "seed": 1,
        },
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    a = _args(argv)
    if a.replot:
        return replot(a.replot, a)
    if a.quick:
        a.warmup, a.window = min(a.warmup, 3.0), min(a.window, 6.0)
        a.step_ms = min(a.step_ms, 10.0)
    points = (
        [int(x) for x in a.concurrency.split(",")]
        if a.concurrency
        else (QUICK if a.quick else FULL)
    )
    designs = [d.strip() for d in a.designs.split(",") if d.strip()]
    ray_at = {int(x) for x in a.ray_at.split(",") if x.strip()}
    w = load_workload(a.config, domain=a.domain, tasks=a.tasks, script=a.script)
    work = a.keep or Path(tempfile.mkdtemp(prefix="desk-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    total = a.tasks_total or (2 * max(points) + (2000 if a.quick else 8000))
    tasks = work / "tasks.jsonl"
    expand_tasks(w.tasks_path, tasks, total)
    spec = sim_spec(a, w.script)
    print("=" * 100)
    print("Support desk, dual control: thread pool (tau2-style) vs peerflow -- SIMULATED LLM")
    print("(the simulator is a measuring instrument: engine timing + scripted replies)")
    print("=" * 100)
    print(f"config {w.config.relative_to(REPO) if w.config.is_relative_to(REPO) else w.config}")
    print(f"domain {w.domain_path}; tasks {w.tasks_path} repeated to {total} ({tasks})")
    print(f"simulator script {w.script}")
    o = spec.options
    print(
        f"simulator: {spec.replicas} replicas, step {o['step_base_ms']} ms + "
        f"{o['step_per_seq_ms']} ms/seq, prefill {o['prefill_ms_per_1k']} ms/1k tok, "
        f"max_num_seqs {o['max_num_seqs']}, time_scale {o['time_scale']}"
    )
    print(
        f"tool cost per call (both designs): {a.call_latency * 1000:.0f} ms sleep + "
        f"{a.call_cpu * 1000:.1f} ms busy CPU; peerflow: {a.env_servers} env servers"
    )
    print(f"peerflow knobs: {KNOBS}; thread pool: max_workers = concurrency")
    print(f"points: {points}; warmup {a.warmup:g} s, window {a.window:g} s each")
    pools = Pools([spec])
    rows: list[dict[str, Any]] = []
    t_start = time.time()
    try:
        pools.start()
        for c in points:
            for design in designs + (["peerflow-ray"] if c in ray_at else []):
                ps = PointSpec(
                    design, c, a.warmup, a.window, a.call_latency, a.call_cpu, a.env_servers
                )
                print(f"--- {report.LABELS.get(design, design)} at {c} ...", flush=True)
                try:
                    r = run_point(ps, w, pools, tasks, work)
                except Exception as exc:
                    print(f"    FAILED: {type(exc).__name__}: {exc}", flush=True)
                    continue
                rows.append(r)
                print(
                    f"    {r['traj_per_min']:.0f} traj/min, {r['tokens_per_s']:,.0f} tok/s, "
                    f"{r['llm_requests_per_s']:.0f} LLM req/s, CPU proc {r['design_cpu']:.2f} "
                    f"(+env {r['with_env_cpu']:.2f}), sims {r['sims_cpu']:.2f}, machine "
                    f"{100 * r['machine_busy']:.0f}%, threads {r['peak_threads']}, in flight "
                    f"{r['peak_in_flight']}",
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
    """The results table, the ratio, the reward check, message sizes and the plot."""
    print(
        "\nResults (SIMULATED). tok/s, LLM req/s: the simulators' /stats over the window; "
        "traj/min: records finished in the window ((by calls): LLM req/s / LLM calls per "
        "trajectory); CPU in cores (proc: the design's "
        "process; +env: with the env servers, where peerflow's tools run); ms CPU/traj: "
        "the design's process per finished trajectory; sim idle: replica time with no "
        "sequence; seqs/rep: sequences running per replica"
    )
    mean = report.calls_rate(rows)
    print(
        f"(by calls) uses {mean:.2f} LLM calls per trajectory, the mean over every task id finished"
    )
    print(report.table(rows))
    print()
    for line in report.ratios(rows) + report.reward_check(rows):
        print(line)
    pf = [r for r in rows if r["design"] == "peerflow" and r["records"]]
    if pf:
        sizes = report.message_sizes(Path(pf[-1]["out"]))
        print(
            "\nMessage sizes in peerflow's records (each turn's text, tool-call arguments, "
            "tool result), vs the paper's Fig. 8:"
        )
        print(report.size_table(sizes))
    if rows and not a.no_plot:
        path = report.plot(rows, "desk_threadpool_quick" if a.quick else "desk_threadpool")
        print(f"plot: {path.relative_to(REPO)}")


def replot(files: str, a: argparse.Namespace) -> list[dict[str, Any]]:
    """Print and plot the figures of earlier runs (`--json` files, outputs kept with
    `--keep`), e.g. a sweep whose last points were re-run on their own."""
    from desk_bench.sweep import read_records

    rows: list[dict[str, Any]] = []
    for name in files.split(","):
        rows += json.loads(Path(name).read_text())
    for r in rows:
        if "llm_calls_by_id" not in r and Path(r["out"]).is_file():
            recs = [x for x in read_records(Path(r["out"])) if x.get("reward") is not None]
            r["llm_calls_by_id"] = {x["id"]: x["llm_calls"] for x in recs}
    order = {"threadpool": 0, "peerflow": 1, "peerflow-ray": 2}
    rows.sort(key=lambda r: (r["concurrency"], order.get(r["design"], 9)))
    print_results(rows, a)
    return rows


if __name__ == "__main__":
    main()
