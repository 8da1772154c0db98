"""The run configuration: one YAML file per workflow, validated before any work starts.

Every model forbids unknown keys, so a typo such as `temprature` is an error
naming its key path and line, never a silently ignored default. Kinds
(services, workflows) are discriminated unions: adding one is adding a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError


class ConfigError(Exception):
    """A configuration problem, with one line per offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- dataset ---------------------------------------------------------------

FieldType = Literal["any", "str", "int", "float", "bool", "list", "dict"]


class FieldSpec(Strict):
    column: str
    type: FieldType = "any"
    required: bool = True
    default: Any = None


class DatasetConfig(Strict):
    path: str
    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = "auto"
    split: str | None = None
    id_field: str | None = None
    # prompt variable -> input column (short form) or a FieldSpec; empty = every column
    fields: dict[str, str | FieldSpec] = Field(default_factory=dict)
    limit: int | None = Field(default=None, ge=0)
    repeat: int = Field(default=1, ge=1)


class TaskConfig(Strict):
    # Jinja template over the row's variables; becomes the task's first history step.
    message: str | None = None
    trials: int = Field(default=1, ge=1)
    seed: int = 0


# --- services --------------------------------------------------------------


class _ClientOptions(Strict):
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    # Longest wait (s) a server's Retry-After is honoured for; separate from backoff_max.
    retry_after_max: float = Field(default=600.0, ge=0)
    sticky: bool = False
    max_connections: int = Field(default=1024, ge=1)
    extra_body: dict[str, Any] = Field(default_factory=dict)


class OpenAIServiceConfig(_ClientOptions):
    """Any OpenAI-compatible server already running: vLLM, SGLang, llama.cpp, a provider."""

    kind: Literal["openai"]
    model: str
    endpoints: list[str] = Field(min_length=1)
    api_key_env: str | None = None


class LocalModelConfig(_ClientOptions):
    """The embedded real model, started and stopped by peerflow itself."""

    kind: Literal["local_model"]
    model: str = "smollm2"
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = None
    startup_timeout: float = 180.0
    replicas: int = Field(default=1, ge=1)


