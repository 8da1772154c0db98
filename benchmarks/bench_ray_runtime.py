"""Steps/s of the Ray runtime on dummy Coral, next to the raw one-message-per-call Ray hop rate.

Both are measured in the same run on the same local Ray:

- raw hop rate: three async actors in a ring pass messages on with one Ray actor call per
  message (fire-and-forget, many messages in flight, 1 KB appended per hop), which is the
  ceiling of any runtime that makes one call per hop;
- the Ray runtime on the dummy Coral workflow of `bench_local_runtime.py` (dummy teacher
  and student of 1,024 characters, dummy extractor, the real matcher; output written),
  wall time including actor start-up, once with offloading off and once with the default
  offload threshold, with the bytes each hop carried.

    python benchmarks/bench_ray_runtime.py --rows 20000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local_runtime import coral_dummy_config, write_rows

from peerflow.pipeline import Pipeline
from peerflow.run import run_async

_KB = b"x" * 1024


@ray.remote(max_concurrency=1000)
class _Hop:
    """One message per call: append 1 KB, call the next actor, never wait for it."""

    def __init__(self, collector: Any):
        self.collector = collector
        self.next: Any = None

    def link(self, nxt: Any) -> None:
        self.next = nxt

    async def hop(self, message: bytes, left: int) -> None:
        message += _KB
        if left <= 1:
            self.collector.done.remote()
        else:
            self.next.hop.remote(message, left - 1)


@ray.remote
class _Collector:
    def __init__(self) -> None:
        self.n = 0

    def done(self) -> None:
        self.n += 1

    def count(self) -> int:
        return self.n


def raw_hop_rate(messages: int, hops: int) -> tuple[int, float]:
    collector = _Collector.remote()
    ring = [_Hop.remote(collector) for _ in range(3)]
    ray.get([a.link.remote(ring[(i + 1) % 3]) for i, a in enumerate(ring)])
    ray.get(ring[0].hop.remote(b"", 2))  # warm the path
    while ray.get(collector.count.remote()) < 1:
        time.sleep(0.01)
    t0 = time.perf_counter()
    for i in range(messages):
        ring[i % 3].hop.remote(b"", hops)
    while ray.get(collector.count.remote()) < messages + 1:
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    for actor in [*ring, collector]:
        ray.kill(actor)
    return messages * hops, wall


async def runtime_rate(rows: int, max_in_flight: int, threshold: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        write_rows(data, rows)
        out = Path(tmp) / "out.jsonl"
        config = coral_dummy_config(data, out, max_in_flight)
        config.runtime.kind = "ray"
        config.runtime.offload_threshold = threshold
        t0 = time.perf_counter()
        summary = await run_async(config, pipeline=Pipeline(config), progress=False)
        wall = time.perf_counter() - t0
        with open(out, "rb") as f:
            lines = sum(1 for _ in f)
        assert lines == rows == summary["total_records_in_output"], (lines, rows)
        return {"steps": summary["steps"], "wall": wall, "ray": summary["ray"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument(
        "--max-in-flight", type=int, default=1000, help="hand-set (the runtime's default is 256)"
    )
    parser.add_argument("--raw-messages", type=int, default=1000)
    parser.add_argument("--raw-hops", type=int, default=12)
    args = parser.parse_args()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    print(f"ray.init: {time.perf_counter() - t0:.1f} s")
    steps, wall = raw_hop_rate(args.raw_messages, args.raw_hops)
    raw = steps / wall
    print(
        f"raw Ray actor hops, one message per call: {steps} hops in {wall:.2f} s "
        f"= {raw:,.0f} steps/s"
    )
    results = {}
    for label, threshold in (("offload off (default)", None), ("offload 512 B", 512)):
        r = asyncio.run(runtime_rate(args.rows, args.max_in_flight, threshold))
        rate = r["steps"] / r["wall"]
        rep = r["ray"]
        results[label] = rate
        print(
            f"peerflow Ray runtime, dummy Coral, {label}: {args.rows} tasks, {r['steps']} steps "
            f"in {r['wall']:.2f} s (actor start-up included) = {rate:,.0f} steps/s; "
            f"{rep['messages_per_call']} messages per call; "
            f"{rep['inline_bytes_per_hop']:,.0f} inline bytes per hop + "
            f"{rep['hop_refs'] / max(rep['hops'], 1):.2f} object refs"
        )
    for label, rate in results.items():
        print(f"ratio Ray runtime ({label}) / raw one-message-per-call hops: {rate / raw:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
