"""Adaptive concurrency (peerflow.services.adaptive): AIMD over real HTTP.

Against the simulator's token-bucket rate limit and against small test servers that
answer 429 with Retry-After or hang past the client's timeout when overloaded; the limit
shared by every actor of a Ray run is tested on the session's local Ray cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from fake_chat import serve

from peerflow.config import ConcurrencyConfig, OpenAIServiceConfig
from peerflow.services import build_service
from peerflow.services.adaptive import Limiter, Settings, make_limiter
from peerflow.services.openai_client import OpenAIService
from peerflow.services.sim_llm import SimLLMServer, SimOptions

REPLY = {
    "id": "c",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Server:
    """A chat server whose handler a test writes: `handle(server, body) -> web.Response`."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.active = 0
        self.peak = 0
        self.serving = 0  # for handlers that count what they serve themselves
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, last message text)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.arrivals.append((time.monotonic(), body["messages"][-1]["content"]))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await self.handle(self, body)
        finally:
            self.active -= 1

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner, self.url = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def ask(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 64}


async def client(url: str, concurrency: Any, **kw: Any) -> OpenAIService:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("backoff_max", 0.05)
    svc = OpenAIService("llm", model="m", endpoints=[url], concurrency=concurrency, **kw)
    await svc.start()
    return svc


async def hammer(svc: OpenAIService, callers: int, calls: int) -> int:
    """`callers` loops of `calls` calls each; returns how many calls failed."""
    failed = 0

    async def loop(i: int) -> None:
        nonlocal failed
        for j in range(calls):
            try:
                await svc.call(ask(f"caller {i} call {j}"))
            except Exception:
                failed += 1

    await asyncio.gather(*(loop(i) for i in range(callers)))
    return failed


# --- the rule, against the simulator's rate limit --------------------------------------


async def test_slow_start_and_backoff_keep_429s_rare_against_a_token_bucket() -> None:
    """150 callers against 100 req/s (bucket of 20; about 50 requests in flight at the
    simulator's latency): without adaptation most requests are 429s and calls fail; with
    it, the limit ramps up from 8, is cut by the first 429s, and few follow."""
    opts = SimOptions(port=0, time_scale=0.5, rate_limit_rps=100, rate_limit_burst=20)
    counts = {}
    for design, concurrency in (("fixed", None), ("adaptive", {"initial": 1000})):
        async with SimLLMServer(opts) as sim:
            assert sim.url is not None
            svc = await client(sim.url, concurrency, max_retries=8)
            failed = await hammer(svc, callers=150, calls=2)
            counts[design] = (sim.counters["rate_limited"], sim.counters["requests"], failed)
            if design == "adaptive":
                report = svc.limiter.report()  # type: ignore[union-attr]
                assert report["rejections"].get("429", 0) == sim.counters["rate_limited"] > 0
                assert report["decreases"] >= 1
                assert report["highest"] < 150  # cut long before it reached the callers' 150
            await svc.stop()
    rejected, requests, failed = counts["adaptive"]
    assert failed == 0
    assert rejected / requests < 0.15
    fixed_rejected, fixed_requests, fixed_failed = counts["fixed"]
    assert fixed_rejected / fixed_requests > 0.5 and fixed_failed > 0
    assert fixed_rejected > 10 * rejected


async def test_retry_after_pauses_every_new_request_of_the_service() -> None:
    """The first request gets 429 with Retry-After 0.5: no other request may be sent until
    it has passed, although 7 callers are waiting."""

    async def handle(server: Server, body: dict[str, Any]) -> web.Response:
        if len(server.arrivals) == 1:
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.5"}
            )
        await asyncio.sleep(0.01)
        return web.json_response(REPLY)

    async with Server(handle) as server:
        svc = await client(server.url, {"initial": 1})  # one in flight: the 429 comes first
        assert await hammer(svc, callers=8, calls=1) == 0
        first = server.arrivals[0][0]
        later = [t - first for t, _ in server.arrivals[1:]]
        assert len(later) == 8
        assert min(later) >= 0.5
        report = svc.limiter.report()  # type: ignore[union-attr]
        assert report["retry_after_pauses"] == 1 and report["rejections"] == {"429": 1}
        await svc.stop()


