"""Conversations for training: a role's turns as the `assistant`, from its own point of view.

A record holds what each role said, not what each role was shown. The chat a model was
trained to continue is the one it was sent: its system prompt, the turns of others it
sees (labelled as its view says), its own earlier turns and tool exchanges. So an example
is rebuilt by the role's own agent, from the record's history cut where the turn began
(`LLMAgent.chat` is the same code that made the request), and the turn itself is
appended. The Coral teacher's example is then the teacher's system prompt, the student's
turns as `user` and the teacher's as `assistant`; a tool-using assistant's keeps its
tool calls and their results as `tool` messages, and the tools it was offered.

A role that sees its own earlier turns (`conversation` includes it) gives one example per
record, ending at its last turn; a role that does not gives one example per answer, since
each was a separate request (its tool calls and their results belong to the answer that
follows them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgspec

from peerflow.config import RunConfig
from peerflow.export.records import ExportError, as_message
from peerflow.sink import OutputRecord

__all__ = ["Perspective", "assistant_turn", "common_prefix"]


def _finish(coro: Any) -> Any:
    """Run a coroutine that never waits (an LLM agent's `preprocess`) without a loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    return asyncio.run(coro)  # pragma: no cover - preprocess awaited something real


def assistant_turn(step: Any) -> dict[str, Any]:
    """A step as the assistant message it was: its text, and its tool calls if any."""
    entry: dict[str, Any] = {"role": "assistant", "content": step.content or ""}
    if step.tool_calls:
        entry["tool_calls"] = step.tool_calls
    return entry


class Perspective:
    """Builds the training conversations of some LLM roles of one config."""

    missing = "no turn of the assistant role(s)"

    def __init__(self, config: RunConfig, roles: list[str]):
        from peerflow.pipeline import Pipeline

        if not roles:
            raise ExportError(
                "no assistant role: name the role(s) whose turns are the assistant's with "
                "--assistant ROLE, or in the config's `export.assistant`"
            )
        pipeline = Pipeline(config, open_data=False)
        unknown = [r for r in roles if r not in config.roles]
        if unknown:
            raise ExportError(
                f"--assistant {', '.join(unknown)}: no such role (roles: {', '.join(config.roles)})"
            )
        self.agents: dict[str, Any] = {}
        services = pipeline.services()
        for role in roles:
            cls, options = pipeline.agent_specs[role]
            try:
                agent = cls(role, options, services)
            except ValueError as exc:
                raise ExportError(f"{exc} (give the run's config file with --config)") from None
            if not hasattr(agent, "chat"):
                raise ExportError(
                    f"--assistant {role}: roles.{role} is a `{config.roles[role].agent}` agent; "
                    "only LLM roles were sent a chat, so only they have a point of view"
                )
            self.agents[role] = agent
        self.fields = config.dataset.fields

    def examples(self, record: OutputRecord, view: Any = None) -> Iterator[dict[str, Any]]:
        """`{"role", "turn", "messages", "tools"?}` for each example the record gives."""
        message = as_message(record, self.fields)
        history = message.history
        for role, agent in self.agents.items():
            turns = [i for i, s in enumerate(history) if s.role == role and s.ok]
            if not turns:
                continue
            if role in agent.dialogue:
                turns = turns[-1:]
            else:  # a turn's tool calls and results are part of the example that answers
                turns = [i for i in turns if not history[i].tool_calls] or turns[-1:]
            for n, i in enumerate(turns):
                seen = msgspec.structs.replace(message, history=history[:i])
                request = _finish(agent.preprocess(seen))
                messages = [*request["messages"], assistant_turn(history[i])]
                example: dict[str, Any] = {"role": role, "turn": n, "messages": messages}
                if request.get("tools"):
                    example["tools"] = request["tools"]
                yield example


class FieldChat:
    """A single-turn chat from named fields (`export.chat`): for a workflow whose answer is
    data (a question writer's structured reply) rather than one role's turn."""

    missing = "a chat field is empty"

    def __init__(self, chat: dict[str, str], fields: dict[str, Any]):
        unknown = [name for name in chat.values() if name not in fields]
        if unknown or "user" not in chat or "assistant" not in chat:
            raise ExportError(
                "export.chat: needs `user` and `assistant`, each naming an export.fields "
                f"entry (unknown: {', '.join(unknown) or 'none'}; fields: "
                f"{', '.join(fields) or 'none'})"
            )
        self.chat = chat

    def examples(self, record: OutputRecord, view: Any) -> Iterator[dict[str, Any]]:
        messages = []
        for role in ("system", "user", "assistant"):
            if role in self.chat:
                value = view.get(self.chat[role])
                if not value:
                    return
                messages.append({"role": role, "content": str(value)})
        yield {"role": "fields", "turn": 0, "messages": messages}


def common_prefix(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    """How many leading messages two conversations share, cut back to where both continue
    with an assistant turn: a preference pair's prompt ends where the two answers begin.
    0 when there is no such point (then the two are not a pair)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    while n > 0 and not (n < len(a) and n < len(b) and a[n]["role"] == b[n]["role"] == "assistant"):
        n -= 1
    return n