class SimServiceConfig(_ClientOptions):
    """The simulated LLM server: a measuring instrument, never a model."""

    kind: Literal["sim"]
    model: str = "sim"
    replicas: int = Field(default=1, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


ServiceConfig = Annotated[
    OpenAIServiceConfig | LocalModelConfig | SimServiceConfig, Field(discriminator="kind")
]


# --- roles -----------------------------------------------------------------


class RoleConfig(BaseModel):
    """A role: which agent class runs it and how many copies.

    Keys not listed here are the agent's own options; they are validated
    against the agent class's `Options` model when the pipeline is built.
    """

    model_config = ConfigDict(extra="allow")

    agent: str = "llm"
    # concurrent steps of this role per process; default: runtime.max_in_flight
    workers: int | None = Field(default=None, ge=1)
    num_instances: int = Field(default=1, ge=1)
    resources: dict[str, float] = Field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# --- workflow --------------------------------------------------------------


class _WorkflowBase(Strict):
    # Steps that return tool calls detour to this role, whose result goes back to the caller.
    tool_role: str | None = None
    max_steps: int = Field(default=200, ge=1)


class SequenceWorkflowConfig(_WorkflowBase):
    kind: Literal["sequence"]
    roles: list[str] = Field(min_length=1)


class LoopWorkflowConfig(_WorkflowBase):
    kind: Literal["loop"]
    roles: list[str] = Field(min_length=1)
    until: str | None = None  # "module:function(message) -> bool"
    check_after: str | None = None  # evaluate `until` only after this role (default: every step)
    max_turns: int = Field(default=10, ge=1)


class Edge(Strict):
    to: str
    when: str | dict[str, Any] | None = None


class GraphWorkflowConfig(_WorkflowBase):
    kind: Literal["graph"]
    start: str
    edges: dict[str, str | list[Edge]]


class CustomWorkflowConfig(_WorkflowBase):
    kind: Literal["custom"]
    path: str  # "module:Class"
    options: dict[str, Any] = Field(default_factory=dict)


WorkflowConfig = Annotated[
    SequenceWorkflowConfig | LoopWorkflowConfig | GraphWorkflowConfig | CustomWorkflowConfig,
    Field(discriminator="kind"),
]


# --- runtime and output ----------------------------------------------------


class RuntimeConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    max_in_flight: int = Field(default=256, ge=1)
    progress: bool = True
    # Ray only: "auto" joins a running cluster, None starts a local one.
    address: str | None = None
    partitions: int = Field(default=1, ge=1)
    # Ray only: sink actors per partition, each writing its own shard (1 = exactly output.path).
    sinks: int = Field(default=1, ge=1)
    # Ray only: step texts longer than this many bytes travel through Ray's object store;
    # None keeps every field inline.
    offload_threshold: int | None = Field(default=512, ge=0)
    # Serve Prometheus metrics on this port (of the driver, on Ray) while the run goes.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Ray only: CPUs of the local Ray started when no address is given (default: all cores).
    num_cpus: float | None = Field(default=None, gt=0)
    # Ray only: Ray's dashboard for a local Ray (off: it costs memory and a CPU share).
    dashboard: bool = False
    # Ray only: seconds to wait for every actor to start before failing the run.
    start_timeout: float = Field(default=120.0, gt=0)
    # Stop the run when a service's first this-many requests all fail (0: never).
    fail_fast: int = Field(default=20, ge=0)
    # Stop the run when a service that had worked fails on every endpoint this long (s).
    outage_timeout: float = Field(default=600.0, gt=0)


class OutputConfig(Strict):
    path: str
    success_only: bool = False
    flush_interval: float = Field(default=0.5, gt=0)
    flush_bytes: int = Field(default=1 << 20, ge=1)
    summary: str | None = None  # default: <path>.summary.json


class RunConfig(Strict):
    name: str = "peerflow-run"
    dataset: DatasetConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    roles: dict[str, RoleConfig] = Field(min_length=1)
    workflow: WorkflowConfig
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    output: OutputConfig
    metrics: str | None = None  # "module:function(message) -> dict[str, float]"

    # Directory of the YAML file; relative paths in the config resolve against it.
    base_dir: Path = Field(default=Path("."), exclude=True)
    _source: str = PrivateAttr(default="<config>")
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    def error(self, errors: list[tuple[tuple[str, ...], str]]) -> ConfigError:
        """A ConfigError pointing into this config's YAML file."""
        return ConfigError(format_errors(self._source, errors, self._lines))

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


# --- fingerprint -------------------------------------------------------------

# Role keys that place or size a role's workers; they do not change what a step produces.
_ROLE_RUNTIME_KEYS = ("workers", "num_instances", "resources")
# Service options that shape replies (besides kind and model); the rest are transport knobs.
_SERVICE_DATA_KEYS = ("extra_body", "n_ctx")
# Simulator options that shape its replies; the rest (time_scale, fault rates, ...) shape
# only timing and failures, which records already carry.
_SIM_DATA_KEYS = (
    "script",
    "agree_after",
    "seed",
    "output_median",
    "output_sigma",
    "default_max_tokens",
)


def config_fingerprint(config: RunConfig) -> str:
    """A short hex hash of what shapes the output's data, to refuse a resume that would mix two.

    Covered: the dataset's path (as written in the config), format, split,
    id_field, fields and repeat (which changes ids and so seeds); the whole `task` section (message
    template, trials, seed); every role's agent and options (prompts and other
    templates, sampling, extra_body, parse functions, ...) except the runtime
    keys `workers`, `num_instances` and `resources`; the whole workflow; the
    `metrics` function; and per service its kind, model name, `extra_body` and
    `n_ctx`, plus for a simulator the options that shape its replies (script,
    agree_after, seed, output_median, output_sigma, default_max_tokens).

    Not covered, since they change how fast or where a run goes, not what it
    writes: endpoints, api keys, timeouts, retries, connections, replicas,
    simulator timing and fault options, `runtime`, `output` (path, flushing,
    success_only, summary), `name`, progress and metrics settings. Nor is
    `dataset.limit`: it selects how many rows run, not what a row's record holds,
    so a trial run with `limit: 15` can be resumed by the full run.
    """
    import hashlib

    import orjson

    dataset = config.dataset.model_dump(mode="json", exclude={"limit"})
    services = {}
    for name, svc in config.services.items():
        entry: dict[str, Any] = {"kind": svc.kind, "model": svc.model}
        for key in _SERVICE_DATA_KEYS:
            if hasattr(svc, key):
                entry[key] = getattr(svc, key)
        if isinstance(svc, SimServiceConfig):
            entry["options"] = {k: v for k, v in svc.options.items() if k in _SIM_DATA_KEYS}
        services[name] = entry
    roles = {}
    for name, role in config.roles.items():
        data = role.model_dump(mode="json")
        for key in _ROLE_RUNTIME_KEYS:
            data.pop(key, None)
        roles[name] = data
    shape = {
        "dataset": dataset,
        "task": config.task.model_dump(mode="json"),
        "services": services,
        "roles": roles,
        "workflow": config.workflow.model_dump(mode="json"),
        "metrics": config.metrics,
    }
    blob = orjson.dumps(shape, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


# --- loading ---------------------------------------------------------------


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (so 3, true, [a, b] work).

    A value that is not valid YAML (`task.message=a: b: c`, an unclosed `[`) is
    taken as the plain string it is, as a shell user would expect.
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key.path=value")
    key, _, raw = override.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {override!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line, so errors can point into the YAML file."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def format_errors(
    source: str,
    errors: list[tuple[tuple[str, ...], str]],
    lines: dict[tuple[str, ...], int] | None = None,
) -> str:
    """One `file:line: key.path: message` line per error, in the file's order."""
    out = []
    for path, msg in errors:
        where = ".".join(path) or "<top>"
        line = None
        if lines:
            for n in range(len(path), 0, -1):
                line = lines.get(path[:n])
                if line:
                    break
        text = f"{source}:{line}: {where}: {msg}" if line else f"{source}: {where}: {msg}"
        out.append((line or 0, text))
    out.sort(key=lambda item: item[0])  # stable: errors on one line keep their order
    return "\n".join(text for _, text in out)


def validation_errors(exc: ValidationError) -> list[tuple[tuple[str, ...], str]]:
    errors = []
    for err in exc.errors():
        # Drop the union tag pydantic inserts (e.g. 'sim' in services.llm.sim.foo).
        path = tuple(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        errors.append((path, msg))
    return errors


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for override in overrides:
        apply_override(data, override)
    lines = _line_map(text)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            format_errors(str(path), _strip_tags(validation_errors(exc)), lines)
        ) from None
    config.base_dir = path.resolve().parent
    config._source = str(path)
    config._lines = lines
    return config


_KIND_TAGS = {"openai", "local_model", "sim", "sequence", "loop", "graph", "custom"}


def _strip_tags(errors: list[tuple[tuple[str, ...], str]]) -> list[tuple[tuple[str, ...], str]]:
    cleaned = []
    for path, msg in errors:
        if len(path) >= 2 and path[0] in ("services",) and len(path) > 2 and path[2] in _KIND_TAGS:
            path = path[:2] + path[3:]
        elif path and path[0] == "workflow" and len(path) > 1 and path[1] in _KIND_TAGS:
            path = path[:1] + path[2:]
        cleaned.append((path, msg))
    return cleaned
