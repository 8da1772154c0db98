"""Agents and helpers for the runtime conformance suite.

They live in the package (not in tests/) so that any runtime, including one
whose workers are other processes or machines, can import them by name from
YAML exactly as users' own agents are imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from peerflow.agents.base import Agent, AgentOptions
from peerflow.message import Message, Step
from peerflow.workflow import Workflow


class EchoOptions(AgentOptions):
    delay: float = 0.0
    # append "+\n" when a step starts and "-\n" when it ends (atomic O_APPEND writes, so
    # it works across processes): the file's running sum is the number of concurrent steps
    concurrency_log: str | None = None
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
        if o.concurrency_log:
            _append(o.concurrency_log, b"+\n")
        if o.delay:
            await asyncio.sleep(o.delay)
        if o.concurrency_log:
            _append(o.concurrency_log, b"-\n")
        if o.fail_when and all(message.row.get(k) == v for k, v in o.fail_when.items()):
            raise RuntimeError(f"{self.role} refuses row {message.id}")
        n = sum(1 for s in message.history if s.role == self.role)
        return Step(role=self.role, content=f"{self.role}:{n}", data={"n": n})


class ToolCallerOptions(AgentOptions):
    # how many `add` calls its first step makes at once (each with its own id)
    calls: int = 1


class ToolCaller(Agent):
    """Asks for `calls` tool calls on its first step, then answers with the tools' outputs."""

    Options = ToolCallerOptions
    options: ToolCallerOptions

    async def process(self, message: Message, request: Any) -> Step:
        last = message.history[-1] if message.history else None
        if last is not None and (last.tool_results or last.tool_call_id):
            outputs = [r["content"] for r in last.tool_results or ()] or [last.content]
            return Step(role=self.role, content="final:" + ",".join(map(str, outputs)))
        calls = [
            {
                "id": f"call-{message.id}-{i}",
                "type": "function",
                "function": {"name": "add", "arguments": f'{{"a": 2, "b": {3 + i}}}'},
            }
            for i in range(self.options.calls)
        ]
        return Step(role=self.role, tool_calls=calls)


class Adder(Agent):
    """A hand-written tool role: executes the single `add` call of the previous step."""

    async def process(self, message: Message, request: Any) -> Step:
        import json

        call = message.history[-1].tool_calls[0]
        args = json.loads(call["function"]["arguments"])
        return Step(role=self.role, content=str(args["a"] + args["b"]), tool_call_id=call["id"])


# Content sizes of the paper's Fig. 8 (Tau2 conversations), as (share, smallest, largest)
# in bytes, uniform within each bar; the open ">= 1 KB" bar is read as 1-8 KiB, log-uniform.
SIZE_MIX: tuple[tuple[float, int, int], ...] = (
    (0.319, 1, 31),
    (0.182, 32, 63),
    (0.145, 64, 127),
    (0.115, 128, 255),
    (0.116, 256, 512),
    (0.066, 513, 1023),
    (0.057, 1024, 8192),
)
_FILLER = "the quick brown fox jumps over the lazy dog; " * 200  # ASCII: bytes == characters


class SizeMixOptions(AgentOptions):
    delay: float = 0.0
    seed: int = 0


class SizeMix(Agent):
    """A measuring instrument: texts sized as `SIZE_MIX`, the same per (seed, task, step)."""

    Options = SizeMixOptions
    options: SizeMixOptions

    async def process(self, message: Message, request: Any) -> Step:
        if self.options.delay:
            await asyncio.sleep(self.options.delay)
        hop = len(message.history)
        rng = random.Random(f"{self.options.seed}/{message.id}/{hop}")
        x, bar = rng.random(), 0
        while bar < len(SIZE_MIX) - 1 and x >= SIZE_MIX[bar][0]:
            x -= SIZE_MIX[bar][0]
            bar += 1
        _, low, high = SIZE_MIX[bar]
        if bar == len(SIZE_MIX) - 1:  # the open last bar: log-uniform
            size = int(low * (high / low) ** rng.random())
        else:
            size = rng.randint(low, high)
        head = f"{self.role}:{hop}:"
        return Step(role=self.role, content=(head + _FILLER)[:size], data={"bytes": size})


# --- tools for `agent: tools` roles in tests and tutorials --------------------------


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first addend
        b: the second addend
    """
    return a + b


async def slow(seconds: float) -> str:
    """Sleep for `seconds`, then say so (for timeout tests)."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


def fail(reason: str) -> str:
    """Always raise, with `reason` (for error tests)."""
    raise RuntimeError(reason)


