"""The one interface every shared service implements.

A service (an LLM endpoint pool, a code sandbox, a tool environment) is
started once per run and shared by every agent of the run, so agents stay
stateless and cheap. Agents only ever `call` it; the runtime owns
`start`/`stop`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec


class ServiceError(Exception):
    """A service call failed for good (after its own retries).

    `retryable` tells whether the failure was transient (timeouts, 5xx, 429)
    before retries ran out, so callers and records can tell a flaky endpoint
    from a bad request.
    """

    def __init__(self, message: str, *, attempts: int = 1, retryable: bool = False,
                 status: int | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.retryable = retryable
        self.status = status


@runtime_checkable
class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def health(self) -> bool: ...

    async def call(self, request: Any, *, key: str | None = None) -> Any: ...

    async def stop(self) -> None: ...


class ChatResult(msgspec.Struct, omit_defaults=True):
    """What an OpenAI-compatible chat completion returned, reduced to what a step records."""

    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    finish_reason: str | None = None
    attempts: int = 1
    endpoint: str | None = None
