"""An OpenAI-compatible chat-completions client built for many thousands of concurrent calls.

Every agent of a run shares one `OpenAIService`, so this sits on the hot path of every LLM
step. It talks raw HTTP over a single pooled `aiohttp` session (the openai SDK is ~30x slower
per process at high concurrency), encodes and decodes with orjson, and spreads calls over
several replicas of the same model with least-outstanding-requests balancing, optional
sticky (prefix-cache friendly) routing, retries with jittered back-off, and per-endpoint
cool-downs so that one sick replica does not slow every task down.

Transient failures (transport errors, timeouts, HTTP 408/429/5xx) are retried; a server's
`Retry-After` is honoured up to `retry_after_max`, which is deliberately separate from
`backoff_max`: a provider that asks for a minute's pause means it, and hammering it sooner
only earns more 429s.

The pool can change while calls run (`set_endpoints`): managed services on a Ray cluster
follow a registry of healthy replicas (`peerflow.services.cluster.RegistryClient`). An
endpoint that stays keeps its state (outstanding calls, cool-down, counters); calls already
sent to one that left finish or fail as they would, and their retries go to the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import logging
import os
import random
import time
from typing import Any

import aiohttp
import orjson

from peerflow.cost import as_price, flat_usage
from peerflow.services.adaptive import HOSTED_API_INITIAL, Settings, make_limiter
from peerflow.services.base import ChatResult, ServiceError, transient_status
from peerflow.services.http1 import Pool, split_http_url

__all__ = ["OpenAIService"]

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500
# A failing endpoint sits out for this long, doubled per consecutive failure up to the cap:
# short enough that a restarted replica is back in rotation within seconds, long enough that a
# dead one does not attract every new request (it always has the fewest outstanding).
_COOLDOWN_BASE = 0.5
_COOLDOWN_MAX = 30.0
# After a failed health probe the endpoint is avoided for this long (then tried again).
_UNHEALTHY_COOLDOWN = 5.0


class _Endpoint:
    """Routing state and counters of one base URL; mutable and shared by all calls."""

    __slots__ = (
        "base",
        "down_until",
        "errors",
        "fails",
        "hasher",
        "index",
        "last_error",
        "lean",
        "models_url",
        "outstanding",
        "requests",
        "retries",
        "url",
    )

    def __init__(self, base: str, index: int):
        self.base = base
        self.index = index  # position in the service's endpoint list, recorded per step
        self.last_error: str | None = None
        self.url = base + "/chat/completions"
        # (lean HTTP/1.1 pool, path) for a plain http:// endpoint, False for others (aiohttp);
        # made at the first call, in the loop that uses it.
        self.lean: tuple[Pool, str] | bool | None = None
        self.models_url = base + "/models"
        self.outstanding = 0
        self.requests = 0
        self.errors = 0
        self.retries = 0
        self.fails = 0  # consecutive failures, drives the cool-down length
        self.down_until = 0.0  # monotonic time before which the endpoint is avoided
        # Pre-seeded hasher: rendezvous scoring then costs one copy + update per endpoint.
        self.hasher = hashlib.blake2b(base.encode(), digest_size=8)

    def mark_failure(self, now: float) -> None:
        self.fails += 1
        # The exponent is capped: after ~1,000 failures in a row (a long rate-limited stretch)
        # 2 ** fails no longer converts to a float.
        self.down_until = now + min(_COOLDOWN_MAX, _COOLDOWN_BASE * 2 ** min(self.fails - 1, 30))

    def mark_success(self) -> None:
        if self.fails or self.down_until:
            self.fails = 0
            self.down_until = 0.0


def _slow_start_for_apis(concurrency: Any, endpoints: list[str]) -> Any:
    """A hosted API (https) rate-limits by account, and a burst beyond its quota is answered
    by one 429 per request: its adaptive limit starts slow unless `initial` says otherwise.
    A server of one's own (http) queues instead, and gets every request until it pushes back."""
    settings = Settings.of(concurrency)
    if settings is None or settings.initial is not None:
        return concurrency
    if any(e.startswith("https://") for e in endpoints):
        return dataclasses.replace(settings, initial=HOSTED_API_INITIAL)
    return settings


