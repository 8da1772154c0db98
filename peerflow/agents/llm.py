"""An agent whose step is one chat completion from a named LLM service.

Prompts are Jinja templates from YAML, compiled once per agent. The chat is
rebuilt from the message history on every step (the message is the only
state). How a role sees the shared history is its `view` (see `ViewOptions`):
which roles' turns it sees, its own as `assistant` messages and every other
speaker's as a separate `user` message labelled with the speaker's name (the
`name` field and/or a prefix). A role always sees its own tool calls, each
followed by one `tool` message per call with its `tool_call_id`, as the OpenAI
API requires; no role ever sees a `tool` message for a call it did not make.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from peerflow.agents.base import Agent, AgentOptions, ParseError, failed_step, to_step
from peerflow.agents.structured import (
    OutputSchema,
    StructuredOptions,
    StructuredReply,
    merge_usage,
    reask,
)
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


class _Template(jinja2.Template):
    # The text of a template with no Jinja syntax at all (a fixed system prompt, say),
    # rendered once: most roles' system prompts are, and they are rendered every step.
    constant: str | None = None


_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    autoescape=False,
    finalize=_no_null,
)
_env.template_class = _Template

_GLOBALS = dict(_env.globals)

# `{% include "file" %}` reads files of the configs' folders (see add_template_path).
_loader = jinja2.FileSystemLoader([])
_env.loader = _loader


def add_template_path(folder: str | Path) -> None:
    """Let templates include files of `folder` (`{% include "policy.md" %}`), first."""
    path = str(Path(folder).resolve())
    if path not in _loader.searchpath:
        _loader.searchpath.insert(0, path)
        if _env.cache is not None:
            _env.cache.clear()  # a name found in another folder before must be looked up again


# Names every role template can use besides the task's variables; see `LLMAgent.context`.
CONTEXT_NAMES = frozenset({"vars", "row", "message", "history", "last", "role"})
# Names `task.message` can use besides the task's variables.
TASK_CONTEXT_NAMES = frozenset({"vars", "row"})


class ViewOptions(BaseModel):
    """How a role sees the shared history (the `view:` key of an LLM role).

    - `include`: the roles whose turns it sees, in history order; its own turns become
      `assistant` messages, every other role's turn a separate `user` message. Default:
      none (the role sees only the task and its prompt). `conversation: [..]` is the same
      list under its older name.
    - `label`: how another speaker's turn says who spoke: `name` (OpenAI's `name` field,
      the role name sanitised to `^[a-zA-Z0-9_-]+$`), `prefix` (the content starts with
      `prefix`, "{role}: " by default), `both`, or `none`. `auto` (the default) is `none`
      when the role sees at most one other speaker (a two-party dialogue needs no
      labels) and `both` with more (many chat templates drop `name`, so the prefix keeps
      the speaker visible to every model).
    - `merge`: consecutive `user` messages merged into one (many chat templates need
      user/assistant alternation). `auto` merges them only when turns are unlabelled
      (`label: none`, e.g. a two-party dialogue), so every labelled turn stays its own
      message; `true` always merges (labels then go in as prefixes); `false` never.
    - `tools`: how other roles' tool exchanges appear: `hide` (only their text, if any)
      or `summary` (a labelled user message listing each call and its result). A role
      never gets `tool` messages for calls it did not make.
    """

    model_config = ConfigDict(extra="forbid")

    include: list[str] | None = None
    label: Literal["auto", "name", "prefix", "both", "none"] = "auto"
    prefix: str = "{role}: "
    merge: Literal["auto"] | bool = "auto"
    tools: Literal["hide", "summary"] = "hide"


class LLMOptions(AgentOptions):
    service: str
    system: str | None = None
    prompt: str | None = None  # appended as the last user message
    # The role's first turn, said without a model call (a support agent's fixed greeting).
    opening: str | None = None
    conversation: list[str] | None = None  # the same as view.include
    view: ViewOptions = Field(default_factory=ViewOptions)
    include_task: bool = True
    sampling: dict[str, Any] = Field(default_factory=dict)
    # Request fields beyond sampling's known keys, merged into the request body unchecked.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Tools offered: a tool role's name (all its tools), or a list of OpenAI schema dicts,
    # tool role names and tool names. Names are resolved by the pipeline (see
    # `peerflow.agents.tools.resolve_offered_tools`).
    tools: str | list[str | dict[str, Any]] | None = None
    parse: str | None = None  # "module:function(message, text) -> dict | None" -> step.data
    # The reply's shape (a pydantic model or a JSON Schema), asked of the server and checked;
    # the parsed object becomes the step's data (see `peerflow.agents.structured`).
    structured: StructuredOptions | None = None

    @model_validator(mode="after")
    def _one_include_list(self) -> LLMOptions:
        if self.conversation is not None and self.view.include is not None:
            raise ValueError("give `conversation` or `view.include`, not both (they are one list)")
        return self

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
    constant = getattr(template, "constant", None)
    if constant is not None:
        return constant
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
        template = _env.from_string(source)
        names = jinja2.meta.find_referenced_templates(_env.parse(source))
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(
            f"{where}: template syntax error on line {exc.lineno}: {exc.message}"
        ) from None
    for name in names:  # an include that would fail every request fails the config now
        if name is None:
            continue  # a computed name: checked when it renders
        try:
            _env.get_template(name)
        except jinja2.TemplateNotFound:
            folders = ", ".join(_loader.searchpath) or "none"
            raise ValueError(
                f"{where}: includes {name!r}, which is no file of the config's folder "
                f"(looked in: {folders})"
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(
                f"{where}: included {name!r}: template syntax error on line {exc.lineno}: "
                f"{exc.message}"
            ) from None
    if not any(mark in source for mark in ("{{", "{%", "{#")) and isinstance(template, _Template):
        template.constant = render(template, {})
    return template


def template_context(message: Message, role: str) -> dict[str, Any]:
    """What a role's templates see: the task's vars (also bare), row, history, `last`."""
    return {
        **message.vars,
        "vars": message.vars,
        "row": message.row,
        "message": message,
        "history": message.history,
        "last": message.last,
        "role": role,
    }


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
        self.opening = compile_template(options.opening, f"roles.{role}.opening")
        self.output_schema = (
            OutputSchema(options.structured, role) if options.structured is not None else None
        )
        self.structured_mode = getattr(self.service, "structured_output", "response_format")
        schema_text = None
        if self.output_schema is not None:
            schema_text = json.dumps(self.output_schema.schema, sort_keys=True)
            asked = self.output_schema.request(self.structured_mode)
            self.not_sampling = self.not_sampling | frozenset(asked)
        self.template = template_hash(options.system, options.prompt, schema_text)
        view = options.view
        include = options.conversation if options.conversation is not None else view.include
        self.dialogue = set(include or ())
        label = view.label
        if label == "auto":
            label = "both" if len(self.dialogue - {role}) > 1 else "none"
        if view.merge is True and label in ("name", "both"):
            label = "prefix"  # a merged message has one name: keep every speaker in the text
        self.label_name = label in ("name", "both")
        self.label_prefix = label in ("prefix", "both")
        self.merge = view.merge
        if options.tools is not None and not all(
            isinstance(t, dict) for t in _listed(options.tools)
        ):
            raise ValueError(
                f"roles.{role}.tools: names tools ({options.tools!r}) that were not resolved; "
                "build agents through the pipeline, or give OpenAI schema dicts"
            )
        self.parse_fn = (
            load_object(options.parse, what=f"roles.{role}.parse") if options.parse else None
        )

    def context(self, message: Message) -> dict[str, Any]:
        return template_context(message, self.role)

    def chat(self, message: Message) -> list[dict[str, Any]]:
        """The request's messages for this role's next turn.

        A tool exchange still in progress (this role's latest tool calls and their
        results) goes after the prompt, and the templates see the history as it was
        when the turn began: the model continues the turn it started, and the prompt
        does not change between its calls.
        """
        history = message.history
        cut = self._pending_start(history)
        seen = message
        if cut < len(history) and (self.system or self.prompt):
            seen = msgspec.structs.replace(message, history=history[:cut])
        ctx = self.context(seen) if (self.system or self.prompt) else {}
        chat: list[dict[str, Any]] = []
        if self.system is not None:
            chat.append({"role": "system", "content": render(self.system, ctx)})
        self._turns(chat, history, 0, cut, own=self.role in self.dialogue)
        if self.prompt is not None:
            self._user(chat, render(self.prompt, ctx))
        self._turns(chat, history, cut, len(history), own=True)
        return chat

    def _pending_start(self, history: list[Step]) -> int:
        """Where this role's unfinished tool exchange at the end of the history begins."""
        i = len(history)
        while i > 0:
            step = history[i - 1]
            if _is_tool_step(step) or (step.role == self.role and step.tool_calls):
                i -= 1
            else:
                break
        while i < len(history) and history[i].role != self.role:
            i += 1  # results of someone else's calls: not part of this role's exchange
        return i

    def _turns(
        self, chat: list[dict[str, Any]], history: list[Step], start: int, end: int, own: bool
    ) -> None:
        """Append the chat messages for history[start:end]; `own`: show this role's turns."""
        role = self.role
        for i in range(start, end):
            step = history[i]
            if step.role == TASK_ROLE:
                if self.options.include_task:
                    self._user(chat, step.content or "")
            elif _is_tool_step(step):
                continue  # shown with the call it answers, to the caller only
            elif step.role == role:
                if own:
                    self._own(chat, history, i)
            elif step.role in self.dialogue:
                text = step.content or ""
                if step.tool_calls and self.options.view.tools == "summary":
                    text = "\n".join(filter(None, [text, *_summary(history, i)]))
                if text:
                    self._user(chat, text, speaker=step.role)

    def _own(self, chat: list[dict[str, Any]], history: list[Step], i: int) -> None:
        step = history[i]
        entry: dict[str, Any] = {"role": "assistant", "content": step.content or ""}
        if not step.tool_calls:
            chat.append(entry)
            return
        entry["tool_calls"] = step.tool_calls
        chat.append(entry)
        found = results_for(history, i)
        for n, call in enumerate(step.tool_calls):
            call_id = _call_id(call, n)
            res = found.get(call_id)
            if res is None:
                content = "ERROR: no result was recorded for this tool call"
            else:
                content = str(res.get("content") or "")
                if res.get("is_error") and content[:5].upper() != "ERROR":
                    content = f"ERROR: {content}"
            chat.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def _user(self, chat: list[dict[str, Any]], content: str, speaker: str | None = None) -> None:
        """Append a user message, labelled when another speaker said it; merge per `view.merge`."""
        entry: dict[str, Any] = {"role": "user", "content": content}
        if speaker is not None:
            if self.label_prefix:
                entry["content"] = self.options.view.prefix.replace("{role}", speaker) + content
            if self.label_name:
                entry["name"] = speaker_name(speaker)
        prev = chat[-1] if chat else None
        mergeable = (
            prev is not None
            and prev["role"] == "user"
            and self.merge is not False
            and (self.merge is True or not (self.label_name or self.label_prefix))
        )
        if mergeable:
            chat[-1] = {"role": "user", "content": f"{prev['content']}\n\n{entry['content']}"}
        else:
            chat.append(entry)

    async def run(self, message: Message) -> Step:
        """The fixed `opening` when the role has not spoken yet, else one model call."""
        if self.opening is None or any(s.role == self.role for s in message.history):
            return await super().run(message)
        started = time.time()
        try:
            step = Step(
                role=self.role,
                content=render(self.opening, self.context(message)),
                data={"opening": True},
            )
        except Exception as exc:
            step = failed_step(self.role, exc)
        step.started = started
        step.latency = time.time() - started
        return step

    async def preprocess(self, message: Message) -> dict[str, Any]:
        request: dict[str, Any] = {
            **self.options.extra_body,
            "messages": self.chat(message),
            **self.options.sampling,
        }
        if self.options.tools:
            request["tools"] = _listed(self.options.tools)
        request.setdefault("seed", message.seed)
        schema = self.output_schema
        if schema is not None:
            request.update(schema.request(self.structured_mode))
            if self.structured_mode == "prompt":
                request["messages"].append({"role": "user", "content": schema.instruction()})
        return request

    async def process(self, message: Message, request: dict[str, Any]) -> ChatResult:
        result = await self.service.call(request, key=message.id)
        if self.output_schema is None:
            return result
        return await self.checked(message, request, result)

    async def checked(
        self, message: Message, request: dict[str, Any], result: ChatResult
    ) -> StructuredReply:
        """Check the reply against the schema; re-ask with the error, `retries` times at most."""
        schema = self.output_schema
        assert schema is not None
        usage = result.usage
        invalid: list[dict[str, Any]] = []
        while True:
            data, error = schema.check(result.content)
            if error is None or len(invalid) >= schema.retries:
                break
            invalid.append({"content": result.content, "error": error})
            chat = [
                *request["messages"],
                {"role": "assistant", "content": result.content or ""},
                {"role": "user", "content": reask(error, schema)},
            ]
            request = {**request, "messages": chat}
            result = await self.service.call(request, key=message.id)
            usage = merge_usage(usage, result.usage)
        if error is not None:
            invalid.append({"content": result.content, "error": error})
        return StructuredReply(
            **{**msgspec.structs.asdict(result), "usage": usage},
            data=data,
            error=error,
            invalid=invalid or None,
        )

    async def postprocess(self, message: Message, result: ChatResult) -> Step:
        """The reply as a step, with `parse`'s data; a parse failure fails the step.

        The failed step still keeps the reply (see `Agent.run`): a parse failure is
        permanent, and the text is what one needs to see why.
        """
        step = to_step(self.role, result)
        if isinstance(result, StructuredReply):
            if result.data is None:  # every attempt was invalid: the row is rejected
                assert self.output_schema is not None
                reason = self.output_schema.reject_reason
                step.data = {"reject": {"reason": reason, "error": result.error}}
                step.data["invalid_replies"] = result.invalid
                return step
            step.data = dict(result.data)
            if result.invalid:
                step.data["invalid_replies"] = result.invalid
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


