"""Client-side ceiling of OpenAIService: requests/s from one process against a trivial server.

The server (a separate process, so it does not share the client's core) answers every chat
completion with the same fixed body, so the number measures the client's own overhead:
encoding, pooling, routing, parsing. Usage:

    python benchmarks/bench_llm_client.py [--requests 50000] [--concurrency 256] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import sys
import time
from pathlib import Path

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peerflow.services.openai_client import OpenAIService

BODY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The answer is 42."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
)


def _serve(sock: socket.socket, use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        uvloop.install()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "bench"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, sock=sock, access_log=None, print=None, backlog=4096)


async def _bench(url: str, total: int, concurrency: int) -> float:
    svc = OpenAIService("bench", model="bench", endpoints=[url], max_connections=concurrency)
    await svc.start()
    request = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is six times seven?"},
        ],
        "max_tokens": 16,
        "temperature": 0.7,
    }
    for _ in range(50):
        await svc.health()
        if svc.stats()["endpoints"][url]["healthy"]:
            break
        await asyncio.sleep(0.1)
    # Warm the pool so connection set-up is not part of the measurement.
    await asyncio.gather(*(svc.call(request) for _ in range(concurrency)))

    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await svc.call(request, key=None)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    st = svc.stats()
    await svc.stop()
    assert st["errors"] == 0, st
    return total / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--uvloop", action="store_true", help="use uvloop in client and server")
    args = ap.parse_args()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = mp.get_context("fork").Process(target=_serve, args=(sock, args.uvloop), daemon=True)
    server.start()
    sock.close()
    try:
        if args.uvloop:
            import uvloop

            uvloop.install()
        rate = asyncio.run(_bench(f"http://127.0.0.1:{port}/v1", args.requests, args.concurrency))
    finally:
        server.terminate()
        server.join(5)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"{rate:,.0f} req/s  ({args.requests} requests, {args.concurrency} in flight, "
        f"{loop}, cpus={os.cpu_count()})"
    )


if __name__ == "__main__":
    main()
