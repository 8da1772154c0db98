"""An agent whose step is one chat completion from a named LLM service.

Prompts are Jinja templates from YAML, compiled once per agent. The chat is
rebuilt from the message history on every step (the message is the only
state): the task's first message opens it, and for dialogue roles listed in
`conversation` the agent's own past turns become `assistant` messages and the
other roles' turns `user` messages, which is how a teacher and a student see
one shared debate from their own side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from pydantic import Field

from peerflow.agents.base import Agent, AgentOptions, to_step
from peerflow.loading import load_object
from peerflow.message import Message, Step
from peerflow.services.base import ChatResult, Service

TASK_ROLE = "task"

_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
)


class LLMOptions(AgentOptions):
    service: str
    system: str | None = None
    prompt: str | None = None  # appended as the last user message
    conversation: list[str] | None = None
    include_task: bool = True
    sampling: dict[str, Any] = Field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    parse: str | None = None  # "module:function(message, text) -> dict | None" -> step.data


def compile_template(source: str | None, where: str) -> jinja2.Template | None:
    if source is None:
        return None
    try:
        return _env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(
            f"{where}: template syntax error on line {exc.lineno}: {exc.message}"
        ) from None


class LLMAgent(Agent):
    Options = LLMOptions
    options: LLMOptions

    def __init__(self, role: str, options: LLMOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        if options.service not in services:
            raise ValueError(
                f"roles.{role}.service: no service named {options.service!r} "
                f"(services: {', '.join(sorted(services)) or 'none'})"
            )
        self.service = services[options.service]
        self.system = compile_template(options.system, f"roles.{role}.system")
        self.prompt = compile_template(options.prompt, f"roles.{role}.prompt")
        self.dialogue = set(options.conversation or ())
        self.parse_fn = (
            load_object(options.parse, what=f"roles.{role}.parse") if options.parse else None
        )

    def context(self, message: Message) -> dict[str, Any]:
        return {
            **message.vars,
            "vars": message.vars,
            "row": message.row,
            "message": message,
            "history": message.history,
            "last": message.last,
            "role": self.role,
        }

    def chat(self, message: Message) -> list[dict[str, Any]]:
        ctx = self.context(message) if (self.system or self.prompt) else {}
        chat: list[dict[str, Any]] = []
        if self.system is not None:
            chat.append({"role": "system", "content": self.system.render(ctx)})
        for step in message.history:
            if step.role == TASK_ROLE:
                if self.options.include_task:
                    _add(chat, "user", step.content or "")
            elif step.role in self.dialogue:
                if step.role == self.role:
                    entry: dict[str, Any] = {"role": "assistant", "content": step.content or ""}
                    if step.tool_calls:
                        entry["tool_calls"] = step.tool_calls
                    chat.append(entry)
                elif step.tool_call_id:
                    chat.append(
                        {
                            "role": "tool",
                            "tool_call_id": step.tool_call_id,
                            "content": step.content or "",
                        }
                    )
                else:
                    _add(chat, "user", step.content or "")
        if self.prompt is not None:
            _add(chat, "user", self.prompt.render(ctx))
        return chat

    async def preprocess(self, message: Message) -> dict[str, Any]:
        request: dict[str, Any] = {"messages": self.chat(message), **self.options.sampling}
        if self.options.tools:
            request["tools"] = self.options.tools
        request.setdefault("seed", message.seed)
        return request

    async def process(self, message: Message, request: dict[str, Any]) -> ChatResult:
        return await self.service.call(request, key=message.id)

    async def postprocess(self, message: Message, result: ChatResult) -> Step:
        step = to_step(self.role, result)
        parsed = self.parse(message, result.content or "")
        if parsed:
            step.data = {**(step.data or {}), **parsed}
        return step

    def parse(self, message: Message, text: str) -> dict[str, Any] | None:
        """Turn the reply text into step data; override, or name a function in `parse:`."""
        return self.parse_fn(message, text) if self.parse_fn else None


def _add(chat: list[dict[str, Any]], role: str, content: str) -> None:
    """Append, merging into a previous message of the same role: many servers need alternation."""
    if chat and chat[-1]["role"] == role and "tool_calls" not in chat[-1]:
        chat[-1] = {**chat[-1], "content": f"{chat[-1]['content']}\n\n{content}"}
    else:
        chat.append({"role": role, "content": content})
