"""The one interface every shared service implements, and how its failures are classified.

A service (an LLM endpoint pool, a code sandbox, a tool environment) is
started once per run and shared by every agent of the run, so agents stay
stateless and cheap. Agents only ever `call` it; the runtime owns
`start`/`stop`.

A failure is either transient (the next run of the same command re-attempts
the row: transport errors, timeouts, HTTP 408/429/5xx, a service that would
not start) or permanent (the request itself is wrong: other 4xx, a reply that
cannot be parsed, a bug). `error_kind` is the one place that decides.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

import aiohttp
import msgspec


class ServiceError(Exception):
    """A service call failed for good (after its own retries).

    `retryable` tells whether the failure was transient (timeouts, 408, 429, 5xx, a
    service that is not running) so callers and records can tell a flaky endpoint from a
    bad request; `status` is the last HTTP status if a server answered; `attempts` counts
    the requests made.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 1,
        retryable: bool = False,
        status: int | None = None,
    ):
        super().__init__(message)
        self.attempts = attempts
        self.retryable = retryable
        self.status = status


class ServiceUnavailable(Exception):
    """No endpoint of a service answers: the run stops before admitting any row."""


def transient_status(status: int | None) -> bool:
    """HTTP statuses worth retrying: request timeout, rate limit, server errors."""
    return status is not None and (status == 408 or status == 429 or status >= 500)


def error_kind(exc: BaseException) -> tuple[bool, int | None, int]:
    """(transient, HTTP status, attempts) of an exception raised by a step.

    Transport errors, timeouts and OS errors are transient: the same row may well work
    later. Anything not known to be transient is permanent, so a bug or a bad row is not
    re-attempted on every run.
    """
    if isinstance(exc, ServiceError):
        return exc.retryable, exc.status, exc.attempts
    if isinstance(exc, ServiceUnavailable):
        return True, None, getattr(exc, "attempts", 0)
    if isinstance(exc, aiohttp.ClientResponseError):
        return transient_status(exc.status), exc.status, 1
    if isinstance(exc, aiohttp.ClientError | OSError | asyncio.TimeoutError | TimeoutError):
        return True, None, 1
    return False, None, getattr(exc, "attempts", 0) or 0


@runtime_checkable
class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def health(self) -> bool: ...

    async def call(self, request: Any, *, key: str | None = None) -> Any: ...

    async def stop(self) -> None: ...


class ChatResult(msgspec.Struct, omit_defaults=True):
    """What an OpenAI-compatible chat completion returned, reduced to what a step records.

    `endpoint` is the base URL that answered; `endpoint_index` its position in the
    service's endpoint list (what a record keeps: URLs are deployment details).
    """

    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    finish_reason: str | None = None
    attempts: int = 1
    endpoint: str | None = None
    endpoint_index: int | None = None
    # Answered from the response cache (`peerflow.services.cache`): no request was sent.
    cached: bool = False