_NOT_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def speaker_name(role: str) -> str:
    """A role name as OpenAI's `name` field accepts it: ^[a-zA-Z0-9_-]{1,64}$."""
    return _NOT_NAME.sub("_", role)[:64] or "_"


def _listed(tools: Any) -> list[Any]:
    return [tools] if isinstance(tools, (str, dict)) else list(tools)


def _is_tool_step(step: Step) -> bool:
    return bool(step.tool_results) or step.tool_call_id is not None


def _call_id(call: Any, n: int) -> str:
    return str(call.get("id") or f"call_{n}") if isinstance(call, dict) else f"call_{n}"


def results_for(history: list[Step], i: int) -> dict[str, dict[str, Any]]:
    """The results answering step i's tool calls, by call id.

    They are looked for in the tool steps after step i and before the caller's next
    step, so that call ids a server reuses across turns never pick up an older result.
    """
    caller = history[i].role
    found: dict[str, dict[str, Any]] = {}
    for step in history[i + 1 :]:
        if step.role == caller:
            break
        if step.tool_results:
            for res in step.tool_results:
                found.setdefault(str(res.get("tool_call_id")), res)
        elif step.tool_call_id is not None:
            found.setdefault(
                step.tool_call_id,
                {
                    "tool_call_id": step.tool_call_id,
                    "content": step.content,
                    "is_error": not step.ok,
                },
            )
    return found


def _summary(history: list[Step], i: int) -> list[str]:
    """One line per tool call of step i: `called name(args) -> result`, for other roles."""
    found = results_for(history, i)
    lines = []
    for n, call in enumerate(history[i].tool_calls or ()):
        fn = call.get("function", {}) if isinstance(call, dict) else {}
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = json.dumps(args)
        res = found.get(_call_id(call, n))
        if res is None:
            outcome = "(no result)"
        else:
            outcome = ("error: " if res.get("is_error") else "") + str(res.get("content") or "")
        lines.append(f"[called {fn.get('name', '?')}({args}) -> {outcome}]")
    return lines
