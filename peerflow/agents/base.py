"""The agent contract: a stateless, async step of one role.

An agent turns a message into one `Step`: `preprocess` builds the request
(a prompt), `process` calls a service, `postprocess` parses the reply. The
runtime appends the step and routes the message; an agent never forwards
messages itself, which is what lets the same agent run on any runtime.

Agents are shared by every message of their role in a process, so they must
keep no per-task state: everything about a task is in the message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from peerflow.message import Message, Step
from peerflow.services.base import ChatResult, Service


class AgentOptions(BaseModel):
    """Base for an agent's own YAML options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Agent:
    Options: ClassVar[type[AgentOptions]] = AgentOptions

    def __init__(self, role: str, options: AgentOptions, services: Mapping[str, Service]):
        self.role = role
        self.options = options
        self.services = services

    async def setup(self) -> None:
        """Called once per process before the first message (open files, warm caches)."""

    async def preprocess(self, message: Message) -> Any:
        return None

    async def process(self, message: Message, request: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.process")

    async def postprocess(self, message: Message, result: Any) -> Step:
        return to_step(self.role, result)

    async def run(self, message: Message) -> Step:
        """One step; never raises, so an agent bug fails one task, not the run."""
        started = time.time()
        try:
            request = await self.preprocess(message)
            result = await self.process(message, request)
            step = await self.postprocess(message, result)
        except Exception as exc:
            step = Step(
                role=self.role,
                ok=False,
                error=f"{type(exc).__name__}: {exc}",
                attempts=getattr(exc, "attempts", 0),
            )
        step.started = started
        step.latency = time.time() - started
        return step


def to_step(role: str, result: Any) -> Step:
    """Accept what agent code naturally returns: a Step, text, a dict of data, or a chat result."""
    if isinstance(result, Step):
        result.role = role
        return result
    if isinstance(result, ChatResult):
        return Step(
            role=role,
            content=result.content,
            tool_calls=result.tool_calls,
            usage=result.usage,
            model=result.model,
            attempts=result.attempts,
        )
    if isinstance(result, str):
        return Step(role=role, content=result)
    if isinstance(result, dict):
        return Step(role=role, data=result)
    if result is None:
        return Step(role=role)
    raise TypeError(
        f"agent for role {role!r} returned {type(result).__name__}; "
        "expected Step, str, dict or None"
    )
