"""Shared services: LLM endpoints, the embedded model, the simulator.

Each is started once per run and shared by all agents of the run; agents
only `call` them. `build_service` maps a config section to its class.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from peerflow.services.base import (
    ChatResult,
    Service,
    ServiceError,
    ServiceUnavailable,
    error_kind,
    transient_status,
)
from peerflow.services.watch import ServiceWatch

__all__ = [
    "ChatResult",
    "Service",
    "ServiceError",
    "ServiceUnavailable",
    "ServiceWatch",
    "build_service",
    "client_options",
    "error_kind",
    "resolve_sim_script",
    "transient_status",
]

# Built-in simulator scripts; any other `script` names a rules file.
_BUILTIN_SCRIPTS = ("lorem", "coral")


def resolve_sim_script(options: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A `kind: sim` service's options with a relative rules-file `script` made absolute.

    A rules file sits beside the config that names it, like the dataset, so a relative
    `script` is the config folder's file. The simulator is started from the current folder
    (and on Ray from the driver), so it gets the absolute path. A relative name that is no
    file there keeps its old meaning (the current folder) and is checked as such.
    """
    script = options.get("script")
    if not isinstance(script, str) or script in _BUILTIN_SCRIPTS:
        return options
    function = ""
    if re.search(r"\.py:\w+$", script):  # a Python script: `path/file.py:function`
        script, _, name = script.rpartition(":")
        function = ":" + name
    path = Path(script).expanduser()
    if path.is_absolute():
        return options
    candidate = (base_dir / path).resolve()
    if not candidate.is_file():
        return options
    return {**options, "script": str(candidate) + function}


def client_options(cfg: Any) -> dict[str, Any]:
    return {
        "timeout": cfg.timeout,
        "connect_timeout": cfg.connect_timeout,
        "max_retries": cfg.max_retries,
        "backoff": cfg.backoff,
        "backoff_max": cfg.backoff_max,
        "retry_after_max": cfg.retry_after_max,
        "sticky": cfg.sticky,
        "max_connections": cfg.max_connections,
        "extra_body": dict(cfg.extra_body),
        "structured_output": structured_output(cfg),
        "concurrency": cfg.concurrency,  # peerflow.services.adaptive
        "price": cfg.price,  # peerflow.cost
    }


def structured_output(cfg: Any) -> str:
    """How this service is asked for a schema: its own setting, else its kind's default
    (llama-cpp-python's server, behind `local_model`, reads a json_object schema)."""
    if cfg.structured_output is not None:
        return str(cfg.structured_output)
    return "json_object" if cfg.kind == "local_model" else "response_format"


def build_service(name: str, cfg: Any, *, host: str = "127.0.0.1") -> Service:
    """The service a config section describes, not yet started.

    Managed kinds bind their servers to `host`. An `openai` section with a `registry` (a
    managed service running as replicas on a Ray cluster) gives a client whose endpoints
    follow that registry.
    """
    if cfg.kind == "openai":
        if getattr(cfg, "registry", None):
            from peerflow.services.cluster import RegistryClient

            return RegistryClient(
                name,
                registry=cfg.registry,
                model=cfg.model,
                api_key_env=cfg.api_key_env,
                **client_options(cfg),
            )
        from peerflow.services.openai_client import OpenAIService

        return OpenAIService(
            name,
            model=cfg.model,
            endpoints=list(cfg.endpoints),
            api_key_env=cfg.api_key_env,
            **client_options(cfg),
        )
    if cfg.kind == "command":
        from peerflow.services.managed import CommandService

        return CommandService(
            name,
            command=cfg.command,
            model=cfg.model,
            env=dict(cfg.env),
            startup_timeout=cfg.startup_timeout,
            replicas=cfg.replicas,
            host=host,
            **client_options(cfg),
        )
    if cfg.kind == "local_model":
        from peerflow.services.managed import LocalModelService

        return LocalModelService(
            name,
            model=cfg.model,
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
            slots=cfg.slots,
            startup_timeout=cfg.startup_timeout,
            replicas=cfg.replicas,
            host=host,
            **client_options(cfg),
        )
    if cfg.kind == "sim":
        from peerflow.services.managed import SimService

        # A relative rules file was made absolute against the config's folder by
        # `checks.sim_option_errors`, which every pipeline runs before building services.

        return SimService(
            name,
            model=cfg.model,
            options=dict(cfg.options),
            replicas=cfg.replicas,
            host=host,
            **client_options(cfg),
        )
    if cfg.kind == "tool_env":
        from peerflow.services.tool_env import ToolEnvService

        # A relative domain folder was made absolute by `checks.tool_env_errors`.
        return ToolEnvService(
            name,
            domain=cfg.domain,
            servers=cfg.replicas,
            max_envs=cfg.max_envs,
            urls=list(cfg.urls),
            lease_ttl=cfg.lease_ttl,
            call_latency=cfg.call_latency,
            call_cpu=cfg.call_cpu,
            acquire_timeout=cfg.acquire_timeout,
            timeout=cfg.timeout,
            startup_timeout=cfg.startup_timeout,
            registry=cfg.registry,
            owner=cfg.owner,
            host=host,
        )
    if cfg.kind == "sandbox":
        from peerflow.services.sandbox import SandboxService

        return SandboxService(
            name,
            replicas=cfg.replicas,
            urls=list(cfg.urls),
            max_concurrent=cfg.max_concurrent,
            max_sessions=cfg.max_sessions,
            session_ttl=cfg.session_ttl,
            isolation=cfg.isolation,
            bwrap=cfg.bwrap,
            python=cfg.python,
            ro_paths=list(cfg.ro_paths),
            limits=cfg.limits.model_dump(),
            acquire_timeout=cfg.acquire_timeout,
            timeout=cfg.timeout,
            startup_timeout=cfg.startup_timeout,
            registry=cfg.registry,
            owner=cfg.owner,
            host=host,
        )
    raise ValueError(f"services.{name}.kind: unknown kind {cfg.kind!r}")
