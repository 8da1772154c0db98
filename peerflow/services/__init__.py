"""Shared services: LLM endpoints, the embedded model, the simulator.

Each is started once per run and shared by all agents of the run; agents
only `call` them. `build_service` maps a config section to its class.
"""

from __future__ import annotations

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
    "transient_status",
]


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
    }


def build_service(name: str, cfg: Any) -> Service:
    if cfg.kind == "openai":
        from peerflow.services.openai_client import OpenAIService

        return OpenAIService(
            name,
            model=cfg.model,
            endpoints=list(cfg.endpoints),
            api_key_env=cfg.api_key_env,
            **client_options(cfg),
        )
    if cfg.kind == "local_model":
        from peerflow.services.managed import LocalModelService

        return LocalModelService(
            name,
            model=cfg.model,
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
            startup_timeout=cfg.startup_timeout,
            replicas=cfg.replicas,
            **client_options(cfg),
        )
    if cfg.kind == "sim":
        from peerflow.services.managed import SimService

        return SimService(
            name,
            model=cfg.model,
            options=dict(cfg.options),
            replicas=cfg.replicas,
            **client_options(cfg),
        )
    raise ValueError(f"services.{name}.kind: unknown kind {cfg.kind!r}")
