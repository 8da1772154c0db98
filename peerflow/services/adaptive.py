"""Adaptive concurrency: each LLM service finds, and stays under, what its server accepts.

A provider's rate limit is not published in requests in flight, and changes with the hour;
a self-hosted server slows down long before it refuses anything. A fixed `max_in_flight`
is therefore either too low (money left on the table) or too high (a storm of 429s, each
retried, each delaying its task). So each service has a concurrency limit that adapts
(AIMD, as TCP does):

- **No limit until the server first pushes back** (the default for `http://` servers, one's
  own: vLLM, SGLang, the simulator): a run starts with every
  request its connections allow, so a server with room for 50,000 sequences gets them
  at once, and the limit only appears with the first 429, 503 or timeout. With `initial`
  set, a **slow start** instead: the limit starts at 8 requests (fewer if `initial` is
  smaller) and grows by one per success, so it doubles every round trip, up to `initial`
  or until the server first pushes back; the first requests are then never one burst,
  which suits a rate-limited API whose 429s cost money or quota: the default for `https://`
  endpoints (hosted APIs) is `initial` 1,024.
- **Additive increase.** Then it grows by `increase` per round trip (`increase / limit` per
  success), but only while requests succeed within `latency_target_s` (when set) and only
  while the limit is what holds requests back: a limit nobody reaches does not grow.
- **Multiplicative decrease.** A 429, a 503 or a timeout of a request that was sent as the
  k-th in flight sets the limit to `decrease` x k (never below `min`). Measuring against
  the rank the server refused, rather than against the limit, makes one overload count
  once: the other refusals of the same burst were sent at higher ranks and cut no further,
  however many there are, and a limit far above what the server takes comes down in one
  step. Slow start then climbs back (doubling per round trip) to `decrease` x the old
  limit, so a deep cut from a refusal in a quiet moment costs a few round trips, not the
  hundreds additive increase would take.
- **Retry-After.** A rejection's `Retry-After` pauses the whole service: no new request
  leaves until it has passed (up to the service's `retry_after_max`); those in flight go on.

Requests above the limit wait, first come first served; they never fail for it.

On the Ray runtime every actor calling the service holds a `Limiter` whose limit is its
share of one limit kept by a small actor per service (`SharedLimit`, started by
`shared_limits`), so the cluster backs off as one client. Actors sync every 0.25 s (and at
once after a rejection): they send what they saw (successes, rejections, requests in flight
and waiting) and get back their share of the limit, in proportion to their demand, and the
service's pause. That is one small actor call per process four times a second, whatever the
request rate; between syncs an actor cuts its own share at once on a rejection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "CONGESTION_STATUSES",
    "HOSTED_API_INITIAL",
    "Limiter",
    "Settings",
    "SharedLimit",
    "collect_reports",
    "concurrency_lines",
    "make_limiter",
    "shared_limits",
]

log = logging.getLogger(__name__)

# HTTP statuses that say "too much": rate limited, overloaded. Timeouts count too.
CONGESTION_STATUSES = frozenset({429, 503})
# Slow start begins with this many requests in flight (or `initial`, if smaller).
START_WINDOW = 8
# `initial` when the config leaves it unset and the service is a hosted API (https).
HOSTED_API_INITIAL = 1024
SYNC_INTERVAL = 0.25  # seconds between a Ray actor's syncs with its service's SharedLimit
# A client that has not synced for this long no longer counts in the shares.
CLIENT_TTL = 5.0
# A permit: when its request was sent, and how many were in flight with it (its rank).
Ticket = tuple[float, int]
# Service kinds whose calls are LLM requests through an `OpenAIService`.
LLM_KINDS = ("openai", "sim", "local_model", "command")


@dataclass(frozen=True)
class Settings:
    """A service's `concurrency:` section (see `peerflow.config.ConcurrencyConfig`)."""

    adaptive: bool = True
    initial: int | None = None
    min: int = 1
    max: int | None = None
    latency_target_s: float | None = None
    increase: float = 1.0
    decrease: float = 0.9
    shared: str | None = None  # the Ray actor holding the limit (set by `shared_limits`)

    @classmethod
    def of(cls, value: Any) -> Settings | None:
        """Settings from a config model, a mapping or Settings; None stays None."""
        if value is None or isinstance(value, Settings):
            return value
        if not isinstance(value, Mapping):
            value = value.model_dump()
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in names})