def _normalise_base(url: str) -> str:
    return url.strip().rstrip("/")


# Base URLs whose server labelled itself the peerflow simulator (its `X-Peerflow-Simulator`
# header) in a health probe; the run summary marks services using them SIMULATED.
SIMULATED_BASES: set[str] = set()


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds a server asked us to wait; accepts delta-seconds (also fractional) or a date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(raw: bytes) -> str:
    """The server's own explanation of a rejected request, as short as is still useful."""
    text: str | None = None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            text = err if isinstance(err, str) else orjson.dumps(err).decode()
    if text is None:
        text = raw.decode("utf-8", "replace")
    text = text.strip()
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "..."
    return text


class OpenAIService:
    """A pool of OpenAI-compatible endpoints serving one model, used as a shared `Service`."""

    # Whether the pool may be empty at start (it is filled later, by `set_endpoints`).
    dynamic = False
    # Plain http:// endpoints get the lean HTTP/1.1 client (`peerflow.services.http1`):
    # a quarter of aiohttp's CPU per request. False sends everything through aiohttp.
    lean_http = True

    def __init__(
        self,
        name: str,
        *,
        model: str,
        endpoints: list[str],
        api_key_env: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 600.0,
        sticky: bool = False,
        max_connections: int = 1024,
        extra_body: dict[str, Any] | None = None,
        structured_output: str = "response_format",
        concurrency: Any = None,
        price: Any = None,
    ):
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.name = name
        self.model = model
        self.endpoints = [_normalise_base(e) for e in endpoints]
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.sticky = sticky
        self.max_connections = max_connections
        self.extra_body = dict(extra_body) if extra_body else {}
        # How a structured role's schema is asked of this server (`peerflow.agents.structured`).
        self.structured_output = structured_output
        # The adaptive concurrency limit (`peerflow.services.adaptive`; None: no limit beyond
        # max_connections) and the price of a token (`peerflow.cost`; None: not priced).
        self.limiter = make_limiter(
            name, _slow_start_for_apis(concurrency, self.endpoints), retry_after_max=retry_after_max
        )
        self.price = as_price(price)
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {"Content-Type": "application/json"}
        self._secret: str | None = None
        # No `total`: it would also count time spent waiting for a pooled connection, so
        # with more tasks in flight than connections a request could time out unsent.
        # A non-streamed completion's first byte comes when it is done, so sock_read
        # bounds the server's time per attempt.
        self._attempt_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._eps: list[_Endpoint] = [_Endpoint(e, i) for i, e in enumerate(self.endpoints)]
        # Every endpoint ever in the pool, by base URL: one that leaves and comes back (a
        # restarted replica on the same port) keeps its counters, and stats count them all.
        self._known: dict[str, _Endpoint] = {ep.base: ep for ep in self._eps}
        self._last_error: str | None = None
        self._rr = 0
        self._calls = 0
        self._failures = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, "
            f"endpoints={self.endpoints!r})"
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the shared connection pool; the API key is read now so rotation needs no code."""
        if self._session is not None:
            return
        if not self.endpoints and not self.dynamic:
            raise ServiceError(f"service {self.name!r}: no endpoints configured")
        self.set_endpoints(self.endpoints)
        headers = {"Content-Type": "application/json"}
        self._secret = None
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ServiceError(
                    f"service {self.name!r}: environment variable {self.api_key_env} "
                    "(api_key_env) is not set or empty"
                )
            self._secret = key
            headers["Authorization"] = "Bearer " + key
        self._headers = headers
        connector = aiohttp.TCPConnector(
            limit=0,  # the cap is per endpoint: more replicas, more requests in flight
            limit_per_host=self.max_connections,
            ttl_dns_cache=300,
            keepalive_timeout=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._attempt_timeout,
            # Nothing here needs cookies; skipping the jar saves work on every response.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    def set_endpoints(self, endpoints: list[str]) -> None:
        """Make `endpoints` the pool, in place: safe while calls are running.

        Endpoints that stay keep their state; one that comes back after being left out (the
        registry found it healthy again) starts with a clean cool-down.
        """
        bases = [_normalise_base(e) for e in endpoints]
        current = {id(ep) for ep in self._eps}
        eps = []
        for i, base in enumerate(dict.fromkeys(bases)):
            ep = self._known.get(base)
            if ep is None:
                ep = self._known[base] = _Endpoint(base, i)
            elif id(ep) not in current:
                ep.mark_success()
            ep.index = i
            eps.append(ep)
        self.endpoints = [ep.base for ep in eps]
        self._eps = eps
        if self._rr >= len(eps):
            self._rr = 0

    async def stop(self) -> None:
        session, self._session = self._session, None
        if self.limiter is not None:
            await self.limiter.close()
        for ep in self._known.values():
            if isinstance(ep.lean, tuple):
                ep.lean[0].close()
            ep.lean = None
        if session is not None:
            await session.close()

    def _lean(self, ep: _Endpoint) -> tuple[Pool, str] | None:
        """The endpoint's lean HTTP/1.1 pool and path, or None (https: aiohttp does it)."""
        lean = ep.lean
        if lean is None:
            parts = split_http_url(ep.url) if self.lean_http else None
            if parts is None:
                lean = ep.lean = False
            else:
                host, port, path = parts
                pool = Pool(
                    host, port, limit=self.max_connections, connect_timeout=self.connect_timeout
                )
                lean = ep.lean = (pool, path)
        return lean or None

    @property
    def last_error(self) -> str | None:
        """The most recent failure seen (a call or a health probe), for messages about outages."""
        return self._last_error

    def _note_error(self, ep: _Endpoint | None, text: str) -> str:
        """Remember `text` (redacted) as the latest failure; returns the redacted text."""
        text = self._redact(text)
        if ep is not None:
            ep.last_error = text
        self._last_error = text
        return text

    async def health(self) -> bool:
        """Probe every endpoint so routing avoids dead replicas before a call has to fail.

        An endpoint is alive when its server answers `GET /models` with any status below
        500: a 401 or 404 there still means the server is up (a wrong key or a proxy without
        that route is reported by the calls themselves, with the server's own words).
        """
        session = self._session
        if session is None:
            self._last_error = f"service {self.name!r} is not started"
            return False
        probe_timeout = aiohttp.ClientTimeout(
            total=max(self.connect_timeout, 1.0) + 5.0, sock_connect=self.connect_timeout
        )

        async def probe(ep: _Endpoint) -> bool:
            try:
                async with session.get(
                    ep.models_url, headers=self._headers, timeout=probe_timeout
                ) as resp:
                    await resp.read()
                    ok = resp.status < 500
                    why = f"HTTP {resp.status}"
                    if resp.headers.get("X-Peerflow-Simulator"):
                        SIMULATED_BASES.add(ep.base)
            except asyncio.TimeoutError:
                ok, why = False, f"timed out (connect {self.connect_timeout:g}s)"
            except (aiohttp.ClientError, OSError) as e:
                ok, why = False, f"{type(e).__name__}: {e}"
            if ok:
                ep.mark_success()
            else:
                ep.down_until = time.monotonic() + _UNHEALTHY_COOLDOWN
                self._note_error(ep, f"health probe {ep.models_url}: {why}")
            return ok

        if not self._eps:
            self._last_error = f"service {self.name!r}: no endpoint (no replica is healthy)"
            return False
        results = await asyncio.gather(*(probe(ep) for ep in self._eps))
        return any(results)

    # ------------------------------------------------------------------ routing

    def _pick(self, key: str | None, avoid: _Endpoint | None) -> _Endpoint:
        eps = self._eps
        n = len(eps)
        if n == 1:
            return eps[0]
        now = time.monotonic()
        if key is not None and self.sticky:
            kb = key.encode()
            best = None
            best_score = b""
            for ep in eps:
                if ep is avoid or ep.down_until > now:
                    continue
                h = ep.hasher.copy()
                h.update(kb)
                score = h.digest()
                if best is None or score > best_score:
                    best, best_score = ep, score
            if best is not None:
                return best
        start = self._rr
        self._rr = start + 1 if start + 1 < n else 0
        best = None
        for i in range(n):
            j = start + i
            ep = eps[j - n if j >= n else j]
            if ep is avoid or ep.down_until > now:
                continue
            if best is None or ep.outstanding < best.outstanding:
                best = ep
        if best is None:
            # Everything is cooling down: better to try the least-loaded one than to fail.
            for i in range(n):
                j = start + i
                ep = eps[j - n if j >= n else j]
                if ep is avoid:
                    continue
                if best is None or ep.outstanding < best.outstanding:
                    best = ep
        assert best is not None
        return best

    # ------------------------------------------------------------------ calls

    def _redact(self, text: str) -> str:
        secret = self._secret
        if secret and secret in text:
            text = text.replace(secret, "***")
        return text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Jittered exponential back-off, or the server's Retry-After if that is longer.

        Retry-After has its own cap (`retry_after_max`): clipping it to `backoff_max` would
        retry a rate-limited provider long before it said it would take requests again.
        """
        delay = random.uniform(0.0, min(self.backoff_max, self.backoff * 2**attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay

    async def call(self, request: dict[str, Any], *, key: str | None = None) -> ChatResult:
        """Run one chat completion, retrying transient failures on other replicas if any.

        `request` is an OpenAI chat body without `model`; per-request fields win over
        `extra_body` defaults. `key` (a task id, say) routes all turns of one task to the same
        replica when `sticky` is on, so the server's prefix cache is reused.
        """
        session = self._session
        if session is None:
            # Not the row's fault: a re-run with a running service can do it.
            raise ServiceError(f"service {self.name!r} is not started", retryable=True)
        self._calls += 1
        payload = orjson.dumps({**self.extra_body, **request, "model": self.model})
        headers = self._headers
        timeout = self._attempt_timeout
        attempts = self.max_retries + 1
        avoid: _Endpoint | None = None
        last_error = ""
        last_status: int | None = None
        last_exc: BaseException | None = None
        ep: _Endpoint | None = None

        for attempt in range(attempts):
            if not self._eps:
                # A pool that follows a registry is empty while no replica is healthy;
                # waiting out the back-off lets a restarted replica take the retry.
                last_exc, last_status = None, None
                last_error = "no endpoint to send to (no replica is healthy)"
                self._note_error(None, f"service {self.name!r}: {last_error}")
                if attempt + 1 < attempts:
                    await asyncio.sleep(self._delay(attempt, None))
                continue
            limiter = self.limiter
            ticket = await limiter.acquire() if limiter is not None else (0.0, 0)
            status, timed_out = 0, False
            ep = self._pick(key, avoid)
            ep.requests += 1
            if attempt:
                ep.retries += 1
            ep.outstanding += 1
            retry_after: float | None = None
            lean = ep.lean if ep.lean is not None else self._lean(ep)
            try:
                if lean:
                    pool, path = lean  # type: ignore[misc]
                    answer = await pool.request("POST", path, payload, headers, self.timeout)
                    status, raw = answer.status, answer.body
                    if status >= 300:
                        retry_after = _retry_after_seconds(answer.headers.get("retry-after"))
                else:
                    async with session.post(
                        ep.url, data=payload, headers=headers, timeout=timeout
                    ) as resp:
                        status = resp.status
                        raw = await resp.read()
                        if status >= 300:
                            retry_after = _retry_after_seconds(resp.headers.get("Retry-After"))
            except asyncio.TimeoutError as e:
                status, raw = 0, b""
                timed_out = True
                last_exc = e
                last_error = (
                    f"timed out (timeout {self.timeout:g}s, connect {self.connect_timeout:g}s)"
                )
            except (aiohttp.ClientError, OSError) as e:
                status, raw = 0, b""
                last_exc = e
                last_error = f"{type(e).__name__}: {e}"
            finally:
                ep.outstanding -= 1
                if limiter is not None:
                    limiter.release(
                        ticket, status=status, timed_out=timed_out, retry_after=retry_after
                    )

            if 200 <= status < 300:
                try:
                    data = orjson.loads(raw)
                    choice = data["choices"][0]
                    message = choice["message"]
                    content = message.get("content")
                except (
                    orjson.JSONDecodeError,
                    KeyError,
                    IndexError,
                    TypeError,
                    AttributeError,
                ) as e:
                    last_exc = e
                    snippet = raw[:200].decode("utf-8", "replace")
                    last_error = f"HTTP {status} with an unusable body ({snippet!r})"
                else:
                    ep.mark_success()
                    usage = data.get("usage")
                    usage = flat_usage(usage) if usage.__class__ is dict else None
                    return ChatResult(
                        content=content,
                        tool_calls=message.get("tool_calls") or None,
                        usage=usage or None,
                        model=data.get("model"),
                        finish_reason=choice.get("finish_reason"),
                        attempts=attempt + 1,
                        endpoint=ep.base,
                        endpoint_index=ep.index,
                    )
                last_status = status
            elif status:
                last_status = status
                if not transient_status(status):
                    # The request itself is wrong (or unauthorised): retrying cannot help.
                    ep.errors += 1
                    self._failures += 1
                    text = self._note_error(
                        ep,
                        f"service {self.name!r}: {ep.url} rejected the request with "
                        f"HTTP {status}: {_error_text(raw)}",
                    )
                    raise ServiceError(
                        text,
                        attempts=attempt + 1,
                        retryable=False,
                        status=status,
                    )
                last_exc = None
                last_error = f"HTTP {status}: {_error_text(raw)}"

            ep.errors += 1
            now = time.monotonic()
            ep.mark_failure(now)
            self._note_error(ep, f"{ep.base}: {last_error}")
            if retry_after:
                # The server said when it will take requests again: new calls go elsewhere.
                ep.down_until = max(ep.down_until, now + min(retry_after, self.retry_after_max))
            avoid = ep
            if attempt + 1 < attempts:
                delay = self._delay(attempt, retry_after)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "%s: attempt %d on %s failed (%s); retrying in %.3fs",
                        self.name,
                        attempt + 1,
                        ep.base,
                        self._redact(last_error),
                        delay,
                    )
                await asyncio.sleep(delay)

        self._failures += 1
        raise ServiceError(
            self._redact(
                f"service {self.name!r}: chat completion failed after {attempts} attempt(s); "
                f"last attempt on {ep.base if ep is not None else 'no endpoint'}: {last_error}"
            ),
            attempts=attempts,
            retryable=True,
            status=last_status,
        ) from last_exc

    # ------------------------------------------------------------------ reporting

    def stats(self) -> dict[str, Any]:
        """Counters for the run summary: where the traffic went and which replicas misbehaved."""
        now = time.monotonic()
        per = {
            ep.base: {
                "requests": ep.requests,
                "errors": ep.errors,
                "retries": ep.retries,
                "outstanding": ep.outstanding,
                "healthy": ep.down_until <= now,
                "last_error": ep.last_error,
            }
            for ep in self._known.values()
        }
        known = self._known.values()
        return {
            "name": self.name,
            "model": self.model,
            "calls": self._calls,
            "failures": self._failures,
            "requests": sum(ep.requests for ep in known),
            "errors": sum(ep.errors for ep in known),
            "retries": sum(ep.retries for ep in known),
            "outstanding": sum(ep.outstanding for ep in known),
            "endpoints": per,
        }
