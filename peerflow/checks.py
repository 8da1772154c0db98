"""The checks `Pipeline` makes before a run: everything knowable without starting a service.

`peerflow check` and `peerflow run` both build a `Pipeline`, so whatever is
found here stops a run before any service starts or any file is written. Each
check returns `(key path, message)` pairs; the pipeline turns them into one
`ConfigError` pointing at the YAML lines (`file:line: key.path: message`).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from peerflow.agents import Agent, AgentOptions
from peerflow.agents.llm import (
    CONTEXT_NAMES,
    TASK_CONTEXT_NAMES,
    LLMAgent,
    LLMOptions,
    template_variables,
)
from peerflow.config import FieldSpec, RunConfig, validation_errors
from peerflow.loading import load_object
from peerflow.workflow import END, Workflow, build_workflow, condition, unknown_roles

Errors = list[tuple[tuple[str, ...], str]]
AgentSpecs = Mapping[str, tuple[type[Agent], AgentOptions]]


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def callable_errors(spec: str, what: str, path: tuple[str, ...]) -> Errors:
    """Import a `module:function` name and check it can be called."""
    try:
        obj = load_object(spec, what=what)
    except ValueError as exc:
        return [(path, str(exc))]
    if not callable(obj):
        return [(path, f"{what} {spec!r} is not callable")]
    return []


# --- workflow ------------------------------------------------------------------


def workflow_errors(config: RunConfig) -> Errors:
    """Names the workflow section imports, and the roles it routes to, checked one by one."""
    wf = config.workflow
    roles = set(config.roles)
    errors: Errors = []

    def role_ref(name: str, path: tuple[str, ...]) -> None:
        if name not in roles:
            errors.append(
                (path, f"role {name!r} is not defined under roles" + _did_you_mean(name, roles))
            )

    if wf.tool_role is not None:
        role_ref(wf.tool_role, ("workflow", "tool_role"))
    if wf.kind in ("sequence", "loop"):
        for i, name in enumerate(wf.roles):
            role_ref(name, ("workflow", "roles", str(i)))
    if wf.kind == "loop":
        if wf.until:
            errors += callable_errors(wf.until, "function", ("workflow", "until"))
        if wf.check_after is not None and wf.check_after not in wf.roles:
            errors.append(
                (
                    ("workflow", "check_after"),
                    f"{wf.check_after!r} is not one of the loop's roles ({', '.join(wf.roles)}), "
                    "so a turn would never end" + _did_you_mean(wf.check_after, wf.roles),
                )
            )
    elif wf.kind == "graph":
        if wf.start != END:
            role_ref(wf.start, ("workflow", "start"))
        for node, spec in wf.edges.items():
            role_ref(node, ("workflow", "edges", node))
            if isinstance(spec, str):
                if spec != END:
                    role_ref(spec, ("workflow", "edges", node))
                continue
            for i, edge in enumerate(spec):
                where = ("workflow", "edges", node, str(i))
                if edge.to != END:
                    role_ref(edge.to, (*where, "to"))
                if isinstance(edge.when, str):
                    errors += callable_errors(edge.when, "condition", (*where, "when"))
    elif wf.kind == "custom":
        try:
            cls = load_object(wf.path, what="workflow.path")
        except ValueError as exc:
            return [*errors, (("workflow", "path"), str(exc))]
        if not (isinstance(cls, type) and issubclass(cls, Workflow)):
            errors.append(
                (("workflow", "path"), f"{wf.path!r} is not a peerflow Workflow subclass")
            )
    return errors


def checked_workflow(config: RunConfig) -> tuple[Workflow | None, Errors]:
    """Build the workflow once its names check out; a custom one must declare its roles."""
    errors = workflow_errors(config)
    if errors:
        return None, errors
    wf = config.workflow
    try:
        workflow = build_workflow(wf)
    except Exception as exc:  # a custom workflow's constructor, bad options, ...
        where = ("workflow", "options") if wf.kind == "custom" else ("workflow",)
        return None, [(where, f"cannot build the workflow: {type(exc).__name__}: {exc}")]
    errors.extend(_reject_rules(config, workflow))
    if wf.kind == "custom":
        try:
            declared = workflow.roles()
        except Exception as exc:
            declared = set()
            errors.append(
                (("workflow", "path"), f"{wf.path}.roles() failed: {type(exc).__name__}: {exc}")
            )
        if not declared and not errors:
            errors.append(
                (
                    ("workflow", "path"),
                    f"custom workflow {wf.path!r} must implement roles(), returning every role it "
                    "may route to, so that they can be checked before the run",
                )
            )
        for role in sorted(unknown_roles(workflow, config.roles) if declared else ()):
            errors.append(
                (
                    ("workflow", "path"),
                    f"role {role!r} is not defined under roles (named by {wf.path}.roles())",
                )
            )
    return workflow, errors


def _reject_rules(config: RunConfig, workflow: Workflow) -> Errors:
    """Load every role's `reject` conditions into the workflow; report the ones that fail."""
    errors: Errors = []
    for role, rc in config.roles.items():
        rules = []
        for i, rule in enumerate(rc.reject):
            try:
                rules.append((rule.reason, condition(rule.when, f"roles.{role}.reject.{i}.when")))
            except Exception as exc:
                errors.append((("roles", role, "reject", str(i), "when"), str(exc)))
        if rules:
            workflow.reject_rules[role] = rules
    return errors


