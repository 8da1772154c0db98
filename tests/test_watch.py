"""ServiceWatch against real HTTP: health before admission, fail fast, pause during an outage.

The servers are the scripted OpenAI-compatible fake of test_openai_client on 127.0.0.1,
with a switch that takes the whole server down (chat and health route) and back up, and
the simulator as a real managed server process. Waits are for events, with generous
safety timeouts; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from test_openai_client import MSG, FakeOpenAI, closed_port_url, ok, status

from peerflow.agents.llm import LLMAgent, LLMOptions
from peerflow.config import RuntimeConfig
from peerflow.message import new_message
from peerflow.services import ServiceWatch
from peerflow.services.base import Service, ServiceError, ServiceUnavailable
from peerflow.services.openai_client import OpenAIService

SAFETY = 20.0  # seconds; only to turn a hang into a failure


class SwitchableServer(FakeOpenAI):
    """A fake server that can go down as a whole (503 everywhere) and come back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.probes = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            self.bodies.append({})
            return await status(503)(request)
        return await super()._chat(request)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.probes += 1
        if self.down:
            return await status(503)(request)
        return await super()._models(request)


@pytest.fixture
async def setup() -> AsyncIterator[Callable[..., Awaitable[tuple[Any, ...]]]]:
    servers: list[FakeOpenAI] = []
    services: list[OpenAIService] = []
    watches: list[ServiceWatch] = []
    tasks: list[asyncio.Task[Any]] = []

    async def make(
        *, urls: list[str] | None = None, max_retries: int = 0, **watch_kw: Any
    ) -> tuple[Any, ...]:
        srv = SwitchableServer()
        await srv.start()
        servers.append(srv)
        svc = OpenAIService(
            "llm",
            model="m",
            endpoints=urls or [srv.url],
            max_retries=max_retries,
            backoff=0.01,
            backoff_max=0.02,
        )
        await svc.start()
        services.append(svc)
        events: list[str] = []
        watch_kw.setdefault("probe_interval", 0.05)
        watch = ServiceWatch(on_event=events.append, **watch_kw)
        watches.append(watch)
        return srv, watch, watch.wrap(svc), events

    make.tasks = tasks  # type: ignore[attr-defined]
    yield make
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for w in watches:
        await w.stop()
    for svc in services:
        await svc.stop()
    for srv in servers:
        await srv.close()


async def until(predicate: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), SAFETY)


# --------------------------------------------------------------------------- wiring


async def test_wrapper_keeps_the_service_protocol(setup) -> None:
    srv, watch, llm, _ = await setup()
    assert isinstance(llm, Service)
    assert llm.name == "llm" and llm.model == "m" and llm.endpoints == [srv.url]
    assert watch.wrap(llm) is llm and watch.wrap(llm.inner) is llm
    assert (await llm.call(MSG)).content == "hello"
    assert llm.stats()["calls"] == 1
    assert watch.report() == {
        "llm": {
            "calls": 1,
            "failures": 0,
            "successes": 1,
            "outages": 0,
            "paused_seconds": 0.0,
            "tripped": None,
        }
    }
    assert await watch.admit() is True


def test_runtime_config_defaults() -> None:
    cfg = RuntimeConfig()
    assert cfg.fail_fast == 20 and cfg.outage_timeout == 600.0
    watch = ServiceWatch.from_config(RuntimeConfig(fail_fast=0, outage_timeout=5))
    assert watch.fail_fast == 0 and watch.outage_timeout == 5


# --------------------------------------------------------------------------- health


async def test_health_check_passes_when_an_endpoint_answers(setup) -> None:
    _, watch, _, _ = await setup()
    await watch.check_health()


async def test_health_check_fails_on_a_dead_endpoint(setup) -> None:
    dead = closed_port_url()
    _, watch, _, _ = await setup(urls=[dead])
    with pytest.raises(ServiceUnavailable) as ei:
        await watch.check_health()
    text = str(ei.value)
    assert "service 'llm'" in text and dead in text
    assert "last error" in text and "Connect" in text  # the connection error, in words
    assert "no row was admitted" in text


async def test_health_check_names_only_the_dead_service(setup) -> None:
    _, watch, _, _ = await setup()
    other = OpenAIService("judge", model="m", endpoints=[closed_port_url()])
    await other.start()
    try:
        watch.wrap(other)
        with pytest.raises(ServiceUnavailable) as ei:
            await watch.check_health()
        assert "'judge'" in str(ei.value) and "'llm'" not in str(ei.value)
    finally:
        await other.stop()


async def test_health_of_a_server_that_is_down(setup) -> None:
    srv, watch, _, _ = await setup()
    srv.down = True
    with pytest.raises(ServiceUnavailable, match="HTTP 503"):
        await watch.check_health()


@pytest.mark.slow
async def test_sim_service_health_and_a_dead_replica() -> None:
    from peerflow.services.managed import SimService

    sim = SimService("sim", options={"time_scale": 0})
    await sim.start()
    watch = ServiceWatch()
    try:
        watch.wrap(sim)
        await watch.check_health()
        os.kill(sim.pids[0], signal.SIGKILL)
        await asyncio.wait_for(asyncio.to_thread(sim._procs[0].wait), SAFETY)
        with pytest.raises(ServiceUnavailable) as ei:
            await watch.check_health()
        assert "exited" in str(ei.value) and sim.endpoints[0] in str(ei.value)
    finally:
        await sim.stop()


# --------------------------------------------------------------------------- fail fast


