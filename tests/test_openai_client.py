"""OpenAIService against real HTTP: a scriptable fake OpenAI server on an ephemeral port."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from peerflow.services.base import ChatResult, Service, ServiceError
from peerflow.services.openai_client import OpenAIService, _retry_after_seconds

Action = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECRET = "sk-test-SUPERSECRET-0123456789"


def completion(content: str = "hello", **extra: Any) -> dict[str, Any]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    body.update(extra)
    return body


def ok(content: str = "hello", **extra: Any) -> Action:
    async def act(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=orjson.dumps(completion(content, **extra)), content_type="application/json"
        )

    return act


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Action:
    async def act(request: web.Request) -> web.StreamResponse:
        payload = body if body is not None else {"error": {"message": f"status {code}"}}
        return web.Response(
            status=code,
            body=orjson.dumps(payload),
            headers=headers,
            content_type="application/json",
        )

    return act


def raw(data: bytes, code: int = 200) -> Action:
    async def act(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, body=data, content_type="application/json")

    return act


def sleep(seconds: float) -> Action:
    async def act(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await ok()(request)

    return act


class FakeOpenAI:
    """A real aiohttp server whose next responses each test scripts."""

    def __init__(self) -> None:
        self.script: list[Action] = []
        self.default: Action = ok()
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.hold: asyncio.Event | None = None
        self.in_flight = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(orjson.loads(await request.read()))
        self.auth.append(request.headers.get("Authorization"))
        self.in_flight += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            act = self.script.pop(0) if self.script else self.default
            return await act(request)
        finally:
            self.in_flight -= 1

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "served-model"}]})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self.runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        return self.url

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[int], Awaitable[list[FakeOpenAI]]]]:
    made: list[FakeOpenAI] = []

    async def make(n: int = 1) -> list[FakeOpenAI]:
        out = []
        for _ in range(n):
            s = FakeOpenAI()
            await s.start()
            made.append(s)
            out.append(s)
        return out

    yield make
    for s in made:
        await s.close()


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., Awaitable[OpenAIService]]]:
    made: list[OpenAIService] = []

    async def make(endpoints: list[str], **kw: Any) -> OpenAIService:
        kw.setdefault("backoff", 0.01)
        kw.setdefault("backoff_max", 1.0)
        svc = OpenAIService("llm", model="m", endpoints=endpoints, **kw)
        await svc.start()
        made.append(svc)
        return svc

    yield make
    for svc in made:
        await svc.stop()


MSG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def test_success_parses_everything(servers, client) -> None:
    (srv,) = await servers(1)
    tool_calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    srv.script = [
        ok(
            choices=[
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
                }
            ]
        )
    ]
    svc = await client([srv.url + "/"], extra_body={"top_k": 5, "temperature": 1.0})
    assert isinstance(svc, Service)
    res = await svc.call({**MSG, "temperature": 0.2})
    assert isinstance(res, ChatResult)
    assert res.content is None
    assert res.tool_calls == tool_calls
    assert res.finish_reason == "tool_calls"
    assert res.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert res.model == "served-model"
    assert res.attempts == 1
    assert res.endpoint == srv.url
    sent = srv.bodies[0]
    assert sent["model"] == "m"
    assert sent["top_k"] == 5
    assert sent["temperature"] == 0.2  # the request wins over extra_body defaults
    assert sent["messages"] == MSG["messages"]
    assert srv.auth == [None]


async def test_5xx_then_success(servers, client) -> None:
    (srv,) = await servers(1)
    srv.script = [status(503)]
    svc = await client([srv.url])
    res = await svc.call(MSG)
    assert res.attempts == 2
    assert res.content == "hello"
    st = svc.stats()
    assert st["requests"] == 2 and st["errors"] == 1 and st["retries"] == 1
    assert st["failures"] == 0


async def test_429_retry_after_is_honoured(servers, client) -> None:
    (srv,) = await servers(1)
    srv.script = [status(429, headers={"Retry-After": "0.3"})]
    svc = await client([srv.url])
    t0 = time.monotonic()
    res = await svc.call(MSG)
    assert time.monotonic() - t0 >= 0.3
    assert res.attempts == 2


async def test_retry_after_beyond_backoff_max_is_honoured(servers, client) -> None:
    # Retry-After has its own cap: clipping it to backoff_max would retry too early.
    (srv,) = await servers(1)
    srv.script = [status(429, headers={"Retry-After": "2"})]
    svc = await client([srv.url], backoff_max=0.2)
    t0 = time.monotonic()
    res = await svc.call(MSG)
    assert time.monotonic() - t0 >= 1.9
    assert res.attempts == 2 and res.content == "hello"


async def test_retry_after_is_capped_by_retry_after_max(servers, client) -> None:
    (srv,) = await servers(1)
    srv.script = [status(503, headers={"Retry-After": "120"})]
    svc = await client([srv.url], backoff_max=0.1, retry_after_max=0.2)
    t0 = time.monotonic()
    res = await svc.call(MSG)
    assert time.monotonic() - t0 < 60
    assert res.attempts == 2


def test_retry_after_max_default_and_config() -> None:
    from peerflow.config import OpenAIServiceConfig
    from peerflow.services import build_service

    svc = OpenAIService("llm", model="m", endpoints=["http://127.0.0.1:1/v1"])
    assert svc.retry_after_max == 600.0
    cfg = OpenAIServiceConfig(
        kind="openai", model="m", endpoints=["http://127.0.0.1:1/v1"], retry_after_max=42
    )
    built = build_service("llm", cfg)
    assert isinstance(built, OpenAIService) and built.retry_after_max == 42


def test_retry_after_parsing() -> None:
    assert _retry_after_seconds(None) is None
    assert _retry_after_seconds("2") == 2.0
    assert _retry_after_seconds("0.25") == 0.25
    assert _retry_after_seconds("garbage") is None
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after_seconds(future) or 0) <= 31


async def test_timeout_retried_then_fails(servers, client) -> None:
    (srv,) = await servers(1)
    srv.default = sleep(5)
    svc = await client([srv.url], timeout=0.2, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as ei:
        await svc.call(MSG)
    assert time.monotonic() - t0 < 2.0
    err = ei.value
    assert err.attempts == 2 and err.retryable
    assert "timed out" in str(err)
    assert srv.url in str(err)
    assert len(srv.bodies) == 2


async def test_timeout_then_success(servers, client) -> None:
    (srv,) = await servers(1)
    srv.script = [sleep(5)]
    svc = await client([srv.url], timeout=0.2)
    res = await svc.call(MSG)
    assert res.attempts == 2


@pytest.mark.parametrize(
    "bad",
    [
        raw(b"<html>not json"),
        raw(b'{"error": "overloaded"}'),
        raw(b'{"choices": []}'),
        raw(b'{"choices": [{"message": null}]}'),
        raw(b"[1, 2]"),
    ],
    ids=["garbage", "no-choices", "empty-choices", "null-message", "list"],
)
async def test_unusable_body_is_retried(servers, client, bad: Action) -> None:
    (srv,) = await servers(1)
    srv.script = [bad]
    svc = await client([srv.url])
    res = await svc.call(MSG)
    assert res.attempts == 2 and res.content == "hello"


async def test_unreachable_endpoint_names_url(client) -> None:
    url = closed_port_url()
    svc = await client([url], max_retries=2)
    with pytest.raises(ServiceError) as ei:
        await svc.call(MSG)
    err = ei.value
    assert err.attempts == 3
    assert err.retryable
    assert err.status is None
    assert url in str(err)
    assert svc.stats()["endpoints"][url]["requests"] == 3
    assert svc.stats()["failures"] == 1


async def test_408_is_retried(servers, client) -> None:
    (srv,) = await servers(1)
    srv.script = [status(408)]
    svc = await client([srv.url])
    res = await svc.call(MSG)
    assert res.attempts == 2 and res.content == "hello"
    srv.default = status(408)
    with pytest.raises(ServiceError) as ei:
        await svc.call(MSG)
    assert ei.value.retryable and ei.value.status == 408 and ei.value.attempts == 4


async def test_endpoint_index_and_last_error(servers, client) -> None:
    a, b = await servers(2)
    svc = await client([a.url, b.url])
    seen = {(r.endpoint, r.endpoint_index) for r in [await svc.call(MSG) for _ in range(4)]}
    assert seen == {(a.url, 0), (b.url, 1)}
    assert svc.last_error is None
    b.default = status(404, body={"error": {"message": "no such model"}})
    a.default = status(404, body={"error": {"message": "no such model"}})
    with pytest.raises(ServiceError):
        await svc.call(MSG)
    assert "no such model" in (svc.last_error or "")


async def test_not_started_is_retryable() -> None:
    svc = OpenAIService("llm", model="m", endpoints=["http://127.0.0.1:1/v1"])
    with pytest.raises(ServiceError) as ei:
        await svc.call(MSG)
    assert ei.value.retryable


@pytest.mark.parametrize("code", [400, 401, 404, 422])
async def test_4xx_not_retried(servers, client, code: int) -> None:
    (srv,) = await servers(1)
    long_msg = "bad things: " + "x" * 2000
    srv.default = status(code, body={"error": {"message": long_msg, "type": "invalid"}})
    svc = await client([srv.url], max_retries=3)
    with pytest.raises(ServiceError) as ei:
        await svc.call(MSG)
    err = ei.value
    assert err.status == code
    assert err.attempts == 1
    assert not err.retryable
    assert "bad things" in str(err)
    assert len(str(err)) < 800
    assert len(srv.bodies) == 1


async def test_retries_exhausted_reports_last_status(servers, client) -> None:
    (srv,) = await servers(1)
    srv.default = status(500, body={"error": {"message": "kaboom"}})
    svc = await client([srv.url], max_retries=2)
    with pytest.raises(ServiceError) as ei:
        await svc.call(MSG)
    err = ei.value
    assert err.attempts == 3 and err.retryable and err.status == 500
    assert "kaboom" in str(err) and "HTTP 500" in str(err)
    assert len(srv.bodies) == 3


async def test_least_outstanding_balancing(servers, client) -> None:
    a, b = await servers(2)
    a.hold, b.hold = asyncio.Event(), asyncio.Event()
    svc = await client([a.url, b.url])
    first = [asyncio.create_task(svc.call(MSG)) for _ in range(6)]
    while a.in_flight + b.in_flight < 6:
        await asyncio.sleep(0.01)
    assert (a.in_flight, b.in_flight) == (3, 3)
    b.hold.set()  # b drains; a keeps holding its three
    while b.in_flight:
        await asyncio.sleep(0.01)
    for _ in range(5):
        res = await svc.call(MSG)
        assert res.endpoint == b.url
    assert len(a.bodies) == 3 and len(b.bodies) == 8
    a.hold.set()
    results = await asyncio.gather(*first)
    assert {r.endpoint for r in results} == {a.url, b.url}
    assert svc.stats()["outstanding"] == 0


async def test_round_robin_on_ties(servers, client) -> None:
    a, b = await servers(2)
    svc = await client([a.url, b.url])
    for _ in range(10):
        await svc.call(MSG)
    assert len(a.bodies) == len(b.bodies) == 5


async def test_sticky_routing(servers, client) -> None:
    a, b = await servers(2)
    svc = await client([a.url, b.url], sticky=True)
    chosen: dict[str, str | None] = {}
    for k in range(20):
        key = f"task-{k}"
        for _ in range(3):
            res = await svc.call(MSG, key=key)
            assert chosen.setdefault(key, res.endpoint) == res.endpoint
    assert set(chosen.values()) == {a.url, b.url}  # keys spread over both endpoints
    # Without a key the balancer still works normally.
    res = await svc.call(MSG)
    assert res.endpoint in {a.url, b.url}


async def test_sticky_fails_over_when_preferred_endpoint_dies(servers, client) -> None:
    a, b = await servers(2)
    svc = await client([a.url, b.url], sticky=True)
    key = ""
    for i in range(100):
        key = f"k{i}"
        if (await svc.call(MSG, key=key)).endpoint == a.url:
            break
    assert key and svc.stats()["endpoints"][a.url]["requests"] == 1
    await a.close()
    res = await svc.call(MSG, key=key)
    assert res.endpoint == b.url
    assert res.attempts == 2
    # The dead endpoint is cooling down: the next turn goes straight to b.
    res = await svc.call(MSG, key=key)
    assert res.endpoint == b.url and res.attempts == 1


async def test_failover_to_live_endpoint(servers, client) -> None:
    (live,) = await servers(1)
    dead = closed_port_url()
    svc = await client([dead, live.url], max_retries=2)
    results = [await svc.call(MSG) for _ in range(10)]
    assert all(r.endpoint == live.url for r in results)
    assert sum(r.attempts for r in results) <= 11  # at most one wasted attempt
    st = svc.stats()
    assert st["endpoints"][dead]["errors"] >= 1
    assert st["endpoints"][dead]["healthy"] is False
    # Concurrent burst also all succeeds.
    results = await asyncio.gather(*(svc.call(MSG) for _ in range(50)))
    assert all(r.endpoint == live.url for r in results)


async def test_health(servers, client) -> None:
    (live,) = await servers(1)
    dead = closed_port_url()
    svc = await client([dead, live.url])
    assert await svc.health() is True
    st = svc.stats()["endpoints"]
    assert st[live.url]["healthy"] is True and st[dead]["healthy"] is False
    # An unhealthy endpoint gets no traffic while it is marked down.
    for _ in range(4):
        assert (await svc.call(MSG)).endpoint == live.url
    assert svc.stats()["endpoints"][dead]["requests"] == 0
    only_dead = await client([dead])
    assert await only_dead.health() is False
    assert dead in (only_dead.last_error or "")  # the probe says which URL did not answer


async def test_not_started_and_idempotent_lifecycle(servers) -> None:
    (srv,) = await servers(1)
    svc = OpenAIService("llm", model="m", endpoints=[srv.url])
    with pytest.raises(ServiceError, match="not started"):
        await svc.call(MSG)
    await svc.start()
    await svc.start()
    assert (await svc.call(MSG)).content == "hello"
    await svc.stop()
    await svc.stop()


async def test_api_key_sent_but_never_leaked(servers, client, monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PEERFLOW_TEST_KEY", SECRET)
    (srv,) = await servers(1)
    # A server that echoes the key back in its error message must not leak it either.
    srv.script = [status(503), status(401, body={"error": {"message": f"bad key {SECRET}"}})]
    dead = closed_port_url()
    svc = await client([srv.url], api_key_env="PEERFLOW_TEST_KEY")
    with pytest.raises(ServiceError) as ei:
        await svc.call(MSG)
    assert srv.auth == [f"Bearer {SECRET}"] * 2
    errors = [ei.value]
    svc_dead = await client([dead], api_key_env="PEERFLOW_TEST_KEY", max_retries=1)
    with pytest.raises(ServiceError) as ei2:
        await svc_dead.call(MSG)
    errors.append(ei2.value)
    res = await svc.call(MSG)
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [repr(svc), str(svc), repr(svc.stats()), repr(svc_dead.stats())]
    texts += [repr(res), caplog.text]
    for t in texts:
        assert SECRET not in t


async def test_missing_api_key_env_names_variable(monkeypatch) -> None:
    monkeypatch.delenv("PEERFLOW_NOPE_KEY", raising=False)
    svc = OpenAIService(
        "llm", model="m", endpoints=["http://127.0.0.1:1/v1"], api_key_env="PEERFLOW_NOPE_KEY"
    )
    with pytest.raises(ServiceError, match="PEERFLOW_NOPE_KEY"):
        await svc.start()


async def test_many_concurrent_calls(servers, client) -> None:
    a, b = await servers(2)
    svc = await client([a.url, b.url], max_connections=64)
    results = await asyncio.gather(*(svc.call(MSG) for _ in range(500)))
    assert all(r.content == "hello" for r in results)
    assert len(a.bodies) + len(b.bodies) == 500
    assert abs(len(a.bodies) - len(b.bodies)) < 100
    st = svc.stats()
    assert st["calls"] == 500 and st["outstanding"] == 0 and st["errors"] == 0
