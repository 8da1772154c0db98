"""The config file's JSON Schema and its Markdown reference, both generated from the models.

Nothing here is written by hand twice: the keys, types, defaults and constraints come
from the pydantic models in `peerflow.config`, the agents' `Options` models (every
agent `peerflow.agents` registers) and the simulator's options, so neither the schema
that editors validate YAML with (`peerflow schema`) nor the reference page of the
documentation (rendered by `docs/hooks.py` at build time) can drift from the code.

Descriptions come from each field's `description=`; fields of models defined outside
`peerflow.config` that have none get one from `DESCRIPTIONS` below, or, for simulator
options, from the help text of the matching `peerflow sim-llm` flag.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from peerflow import config as cfg

# (model name, field) -> description, for option models that carry none themselves.
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("LLMOptions", "service"): "Name of the service (under `services`) this role calls.",
    ("LLMOptions", "system"): "Jinja template of the system prompt.",
    ("LLMOptions", "prompt"): "Jinja template appended as the last user message of each request.",
    ("LLMOptions", "conversation"): "Roles whose turns this role sees as a dialogue: its own "
    "turns as `assistant` messages, the others' as `user` messages (the same as "
    "`view.include`).",
    ("LLMOptions", "include_task"): "Start the chat with the task's first message.",
    ("LLMOptions", "opening"): "Jinja template of the role's first turn, said without a model "
    "call (a support agent's fixed greeting).",
    ("EnvironmentOptions", "service"): "The `kind: tool_env` service whose environments this "
    "role acquires (one per task, at its first step) and runs every tool call on.",
    ("EnvironmentOptions", "sides"): "LLM role -> the side (`assistant` or `user`) whose tools "
    "it is offered (`tools: <this role>`) and whose calls it makes.",
    ("RewardOptions", "service"): "The `kind: tool_env` service that scores the conversation "
    "(by replaying its tool calls) and holds the environment it releases.",
    ("RewardOptions", "assistant"): "Roles whose texts count as what the assistant communicated.",
    ("RewardOptions", "sides"): "LLM role -> its side (`assistant` or `user`), to replay each "
    "tool call as the side that made it.",
    ("LLMOptions", "sampling"): "Sampling parameters sent with each request (`temperature`, "
    "`max_tokens`, ...); unknown keys are errors, with a suggestion.",
    ("LLMOptions", "extra_body"): "Request fields beyond the known sampling keys, merged into "
    "the request body unchecked.",
    ("LLMOptions", "tools"): "Tools offered to the model: a tool role's name (all its tools), "
    "or a list of tool role names, tool names and OpenAI tool schemas.",
    ("LLMOptions", "structured"): "The reply's shape (a pydantic model or a JSON Schema): "
    "asked of the server as its service's `structured_output` says, checked, re-asked with the "
    "validation error, and the row rejected when it stays invalid; the parsed object becomes "
    "the step's `data`.",
    ("LLMOptions", "parse"): "`module:function(message, text) -> dict | None`: turns the reply "
    "into the step's `data`.",
    # Multi-party view and tools (from the docstrings of ViewOptions and ToolsOptions; a
    # `description=` on the field itself takes precedence).
    ("LLMOptions", "view"): "How this role sees the shared history: which roles, how other "
    "speakers are labelled, merging, other roles' tool exchanges.",
    ("ViewOptions", "include"): "Roles whose turns this role sees, in history order: its own "
    "as `assistant` messages, each other role's as a separate `user` message (default: none; "
    "`conversation` is the same list).",
    ("ViewOptions", "label"): "How another speaker's turn says who spoke: `name` (the `name` "
    "field), `prefix`, `both` or `none`; `auto`: none with one other speaker, both with more.",
    ("ViewOptions", "prefix"): "Start of a labelled turn's content; `{role}` is the speaker.",
    ("ViewOptions", "merge"): "Merge consecutive `user` messages: `auto` only when turns are "
    "unlabelled, `true` always, `false` never.",
    ("ViewOptions", "tools"): "Other roles' tool exchanges: `hide` (their text only) or "
    "`summary` (a labelled message listing each call and result).",
    ("ToolsOptions", "functions"): "The tools: each `module:function` (schema from its type "
    "hints and docstring) or `{function, name, description, parameters}`.",
    ("ToolsOptions", "timeout"): "Seconds allowed for each tool call.",
    ("ToolDecl", "function"): "`module:function` implementing the tool.",
    ("ToolDecl", "name"): "Tool name shown to the model (default: the function's name).",
    ("ToolDecl", "description"): "Description shown to the model (default: the docstring).",
    ("ToolDecl", "parameters"): "JSON schema (`type: object`) of the arguments shown to the "
    "model (default: from the type hints).",
    ("FunctionOptions", "function"): "`module:function(message, **args)`, sync or async; "
    "returns a Step, text, a dict of data, or None.",
    ("FunctionOptions", "args"): "Keyword arguments passed to the function.",
    ("SimServiceOptions", "step_base_ms"): "Fixed cost of one decoding step (ms).",
    ("SimServiceOptions", "step_per_seq_ms"): "Cost of one decoding step per running sequence "
    "(ms).",
    ("SimServiceOptions", "output_sigma"): "Spread of the sampled reply length (lognormal sigma).",
    ("SimServiceOptions", "seed"): "Seed of the simulator's sampled lengths and faults.",
}

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


# --- descriptions ----------------------------------------------------------------------


@functools.cache
def _sim_help() -> dict[str, str]:
    """`peerflow sim-llm` flag help, by option name: the simulator documents its own options."""
    try:
        from peerflow.services.sim_llm import build_parser
    except ImportError:  # pragma: no cover - the simulator ships with peerflow
        return {}
    helps = {}
    for action in build_parser()._actions:
        if action.help and action.dest:
            helps[action.dest] = action.help
    return helps


def describe(model: type[BaseModel], name: str, field: FieldInfo) -> str | None:
    """The field's description: its own, else `DESCRIPTIONS`, else the simulator's flag help."""
    if field.description:
        return field.description
    text = DESCRIPTIONS.get((model.__name__, name))
    if text:
        return text
    if model.__name__ == "SimServiceOptions":
        return _sim_help().get(name)
    return None


# --- the models that make up a config file -------------------------------------------


def agent_options() -> dict[str, type[BaseModel]]:
    """Every registered agent name -> its Options model (built-ins and any registered later)."""
    from peerflow.agents import BUILTIN_AGENTS

    return {name: cls.Options for name, cls in BUILTIN_AGENTS.items()}


def sim_options() -> type[BaseModel] | None:
    try:
        from peerflow.services.sim_llm import SimServiceOptions
    except ImportError:  # pragma: no cover
        return None
    return SimServiceOptions


def _kinds(union: Any) -> list[type[BaseModel]]:
    """The models of a discriminated union alias (`ServiceConfig`, `WorkflowConfig`)."""
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(union):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            found.append(arg)
        else:
            found.extend(_kinds(arg))
    return found


def _kind(model: type[BaseModel]) -> str:
    return typing.get_args(model.model_fields["kind"].annotation)[0]


HIDDEN_FIELDS = {("RunConfig", "base_dir")}  # set by the loader, not written in YAML


def fields(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    for name, field in model.model_fields.items():
        if (model.__name__, name) not in HIDDEN_FIELDS:
            yield name, field


# --- JSON Schema -----------------------------------------------------------------------


def _with_descriptions(model: type[BaseModel], schema: dict[str, Any]) -> dict[str, Any]:
    """Fill missing `description`s of a model's properties (editors show them on hover)."""
    props = schema.get("properties", {})
    for name, field in fields(model):
        text = describe(model, name, field)
        if name in props and text and "description" not in props[name]:
            props[name]["description"] = text
    return schema


