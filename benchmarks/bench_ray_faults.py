"""Crash safety of the Ray runtime on Coral against the simulated LLM: agent kills and driver kill.

1. Agent kills: the same Coral run (>= 2,000 tasks, simulator) twice on one local Ray, once
   clean and once while a random agent actor is killed with `ray.kill(actor,
   no_restart=False)` every few seconds. Prints both throughputs and the drop, the success
   rates, whether every input id has exactly one record, and whether each row's record
   (history text, verdicts, metrics) equals the clean run's.
2. Driver kill (`--driver-kill`): `peerflow run` with runtime=ray in a subprocess, SIGKILLed
   once part of the output is written, then the same command again; checks one record per
   id at the end.

The simulator is a measuring instrument (continuous-batching timing, filler text): the
figures measure peerflow's recovery against an engine of known capacity, not a model.

    python benchmarks/bench_ray_faults.py --rows 4000 --kill-every 5 --repeat 3 --driver-kill
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from peerflow.config import load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.testing import descendant_pids

ROOT = Path(__file__).resolve().parent.parent
CORAL = ROOT / "examples" / "coral" / "coral_sim.yaml"
ROLES = ("teacher", "student", "extractor", "matcher")


def overrides(rows: int, out: Path, instances: int, extra: list[str]) -> list[str]:
    return [
        "runtime.kind=ray",
        "runtime.progress=false",
        f"output.path={out}",
        f"dataset.limit={rows}",
        f"dataset.repeat={rows // 77 + 1}",
        *[f"roles.{role}.num_instances={instances}" for role in ROLES],
        *extra,
    ]


def complete_lines(out: Path) -> int:
    """Records written so far, counted while a sink may be appending (a last line may be torn)."""
    return out.read_bytes().count(b"\n") if out.exists() else 0


def read(out: Path) -> list[dict[str, Any]]:
    with open(out) as f:
        return [json.loads(line) for line in f if line.strip()]


def span_rate(records: list[dict[str, Any]]) -> float:
    """Tasks/s from the first task's admission to the last record: start-up excluded."""
    first = min(r["created"] for r in records)
    last = max(r["finished"] for r in records)
    return len(records) / (last - first)


def essence(record: dict[str, Any]) -> Any:
    steps = [(s["role"], s.get("content"), s.get("data")) for s in record["history"]]
    return record["status"], steps, record.get("metrics")


async def killer(stop: asyncio.Event, every: float, seed: int, log: list[str]) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
            return
        except asyncio.TimeoutError:
            pass
        names = [n for n in ray.util.list_named_actors() if "-r:" in n]
        if not names:
            continue
        name = rng.choice(sorted(names))
        try:
            ray.kill(ray.get_actor(name), no_restart=False)
            log.append(f"{time.time():.2f} {name.rsplit('-', 1)[-1]}")
        except ValueError:
            pass  # the run just ended


async def one_run(
    rows: int, out: Path, instances: int, extra: list[str], kill_every: float | None
) -> dict[str, Any]:
    config = load_config(CORAL, overrides(rows, out, instances, extra))
    stop = asyncio.Event()
    kills: list[str] = []
    task = None
    if kill_every:
        task = asyncio.ensure_future(killer(stop, kill_every, 7, kills))
    t0 = time.perf_counter()
    try:
        summary = await run_async(config, pipeline=Pipeline(config), progress=False)
    finally:
        stop.set()
        if task is not None:
            await task
    wall = time.perf_counter() - t0
    records = read(out)
    return {"summary": summary, "records": records, "wall": wall, "kills": kills}


def agent_kills(args: argparse.Namespace, tmp: Path) -> None:
    """Clean and faulty runs alternate, `--repeat` pairs: this 2-core machine's own noise
    (clean runs alone vary by ~10%) would otherwise pass for the cost of the kills."""
    extra = list(args.set)
    print(
        f"Coral on the SIMULATED LLM, {args.rows} tasks, {args.instances} actor(s) per role, "
        f"a random agent actor killed every {args.kill_every:g} s, runtime overrides: "
        f"{extra or 'none'}"
    )
    drops: list[tuple[float, float]] = []
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        for n in range(args.repeat):
            clean = asyncio.run(
                one_run(args.rows, tmp / f"clean{n}.jsonl", args.instances, extra, None)
            )
            faulty = asyncio.run(
                one_run(args.rows, tmp / f"faulty{n}.jsonl", args.instances, extra, args.kill_every)
            )
            drops.append(report_pair(args, n, clean, faulty))
    finally:
        ray.shutdown()
    if len(drops) > 1:
        walls = sorted(d[0] for d in drops)
        spans = sorted(d[1] for d in drops)
        print(
            f"throughput drop over {len(drops)} pairs: median {walls[len(walls) // 2]:.1%} by "
            f"wall time (range {walls[0]:.1%} to {walls[-1]:.1%}), median "
            f"{spans[len(spans) // 2]:.1%} from admission to last record"
        )