# --- services --------------------------------------------------------------------


def sim_option_errors(config: RunConfig) -> Errors:
    """Simulator options against their exact names; they become the server's CLI flags.

    Also makes a relative rules-file `script` absolute against the config's folder (in
    place), so that the simulator finds it whatever the current folder.
    """
    sims = {name: svc for name, svc in config.services.items() if svc.kind == "sim"}
    if not sims:
        return []
    from peerflow.services import resolve_sim_script
    from peerflow.services.sim_llm import SimServiceOptions

    errors: Errors = []
    for name, svc in sims.items():
        # A relative rules file is the config folder's: resolved here, once, for the build.
        svc.options = resolve_sim_script(svc.options, config.base_dir)
        try:
            SimServiceOptions.model_validate(svc.options)
        except ValidationError as exc:
            for path, msg in validation_errors(exc):
                if msg == "unknown key" and path:
                    msg += _did_you_mean(path[-1], SimServiceOptions.model_fields)
                errors.append((("services", name, "options", *path), msg))
    return errors


def tool_env_errors(config: RunConfig) -> Errors:
    """Load each tool-environment domain now, so a broken one is a config error.

    Also makes a relative `domain` absolute against the config's folder (in place): the
    servers are started from the current folder (and on Ray, on other nodes).
    """
    errors: Errors = []
    for name, svc in config.services.items():
        if svc.kind != "tool_env":
            continue
        from peerflow.envs.domain import DomainError, load_domain

        svc.domain = str(config.resolve(svc.domain))
        if svc.owner is None:  # one name per output: a re-run finds what a killed run left
            out = str(config.resolve(config.output.path).resolve())
            svc.owner = "run-" + hashlib.blake2b(out.encode(), digest_size=8).hexdigest()
        try:
            load_domain(svc.domain)
        except DomainError as exc:
            errors.append((("services", name, "domain"), str(exc)))
    return errors


# --- templates -------------------------------------------------------------------


def _role_templates(role: str, cls: type[Agent], options: AgentOptions) -> dict[str, str]:
    """A role's Jinja sources by option name, for agents whose context is LLMAgent's."""
    if not isinstance(options, LLMOptions) or not issubclass(cls, LLMAgent):
        return {}
    if cls.context is not LLMAgent.context:
        return {}  # a subclass supplies its own names; it is checked when it renders
    sources = {key: getattr(options, key, None) for key in ("system", "prompt", "opening")}
    return {key: src for key, src in sources.items() if isinstance(src, str)}


def template_uses(
    config: RunConfig, agent_specs: AgentSpecs
) -> tuple[dict[tuple[str, ...], set[str]], Errors]:
    """The task variables each template reads, by its key path; and syntax errors."""
    uses: dict[tuple[str, ...], set[str]] = {}
    errors: Errors = []
    sources: list[tuple[tuple[str, ...], str | None, frozenset[str]]] = [
        (("task", "message"), config.task.message, TASK_CONTEXT_NAMES)
    ]
    for role, (cls, options) in agent_specs.items():
        for key, src in _role_templates(role, cls, options).items():
            sources.append((("roles", role, key), src, CONTEXT_NAMES))
    for path, src, context in sources:
        try:
            names = template_variables(src) - context
        except ValueError as exc:
            errors.append((path, str(exc)))
            continue
        if names:
            uses[path] = names
    return uses, errors


def template_var_errors(
    config: RunConfig,
    uses: Mapping[tuple[str, ...], set[str]],
    columns: list[str] | None,
    columns_are: str = "a column of the dataset",
) -> Errors:
    """Template names that are neither a prompt variable nor one of the context names.

    With `dataset.fields` the variables are its keys; without, the dataset's
    `columns` (described by `columns_are`), when they can be known up front.
    """
    fields = config.dataset.fields
    if fields:
        known: Iterable[str] = fields
        kind = "a prompt variable under dataset.fields"
    elif columns is not None:
        known = columns
        kind = columns_are
    else:
        return []  # the columns cannot be known before reading rows: rows report it
    known = set(known)
    shown = ", ".join(sorted(known)) or "none"
    errors: Errors = []
    for path, names in uses.items():
        context = TASK_CONTEXT_NAMES if path[0] == "task" else CONTEXT_NAMES
        for name in sorted(names - known):
            errors.append(
                (
                    path,
                    f"the template uses {name!r}, which is not {kind} ({shown}) nor one of "
                    f"{', '.join(sorted(context))}" + _did_you_mean(name, known),
                )
            )
    return errors


