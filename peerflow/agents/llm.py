"""An agent whose step is one chat completion from a named LLM service.

Prompts are Jinja templates from YAML, compiled once per agent. The chat is
rebuilt from the message history on every step (the message is the only
state): the task's first message opens it, and for dialogue roles listed in
`conversation` the agent's own past turns become `assistant` messages and the
other roles' turns `user` messages, which is how a teacher and a student see
one shared debate from their own side.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from peerflow.agents.base import Agent, AgentOptions, ParseError, to_step
from peerflow.loading import load_object
from peerflow.message import Message, Step
from peerflow.services.base import ChatResult, Service

TASK_ROLE = "task"


def _no_null(value: Any) -> Any:
    """Jinja `finalize`: a null value must fail the render, never become the text "None"."""
    if value is None:
        raise ValueError(
            "the template printed a null value (None); the variable or attribute is empty "
            "for this task"
        )
    return value


_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    autoescape=False,
    finalize=_no_null,
)

_GLOBALS = dict(_env.globals)

# Names every role template can use besides the task's variables; see `LLMAgent.context`.
CONTEXT_NAMES = frozenset({"vars", "row", "message", "history", "last", "role"})
# Names `task.message` can use besides the task's variables.
TASK_CONTEXT_NAMES = frozenset({"vars", "row"})


class LLMOptions(AgentOptions):
    service: str
    system: str | None = None
    prompt: str | None = None  # appended as the last user message
    conversation: list[str] | None = None
    include_task: bool = True
    sampling: dict[str, Any] = Field(default_factory=dict)
    # Request fields beyond sampling's known keys, merged into the request body unchecked.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    parse: str | None = None  # "module:function(message, text) -> dict | None" -> step.data

    @field_validator("sampling")
    @classmethod
    def _known_sampling_keys(cls, sampling: dict[str, Any]) -> dict[str, Any]:
        from peerflow.sampling import sampling_errors

        errors = sampling_errors(sampling)
        if errors:
            text = "; ".join(message for _, message in errors)
            raise PydanticCustomError("sampling", "{msg}", {"msg": text})
        return sampling


def template_variables(source: str | None) -> set[str]:
    """The top-level names a template reads from its context (not those it sets itself).

    Jinja's globals (range, dict, ...) are left out. Raises ValueError on a syntax error.
    """
    if source is None:
        return set()
    try:
        names = jinja2.meta.find_undeclared_variables(_env.parse(source))
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    return set(names) - set(_env.globals)


def render(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render `template` with `context` (and Jinja's globals) as its namespace.

    `Template.render` builds a fresh `Context` on every call, which costs more than
    rendering a short prompt, and prompts are rendered on every step of every task. So
    each template keeps one context and swaps its namespace in; rendering is synchronous,
    so no other render can interleave (a nested one falls back to a fresh context).
    """
    ctx = _contexts.pop(template, None)
    if ctx is None:
        ctx = template.new_context({}, shared=True)
    ctx.parent = {**_GLOBALS, **context}
    ctx.vars.clear()
    ctx.exported_vars.clear()
    try:
        return "".join(template.root_render_func(ctx))
    finally:
        _contexts[template] = ctx


# One idle context per template; a template being rendered has none here.
_contexts: weakref.WeakKeyDictionary[jinja2.Template, Any] = weakref.WeakKeyDictionary()


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
        self.template = template_hash(options.system, options.prompt)
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
            chat.append({"role": "system", "content": render(self.system, ctx)})
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
            _add(chat, "user", render(self.prompt, ctx))
        return chat

    async def preprocess(self, message: Message) -> dict[str, Any]:
        request: dict[str, Any] = {
            **self.options.extra_body,
            "messages": self.chat(message),
            **self.options.sampling,
        }
        if self.options.tools:
            request["tools"] = self.options.tools
        request.setdefault("seed", message.seed)
        return request

    async def process(self, message: Message, request: dict[str, Any]) -> ChatResult:
        return await self.service.call(request, key=message.id)

    async def postprocess(self, message: Message, result: ChatResult) -> Step:
        """The reply as a step, with `parse`'s data; a parse failure fails the step.

        The failed step still keeps the reply (see `Agent.run`): a parse failure is
        permanent, and the text is what one needs to see why.
        """
        step = to_step(self.role, result)
        try:
            parsed = self.parse(message, result.content or "")
        except Exception as exc:
            where = f"roles.{self.role}.parse"
            if self.options.parse:
                where += f" ({self.options.parse})"
            raise ParseError(f"{where} failed on the reply: {type(exc).__name__}: {exc}") from exc
        if parsed:
            if not isinstance(parsed, dict):
                raise ParseError(
                    f"roles.{self.role}.parse returned {type(parsed).__name__}; "
                    "expected a dict or None"
                )
            step.data = {**(step.data or {}), **parsed}
        return step

    def parse(self, message: Message, text: str) -> dict[str, Any] | None:
        """Turn the reply text into step data; override, or name a function in `parse:`."""
        return self.parse_fn(message, text) if self.parse_fn else None


def template_hash(*sources: str | None) -> str | None:
    """A short, stable hash of a role's prompt templates, recorded on each of its steps.

    It tells apart records made with different prompts without storing the prompts in
    every record. None when the role has no templates of its own.
    """
    if all(s is None for s in sources):
        return None
    h = hashlib.blake2b(digest_size=6)
    for source in sources:
        h.update(b"\x00" if source is None else b"\x01" + source.encode() + b"\x00")
    return h.hexdigest()


def _add(chat: list[dict[str, Any]], role: str, content: str) -> None:
    """Append, merging into a previous message of the same role: many servers need alternation."""
    if chat and chat[-1]["role"] == role and "tool_calls" not in chat[-1]:
        chat[-1] = {**chat[-1], "content": f"{chat[-1]['content']}\n\n{content}"}
    else:
        chat.append({"role": role, "content": content})
