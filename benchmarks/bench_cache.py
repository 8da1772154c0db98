"""What the response cache costs per call: a hit, and a miss that is then stored.

    .venv/bin/python benchmarks/bench_cache.py [--calls 20000] [--turns 6]

A `CachedService` wraps a stand-in service that answers at once, so the times are the
cache's own: building the key (canonical JSON + SHA-256 of the whole request), the SQLite
read, and for a miss queueing the row for the writer thread (whose commits run beside the
event loop; their cost shows up as the loop's share of the GIL). For scale, the same request
is also sent to the in-process simulator through the real `OpenAIService` client.

Requests are chat bodies of `--turns` messages of ~400 characters each, as a debate's later
turns are; the key's cost grows with the request's size, the read's hardly at all.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from peerflow.services.base import ChatResult
from peerflow.services.cache import CachedService, CacheSettings, request_key


class Instant:
    """A chat service that answers at once with a fixed reply."""

    name = "instant"
    model = "m"
    extra_body: dict[str, Any] = {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def health(self) -> bool:
        return True

    async def call(self, request: dict[str, Any], *, key: str | None = None) -> ChatResult:
        return ChatResult(
            content="An answer of a few hundred characters. " * 8,
            usage={"prompt_tokens": 900, "completion_tokens": 80, "total_tokens": 980},
            model="m",
            finish_reason="stop",
        )


def request(i: int, turns: int) -> dict[str, Any]:
    text = "Some earlier turn of the conversation, long enough to be realistic. " * 6
    messages = [{"role": "system", "content": "You are a careful assistant."}]
    messages += [
        {"role": "user" if t % 2 == 0 else "assistant", "content": f"{t}: {text}"}
        for t in range(turns)
    ]
    messages.append({"role": "user", "content": f"Question number {i}?"})
    return {"messages": messages, "temperature": 0.7, "max_tokens": 256, "seed": i}


async def per_call(service: Any, requests: list[dict[str, Any]]) -> float:
    """Mean microseconds per call, calls made one after another on the loop."""
    t0 = time.perf_counter()
    for r in requests:
        await service.call(r)
    return (time.perf_counter() - t0) / len(requests) * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    reqs = [request(i, args.turns) for i in range(args.calls)]
    size = len(str(reqs[0]))
    bare = Instant()
    results: dict[str, list[float]] = {"bare": [], "miss+store": [], "hit": [], "key": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cached = CachedService(bare, CacheSettings(Path(tmp) / "c.db", "read_write"))  # type: ignore[arg-type]
            await cached.start()
            results["bare"].append(await per_call(bare, reqs))
            results["miss+store"].append(await per_call(cached, reqs))
            await asyncio.to_thread(cached.store.close)  # every row committed
            await cached.start()
            results["hit"].append(await per_call(cached, reqs))
            assert cached.hits == len(reqs), cached.cache_stats()
            t0 = time.perf_counter()
            for r in reqs:
                request_key({**r, "model": "m"})
            results["key"].append((time.perf_counter() - t0) / len(reqs) * 1e6)
            await cached.stop()
    print(f"{args.calls} calls, requests of ~{size} characters ({args.turns + 2} messages)")
    bare_us = statistics.median(results["bare"])
    for name, values in results.items():
        med = statistics.median(values)
        extra = "" if name in ("bare", "key") else f"  (cache's own: {med - bare_us:7.1f} us)"
        print(f"  {name:<11} {med:7.1f} us/call{extra}")
    await real_call(reqs[:2000])


async def real_call(reqs: list[dict[str, Any]]) -> None:
    """For scale: one real request to the in-process simulator, through the real client."""
    from peerflow.services.openai_client import OpenAIService
    from peerflow.services.sim_llm import SimLLMServer, SimOptions

    server = SimLLMServer(SimOptions(port=0, time_scale=0.0))
    await server.start()
    client = OpenAIService("sim", model="sim", endpoints=[f"http://127.0.0.1:{server.port}/v1"])
    await client.start()
    try:
        us = await per_call(client, reqs)
    finally:
        await client.stop()
        await server.stop()
    print(f"  for scale: a request to the in-process simulator (time_scale 0): {us:7.1f} us/call")


if __name__ == "__main__":
    asyncio.run(main())