async def test_fail_fast_trips_after_n_failures(setup) -> None:
    srv, watch, llm, events = await setup(fail_fast=4)
    srv.default = status(404, body={"error": {"message": "model 'm' does not exist"}})
    for _ in range(3):
        with pytest.raises(ServiceError) as ei:
            await llm.call(MSG)
        # Nothing has worked yet: the failure may be the config's, so a re-run retries it.
        assert ei.value.retryable and ei.value.status == 404
    assert not watch.aborted.is_set()
    fourth = asyncio.create_task(llm.call(MSG))
    setup.tasks.append(fourth)
    await asyncio.wait_for(watch.aborted.wait(), SAFETY)
    reason = watch.reason or ""
    assert "service 'llm' failed its first 4 requests, none succeeded" in reason
    assert "does not exist" in reason and "check the endpoint URL, model name and API key" in reason
    assert "re-run the same command" in reason
    assert events == [reason]
    assert not fourth.done()  # abandoned: the runtime cancels it, no record
    assert await watch.admit() is False
    assert watch.report()["llm"]["tripped"] == reason


async def test_fail_fast_does_not_trip_after_a_success(setup) -> None:
    srv, watch, llm, _ = await setup(fail_fast=3)
    assert (await llm.call(MSG)).content == "hello"
    srv.default = status(400)
    for _ in range(6):
        with pytest.raises(ServiceError) as ei:
            await llm.call(MSG)
        assert not ei.value.retryable  # it has worked: a 400 is the row's problem
    assert not watch.aborted.is_set() and watch.open


async def test_fail_fast_zero_disables_it(setup) -> None:
    _, watch, llm, _ = await setup(urls=[closed_port_url()], fail_fast=0)
    for _ in range(5):
        with pytest.raises(ServiceError):
            await llm.call(MSG)
    assert not watch.aborted.is_set()


# --------------------------------------------------------------------------- outages


async def test_one_failed_call_while_the_service_answers_is_not_an_outage(setup) -> None:
    srv, watch, llm, events = await setup(outage_after=5)
    await llm.call(MSG)
    srv.script = [status(502)]
    with pytest.raises(ServiceError) as ei:
        await llm.call(MSG)
    assert ei.value.retryable
    assert watch.open and not watch.paused and events == []


async def test_outage_pauses_admission_and_in_flight_calls_survive(setup) -> None:
    srv, watch, llm, events = await setup(outage_after=3, outage_timeout=60)
    watch.start()
    agent = LLMAgent("solver", LLMOptions(service="llm", prompt="hi"), {"llm": llm})
    first = await agent.run(new_message("r0", {}, {}))
    assert first.ok
    srv.down = True
    steps = [
        asyncio.create_task(agent.run(new_message(f"r{i}", {}, {}, seed=i))) for i in range(1, 5)
    ]
    setup.tasks.extend(steps)
    await until(lambda: not watch.open)
    assert watch.paused
    admit = asyncio.create_task(watch.admit())
    setup.tasks.append(admit)
    probes = srv.probes
    await until(lambda: srv.probes >= probes + 3)  # the probe keeps asking meanwhile
    assert not admit.done()  # admission is paused
    assert not any(t.done() for t in steps)  # in-flight calls wait, none failed
    assert len(events) == 1
    assert "service 'llm' is failing on every endpoint since" in events[0]
    assert "admission paused, probing every 0.05 s" in events[0]
    srv.down = False
    assert await asyncio.wait_for(admit, SAFETY) is True
    done = await asyncio.wait_for(asyncio.gather(*steps), SAFETY)
    assert all(s.ok and s.content == "hello" for s in done)  # no failed step
    assert any("answers" in e and "admission resumed" in e for e in events[1:])
    report = watch.report()["llm"]
    assert report["outages"] == 1 and report["paused_seconds"] > 0 and report["tripped"] is None
    assert not watch.aborted.is_set()


async def test_outage_is_declared_after_consecutive_failures(setup) -> None:
    # Here the health route keeps answering (only chat fails): the run of failures decides.
    srv, watch, llm, events = await setup(outage_after=3, outage_timeout=60)
    await llm.call(MSG)
    srv.default = status(500)
    for _ in range(2):
        with pytest.raises(ServiceError):
            await llm.call(MSG)
    held = asyncio.create_task(llm.call(MSG))
    setup.tasks.append(held)
    await until(lambda: watch.report()["llm"]["outages"] == 1)
    assert not held.done()
    assert "failing on every endpoint" in events[0]
    srv.default = ok("back")
    assert (await asyncio.wait_for(held, SAFETY)).content == "back"
    assert watch.open and not watch.aborted.is_set()


async def test_outage_longer_than_timeout_aborts(setup) -> None:
    srv, watch, llm, events = await setup(outage_after=2, outage_timeout=0.3)
    watch.start()
    await llm.call(MSG)
    srv.down = True
    calls = [asyncio.create_task(llm.call(MSG)) for _ in range(3)]
    setup.tasks.extend(calls)
    await asyncio.wait_for(watch.aborted.wait(), SAFETY)
    reason = watch.reason or ""
    assert "service 'llm' has been failing on every endpoint since" in reason
    assert "runtime.outage_timeout" in reason and "re-run the same command" in reason
    assert "HTTP 503" in reason
    assert events[-1] == reason
    assert not any(c.done() for c in calls)  # abandoned, never turned into error records
    assert await watch.admit() is False
    # A call made after the abort never reaches the server either.
    sent = len(srv.bodies)
    late = asyncio.create_task(llm.call(MSG))
    setup.tasks.append(late)
    await asyncio.sleep(0.05)
    assert not late.done() and len(srv.bodies) == sent
