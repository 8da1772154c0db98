"""Watch every service call of a run: fail fast on misconfiguration, pause during an outage.

A service failure must never burn a dataset into error records. Two situations matter:

- **Misconfiguration.** A wrong URL, model name or API key makes every request fail from
  the start. If a service's first `fail_fast` calls all fail, the watch trips: `aborted` is
  set and `reason` says what to check. The runtime stops admitting rows, abandons in-flight
  work and exits non-zero; the unattempted rows are left for the next run. Until a service
  has answered once, its failures are recorded as transient (a re-run retries them): a 404
  from a mistyped URL is the config's fault, not the row's.
- **Outage.** Once a service has worked, a run of transient failures (or a failed call
  whose health probe finds no endpoint answering) is an outage. Admission pauses, a
  background probe calls `health()` every `probe_interval` seconds and resumes admission
  when it answers. Calls that fail during the outage do not fail their task: they wait for
  the recovery and are sent again. An outage longer than `outage_timeout` trips `aborted`.

Once `aborted` is set, calls that end (or start) never return: the runtime cancels them,
so abandoned work leaves no record and the next run re-attempts it.

There is one watch per process; `wrap` gives each service a stand-in with the same
protocol (other attributes pass through), so agents need not know about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from peerflow.services.base import Service, ServiceError, ServiceUnavailable, error_kind
from peerflow.services.cache import CacheMiss

__all__ = ["ServiceWatch", "WatchedService"]

log = logging.getLogger("peerflow")

_MAX_ERROR_CHARS = 400


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


def _describe(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "..."
    return text


class _State:
    """What the watch knows about one service in this run."""

    __slots__ = (
        "announced",
        "calls",
        "down_since",
        "down_wall",
        "failures",
        "first_failures",
        "last_error",
        "name",
        "outages",
        "paused",
        "paused_at",
        "paused_total",
        "probe",
        "resumed",
        "service",
        "streak",
        "successes",
        "tripped",
    )

    def __init__(self, service: Service):
        self.service = service
        self.name = service.name
        self.calls = 0
        self.failures = 0
        self.successes = 0
        self.first_failures = 0  # failures before the first success
        self.streak = 0  # consecutive transient failures since the last success
        self.down_since: float | None = None  # monotonic start of the current outage
        self.down_wall = 0.0
        self.outages = 0
        self.announced = False  # the resumption of the current outage was printed
        self.paused = False
        self.paused_at = 0.0
        self.paused_total = 0.0
        self.last_error: str | None = None
        self.tripped: str | None = None
        self.probe: asyncio.Future[bool] | None = None
        self.resumed = asyncio.Event()
        self.resumed.set()

    def endpoints(self) -> list[str]:
        eps = getattr(self.service, "endpoints", None)
        return [str(e) for e in eps] if isinstance(eps, list | tuple) else []


class WatchedService:
    """A service seen through a `ServiceWatch`: same protocol, same attributes."""

    def __init__(self, service: Service, watch: ServiceWatch, state: _State):
        self.name = service.name
        self.inner = service
        self._watch = watch
        self._state = state

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes not defined here: model, endpoints, stats(), ...
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"WatchedService({self.inner!r})"

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def health(self) -> bool:
        return await self.inner.health()

    async def call(self, request: Any, *, key: str | None = None) -> Any:
        watch = self._watch
        st = self._state
        inner = self.inner
        while True:
            if watch.tripped:
                await watch._abandon()
            st.calls += 1
            try:
                result = await inner.call(request, key=key)
            except CacheMiss:
                raise  # a replay without this request recorded: says nothing of the service
            except Exception as exc:
                st.failures += 1
                st.last_error = _describe(exc)
                if await watch._after_failure(st, exc):
                    continue  # the outage is over: send it again
                if st.successes == 0 and isinstance(exc, ServiceError) and not exc.retryable:
                    # Nothing has worked yet: likely the config, not this row. A re-run
                    # with the config fixed must re-attempt it.
                    raise ServiceError(
                        str(exc), attempts=exc.attempts, retryable=True, status=exc.status
                    ) from exc
                raise
            st.successes += 1
            if st.streak:
                st.streak = 0
            if st.down_since is not None:
                watch._recovered(st)
            return result


class ServiceWatch:
    """Observes every call of the services it wraps; one per process.

    The runtime calls, in order: `wrap` for each started service (agents get the
    wrappers), `await check_health()` before admitting any row, `start()`, then for each
    row to admit `await admit()` (False: stop admitting), and watches `aborted`. At the
    end `await stop()`, and `report()` goes into the summary.
    """

    def __init__(
        self,
        *,
        fail_fast: int = 20,
        outage_timeout: float = 600.0,
        outage_after: int = 10,
        probe_interval: float = 5.0,
        on_event: Callable[[str], None] | None = None,
    ):
        if fail_fast < 0 or outage_after < 1 or outage_timeout <= 0 or probe_interval <= 0:
            raise ValueError(
                "fail_fast >= 0, outage_after >= 1, outage_timeout > 0 and probe_interval > 0"
            )
        self.fail_fast = fail_fast
        self.outage_timeout = outage_timeout
        self.outage_after = outage_after
        self.probe_interval = probe_interval
        self.on_event = on_event
        self.aborted = asyncio.Event()
        self.reason: str | None = None
        self.tripped = False
        # True while rows may be admitted without waiting: the runtime may test it to skip
        # awaiting `admit()` on the hot path.
        self.open = True
        self._states: dict[int, _State] = {}
        self._wrapped: dict[int, WatchedService] = {}
        self._admission = asyncio.Event()
        self._admission.set()
        self._prober: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls, runtime: Any, *, on_event: Callable[[str], None] | None = None, **kw: Any
    ) -> ServiceWatch:
        """A watch with the run's `runtime.fail_fast` and `runtime.outage_timeout`."""
        return cls(
            fail_fast=runtime.fail_fast,
            outage_timeout=runtime.outage_timeout,
            on_event=on_event,
            **kw,
        )

    # ------------------------------------------------------------------ wiring

    def wrap(self, service: Service) -> Service:
        """The service as agents should see it; wrapping twice returns the same object."""
        if isinstance(service, WatchedService):
            if service._watch is self:
                return service
            service = service.inner
        wrapped = self._wrapped.get(id(service))
        if wrapped is None:
            state = self._states[id(service)] = _State(service)
            wrapped = self._wrapped[id(service)] = WatchedService(service, self, state)
        return wrapped

    def wrap_all(self, services: dict[str, Service]) -> dict[str, Service]:
        return {name: self.wrap(s) for name, s in services.items()}

    def start(self) -> None:
        """Start the background probe (it only works while some service is down)."""
        if self._prober is None or self._prober.done():
            self._prober = asyncio.ensure_future(self._probe_loop())

    async def stop(self) -> None:
        prober, self._prober = self._prober, None
        if prober is not None:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        now = time.monotonic()
        for st in self._states.values():
            if st.paused:
                st.paused_total += now - st.paused_at
                st.paused_at = now

    async def check_health(self, services: Iterable[Service] | None = None) -> None:
        """Raise `ServiceUnavailable` unless every service has an endpoint that answers.

        Called before any row is admitted, so a dead or mistyped endpoint stops the run
        with no record written.
        """
        states = (
            list(self._states.values())
            if services is None
            else [self._state_of(s) for s in services]
        )
        results = await asyncio.gather(*(self._health(st) for st in states))
        down = [st for st, ok in zip(states, results, strict=True) if not ok]
        if down:
            raise ServiceUnavailable("\n".join(self._unavailable(st) for st in down))

    # ------------------------------------------------------------------ admission

    async def admit(self) -> bool:
        """Wait while admission is paused; False once the run is aborted (stop admitting)."""
        while not self.open:
            if self.tripped:
                return False
            await self._admission.wait()
        return True

    @property
    def paused(self) -> bool:
        return any(st.paused for st in self._states.values())

    def report(self) -> dict[str, Any]:
        """Per-service counters for the run summary."""
        now = time.monotonic()
        out: dict[str, Any] = {}
        for st in self._states.values():
            paused = st.paused_total + (now - st.paused_at if st.paused else 0.0)
            out[st.name] = {
                "calls": st.calls,
                "failures": st.failures,
                "successes": st.successes,
                "outages": st.outages,
                "paused_seconds": round(paused, 3),
                "tripped": st.tripped,
            }
            cache_stats = getattr(st.service, "cache_stats", None)
            if cache_stats is not None:  # hits and misses of its response cache
                out[st.name]["cache"] = cache_stats()
        return out

    # ------------------------------------------------------------------ internals

    def _state_of(self, service: Service) -> _State:
        wrapped = self.wrap(service)
        assert isinstance(wrapped, WatchedService)
        return wrapped._state

    def _event(self, text: str) -> None:
        if self.on_event is not None:
            self.on_event(text)
        else:
            log.warning("%s", text)

    async def _abandon(self) -> None:
        """Never return: the run was aborted and the runtime cancels in-flight work."""
        await asyncio.get_running_loop().create_future()

    async def _health(self, st: _State) -> bool:
        """One health probe at a time per service; concurrent askers share its answer."""
        probe = st.probe
        if probe is None:
            probe = st.probe = asyncio.ensure_future(self._ask_health(st))
            probe.add_done_callback(lambda _: setattr(st, "probe", None))
        return await asyncio.shield(probe)

    async def _ask_health(self, st: _State) -> bool:
        try:
            ok = bool(await st.service.health())
        except Exception as exc:
            st.last_error = _describe(exc)
            return False
        if not ok:
            st.last_error = getattr(st.service, "last_error", None) or st.last_error
        return ok

    def _unavailable(self, st: _State) -> str:
        eps = st.endpoints()
        where = f" ({', '.join(eps)})" if eps else ""
        last = f"; last error: {st.last_error}" if st.last_error else ""
        return (
            f"service {st.name!r} does not answer on any of its endpoints{where}{last}. "
            "Check that the server is running and that the URL is right; no row was admitted."
        )

    async def _after_failure(self, st: _State, exc: BaseException) -> bool:
        """Decide about a failed call: True to send it again, False to let it fail its task.

        Does not return once the run is aborted.
        """
        if self.tripped:
            await self._abandon()
        transient = error_kind(exc)[0]
        if st.successes == 0:
            st.first_failures += 1
            if self.fail_fast and st.first_failures >= self.fail_fast:
                self._trip(
                    st,
                    f"service {st.name!r} failed its first {st.first_failures} requests, "
                    f"none succeeded; last error: {st.last_error} — check the endpoint URL, "
                    "model name and API key; nothing more was admitted, re-run the same "
                    "command to resume",
                )
                await self._abandon()
            return False
        if not transient:
            st.streak = 0  # the server answered: whatever this is, it is not an outage
            return False
        st.streak += 1
        if st.down_since is None:
            if st.streak < self.outage_after:
                before = st.successes
                if await self._health(st) or st.successes != before:
                    return False  # one unlucky call, not an outage
            if self.tripped:
                await self._abandon()
            if st.down_since is None:
                self._outage(st)
        elif not st.paused:
            # The probe said it answers, but calls still fail: pause again.
            self._pause(st)
        await self._wait_resumed(st)
        return True

    async def _wait_resumed(self, st: _State) -> None:
        while st.paused and not self.tripped:
            await st.resumed.wait()
        if self.tripped:
            await self._abandon()

    def _outage(self, st: _State) -> None:
        st.down_since = time.monotonic()
        st.down_wall = time.time()
        st.outages += 1
        st.announced = False
        self._pause(st)
        self._event(
            f"service {st.name!r} is failing on every endpoint since {_clock(st.down_wall)}; "
            f"admission paused, probing every {self.probe_interval:g} s "
            f"(last error: {st.last_error})"
        )
        self.start()

    def _pause(self, st: _State) -> None:
        if st.paused:
            return
        st.paused = True
        st.paused_at = time.monotonic()
        st.resumed.clear()
        self._update_admission()

    def _resume(self, st: _State) -> None:
        if not st.paused:
            return
        st.paused = False
        st.paused_total += time.monotonic() - st.paused_at
        st.resumed.set()
        self._update_admission()

    def _recovered(self, st: _State) -> None:
        """A call succeeded: the outage is over."""
        down_since, st.down_since = st.down_since, None
        self._resume(st)
        if not st.announced and down_since is not None:
            st.announced = True
            self._event(
                f"service {st.name!r} answers again after "
                f"{time.monotonic() - down_since:.0f} s; admission resumed"
            )

    def _update_admission(self) -> None:
        self.open = not self.tripped and not any(s.paused for s in self._states.values())
        if self.open or self.tripped:
            self._admission.set()
        else:
            self._admission.clear()

    def _trip(self, st: _State, reason: str) -> None:
        if self.tripped:
            return
        self.tripped = True
        self.reason = reason
        st.tripped = reason
        self._update_admission()
        for s in self._states.values():
            s.resumed.set()
        self.aborted.set()
        self._event(reason)

    async def _probe_loop(self) -> None:
        """While a service is down: probe it, resume when it answers, trip when too long."""
        while not self.tripped:
            await asyncio.sleep(self.probe_interval)
            for st in list(self._states.values()):
                if not st.paused:
                    continue
                if await self._health(st):
                    if st.paused:
                        # Admission resumes; held calls are sent again. Should they still
                        # fail, the service pauses again, and the outage clock keeps running
                        # until a call succeeds.
                        self._resume(st)
                        if not st.announced:
                            st.announced = True
                            self._event(
                                f"service {st.name!r} answers health probes again "
                                f"(down since {_clock(st.down_wall)}); admission resumed"
                            )
                    continue
                if (
                    st.paused
                    and st.down_since is not None
                    and (time.monotonic() - st.down_since >= self.outage_timeout)
                ):
                    self._trip(
                        st,
                        f"service {st.name!r} has been failing on every endpoint since "
                        f"{_clock(st.down_wall)}, longer than {self.outage_timeout:g} s "
                        f"(runtime.outage_timeout); last error: {st.last_error} — nothing more "
                        "was admitted and in-flight work was abandoned; re-run the same "
                        "command to resume",
                    )
                    return