def required_vars(config: RunConfig, uses: Mapping[tuple[str, ...], set[str]]) -> dict[str, str]:
    """Variables each row must be checked to give non-null, each with the first template
    that uses it (the per-row check in `Pipeline.tasks`).

    Optional fields (`required: false`) are left out: their default may well be
    null on purpose, for a template that tests it with `{% if %}`. So are required
    typed fields (a `type` other than `any`): `map_fields` already rejects their null.
    """
    fields = config.dataset.fields
    required: dict[str, str] = {}
    for path, names in uses.items():
        for name in sorted(names):
            spec = fields.get(name)
            if isinstance(spec, FieldSpec) and (not spec.required or spec.type != "any"):
                continue
            if fields and name not in fields:
                continue  # reported by template_var_errors
            required.setdefault(name, ".".join(path))
    return required


# --- agents -------------------------------------------------------------------


def option_callable_errors(agent_specs: AgentSpecs) -> Errors:
    """The functions built-in agents import by name (`parse`, `function`) exist and are callable."""
    from peerflow.agents.function import FunctionOptions

    errors: Errors = []
    for role, (_cls, options) in agent_specs.items():
        names = (
            {"parse": getattr(options, "parse", None)} if isinstance(options, LLMOptions) else {}
        )
        if isinstance(options, FunctionOptions):
            names["function"] = getattr(options, "function", None)
        for key, spec in names.items():
            if isinstance(spec, str):  # options of a role that failed validation may be anything
                errors += callable_errors(spec, "function", ("roles", role, key))
    return errors


def agent_build_errors(agent_specs: AgentSpecs, services: Mapping[str, Any]) -> Errors:
    """Build each role's agent against unstarted services, so constructors' errors show now."""
    errors: Errors = []
    for role, (cls, options) in agent_specs.items():
        try:
            cls(role, options, services)
        except ValueError as exc:
            # Built-in agents name the key at the start of their message: point at its line.
            text = str(exc)
            match = re.match(rf"roles\.{re.escape(role)}\.([\w.]+):?\s*(.*)", text, re.S)
            if match:
                errors.append((("roles", role, *match[1].split(".")), match[2]))
            else:
                errors.append((("roles", role), f"cannot build the agent: {text}"))
        except Exception as exc:
            errors.append((("roles", role), f"cannot build the agent: {type(exc).__name__}: {exc}"))
    return errors


# --- output ---------------------------------------------------------------------


def writable_errors(path: Path, key: tuple[str, ...]) -> Errors:
    """Whether `path` can be written (created, with its folders) without creating anything."""
    if path.is_dir():
        return [(key, f"{path} is a folder; give the path of a file")]
    if path.exists():
        if not os.access(path, os.W_OK):
            return [(key, f"{path} exists and is not writable")]
        return []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [(key, f"cannot create {path}: {parent} is a file, not a folder")]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [(key, f"cannot create {path}: the folder {parent} is not writable")]
    return []


def output_errors(config: RunConfig) -> Errors:
    errors = writable_errors(config.resolve(config.output.path), ("output", "path"))
    if config.output.summary:
        errors += writable_errors(config.resolve(config.output.summary), ("output", "summary"))
    return errors


def export_errors(config: RunConfig, specs: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """The `export` section: assistant roles that exist and have a chat, fields that compile,
    `chat` and `dedup` naming fields, calibration solvers naming services."""
    from peerflow.agents.llm import LLMAgent, compile_template

    errors: list[tuple[tuple[str, ...], str]] = []
    ex = config.export
    for role in ex.assistant:
        if role not in config.roles:
            errors.append((("export", "assistant"), f"no role named {role!r}"))
        elif role in specs and not issubclass(specs[role][0], LLMAgent):
            errors.append(
                (("export", "assistant"), f"roles.{role} is not an LLM role: it has no chat")
            )
    for name, source in ex.fields.items():
        try:
            compile_template(source, f"export.fields.{name}")
        except ValueError as exc:
            errors.append(
                (("export", "fields", name), str(exc).removeprefix(f"export.fields.{name}: "))
            )
    for key, name in (ex.chat or {}).items():
        if name not in ex.fields:
            errors.append((("export", "chat", key), f"{name!r} is not a name under export.fields"))
    if ex.chat is not None and not {"user", "assistant"} <= set(ex.chat):
        errors.append((("export", "chat"), "needs both `user` and `assistant`"))
    if ex.calibration is not None:
        for n, solver in enumerate(ex.calibration.solvers):
            if solver.service not in config.services:
                errors.append(
                    (("export", "calibration", "solvers", str(n), "service"),
                     f"no service named {solver.service!r} under services")
                )  # fmt: skip
        for key in ("question", "answer"):
            name = getattr(ex.calibration, key)
            if name not in ex.fields:
                errors.append(
                    (("export", "calibration", key), f"{name!r} is not a name under export.fields")
                )
    return errors
