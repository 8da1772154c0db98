"""What the sandbox costs per execution: bubblewrap against a plain subprocess, one run.

A `kind: sandbox` service peerflow starts (one server), first with `isolation: bwrap` (the
default), then with `isolation: none` (a plain subprocess with the same rlimits, UNSAFE).
Each runs `print(1)` one at a time (latency: median and P90 of wall time seen by the
client, and the sandbox's own wall and CPU), then as many at once as the pool's cap allows
(throughput). The interpreter's own start-up is in both; the difference is the isolation.

    python benchmarks/bench_sandbox.py --runs 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from peerflow.config import SandboxServiceConfig
from peerflow.services import build_service


async def measure(isolation: str, runs: int, cap: int) -> dict[str, float]:
    cfg = SandboxServiceConfig.model_validate(
        {"kind": "sandbox", "isolation": isolation, "max_concurrent": cap}
    )
    box = build_service(f"box-{isolation}", cfg)
    await box.start()
    try:
        await box.run("print(1)")  # warm: the server's first fork, the page cache
        seen, inside, cpu = [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = await box.run("print(1)")
            seen.append(time.perf_counter() - t0)
            assert result["status"] == "ok", result
            inside.append(result["wall_s"])
            cpu.append(result["cpu_s"])
        t0 = time.perf_counter()
        results = await asyncio.gather(*(box.run("print(1)") for _ in range(runs)))
        wall = time.perf_counter() - t0
        assert all(r["status"] == "ok" for r in results)
    finally:
        await box.stop()
    seen.sort()
    return {
        "median_ms": 1000 * statistics.median(seen),
        "p90_ms": 1000 * seen[int(0.9 * (len(seen) - 1))],
        "inside_ms": 1000 * statistics.median(inside),
        "cpu_ms": 1000 * statistics.median(cpu),
        "per_s": runs / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cap", type=int, default=4, help="max_concurrent (default: shipped)")
    args = parser.parse_args()
    print(f"print(1) x {args.runs}, one at a time, then all at once (pool cap {args.cap})")
    print(
        f"{'isolation':<16}{'median ms':>10}{'P90 ms':>8}{'inside ms':>10}{'CPU ms':>8}"
        f"{'runs/s at cap':>15}"
    )
    rows = {}
    for isolation in ("bwrap", "none"):
        r = rows[isolation] = asyncio.run(measure(isolation, args.runs, args.cap))
        label = isolation if isolation == "bwrap" else "none (UNSAFE)"
        print(
            f"{label:<16}{r['median_ms']:>10.1f}{r['p90_ms']:>8.1f}{r['inside_ms']:>10.1f}"
            f"{r['cpu_ms']:>8.1f}{r['per_s']:>15.1f}"
        )
    extra = rows["bwrap"]["median_ms"] - rows["none"]["median_ms"]
    print(
        f"isolation costs {extra:+.1f} ms per execution "
        f"({rows['bwrap']['median_ms'] / rows['none']['median_ms']:.2f}x the plain subprocess)"
    )


if __name__ == "__main__":
    main()
