"""Agents and helpers for the runtime conformance suite.

They live in the package (not in tests/) so that any runtime, including one
whose workers are other processes or machines, can import them by name from
YAML exactly as users' own agents are imported.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from peerflow.agents.base import Agent, AgentOptions
from peerflow.message import Message, Step
from peerflow.workflow import Workflow


class EchoOptions(AgentOptions):
    delay: float = 0.0
    fail_when: dict[str, Any] | None = None  # row field -> value that makes this step raise
    calls_log: str | None = None  # append "<role> <id>\n" per call (works across processes)


class Echo(Agent):
    """Says `<role>:<n>` where n counts this role's steps in the task."""

    Options = EchoOptions
    options: EchoOptions

    async def process(self, message: Message, request: Any) -> Step:
        o = self.options
        if o.calls_log:
            with open(o.calls_log, "a") as f:
                f.write(f"{self.role} {message.id}\n")
        if o.delay:
            await asyncio.sleep(o.delay)
        if o.fail_when and all(message.row.get(k) == v for k, v in o.fail_when.items()):
            raise RuntimeError(f"{self.role} refuses row {message.id}")
        n = sum(1 for s in message.history if s.role == self.role)
        return Step(role=self.role, content=f"{self.role}:{n}", data={"n": n})


class ToolCaller(Agent):
    """Asks for one tool call on its first step, then answers with the tool's output."""

    async def process(self, message: Message, request: Any) -> Step:
        last = message.history[-1] if message.history else None
        if last is not None and last.tool_call_id:
            return Step(role=self.role, content=f"final:{last.content}")
        call = {
            "id": f"call-{message.id}",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
        }
        return Step(role=self.role, tool_calls=[call])


class Adder(Agent):
    """The tool role: executes `add` calls from the previous step."""

    async def process(self, message: Message, request: Any) -> Step:
        import json

        call = message.history[-1].tool_calls[0]
        args = json.loads(call["function"]["arguments"])
        return Step(role=self.role, content=str(args["a"] + args["b"]), tool_call_id=call["id"])


def stop_after_two(message: Message) -> bool:
    return sum(1 for s in message.history if s.role == "b") >= 2


def parity(message: Message) -> dict[str, Any]:
    return {"even": int(message.row.get("n", 0)) % 2 == 0}


def read_calls(path: str) -> list[tuple[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(line.split()) for line in f if line.strip()]  # type: ignore[misc]


class PingPong(Workflow):
    """A user-defined workflow as a user would write one: a then b, `rounds` times."""

    def __init__(self, rounds: int = 2, **kw: Any):
        super().__init__(**kw)
        self.rounds = rounds

    def roles(self) -> set[str]:
        return {"a", "b"}

    def first(self, message: Message) -> str | None:
        return "a"

    def after(self, message: Message) -> str | None:
        last = message.history[-1].role
        if last == "a":
            return "b"
        done = sum(1 for s in message.history if s.role == "b")
        return None if done >= self.rounds else "a"


def descendant_pids(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc), to check that a killed run left no orphans."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
