"""Throughput of the Ray runtime when a worker node is lost mid-run, next to a clean run.

A multi-node Ray on this one machine (Ray's own `ray.cluster_utils.Cluster`: a head node
with the driver and the sinks, and zero-CPU worker nodes labelled `pool`, each its own
raylet and object store). The workload: Echo agents (`peerflow.testing:Echo`, a small
async delay per step, deterministic texts) in a loop of a few roles, every role on the
`pool` label, `max_in_flight` at its default. It runs twice on the same cluster:

- clean: one pool node hosts every role actor for the whole run;
- node loss: once a third of the records are written, that pool node is removed with
  `allow_graceful=False` (its raylet, object store and actors SIGKILLed) and a
  replacement pool node is added, where Ray restarts the lost actors once it has noticed
  the loss (its GCS health checks: about 16 s with Ray's defaults; see
  `--health-check-period-ms`).

Prints, for each run, rows/s and steps/s (wall time, actor start-up included, and from
the first admission to the last record), the loss run's ratio to the clean one, whether
each run wrote exactly one ok record per row, and how many rows' records differ from the
clean run's (texts and data, not timings).

    python benchmarks/ray_node_loss.py --rows 3000
    python benchmarks/ray_node_loss.py --rows 3000 --health-check-period-ms 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from peerflow.config import load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run_async

STORE_BYTES = 300 * 1024 * 1024  # object store per node: several share this machine's RAM
POOL = "pool"  # the label of the worker nodes that host the role actors


def write_config(tmp: Path, args: argparse.Namespace) -> Path:
    """The workload as a YAML file, so that `--set` overrides apply as on the command line."""
    rows = tmp / "rows.jsonl"
    with open(rows, "w") as f:
        for i in range(args.rows):
            f.write(json.dumps({"id": f"r{i}", "n": i}) + "\n")
    roles = [chr(ord("a") + i) for i in range(args.roles)]
    echo = {
        "agent": "peerflow.testing:Echo",
        "delay": args.delay,
        "num_instances": args.instances,
        "resources": {POOL: 0.01},
    }
    config = {
        "name": "ray-node-loss",
        "dataset": {"path": str(rows), "id_field": "id"},
        "task": {"message": "task {{ n }}"},
        "roles": {role: echo for role in roles},
        "workflow": {"kind": "loop", "roles": roles, "max_turns": args.turns},
        "runtime": {"kind": "ray", "progress": False},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    path = tmp / "run.json"  # JSON is YAML
    path.write_text(json.dumps(config))
    return path


def read(out: Path) -> list[dict[str, Any]]:
    with open(out) as f:
        return [json.loads(line) for line in f if line.strip()]


def complete_lines(out: Path) -> int:
    """Records written so far, counted while a sink may be appending (a last line may be torn)."""
    return out.read_bytes().count(b"\n") if out.exists() else 0


def essence(record: dict[str, Any]) -> Any:
    steps = [(s["role"], s.get("content"), s.get("data")) for s in record["history"]]
    return record["status"], steps


def add_pool_node(cluster: Cluster) -> Any:
    """A zero-CPU raylet labelled `pool`, once the scheduler sees it. Ray starts nodes from
    the main thread only, so this blocks the driver's event loop for about a second."""
    node = cluster.add_node(num_cpus=0, resources={POOL: 1}, object_store_memory=STORE_BYTES)
    deadline = time.monotonic() + 60
    while not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
        if time.monotonic() > deadline:
            raise RuntimeError("the new pool node did not join within 60 s")
        time.sleep(0.05)
    return node


async def one_run(
    cluster: Cluster, config_path: Path, out: Path, extra: list[str], lose_at: float | None
) -> dict[str, Any]:
    """One run on a fresh pool node; with `lose_at`, that node is lost once this fraction
    of the rows has a record, and a replacement joins. The pool node(s) left at the end
    are removed, so each run starts from the same cluster."""
    config = load_config(config_path, [f"output.path={out}", *extra])
    node = add_pool_node(cluster)
    rows = complete_lines(Path(config.dataset.path))
    if config.dataset.limit:
        rows = min(rows, config.dataset.limit)
    t0 = time.perf_counter()
    task = asyncio.ensure_future(run_async(config, pipeline=Pipeline(config), progress=False))
    event: dict[str, Any] = {}
    try:
        if lose_at is not None:
            while complete_lines(out) < rows * lose_at and not task.done():
                await asyncio.sleep(0.05)
            if task.done():
                raise RuntimeError("the run ended before the node could be lost")
            event["lost_at"] = time.perf_counter() - t0
            event["records_at_loss"] = complete_lines(out)
            await asyncio.to_thread(cluster.remove_node, node, allow_graceful=False)
            node = add_pool_node(cluster)
            event["replacement_at"] = time.perf_counter() - t0
            before = complete_lines(out)
            while complete_lines(out) == before and not task.done():
                await asyncio.sleep(0.05)
            event["progress_again_at"] = time.perf_counter() - t0
        summary = await task
    finally:
        if not task.done():
            task.cancel()
        cluster.remove_node(node, allow_graceful=True)
    wall = time.perf_counter() - t0
    return {"summary": summary, "records": read(out), "wall": wall, "rows": rows, **event}