def report_pair(
    args: argparse.Namespace, n: int, clean: dict[str, Any], faulty: dict[str, Any]
) -> tuple[float, float]:
    ids_clean = [r["id"] for r in clean["records"]]
    ids = [r["id"] for r in faulty["records"]]
    exactly_once = len(ids) == len(set(ids)) == args.rows and set(ids) == set(ids_clean)
    by_id = {r["id"]: essence(r) for r in clean["records"]}
    differing = sum(1 for r in faulty["records"] if by_id.get(r["id"]) != essence(r))
    print(f"pair {n + 1}:")
    for label, r in (("clean", clean), ("with kills", faulty)):
        s = r["summary"]
        ray_info = s["ray"]
        print(
            f"  {label:<10}: wall {r['wall']:.1f} s = {args.rows / r['wall']:.1f} tasks/s; "
            f"admission to last record {span_rate(r['records']):.1f} tasks/s; success rate "
            f"{s['success_rate']:.1%}; actor kills {len(r['kills'])}; restarts seen "
            f"{sum(ray_info['restarts'].values())}; messages re-sent {ray_info['redelivered']}; "
            f"tasks restarted from scratch {ray_info['reinjected_tasks']} (lost payloads "
            f"{ray_info['lost_payloads']}); re-sent copies dropped in flight "
            f"{ray_info['copies_dropped']}; duplicate records dropped {s['duplicates_dropped']}"
        )
    drop_wall = 1 - clean["wall"] / faulty["wall"]
    drop_span = 1 - span_rate(faulty["records"]) / span_rate(clean["records"])
    print(
        f"  throughput drop: {drop_wall:.1%} by wall time, {drop_span:.1%} from admission to "
        "last record"
    )
    print(
        f"  every input id exactly once: {exactly_once} ({len(ids)} records, "
        f"{len(set(ids))} distinct ids); rows whose record differs from the clean run: "
        f"{differing}"
    )
    if args.verbose:
        first = min(r["created"] for r in faulty["records"])
        print(
            "  kills (s after first admission, actor):",
            ", ".join(f"{float(k.split()[0]) - first:.1f} {k.split()[1]}" for k in faulty["kills"]),
        )
        for label, r in (("clean", clean), ("with kills", faulty)):
            t0 = min(x["created"] for x in r["records"])
            per = [0] * (int(max(x["finished"] for x in r["records"]) - t0) + 1)
            for x in r["records"]:
                per[int(x["finished"] - t0)] += 1
            print(f"  records per second, {label}: {per}")
    return drop_wall, drop_span


def driver_kill(args: argparse.Namespace, tmp: Path) -> None:
    out = tmp / "driver.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "peerflow.cli",
        "run",
        str(CORAL),
        *overrides(args.rows, out, args.instances, list(args.set)),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family: set[int] = set()
    t0 = time.time()
    while proc.poll() is None:
        family |= descendant_pids(proc.pid)
        lines = complete_lines(out)
        if lines >= args.rows // 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = time.time() - t0
    time.sleep(3)
    # Ray's per-node agents outlive a SIGKILLed driver; end exactly those we started.
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    before = complete_lines(out)  # actors may have written a little after the driver died
    t1 = time.time()
    second = subprocess.run(cmd, capture_output=True, text=True)
    records = read(out)
    ids = [r["id"] for r in records]
    print(
        f"driver SIGKILLed after {killed_after:.1f} s with {before} of {args.rows} records "
        f"written; the same command again exited {second.returncode} after "
        f"{time.time() - t1:.1f} s"
    )
    print(
        f"  records {len(ids)}, distinct ids {len(set(ids))}, exactly one per id: "
        f"{len(ids) == len(set(ids)) == args.rows}"
    )
    if second.returncode != 0:
        print(second.stderr[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--instances", type=int, default=2, help="actors per role")
    parser.add_argument("--kill-every", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3, help="clean/faulty run pairs")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    parser.add_argument("--driver-kill", action="store_true")
    parser.add_argument("--no-agent-kills", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="kill times, records per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_agent_kills:
            agent_kills(args, Path(tmp))
        if args.driver_kill:
            driver_kill(args, Path(tmp))


if __name__ == "__main__":
    main()
