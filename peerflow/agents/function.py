"""An agent that runs a plain Python function: matchers, scorers, filters, rule-based steps."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from peerflow.agents.base import Agent, AgentOptions
from peerflow.loading import load_object
from peerflow.message import Message
from peerflow.services.base import Service


class FunctionOptions(AgentOptions):
    function: str  # "module:function(message, **args)"; sync or async
    args: dict[str, Any] = Field(default_factory=dict)


class FunctionAgent(Agent):
    """The function gets the message and returns a Step, text, a dict of data or None.

    A synchronous function runs inline on the event loop: keep it fast (no
    I/O). Slow work belongs in an async function or a service.
    """

    Options = FunctionOptions
    options: FunctionOptions

    def __init__(self, role: str, options: FunctionOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        self.fn = load_object(options.function, what=f"roles.{role}.function")
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.args = options.args
        if not self.is_async:
            self.process = self.call  # type: ignore[method-assign]  # runs inline

    def call(self, message: Message, request: Any) -> Any:
        return self.fn(message, **self.args)

    async def process(self, message: Message, request: Any) -> Any:
        if self.is_async:
            return await self.fn(message, **self.args)
        return self.fn(message, **self.args)