def report(label: str, run: dict[str, Any]) -> tuple[float, float]:
    records = run["records"]
    ids = [r["id"] for r in records]
    once = len(ids) == len(set(ids)) == run["rows"]
    ok = sum(r["status"] == "ok" for r in records)
    steps = sum(len(r["history"]) - 1 for r in records)  # the task's own step is no step
    span = max(r["finished"] for r in records) - min(r["created"] for r in records)
    rows_s, steps_s = len(records) / run["wall"], steps / run["wall"]
    print(
        f"  {label:<9}: wall {run['wall']:.1f} s: {rows_s:.1f} rows/s, {steps_s:.0f} steps/s; "
        f"first admission to last record {span:.1f} s: {len(records) / span:.1f} rows/s, "
        f"{steps / span:.0f} steps/s"
    )
    print(
        f"  {'':<9}  records {len(records)}, distinct ids {len(set(ids))}, ok {ok}: exactly "
        f"one record per row: {once}"
    )
    ray_info = run["summary"].get("ray", {})
    if "lost_at" in run:
        print(
            f"  {'':<9}  node lost at {run['lost_at']:.1f} s with {run['records_at_loss']} "
            f"records written; replacement joined at {run['replacement_at']:.1f} s; records "
            f"flowing again at {run['progress_again_at']:.1f} s; restarts seen "
            f"{ray_info.get('restarts')}"
        )
    return rows_s, steps_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--roles", type=int, default=3, help="roles in the loop")
    parser.add_argument("--turns", type=int, default=2, help="loop turns (steps = roles x turns)")
    parser.add_argument("--instances", type=int, default=2, help="actors per role")
    parser.add_argument("--delay", type=float, default=0.005, help="seconds per Echo step")
    parser.add_argument("--lose-at", type=float, default=1 / 3, help="fraction of rows done")
    parser.add_argument("--repeat", type=int, default=1, help="clean/loss run pairs")
    parser.add_argument(
        "--health-check-period-ms",
        type=int,
        default=None,
        help="Ray GCS health check period (with 3 failures to declare a node dead); default: "
        "Ray's own (a lost node is noticed after about 16 s)",
    )
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    head: dict[str, Any] = {"num_cpus": 2, "object_store_memory": STORE_BYTES}
    if args.health_check_period_ms:
        head["_system_config"] = {
            "health_check_initial_delay_ms": args.health_check_period_ms,
            "health_check_period_ms": args.health_check_period_ms,
            "health_check_failure_threshold": 3,
        }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
    print(
        f"{args.rows} rows, loop of {args.roles} Echo roles x {args.turns} turns "
        f"({args.delay * 1000:g} ms a step), {args.instances} actors per role on a `{POOL}` "
        f"node, head node: driver and sink; health check period "
        f"{args.health_check_period_ms or 'Ray default'}; overrides: {args.set or 'none'}"
    )
    ratios: list[tuple[float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_config(Path(tmp), args)
            for n in range(args.repeat):
                clean = asyncio.run(
                    one_run(cluster, path, Path(tmp) / f"clean{n}.jsonl", args.set, None)
                )
                lossy = asyncio.run(
                    one_run(cluster, path, Path(tmp) / f"lossy{n}.jsonl", args.set, args.lose_at)
                )
                print(f"pair {n + 1}:")
                c_rows, c_steps = report("clean", clean)
                l_rows, l_steps = report("node loss", lossy)
                want = {r["id"]: essence(r) for r in clean["records"]}
                differ = sum(1 for r in lossy["records"] if want.get(r["id"]) != essence(r))
                print(
                    f"  ratio node loss / clean: rows/s {l_rows / c_rows:.2f}, steps/s "
                    f"{l_steps / c_steps:.2f}; rows whose record differs from the clean run: "
                    f"{differ}"
                )
                ratios.append((l_rows / c_rows, l_steps / c_steps))
    finally:
        ray.shutdown()
        cluster.shutdown()
    if len(ratios) > 1:
        r = sorted(x[0] for x in ratios)
        mid = r[len(r) // 2]
        print(f"rows/s ratio over {len(r)} pairs: median {mid:.2f} ({r[0]:.2f} to {r[-1]:.2f})")


if __name__ == "__main__":
    main()
