"""Agents: the per-role steps. Built-ins are named `llm` and `function` in YAML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from peerflow.agents.base import Agent, AgentOptions, to_step
from peerflow.agents.function import FunctionAgent
from peerflow.agents.llm import LLMAgent
from peerflow.loading import load_object
from peerflow.services.base import Service

BUILTIN_AGENTS: dict[str, type[Agent]] = {"llm": LLMAgent, "function": FunctionAgent}

__all__ = ["BUILTIN_AGENTS", "Agent", "AgentOptions", "FunctionAgent", "LLMAgent",
           "agent_class", "to_step", "validate_options"]


def agent_class(name: str, *, role: str) -> type[Agent]:
    if name in BUILTIN_AGENTS:
        return BUILTIN_AGENTS[name]
    cls = load_object(name, what=f"roles.{role}.agent")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ValueError(f"roles.{role}.agent: {name!r} is not a peerflow Agent subclass")
    return cls


def validate_options(cls: type[Agent], options: dict[str, Any]) -> AgentOptions:
    """Validate a role's extra YAML keys against the agent's Options (raises ValidationError)."""
    return cls.Options.model_validate(options)


def build_agent(cls: type[Agent], role: str, options: AgentOptions,
                services: Mapping[str, Service]) -> Agent:
    return cls(role, options, services)


__all__ += ["ValidationError", "build_agent"]