def _model_schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    """`model`'s schema with its `$defs` moved into `defs` (one shared `$defs` table)."""
    schema = model.model_json_schema()
    for name, sub in schema.pop("$defs", {}).items():
        defs.setdefault(name, sub)
    return _with_descriptions(model, schema)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a peerflow config file (`peerflow schema` prints it).

    It is RunConfig's schema with two refinements pydantic cannot express alone: a
    role lists its agent's own options (one branch per registered agent, unknown keys
    rejected; a `module:Class` agent may have any keys), and a simulator service's
    `options` are the simulator's.
    """
    schema = cfg.RunConfig.model_json_schema()
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    _with_descriptions(cfg.RunConfig, schema)
    schema["properties"].pop("base_dir", None)
    models = _all_config_models()
    for model in models:
        if model.__name__ in defs:
            _with_descriptions(model, defs[model.__name__])

    role = defs.get("RoleConfig", {})
    common = {k: v for k, v in role.get("properties", {}).items() if k != "agent"}
    agent_desc = role.get("properties", {}).get("agent", {}).get("description", "")
    branches = []
    names = list(agent_options())
    for name, options in agent_options().items():
        sub = _model_schema(options, defs)
        props = {
            "agent": {"const": name, "description": agent_desc},
            **copy.deepcopy(common),
            **sub.get("properties", {}),
        }
        required = list(sub.get("required", []))
        if name != "llm":  # `agent` defaults to llm
            required.insert(0, "agent")
        branches.append(
            {
                "title": f"role with agent: {name}",
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            }
        )
    branches.append(
        {
            "title": "role with a custom agent (module:Class)",
            "type": "object",
            "properties": {
                "agent": {
                    "type": "string",
                    "not": {"enum": names},
                    "description": "`module:Class` naming a `peerflow.agents.Agent` subclass; "
                    "its `Options` model validates the role's other keys when the run starts.",
                },
                **copy.deepcopy(common),
            },
            "required": ["agent"],
            "additionalProperties": True,
        }
    )
    defs["Role"] = {"description": role.get("description", ""), "anyOf": branches}
    schema["properties"]["roles"]["additionalProperties"] = {"$ref": "#/$defs/Role"}

    sim = sim_options()
    if sim is not None and "SimServiceConfig" in defs:
        sim_schema = _model_schema(sim, defs)
        sim_schema["description"] = cfg.SimServiceConfig.model_fields["options"].description
        defs["SimServiceConfig"]["properties"]["options"] = sim_schema

    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "peerflow run config",
        "description": "A peerflow workflow config (`peerflow run CONFIG.yaml`).",
        **{k: v for k, v in schema.items() if k not in ("title",)},
    }


def _all_config_models() -> list[type[BaseModel]]:
    return [cfg.RunConfig, *_nested(cfg.RunConfig, set())]


def _nested(root: type[BaseModel], done: set[type[BaseModel]]) -> list[type[BaseModel]]:
    """Models used by `root`'s fields, recursively, not in `done` (which this extends)."""
    seen: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        for _, field in fields(model):
            for sub in _submodels(field.annotation):
                if sub not in done and sub is not root:
                    done.add(sub)
                    seen.append(sub)
                    visit(sub)

    visit(root)
    return seen