def _finite(limit: float) -> float | None:
    """A limit for a report: None while there is none (never pushed back, no `max`)."""
    return None if limit == float("inf") else round(limit, 2)


def make_limiter(name: str, value: Any, *, retry_after_max: float = 600.0) -> Limiter | None:
    """The limiter a service's `concurrency` setting asks for, or None (no adaptive limit)."""
    settings = Settings.of(value)
    if settings is None or not settings.adaptive:
        return None
    if settings.shared:
        return SharedLimiter(name, settings, retry_after_max=retry_after_max)
    return Limiter(name, settings, retry_after_max=retry_after_max)


class Limiter:
    """The adaptive limit of one service in this process (see the module docstring).

    `acquire` returns a ticket (send time, rank) once the request may go; `release` with that
    ticket and how the request ended, exactly once, however it ended. Not thread-safe: one
    event loop, like the service.
    """

    def __init__(self, name: str, settings: Settings, *, retry_after_max: float = 600.0):
        self.name = name
        self.settings = s = settings
        self.retry_after_max = retry_after_max
        self.floor = max(1, s.min)
        self.ceiling = float(s.max) if s.max else float("inf")
        if s.initial is None:  # no limit until the server first pushes back
            self.threshold = self.limit = max(float(self.floor), self.ceiling)
        else:
            self.threshold = max(float(self.floor), min(float(s.initial), self.ceiling))
            self.limit = min(self.threshold, max(float(self.floor), START_WINDOW))
        self.slow_start = self.limit < self.threshold
        self.in_flight = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.blocked_until = 0.0  # monotonic; no request leaves before it (Retry-After)
        self._timer: asyncio.TimerHandle | None = None
        # Counters for the summary.
        self.requests = 0
        self.waited = 0
        self.wait_seconds = 0.0
        self.rejections: collections.Counter[str] = collections.Counter()
        self.decreases = 0
        self.pauses = 0
        self.paused_seconds = 0.0
        self.lowest = self.highest = self.limit

    # ------------------------------------------------------------------ permits

    def _room(self) -> bool:
        # A fractional limit admits its ceiling: the limit is never below 1.
        return self.in_flight < self.limit

    async def acquire(self) -> Ticket:
        """Wait for a permit (first come, first served); returns the ticket for `release`."""
        self.requests += 1
        now = time.monotonic()
        if not self.waiters and self.in_flight < self.limit and now >= self.blocked_until:
            self.in_flight += 1  # the fast path: a few attribute reads, no await
            return now, self.in_flight
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self.waiters.append(fut)
        t0 = time.monotonic()
        self._wake()
        try:
            rank = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted as we were cancelled: give back
                self.in_flight -= 1
                self._wake()
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            raise
        now = time.monotonic()
        self.waited += 1
        self.wait_seconds += now - t0
        return now, rank

    def _wake(self) -> None:
        """Grant permits to waiters while there is room and no pause."""
        waiters = self.waiters
        if not waiters:
            return
        now = time.monotonic()
        if now < self.blocked_until:
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.blocked_until - now, self._unblock)
            return
        while waiters and self._room():
            fut = waiters.popleft()
            if fut.done():  # cancelled while waiting
                continue
            self.in_flight += 1
            fut.set_result(self.in_flight)

    def _unblock(self) -> None:
        self._timer = None
        self._wake()

    def release(
        self,
        ticket: Ticket,
        *,
        status: int | None,
        timed_out: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """One request ended: `status` is the HTTP status (0 or None: no answer)."""
        full = self.in_flight >= self.limit or bool(self.waiters)
        self.in_flight -= 1
        sent, rank = ticket
        if timed_out or status in CONGESTION_STATUSES:
            self._rejected("timeout" if timed_out else str(status), rank, retry_after)
        elif status is not None and 200 <= status < 300:
            target = self.settings.latency_target_s
            if target is not None and time.monotonic() - sent > target:
                self._slow()
            elif full:
                self._grew()
        self._wake()

    # ------------------------------------------------------------------ the rule

    def _grew(self) -> None:
        """A success while the limit held requests back: grow (slow start, then additive)."""
        if self.slow_start:
            self.limit = min(self.threshold, self.limit + 1.0)
            self.slow_start = self.limit < self.threshold
        else:
            self.limit = min(self.ceiling, self.limit + self.settings.increase / self.limit)
        if self.limit > self.highest:
            self.highest = self.limit

    def _slow(self) -> None:
        """A success slower than the latency target: no growth, and slow start is over."""
        self.threshold = min(self.threshold, self.limit)
        self.slow_start = False

    def _rejected(self, kind: str, rank: int, retry_after: float | None) -> None:
        self.rejections[kind] += 1
        self._congested(rank, retry_after)

    def _congested(self, rank: int, retry_after: float | None) -> None:
        """A request sent as the `rank`-th in flight was refused: cut the limit to `decrease`
        times that rank; slow start then climbs back to `decrease` times the old limit.

        A request refused at a rank above the limit was sent before an earlier cut: already
        counted. One refused at a rank far below the limit (a quiet moment, another client
        on the same key) cuts deep, but slow start takes the limit back up in a few round
        trips, not the hundreds additive increase would take.
        """
        cut = max(float(self.floor), self.settings.decrease * rank)
        if cut < self.limit:
            self.threshold = min(self.ceiling, max(cut, self.settings.decrease * self.limit))
            self.limit = cut
            self.slow_start = cut < self.threshold
            self.decreases += 1
            if cut < self.lowest:
                self.lowest = cut
        if retry_after:
            self.pause(retry_after)

    def pause(self, seconds: float) -> None:
        """No new request before `seconds` from now (a server's Retry-After)."""
        now = time.monotonic()
        until = now + min(seconds, self.retry_after_max)
        if until > self.blocked_until:
            self.pauses += 1
            self.paused_seconds += until - max(now, self.blocked_until)
            self.blocked_until = until

    # ------------------------------------------------------------------ reporting

    @property
    def used(self) -> bool:
        return self.requests > 0

    def report(self) -> dict[str, Any]:
        return {
            "adaptive": True,
            "limit": _finite(self.limit),
            "lowest": _finite(self.lowest),
            "highest": _finite(self.highest),
            "requests": self.requests,
            "waited": self.waited,
            "wait_seconds": round(self.wait_seconds, 3),
            "rejections": dict(self.rejections),
            "decreases": self.decreases,
            "retry_after_pauses": self.pauses,
            "paused_seconds": round(self.paused_seconds, 3),
        }

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# ---------------------------------------------------------------------- Ray: one limit


class SharedLimit:
    """The limit of one service for a whole Ray run, kept by one small actor.

    Clients (`SharedLimiter`) send what they saw since their last sync; the limit moves by
    the same rule as a `Limiter`'s, on the cluster's totals, and each client gets back its
    share of it, in proportion to its demand (in flight + waiting; at least one request).
    """

    def __init__(self, settings: dict[str, Any]):
        self.core = Limiter("shared", Settings.of(settings) or Settings())
        self.clients: dict[str, tuple[int, int, float]] = {}  # id -> in flight, waiting, seen
        self.ever: set[str] = set()  # every client that synced, for the report
        self.syncs = 0
        self.blocked_until = 0.0  # wall clock: clients on other machines compare with theirs

    def sync(self, client: str, seen: dict[str, Any]) -> tuple[float, float, float]:
        """Fold in one client's news; returns (its share, pause until (wall), the limit)."""
        core = self.core
        now = time.time()
        self.syncs += 1
        self.ever.add(client)
        self.clients[client] = (int(seen["in_flight"]), int(seen["waiting"]), now)
        self.clients = {c: v for c, v in self.clients.items() if now - v[2] < CLIENT_TTL}
        in_flight = sum(v[0] for v in self.clients.values())
        core.requests += int(seen.get("requests", 0))
        core.rejections.update(seen.get("rejections") or {})
        if seen.get("rejected"):
            core._congested(max(1, in_flight), None)
        else:
            if seen.get("slow"):
                core._slow()
            for _ in range(min(int(seen.get("grew", 0)), 100_000)):
                core._grew()
        until = float(seen.get("pause_until") or 0.0)
        if until > self.blocked_until:
            core.pauses += 1
            core.paused_seconds += until - max(now, self.blocked_until)
            self.blocked_until = until
        demand = {c: max(1, v[0] + v[1]) for c, v in self.clients.items()}
        share = core.limit * demand[client] / sum(demand.values())
        return max(1.0, share), self.blocked_until, core.limit

    def report(self) -> dict[str, Any]:
        out = self.core.report()
        out.update(shared=True, clients=len(self.ever), syncs=self.syncs)
        for key in ("waited", "wait_seconds"):
            out.pop(key, None)
        return out


class SharedLimiter(Limiter):
    """A Ray actor's share of its service's `SharedLimit` (see the module docstring).

    Between syncs it admits up to its share; a rejection cuts the share at once (and
    pauses it on Retry-After) and syncs early, so the others hear of it within one call.
    Successes only count: the shared limit grows, and the next sync hands out the growth.
    If the limit's actor cannot be reached, the last share stays in force.
    """

    def __init__(self, name: str, settings: Settings, *, retry_after_max: float = 600.0):
        super().__init__(name, settings, retry_after_max=retry_after_max)
        self.actor_name = settings.shared
        self.client = uuid.uuid4().hex[:12]
        self._handle: Any = None
        self._task: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None
        self._news: dict[str, Any] = self._fresh_news()
        self._first: asyncio.Future[None] | None = None
        self.global_limit = self.limit  # the whole cluster's, as of the last sync
        self._warned = False

    @staticmethod
    def _fresh_news() -> dict[str, Any]:
        return {"grew": 0, "slow": False, "rejected": False, "pause_until": 0.0, "requests": 0,
                "rejections": collections.Counter()}  # fmt: skip

    async def acquire(self) -> Ticket:
        if self._first is None:
            self._kick = asyncio.Event()
            self._first = asyncio.ensure_future(self._sync())
            self._task = asyncio.ensure_future(self._sync_loop())
        if not self._first.done():
            await asyncio.shield(self._first)  # the first requests wait for this actor's share
        self._news["requests"] += 1
        return await super().acquire()

    def _grew(self) -> None:
        self._news["grew"] += 1

    def _slow(self) -> None:
        self._news["slow"] = True

    def _rejected(self, kind: str, rank: int, retry_after: float | None) -> None:
        super()._rejected(kind, rank, retry_after)
        news = self._news
        news["rejected"] = True
        news["rejections"][kind] += 1
        if retry_after:
            until = time.time() + min(retry_after, self.retry_after_max)
            news["pause_until"] = max(news["pause_until"], until)
        if self._kick is not None:
            self._kick.set()

    async def _sync_loop(self) -> None:
        kick = self._kick
        assert kick is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(kick.wait(), SYNC_INTERVAL)
            kick.clear()
            if self.in_flight or self.waiters or any(self._news.values()):
                await self._sync()

    async def _sync(self) -> None:
        news, self._news = self._news, self._fresh_news()
        seen = {**news, "in_flight": self.in_flight, "waiting": len(self.waiters)}
        try:
            if self._handle is None:
                import ray

                self._handle = await asyncio.to_thread(ray.get_actor, self.actor_name)
            share, until, limit = await self._handle.sync.remote(self.client, seen)
        except Exception as exc:  # keep the last share; the next sync may get through
            if not self._warned:
                self._warned = True
                log.warning("%s: shared limit %s: %s", self.name, self.actor_name, exc)
            return
        self.limit = share
        self.global_limit = limit
        self.lowest = min(self.lowest, share)
        self.highest = max(self.highest, share)
        wait = until - time.time()
        if wait > 0:
            self.blocked_until = max(self.blocked_until, time.monotonic() + wait)
        self._wake()

    async def close(self) -> None:
        await super().close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def limit_actor_name(run_id: str, service: str) -> str:
    return f"pf-{run_id}-limit-{service}"


@contextlib.asynccontextmanager
async def shared_limits(config: Any, run_id: str, stats: Any = None) -> AsyncIterator[Any]:
    """Ray: one `SharedLimit` actor per adaptive LLM service, for the block.

    Yields the config in which those services' `concurrency.shared` names their actor (the
    driver and every role actor build their clients from it). On exit, the actors' reports
    go to `stats.extra["concurrency"]` (the run summary) and the actors are killed.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    adaptive = {
        name: cfg
        for name, cfg in config.services.items()
        if cfg.kind in LLM_KINDS
        and getattr(cfg, "concurrency", None) is not None
        and cfg.concurrency.adaptive
    }
    if not adaptive:
        yield config
        return
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    handles: dict[str, Any] = {}
    clients: dict[str, Any] = {}
    for name, cfg in adaptive.items():
        actor = limit_actor_name(run_id, name)
        handles[name] = (
            ray.remote(SharedLimit)
            .options(name=actor, num_cpus=0, max_restarts=-1, scheduling_strategy=here)
            .remote(cfg.concurrency.model_dump())
        )
        shared = cfg.concurrency.model_copy(update={"shared": actor})
        clients[name] = cfg.model_copy(update={"concurrency": shared})
    try:
        yield config.model_copy(update={"services": {**config.services, **clients}})
    finally:
        from peerflow.placement import reports_then_kill

        reports = await reports_then_kill(handles, 5.0)
        if stats is not None:
            stats.extra["concurrency"] = reports


def collect_reports(services: Iterable[Any], stats: Any) -> None:
    """Local runtime: the adaptive limits of `services` that were used, into the summary."""
    for service in services:
        limiter = getattr(service, "limiter", None)
        if limiter is not None and limiter.used and not isinstance(limiter, SharedLimiter):
            stats.extra.setdefault("concurrency", {})[service.name] = limiter.report()


def _shown(limit: float | None) -> str:
    return "none" if limit is None else f"{limit:g}"


def concurrency_lines(summary: Mapping[str, Any]) -> list[str]:
    """The end-of-run printout's lines about adaptive limits, one per service."""
    lines = []
    for name, r in (summary.get("concurrency") or {}).items():
        if "limit" not in r:
            lines.append(f"concurrency {name}: no report ({r.get('error')})")
            continue
        rejected = ", ".join(f"{n} x {k}" for k, n in sorted(r["rejections"].items())) or "none"
        where = f" across {r['clients']} actor(s)" if r.get("shared") else ""
        if r["limit"] is None and not r["rejections"]:
            continue  # never pushed back: nothing to say
        lines.append(
            f"concurrency {name}: adaptive limit {_shown(r['limit'])}{where} (lowest "
            f"{_shown(r['lowest'])}, highest {_shown(r['highest'])}); rejections {rejected}; "
            f"{r['retry_after_pauses']} Retry-After pause(s), {r['paused_seconds']:.1f}s"
        )
    return lines
