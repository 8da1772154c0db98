"""Tools: declared once, offered to LLM roles, executed by the built-in `tools` agent.

A tool is a Python function with type hints and a docstring. Its OpenAI schema
(name, description, JSON-schema parameters) is generated from the signature
with pydantic, and the same pydantic model validates the arguments a model
sends, so what the model is told and what is checked never drift apart. A tool
can also be declared with an explicit OpenAI schema in YAML, paired with the
function that implements it.

The `tools` agent is a workflow's tool role: it executes every call of the
caller's last step concurrently, each under a timeout, and records all results
in ONE step (`Step.tool_results`, in call order). Nothing a model sends can
crash it: unknown tools, invalid JSON, bad arguments, exceptions and timeouts
become results with `is_error: true` whose content says what was wrong; the
model sees them as tool messages and can try again. `Workflow.advance` counts
them per task against `workflow.max_tool_errors`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from peerflow.agents.base import Agent, AgentOptions
from peerflow.loading import load_object
from peerflow.message import Message, Step
from peerflow.services.base import Service

# OpenAI's rule for function (tool) names.
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# A function parameter with this name receives the task message; it is not in the schema.
MESSAGE_PARAM = "message"


class ToolError(ValueError):
    """A tool declaration is wrong (raised at config time, never while a task runs)."""


@dataclass(frozen=True)
class Tool:
    """One callable tool: its OpenAI schema, its argument model and its implementation."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    args_model: type[BaseModel] | None  # validates arguments (None: the function takes **kw)
    wants_message: bool
    source: str  # "module:function", for error messages

    @property
    def schema(self) -> dict[str, Any]:
        """The entry for a request's `tools` list."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The docstring's description (text before an `Args:` section) and per-argument texts."""
    doc = inspect.getdoc(fn) or ""
    parts = re.split(r"^(?:Args|Arguments|Parameters):\s*$", doc, maxsplit=1, flags=re.M)
    head, args = parts[0], parts[1] if len(parts) > 1 else ""
    described: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        found = re.match(r"^\s{0,8}(\w+)\s*(\([^)]*\))?:\s*(.*)$", line)
        if found:
            current = found[1]
            described[current] = found[3].strip()
        elif current and line.strip():
            described[current] += " " + line.strip()
    return head.strip(), described