def _submodels(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _submodels(arg)


# --- Markdown reference ------------------------------------------------------------------


def _anchor(model: type[BaseModel]) -> str:
    if model in _kinds(cfg.ServiceConfig):
        return f"service-{_kind(model)}"
    if model in _kinds(cfg.WorkflowConfig):
        return f"workflow-{_kind(model)}"
    return ANCHORS.get(model.__name__, model.__name__.lower())


ANCHORS = {
    "RunConfig": "top-level",
    "DatasetConfig": "dataset",
    "FieldSpec": "dataset-field",
    "TaskConfig": "task",
    "RoleConfig": "roles",
    "Edge": "graph-edge",
    "RejectRule": "reject-rule",
    "RuntimeConfig": "runtime",
    "OutputConfig": "output",
    "CacheConfig": "cache",
    "ExportConfig": "export",
    "CalibrationConfig": "export-calibration",
    "SolverConfig": "export-solver",
}


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type, linking to nested models' sections."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin in (list, tuple, set):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"map[{type_name(args[0])} → {type_name(args[1])}]" if args else "map"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{_anchor(annotation)})"
        if issubclass(annotation, Path):
            return "path"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")


def _constraints(field: FieldInfo) -> str:
    out = []
    for meta in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sym} {value}")
        value = getattr(meta, "min_length", None)
        if value is not None:
            out.append(f"at least {value} item(s)")
    return ", ".join(out)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "its defaults"
    else:
        value = field.default
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(model: type[BaseModel]) -> str:
    """A Markdown table of `model`'s keys: key, type, default, description."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in fields(model):
        kind = type_name(field.annotation)
        limits = _constraints(field)
        if limits:
            kind += f" ({limits})"
        text = describe(model, name, field) or ""
        rows.append(f"| `{name}` | {kind} | {default_text(field)} | {_cell(text)} |")
    return "\n".join(rows)


def missing_descriptions() -> list[str]:
    """`Model.field` of every documented key without a description (tests keep this empty)."""
    missing = []
    for model in _reference_models():
        for name, field in fields(model):
            if not describe(model, name, field):
                missing.append(f"{model.__name__}.{name}")
    return missing


def _reference_models() -> list[type[BaseModel]]:
    models = _all_config_models()
    done = set(models)
    for options in agent_options().values():
        models += [options, *_nested(options, done)]
    sim = sim_options()
    if sim is not None:
        models.append(sim)
    return models


def reference_markdown() -> str:
    """The body of the config reference page, section by section."""
    out: list[str] = []

    def section(
        title: str, anchor: str, model: type[BaseModel], intro: str = "", level: int = 2
    ) -> None:
        out.append(f"{'#' * level} {title} {{#{anchor}}}\n")
        doc = intro or inspect.cleandoc(model.__doc__ or "")
        if doc and not doc.startswith(("Usage docs", "!!!")):
            out.append(doc + "\n")
        out.append(table(model) + "\n")

    section("Top level", "top-level", cfg.RunConfig, "The keys of the YAML file itself.")
    section("dataset", "dataset", cfg.DatasetConfig)
    section(
        "dataset.fields.&lt;variable&gt;",
        "dataset-field",
        cfg.FieldSpec,
        "The long form of a field: `question: {column: q, type: str}`. The short form "
        "`question: q` is `{column: q}`.",
    )
    section("task", "task", cfg.TaskConfig)

    out.append("## services.&lt;name&gt; {#services}\n")
    out.append(
        "Each service has a `kind`; the other keys depend on it. Every role that names the "
        "service shares it.\n"
    )
    for model in _kinds(cfg.ServiceConfig):
        kind = _kind(model)
        section(f"kind: {kind}", f"service-{kind}", model, level=3)
        # Option models inside it (a sandbox's limits); `cache` has its own section.
        for sub in _nested(model, {cfg.CacheConfig}):
            section(sub.__name__, _anchor(sub), sub, level=4)
    sim = sim_options()
    if sim is not None:
        section(
            "services.&lt;name&gt;.options (kind: sim)",
            "sim-options",
            sim,
            "Options of a simulator service: `peerflow sim-llm`'s flags with underscores "
            "(host and port are picked by the service).",
        )

    out.append("## roles.&lt;name&gt; {#roles}\n")
    out.append(
        "Every role has these keys; the rest are its agent's options (below). A role "
        "with `agent: module:Class` takes the keys of that class's `Options` model.\n"
    )
    out.append(table(cfg.RoleConfig) + "\n")
    section("roles.&lt;name&gt;.reject[]", "reject-rule", cfg.RejectRule, level=3)
    done = set(_all_config_models())
    for name, options in agent_options().items():
        section(f"agent: {name}", f"agent-{name}", options, level=3)
        for sub in _nested(options, done):  # option models inside the agent's options
            section(sub.__name__, _anchor(sub), sub, level=4)

    out.append("## workflow {#workflow}\n")
    out.append("One of the kinds below, chosen by `kind`.\n")
    for model in _kinds(cfg.WorkflowConfig):
        kind = _kind(model)
        section(f"kind: {kind}", f"workflow-{kind}", model, level=3)
    section("graph edge", "graph-edge", cfg.Edge, level=3)
    section("runtime", "runtime", cfg.RuntimeConfig, "Where and how wide the run goes.")
    section("output", "output", cfg.OutputConfig)
    section("cache", "cache", cfg.CacheConfig)
    section("export", "export", cfg.ExportConfig)
    section("export.calibration", "export-calibration", cfg.CalibrationConfig, level=3)
    section("export.calibration.solvers[]", "export-solver", cfg.SolverConfig, level=3)
    return "\n".join(out)