async def test_timeouts_cut_the_limit_to_what_the_server_takes() -> None:
    """A server that answers 4 requests at a time and lets the rest hang past the client's
    timeout: timeouts cut the limit near 4, and every call still succeeds."""

    async def handle(server: Server, body: dict[str, Any]) -> web.Response:
        if server.serving >= 4:  # overloaded: this one is answered too late
            await asyncio.sleep(1)
            return web.json_response(REPLY)
        server.serving += 1
        try:
            await asyncio.sleep(0.02)
            return web.json_response(REPLY)
        finally:
            server.serving -= 1

    async with Server(handle) as server:
        svc = await client(server.url, {"initial": 64}, timeout=0.25, max_retries=20)
        assert await hammer(svc, callers=24, calls=4) == 0
        report = svc.limiter.report()  # type: ignore[union-attr]
        assert report["rejections"].get("timeout", 0) >= 1
        assert report["decreases"] >= 1
        assert report["limit"] <= 8
        await svc.stop()


async def test_requests_above_the_limit_wait_in_arrival_order() -> None:
    async def handle(server: Server, body: dict[str, Any]) -> web.Response:
        await asyncio.sleep(0.02)
        return web.json_response(REPLY)

    async with Server(handle) as server:
        svc = await client(server.url, {"initial": 2, "max": 2})
        calls = [asyncio.ensure_future(svc.call(ask(f"n{i}"))) for i in range(12)]
        await asyncio.gather(*calls)
        assert server.peak == 2
        assert [text for _, text in server.arrivals] == [f"n{i}" for i in range(12)]
        # A waiter cancelled while waiting takes no permit with it.
        slow = [asyncio.ensure_future(svc.call(ask(f"late{i}"))) for i in range(5)]
        await asyncio.sleep(0.005)
        slow[-1].cancel()
        await asyncio.gather(*slow, return_exceptions=True)
        assert svc.limiter.in_flight == 0 and not svc.limiter.waiters  # type: ignore[union-attr]
        await svc.stop()


def test_settings_from_config_and_defaults() -> None:
    cfg = OpenAIServiceConfig(kind="openai", model="m", endpoints=["http://127.0.0.1:1/v1"])
    assert cfg.concurrency.adaptive is True  # on by default (docs/running.md says why)
    svc = build_service("llm", cfg)
    assert isinstance(svc.limiter, Limiter)  # type: ignore[attr-defined]
    # no limit until the server first pushes back: 50,000 in flight are not held back
    assert svc.limiter.limit == float("inf") and not svc.limiter.slow_start  # type: ignore[attr-defined]
    assert svc.limiter.report()["limit"] is None  # type: ignore[attr-defined]
    svc.limiter._congested(400, None)  # type: ignore[attr-defined]
    assert svc.limiter.limit == pytest.approx(360)  # type: ignore[attr-defined]
    hosted = cfg.model_copy(update={"endpoints": ["https://api.example.com/v1"]})
    api = build_service("llm", hosted).limiter  # type: ignore[attr-defined]
    assert api.limit == 8 and api.threshold == 1024 and api.slow_start  # a hosted API starts slow
    slow = Limiter("x", Settings(initial=1024))
    assert slow.limit == 8 and slow.threshold == 1024 and slow.slow_start
    off = cfg.model_copy(update={"concurrency": ConcurrencyConfig(adaptive=False)})
    assert build_service("llm", off).limiter is None  # type: ignore[attr-defined]
    assert make_limiter("x", None) is None
    with pytest.raises(ValueError, match="below min"):
        ConcurrencyConfig(min=5, max=2)
    small = Limiter("x", Settings(initial=3))
    assert small.limit == 3 and not small.slow_start