def strict_chat_errors(request: dict[str, Any]) -> list[str]:
    """What a strict OpenAI-compatible server would reject in a chat request; [] if none.

    Every `tool` message must answer a call of the nearest preceding assistant message
    with `tool_calls` (no orphans, no unknown ids, none answered twice), every call must be
    answered before the next non-tool message, `name` fields must match OpenAI's rule,
    and each offered tool must be a well-formed function schema.
    """
    errors: list[str] = []
    pending: list[str] | None = None  # ids of the open assistant turn's calls not yet answered
    open_ids: set[str] = set()
    name_ok = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
    for i, msg in enumerate(request.get("messages") or ()):
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool", "developer"):
            errors.append(f"messages[{i}]: unknown role {role!r}")
        if "name" in msg and not name_ok.match(str(msg["name"])):
            errors.append(f"messages[{i}]: name {msg['name']!r} does not match ^[a-zA-Z0-9_-]+$")
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if pending is None:
                errors.append(f"messages[{i}]: tool message {call_id!r} follows no tool call")
            elif call_id not in open_ids:
                errors.append(f"messages[{i}]: tool_call_id {call_id!r} matches no call")
            elif call_id not in pending:
                errors.append(f"messages[{i}]: tool call {call_id!r} answered twice")
            else:
                pending.remove(call_id)
            if not isinstance(msg.get("content"), str):
                errors.append(f"messages[{i}]: tool message content must be a string")
            continue
        if pending:
            errors.append(f"messages[{i}]: tool calls {pending} were not answered")
        pending = None
        open_ids = set()
        if role == "assistant" and msg.get("tool_calls"):
            ids = [c.get("id") for c in msg["tool_calls"]]
            if any(not isinstance(x, str) or not x for x in ids):
                errors.append(f"messages[{i}]: a tool call has no id")
            pending = [x for x in ids if isinstance(x, str)]
            open_ids = set(pending)
        elif role in ("user", "system") and not isinstance(msg.get("content"), (str, list)):
            errors.append(f"messages[{i}]: {role} message without content")
    if pending:
        errors.append(f"tool calls {pending} were not answered")
    for j, tool in enumerate(request.get("tools") or ()):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (
            isinstance(tool, dict)
            and tool.get("type") == "function"
            and isinstance(fn, dict)
            and isinstance(fn.get("name"), str)
            and name_ok.match(fn["name"])
            and isinstance(fn.get("parameters", {}), dict)
            and fn.get("parameters", {}).get("type", "object") == "object"
        ):
            errors.append(f"tools[{j}]: not a function schema with a valid name and parameters")
    return errors


def _append(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def max_concurrency(path: str) -> int:
    """The most steps that were running at once, from a `concurrency_log` file."""
    level = peak = 0
    with open(path, "rb") as f:
        for line in f:
            level += 1 if line.startswith(b"+") else -1
            peak = max(peak, level)
    return peak


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


class Misroute(Workflow):
    """A buggy user workflow: after `a`, rows with an odd `n` go to a role nobody defined."""

    def roles(self) -> set[str]:
        return {"a", "b"}

    def first(self, message: Message) -> str | None:
        return "a"

    def after(self, message: Message) -> str | None:
        if message.history[-1].role != "a":
            return None
        return "ghost" if int(message.row.get("n", 0)) % 2 else "b"


@contextlib.asynccontextmanager
async def killing_actors(
    kinds: Sequence[str], *, every: float, first: float | None = None, seed: int | None = None
) -> AsyncIterator[list[str]]:
    """Kill one named peerflow Ray actor every `every` seconds (the first after `first`)
    while the block runs, taking the kinds (name fragments: "-r:" role, "-s:" sink, "-k:"
    keeper) in turn; Ray restarts it. With `seed` the victim is a random actor of the kind,
    else the first by name. Yields the kinds killed so far, for the test to check."""
    import ray

    rng = random.Random(seed)
    killed: list[str] = []

    async def killer() -> None:
        await asyncio.sleep(every if first is None else first)
        while True:
            kind = kinds[len(killed) % len(kinds)]
            names = sorted(n for n in ray.util.list_named_actors() if kind in n)
            if names:
                name = rng.choice(names) if seed is not None else names[0]
                ray.kill(ray.get_actor(name), no_restart=False)
                killed.append(kind)
            await asyncio.sleep(every)

    task = asyncio.ensure_future(killer())
    try:
        yield killed
    finally:
        task.cancel()


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