def _strip_titles(schema: Any) -> Any:
    """pydantic's schemas carry `title` keys that only cost prompt tokens."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _signature_model(
    fn: Callable[..., Any], name: str, injected: str = MESSAGE_PARAM
) -> tuple[type[BaseModel] | None, bool]:
    """A pydantic model of `fn`'s parameters (None if it takes **kwargs), and whether it
    wants the `injected` parameter (the task message; a tool environment's `env`), which
    the caller supplies and the model never sees."""
    _, described = _doc_parts(fn)
    fields: dict[str, Any] = {}
    wants_message = False
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name == injected:
            wants_message = True
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None, wants_message
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise ToolError(f"tool {name!r}: *args and positional-only parameters cannot be called")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        text = described.get(param.name)
        info = Field(default, description=text) if text else Field(default)
        fields[param.name] = (annotation, info)
    model = create_model(  # type: ignore[call-overload]
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model, wants_message


def tool_from_function(
    fn: Callable[..., Any],
    *,
    source: str,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    injected: str = MESSAGE_PARAM,
) -> Tool:
    """A `Tool` from a function; `name`/`description`/`parameters` override what is derived.

    `injected` names the parameter the caller fills in (not in the schema).

    With explicit `parameters` (an OpenAI JSON schema from YAML) the model is shown that
    schema; arguments are still validated against the function's signature.
    """
    if not callable(fn):
        raise ToolError(f"{source!r} is not callable")
    name = name or getattr(fn, "__name__", None) or "tool"
    if not _NAME.match(name):
        raise ToolError(f"tool name {name!r} must match ^[a-zA-Z0-9_-]{{1,64}}$ (OpenAI's rule)")
    doc, _ = _doc_parts(fn)
    try:
        model, wants_message = _signature_model(fn, name, injected)
    except ToolError:
        raise
    except Exception as exc:
        raise ToolError(f"tool {name!r} ({source}): cannot read its signature: {exc}") from None
    if parameters is None:
        if model is None:
            raise ToolError(
                f"tool {name!r} ({source}) takes **kwargs: give its `parameters` schema in YAML"
            )
        try:
            parameters = _strip_titles(model.model_json_schema())
        except Exception as exc:
            raise ToolError(
                f"tool {name!r} ({source}): a parameter's type has no JSON schema: {exc}"
            ) from None
    elif not (isinstance(parameters, dict) and parameters.get("type") == "object"):
        raise ToolError(f"tool {name!r}: `parameters` must be a JSON schema with type: object")
    return Tool(
        name=name,
        description=description if description is not None else doc,
        parameters=parameters,
        fn=fn,
        args_model=model,
        wants_message=wants_message,
        source=source,
    )


class ToolDecl(BaseModel):
    """A tool declared in YAML: the implementation, and optionally its OpenAI schema parts."""

    model_config = ConfigDict(extra="forbid")

    function: str  # "module:function" implementing it
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON schema (type: object) shown to the model


class ToolsOptions(AgentOptions):
    # Each entry: "module:function", or {function, name?, description?, parameters?}.
    functions: list[str | ToolDecl] = Field(min_length=1)
    timeout: float = Field(default=30.0, gt=0)  # seconds per call

    @field_validator("functions")
    @classmethod
    def _loadable(cls, functions: list[str | ToolDecl]) -> list[str | ToolDecl]:
        load_tools(functions)  # raises ValueError naming the bad entry
        return functions


def load_tools(functions: list[str | ToolDecl]) -> dict[str, Tool]:
    """The tools named by a `functions:` list, by tool name; ValueError names a bad entry."""
    tools: dict[str, Tool] = {}
    for i, entry in enumerate(functions):
        decl = entry if isinstance(entry, ToolDecl) else ToolDecl(function=entry)
        try:
            fn = load_object(decl.function, what="tool function")
            tool = tool_from_function(
                fn,
                source=decl.function,
                name=decl.name,
                description=decl.description,
                parameters=decl.parameters,
            )
        except ValueError as exc:
            raise ValueError(f"functions[{i}]: {exc}") from None
        if tool.name in tools:
            raise ValueError(f"functions[{i}]: two tools are named {tool.name!r}")
        tools[tool.name] = tool
    return tools


def result(call_id: str, name: str, content: str, *, error: bool = False) -> dict[str, Any]:
    return {"tool_call_id": call_id, "name": name, "content": content, "is_error": error}


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def bind_arguments(tool: Tool, raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A call's arguments (JSON text or a mapping) checked against the tool's schema.

    Returns (keyword arguments, None), or (None, what is wrong) in words a model can act on.
    """
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON: {exc}"
    if not isinstance(args, dict):
        return None, f"arguments must be a JSON object, got {type(args).__name__}"
    if tool.args_model is None:
        return dict(args), None
    try:
        validated = tool.args_model.model_validate(args)
    except ValidationError as exc:
        return None, f"invalid arguments: {_validation_text(exc)}"
    return {k: getattr(validated, k) for k in type(validated).model_fields}, None


class ToolsAgent(Agent):
    """Executes the tool calls of the previous step: all of them, concurrently, one step.

    Sync functions run in a worker thread so that a slow one neither blocks the event
    loop nor escapes its timeout (the thread itself cannot be killed: a timed-out sync
    call finishes in the background, its result dropped).
    """

    Options = ToolsOptions
    options: ToolsOptions

    def __init__(self, role: str, options: ToolsOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        try:
            self.tools = load_tools(options.functions)
        except ValueError as exc:
            raise ValueError(f"roles.{role}.{exc}") from None

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema for tool in self.tools.values()]

    async def process(self, message: Message, request: Any) -> Step:
        caller = next((s for s in reversed(message.history) if s.tool_calls), None)
        calls = caller.tool_calls if caller is not None and caller.tool_calls else []
        results = await asyncio.gather(
            *(self.call(message, call, i) for i, call in enumerate(calls))
        )
        errors = sum(1 for r in results if r["is_error"])
        step = Step(role=self.role, tool_results=list(results), data={"tool_errors": errors})
        if len(results) == 1:  # the single-call form readers of `tool_call_id` know
            step.tool_call_id = results[0]["tool_call_id"]
            step.content = results[0]["content"]
        return step

    async def call(self, message: Message, call: Any, index: int) -> dict[str, Any]:
        """One call's result; never raises."""
        if not isinstance(call, dict):
            return result(f"call_{index}", "", "malformed tool call", error=True)
        call_id = str(call.get("id") or f"call_{index}")
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = str(function.get("name") or "")
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return result(call_id, name, f"unknown tool {name!r}; tools: {known}", error=True)
        kwargs, problem = bind_arguments(tool, function.get("arguments"))
        if kwargs is None:
            return result(call_id, name, problem or "invalid arguments", error=True)
        if tool.wants_message:
            kwargs[MESSAGE_PARAM] = message
        timeout = self.options.timeout
        try:
            if inspect.iscoroutinefunction(tool.fn):
                value = await asyncio.wait_for(tool.fn(**kwargs), timeout)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(tool.fn, **kwargs), timeout)
        except asyncio.TimeoutError:
            return result(call_id, name, f"tool {name!r} timed out after {timeout:g} s", error=True)
        except Exception as exc:
            return result(call_id, name, f"{type(exc).__name__}: {exc}", error=True)
        return result(call_id, name, _as_text(value))


