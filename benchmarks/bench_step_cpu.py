"""CPU per LLM-backed step of peerflow's process on Coral, with each HTTP client, one run.

The simulated replicas run as separate processes (their CPU is not counted); peerflow
runs the shipped Coral config in this process, on uvloop as `peerflow run` does, with
`services.llm` pointed at them. CPU is this process's (user + system) over the run,
divided by the LLM requests made (teacher, student and extractor steps), start-up
included. `lean` is the default client for http:// endpoints; `aiohttp` is the one it
replaced.

    python benchmarks/bench_step_cpu.py --rows 3000 --repeat 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nr_bench.pools import Pools, PoolSpec

from peerflow.config import load_config
from peerflow.run import run_async
from peerflow.services.openai_client import OpenAIService

CORAL = Path(__file__).resolve().parent.parent / "examples" / "coral" / "coral_sim.yaml"
LLM_ROLES = ("teacher", "student", "extractor")


def one(endpoints: list[str], rows: int, in_flight: int, client: str) -> tuple[float, int]:
    OpenAIService.lean_http = client == "lean"
    with tempfile.TemporaryDirectory() as tmp:
        svc = f"{{kind: openai, model: sim, endpoints: [{','.join(endpoints)}]}}"
        config = load_config(
            CORAL,
            [
                f"dataset.limit={rows}",
                f"services.llm={svc}",
                f"runtime.max_in_flight={in_flight}",
                f"output.path={tmp}/out.jsonl",
            ],
        )
        cpu = time.process_time()
        summary = uvloop.run(run_async(config, progress=False))
        cpu = time.process_time() - cpu
    assert summary["by_status"] == {"ok": rows}, summary["by_status"]
    return cpu, sum(summary["roles"][r]["steps"] for r in LLM_ROLES)


def coral_sims(replicas: int, time_scale: float, output_median: float) -> Pools:
    """Started simulator replicas playing Coral, each in its own process."""
    opts = {
        "script": "coral",
        "agree_after": 2,
        "time_scale": time_scale,
        "seed": 0,
        "output_median": output_median,  # 330: the paper's ~2k tokens a trajectory
        "output_sigma": 0.5,
        "max_num_seqs": 256,
        "kv_capacity": 4_000_000,  # room for every sequence: no KV queueing
    }
    pools = Pools([PoolSpec("llm", replicas, opts)])
    pools.start()
    return pools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--output-median", type=float, default=330, help="speaker tokens")
    parser.add_argument("--time-scale", type=float, default=0.02, help="the simulators'")
    parser.add_argument("--clients", nargs="+", default=["aiohttp", "lean"])
    args = parser.parse_args()
    pools = coral_sims(args.replicas, args.time_scale, args.output_median)
    print(
        f"Coral, SIMULATED LLM ({args.replicas} replicas in their own processes), "
        f"{args.rows} rows, max_in_flight {args.in_flight}; CPU of peerflow's process only"
    )
    best: dict[str, float] = {}
    try:
        for _ in range(args.repeat):
            for client in args.clients:
                cpu, steps = one(pools.endpoints["llm"], args.rows, args.in_flight, client)
                per = cpu / steps * 1e6
                best[client] = min(best.get(client, per), per)
                print(f"  {client:8} {steps} LLM steps, CPU {cpu:.2f} s: {per:.0f} us per step")
    finally:
        pools.stop()
    if {"lean", "aiohttp"} <= best.keys():
        print(
            f"lean / aiohttp, best of {args.repeat}: {best['lean']:.0f} / {best['aiohttp']:.0f} us"
        )


if __name__ == "__main__":
    main()
