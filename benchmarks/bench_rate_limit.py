"""Adaptive concurrency against a provider's rate limit: throughput kept, 429s avoided.

The simulator (`peerflow sim-llm`, a separate process) sits behind a token-bucket rate
limit of `--rps` requests a second (bucket of `--burst`), answering 429 with Retry-After
when it is empty. One `OpenAIService` in this process is called by `--callers` concurrent
loops (1,000 by default: a starting concurrency twenty times what the quota sustains at the
simulator's latency), each sending a request again as soon as its last one finished, for
`--seconds`. Two designs, each against a fresh simulator:

- `fixed`: no adaptation (`concurrency.adaptive: false`): every caller's request goes out
  at once; 429s are retried after their Retry-After, up to `max_retries`, then the call
  fails (as a row would).
- `adaptive`: the service's adaptive limit with the defaults of a hosted (https) API
  (`initial` 1,024: a slow start; `peerflow.services.adaptive`): requests beyond the limit
  wait their turn.

Reported per design, from the simulator's own counters: completed requests/s, the share
of the quota that is (completed/s / rps), HTTP requests, 429s and their share of requests,
calls that failed, and the limit at the end. `--plot` draws the limit (and requests in
flight) and completed/s over time for both designs.

    python benchmarks/bench_rate_limit.py [--rps 50] [--burst 50] [--callers 1000]
        [--seconds 60] [--plot docs/benchmarks/rate_limit.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peerflow.services.base import ServiceError
from peerflow.services.openai_client import OpenAIService

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
# Each request is different, so the simulator samples each reply's length anew (lognormal,
# median 180 tokens): identical requests would all take the same time.
QUESTION = "Write a short paragraph about rate limits (request {n})."
MAX_TOKENS = 512
SAMPLE_EVERY = 0.5


def start_sim(rps: float, burst: float, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    """The simulator in its own process; returns it and its base URL."""
    cmd = [
        sys.executable,
        "-m",
        "peerflow.services.sim_llm",
        "--port",
        "0",
        "--rate-limit-rps",
        str(rps),
        "--rate-limit-burst",
        str(burst),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.strip().rsplit(" ", 1)[-1]
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, url


async def sim_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url.removesuffix("/v1") + "/stats") as resp:
        return await resp.json()


async def run_design(
    name: str, url: str, *, callers: int, seconds: float, concurrency: dict[str, Any]
) -> dict[str, Any]:
    svc = OpenAIService(
        name, model="sim", endpoints=[url], max_connections=callers, concurrency=concurrency
    )
    await svc.start()
    failed = 0
    sent = 0
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal failed, sent
        while time.monotonic() < stop_at:
            sent += 1
            user = {"role": "user", "content": QUESTION.format(n=sent)}
            try:
                await svc.call({"messages": [SYSTEM, user], "max_tokens": MAX_TOKENS})
            except ServiceError:
                failed += 1

    samples: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(caller()) for _ in range(callers)]
        while time.monotonic() < stop_at:
            await asyncio.sleep(SAMPLE_EVERY)
            st = await sim_stats(session, url)
            limiter = svc.limiter
            samples.append(
                {
                    "t": round(time.monotonic() - t0, 3),
                    "completed": st["completed"],
                    "rate_limited": st["rate_limited"],
                    "requests": st["requests"],
                    "in_flight": svc.stats()["outstanding"],
                    "limit": None if limiter is None else round(limiter.limit, 2),
                }
            )
        # Callers stop once their call in hand ends; the quota does not change meanwhile.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        end = await sim_stats(session, url)
    report = svc.limiter.report() if svc.limiter is not None else None
    await svc.stop()
    wall = samples[-1]["t"]
    completed = samples[-1]["completed"]
    half = [s for s in samples if s["t"] >= wall / 2]
    late = (half[-1]["completed"] - half[0]["completed"]) / max(half[-1]["t"] - half[0]["t"], 1e-9)
    return {
        "design": name,
        "seconds": wall,
        "completed": completed,
        "completed_per_s": completed / wall,
        "completed_per_s_second_half": late,
        "requests": samples[-1]["requests"],
        "rate_limited": samples[-1]["rate_limited"],
        "failed_calls": failed,
        "final_limit": samples[-1]["limit"],
        "server_end": {k: end[k] for k in ("requests", "completed", "rate_limited")},
        "limiter": report,
        "samples": samples,
    }


def table(results: list[dict[str, Any]], rps: float) -> str:
    head = (
        "| design | completed/s | quota used | 2nd half completed/s | HTTP requests | 429s "
        "| 429 share | failed calls | limit at end |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in results:
        share = r["rate_limited"] / max(r["requests"], 1)
        limit = "-" if r["final_limit"] is None else f"{r['final_limit']:.1f}"
        rows.append(
            f"| {r['design']} | {r['completed_per_s']:.1f} | {r['completed_per_s'] / rps:.1%} "
            f"| {r['completed_per_s_second_half']:.1f} | {r['requests']:,} "
            f"| {r['rate_limited']:,} | {share:.2%} | {r['failed_calls']:,} | {limit} |"
        )
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], rps: float, callers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom, refused) = plt.subplots(
        3, 1, figsize=(9, 9), sharex=True, gridspec_kw={"height_ratios": [3, 3, 2]}
    )
    colors = {"fixed": "tab:red", "adaptive": "tab:blue"}
    for r in results:
        s = r["samples"]
        t = [x["t"] for x in s]
        color = colors.get(r["design"])
        top.plot(
            t,
            [x["in_flight"] for x in s],
            color=color,
            alpha=0.45,
            label=f"{r['design']}: in flight",
        )
        if s[0]["limit"] is not None:
            top.plot(t, [x["limit"] for x in s], color=color, lw=2, label=f"{r['design']}: limit")
        # Completed/s over a sliding 2-second window (4 samples): readable, still honest.
        span = max(1, round(2.0 / SAMPLE_EVERY))

        def per_second(key: str, s: list[dict[str, Any]] = s, span: int = span) -> list[float]:
            return [
                (s[i][key] - s[max(0, i - span)][key])
                / max(s[i]["t"] - s[max(0, i - span)]["t"], 1e-9)
                if i
                else 0.0
                for i in range(len(s))
            ]

        rate = per_second("completed")
        refused.plot(
            t, [max(x, 0.1) for x in per_second("rate_limited")], color=color, label=r["design"]
        )
        bottom.plot(t, rate, color=color, label=r["design"])
    top.set_yscale("log")
    top.set_ylabel("requests (log)")
    top.set_title(
        f"{callers} callers against a {rps:g} req/s token bucket (simulator): limit and in flight"
    )
    top.legend(loc="upper right", fontsize=8)
    bottom.axhline(rps, color="gray", ls="--", lw=1, label=f"rate limit {rps:g}/s")
    bottom.set_ylabel("completed requests/s (2 s window)")
    bottom.legend(loc="lower right", fontsize=8)
    refused.set_yscale("log")
    refused.set_ylabel("429s/s (log; 0 at 0.1)")
    refused.set_xlabel("seconds")
    refused.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    # The simulator is an http:// server, where the default starts with no limit; a rate-
    # limited API is https://, where it starts slow, up to 1,024: so the adaptive design
    # sets `initial` as an https endpoint would have it (far above the quota's capacity).
    adaptive = {"adaptive": True, "initial": 1024, **args.settings}
    designs = {"fixed": {"adaptive": False}, "adaptive": adaptive}
    print(f"adaptive design's settings: {adaptive} (initial: the https default)", file=sys.stderr)
    results = []
    for name in args.designs.split(","):
        proc, url = start_sim(args.rps, args.burst, args.sim_args.split() if args.sim_args else [])
        try:
            concurrency = designs[name]
            result = await run_design(
                name, url, callers=args.callers, seconds=args.seconds, concurrency=concurrency
            )
        finally:
            proc.terminate()
            proc.wait(10)
        results.append(result)
        print(
            f"{name}: {result['completed_per_s']:.1f} completed/s, {result['rate_limited']} 429s "
            f"of {result['requests']} requests, {result['failed_calls']} failed calls",
            file=sys.stderr,
        )
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rps", type=float, default=50.0, help="the simulator's rate limit")
    p.add_argument("--burst", type=float, default=50.0, help="its token bucket size")
    p.add_argument("--callers", type=int, default=1000, help="concurrent calling loops")
    p.add_argument("--seconds", type=float, default=60.0, help="per design")
    p.add_argument("--designs", default="fixed,adaptive")
    p.add_argument(
        "--settings",
        type=json.loads,
        default={},
        help="the adaptive design's concurrency settings, as JSON (e.g. '{\"decrease\": 0.7}')",
    )
    p.add_argument("--sim-args", default="", help="more simulator flags, e.g. '--time-scale 0.5'")
    p.add_argument("--plot", type=Path, help="write the time-series plot here (PNG)")
    p.add_argument("--json", type=Path, help="write every number (and the samples) here")
    p.add_argument("--replot", type=Path, help="only draw --plot from a --json file of a run")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.rps, args.callers, args.plot)
        return
    results = asyncio.run(main_async(args))
    print(table(results, args.rps))
    by = {r["design"]: r for r in results}
    if "fixed" in by and "adaptive" in by:
        ratio = by["adaptive"]["completed_per_s"] / max(by["fixed"]["completed_per_s"], 1e-9)
        print(f"\nadaptive / fixed completed requests/s: {ratio:.2f}x")
    if args.plot:
        plot(results, args.rps, args.callers, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