def offered_tools(
    spec: Any,
    tool_roles: Mapping[str, Mapping[str, Tool]],
    *,
    role: str,
    providers: Mapping[str, Callable[[str], list[dict[str, Any]]]] | None = None,
) -> list[dict[str, Any]] | None:
    """Resolve an LLM role's `tools:` into OpenAI schemas.

    `spec` is a tool role's name (all its tools), or a list whose items are OpenAI schema
    dicts (sent as given), tool role names, or tool names of any tool role. `providers`
    are tool roles whose tools depend on the caller (an environment role: the tools of the
    caller's side), by role name. ValueError names the unknown or ambiguous entry.
    """
    providers = providers or {}
    if spec is None:
        return None
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"roles.{role}.tools" + ("" if isinstance(spec, str) else f".{i}")
        if isinstance(item, dict):
            out.append(item)
            continue
        if item in tool_roles:
            out += [tool.schema for tool in tool_roles[item].values()]
            continue
        if item in providers:
            try:
                out += providers[item](role)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            continue
        owners = [r for r, tools in tool_roles.items() if item in tools]
        if len(owners) == 1:
            out.append(tool_roles[owners[0]][item].schema)
        elif owners:
            raise ValueError(
                f"{where}: tool {item!r} is offered by several tool roles ({', '.join(owners)}); "
                "name the role instead"
            )
        else:
            known = sorted(
                {*tool_roles, *providers, *(n for tools in tool_roles.values() for n in tools)}
            )
            raise ValueError(
                f"{where}: {item!r} is neither a tool role nor a tool "
                f"(known: {', '.join(known) or 'no `agent: tools` role'})"
            )
    names = [s.get("function", {}).get("name") for s in out if isinstance(s, dict)]
    dup = {n for n in names if n and names.count(n) > 1}
    if dup:
        raise ValueError(f"roles.{role}.tools: offers {', '.join(sorted(dup))} twice")
    return out


def resolve_offered_tools(
    agent_specs: Mapping[str, tuple[type[Agent], AgentOptions]],
    providers: Mapping[str, Callable[[str], list[dict[str, Any]]]] | None = None,
) -> list:
    """Replace tool names in LLM roles' `tools:` by the schemas of the `agent: tools` roles
    (and of `providers`, see `offered_tools`).

    Called by the pipeline once its roles' options are validated (on the driver and in
    every worker). Returns (key path, message) errors for names that match nothing.
    """
    from peerflow.agents.llm import LLMOptions

    tool_roles: dict[str, dict[str, Tool]] = {}
    for role, (_cls, options) in agent_specs.items():
        if isinstance(options, ToolsOptions):
            try:
                tool_roles[role] = load_tools(options.functions)
            except ValueError:
                continue  # reported by the tool role's own validation
    errors: list[tuple[tuple[str, ...], str]] = []
    for role, (_cls, options) in agent_specs.items():
        if not isinstance(options, LLMOptions) or options.tools is None:
            continue
        try:
            options.tools = offered_tools(options.tools, tool_roles, role=role, providers=providers)
        except ValueError as exc:
            text = str(exc)
            key, _, msg = text.partition(": ")
            errors.append((tuple(key.split(".")), msg))
    return errors
