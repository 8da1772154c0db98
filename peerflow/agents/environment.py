"""Agents of a tool-environment conversation: the environment role and the reward role.

`agent: environment` is a workflow's tool role for a `tool_env` service. Its first step
acquires the task's environment (the task row is the domain's task: its initial actions
run on the server) and records the handle in the step's `data.environment`; every later
step runs the tool calls of the role that made them, on that environment, as that
role's side (`sides` maps LLM roles to `assistant` or `user`), one after the other, in
call order (a write then a read must see the write). Results are recorded as the `tools`
agent records them, so the caller sees one `tool` message per call.

`agent: env_reward` scores the finished conversation: it sends the task, every tool call
of the trajectory (with its side) and the assistant's texts to the service, which replays
them on fresh environments (`peerflow.envs.reward`), then releases the environment. Its
step's data holds the reward, each component, the termination reason and the details.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field

from peerflow.agents.base import Agent, AgentOptions
from peerflow.agents.tools import result
from peerflow.message import Message, Step
from peerflow.services.base import Service

__all__ = [
    "EnvironmentAgent",
    "EnvironmentOptions",
    "RewardAgent",
    "RewardOptions",
    "environment_handle",
    "trajectory_calls",
]

HANDLE_KEY = "environment"
RELEASED_KEY = "released"


class EnvironmentOptions(AgentOptions):
    service: str  # a `kind: tool_env` service
    # LLM role -> the side whose tools it calls.
    sides: dict[str, Literal["assistant", "user"]] = Field(
        default_factory=lambda: {"assistant": "assistant", "user": "user"}
    )


class RewardOptions(AgentOptions):
    service: str
    # The roles whose texts count as what the assistant communicated.
    assistant: list[str] = Field(default_factory=lambda: ["assistant"])
    sides: dict[str, Literal["assistant", "user"]] = Field(
        default_factory=lambda: {"assistant": "assistant", "user": "user"}
    )


def environment_handle(message: Message) -> dict[str, str] | None:
    """The environment the task holds (from its acquiring step), or None."""
    for step in message.history:
        data = step.data
        if data and HANDLE_KEY in data and isinstance(data[HANDLE_KEY], dict):
            return data[HANDLE_KEY]
    return None


def released(message: Message) -> bool:
    step = message.history[-1] if message.history else None
    return bool(step is not None and step.data and step.data.get(RELEASED_KEY))


def _tool_service(services: Mapping[str, Service], name: str, role: str) -> Any:
    service = services.get(name)
    if service is None:
        raise ValueError(f"roles.{role}.service: no service named {name!r}")
    if not hasattr(service, "acquire"):
        raise ValueError(
            f"roles.{role}.service: {name!r} is not a tool environment (`kind: tool_env`)"
        )
    return service


class EnvironmentAgent(Agent):
    """See the module docstring."""

    Options = EnvironmentOptions
    options: EnvironmentOptions

    def __init__(self, role: str, options: EnvironmentOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        self.service = _tool_service(services, options.service, role)

    async def process(self, message: Message, request: Any) -> Step:
        handle = environment_handle(message)
        if handle is None:
            task = message.row if isinstance(message.row, dict) else {}
            handle = await self.service.acquire(task, message.id)
            return Step(role=self.role, data={HANDLE_KEY: handle})
        caller = next((s for s in reversed(message.history) if s.tool_calls), None)
        calls = caller.tool_calls if caller is not None and caller.tool_calls else []
        side = self.options.sides.get(caller.role if caller is not None else "", "assistant")
        results = []
        for i, call in enumerate(calls):
            results.append(await self._call(handle, side, call, i))
        errors = sum(1 for r in results if r["is_error"])
        step = Step(
            role=self.role, tool_results=results, data={"tool_errors": errors, "side": side}
        )
        if len(results) == 1:
            step.tool_call_id = results[0]["tool_call_id"]
            step.content = results[0]["content"]
        return step

    async def _call(self, handle: dict[str, str], side: str, call: Any, i: int) -> dict[str, Any]:
        if not isinstance(call, dict):
            return result(f"call_{i}", "", "Error: malformed tool call", error=True)
        call_id = str(call.get("id") or f"call_{i}")
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = str(function.get("name") or "")
        out = await self.service.call_tool(handle, side, name, function.get("arguments"))
        return result(call_id, name, str(out.get("content", "")), error=bool(out.get("is_error")))


def trajectory_calls(message: Message, sides: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every tool call of the conversation, in the order they ran, with its side."""
    calls = []
    for step in message.history:
        if not step.tool_calls or step.role not in sides:
            continue
        for call in step.tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            calls.append(
                {
                    "requestor": sides[step.role],
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    return calls


class RewardAgent(Agent):
    """See the module docstring."""

    Options = RewardOptions
    options: RewardOptions

    def __init__(self, role: str, options: RewardOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        self.service = _tool_service(services, options.service, role)

    async def process(self, message: Message, request: Any) -> Step:
        handle = environment_handle(message)
        said = [
            s.content
            for s in message.history
            if s.role in self.options.assistant and s.content and not s.tool_calls
        ]
        payload = {
            "task": message.row if isinstance(message.row, dict) else {},
            "calls": trajectory_calls(message, self.options.sides),
            "assistant_messages": said,
            "termination": str(message.route.get("termination") or "unknown"),
        }
        try:
            scored = await self.service.reward(payload, handle)
        finally:
            freed = await self.service.release(handle) if handle is not None else False
        return Step(role=self.role, data={**scored, RELEASED_KEY: True, "env_freed": freed})


def release_held_environment(message: Message) -> None:
    """Release the task's environment in the background unless its reward step did."""
    handle = environment_handle(message)
    if handle is not None and not released(message):
        from peerflow.services.tool_env import release_soon

        release_soon(handle)


def environment_tools(
    config: Any, agent_specs: Mapping[str, tuple[type[Agent], AgentOptions]]
) -> dict[str, Callable[[str], list[dict[str, Any]]]]:
    """For each `agent: environment` role, the tools it offers a calling role: its domain's
    tools of that role's side. The domain is the one of the role's `tool_env` service."""
    from peerflow.envs.domain import DomainError, load_domain

    offered: dict[str, Callable[[str], list[dict[str, Any]]]] = {}
    for role, (_cls, options) in agent_specs.items():
        if not isinstance(options, EnvironmentOptions):
            continue
        svc = config.services.get(options.service)
        if svc is None:
            continue  # reported as roles.<role>.service
        if svc.kind != "tool_env":
            offered[role] = _not_an_environment(role, options.service)
            continue
        try:
            domain = load_domain(svc.domain)
        except DomainError:
            offered[role] = lambda caller: []  # reported as services.<name>.domain
            continue

        def tools_for(caller: str, domain: Any = domain, options: Any = options, role=role):
            side = options.sides.get(caller)
            if side is None:
                raise ValueError(
                    f"role {caller!r} is not a side of the environment role {role!r} "
                    f"(its sides: {', '.join(options.sides) or 'none'})"
                )
            return domain.schemas(side)

        offered[role] = tools_for
    return offered


def _not_an_environment(role: str, service: str) -> Callable[[str], list[dict[str, Any]]]:
    def fail(caller: str) -> list[dict[str, Any]]:
        raise ValueError(
            f"the environment role {role!r} uses service {service!r}, which is not a tool "
            "environment (`kind: tool_env`)"
        )

    return fail