# --- Ray: one limit for every actor -----------------------------------------------------


async def test_shared_limit_backs_off_as_one_client(ray_cluster: Any) -> None:
    """Two processes' limiters share one `SharedLimit` actor: a 429 seen by one cuts the
    other's share and pauses it for the Retry-After."""
    ray = pytest.importorskip("ray")
    from peerflow.services.adaptive import SharedLimit, SharedLimiter

    name = f"pf-test-limit-{time.monotonic_ns()}"
    actor = ray.remote(SharedLimit).options(name=name, num_cpus=0).remote({"initial": 64})
    try:
        settings = Settings(initial=64, shared=name)
        a, b = SharedLimiter("llm", settings), SharedLimiter("llm", settings)
        tickets_a = [await a.acquire() for _ in range(4)]
        tickets_b = [await b.acquire() for _ in range(4)]
        for t in tickets_a[:3]:
            a.release(t, status=200)
        tickets_a += [await a.acquire() for _ in range(3)]
        await a._sync()
        await b._sync()
        before = b.limit
        a.release(tickets_a.pop(), status=429, retry_after=0.6)
        await a._sync()  # what the kick does at once
        await b._sync()  # b's next periodic sync
        assert b.limit < before
        assert b.blocked_until - time.monotonic() > 0.3
        t0 = time.monotonic()
        for t in tickets_b:
            b.release(t, status=200)
        await b.acquire()
        assert time.monotonic() - t0 >= 0.3  # b waited out a's Retry-After
        report = await actor.report.remote()
        assert report["clients"] == 2 and report["rejections"] == {"429": 1}
        assert report["decreases"] == 1 and report["retry_after_pauses"] == 1
        await a.close()
        await b.close()
    finally:
        ray.kill(actor)


async def test_a_ray_run_shares_one_limit_across_actors(ray_cluster: Any, tmp_path: Path) -> None:
    """A Ray run whose LLM role has two actors, against a rate-limited simulator: both
    actors use the run's one limit, which the summary reports; every request and 429 of
    the run is counted there."""
    pytest.importorskip("ray")
    from peerflow.config import load_config
    from peerflow.run import run_async

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "q": f"q{i}"}) + "\n" for i in range(40)))
    sim = SimLLMServer(SimOptions(port=0, time_scale=0.05, rate_limit_rps=60, rate_limit_burst=5))
    await sim.start()
    try:
        config = {
            "name": "shared-limit",
            "dataset": {"path": str(rows), "id_field": "id"},
            "services": {
                "llm": {"kind": "openai", "model": "sim", "endpoints": [sim.url], "backoff": 0.05}
            },
            "roles": {"ask": {"service": "llm", "prompt": "{{ q }}", "num_instances": 2}},
            "workflow": {"kind": "sequence", "roles": ["ask"]},
            "runtime": {"kind": "ray", "max_in_flight": 40, "progress": False},
            "output": {"path": str(tmp_path / "out.jsonl")},
            "prices": {"sim": {"input": 1.0, "output": 2.0}},  # costs travel on Ray too
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        summary = await run_async(load_config(path), progress=False)
    finally:
        await sim.stop()
    assert summary["by_status"] == {"ok": 40}
    assert summary["cost"]["priced_steps"] == 40 and summary["cost"]["usd"] > 0
    shared = summary["concurrency"]["llm"]
    assert shared["shared"] is True and shared["clients"] == 2
    assert shared["requests"] == sim.counters["requests"]
    assert shared["rejections"].get("429", 0) == sim.counters["rate_limited"]
    # The first 8 requests (the shared slow start's window, split between the two actors)
    # meet a bucket of 5: the limit was cut, for both.
    assert sim.counters["rate_limited"] >= 3 and shared["decreases"] >= 1
