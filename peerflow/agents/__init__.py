"""Agents: the per-role steps. Built-ins are named `llm`, `function`, `tools`, `language`,
`environment`, `env_reward`, `sandbox` and `dedup` in YAML; anything else is a `module:Class`
naming an `Agent` subclass."""

from __future__ import annotations

from peerflow.agents.base import Agent, AgentOptions, to_step
from peerflow.agents.dedup import DedupAgent
from peerflow.agents.environment import EnvironmentAgent, RewardAgent
from peerflow.agents.function import FunctionAgent
from peerflow.agents.language import LanguageAgent
from peerflow.agents.llm import LLMAgent
from peerflow.agents.sandbox import SandboxAgent
from peerflow.agents.tools import ToolsAgent
from peerflow.loading import load_object

BUILTIN_AGENTS: dict[str, type[Agent]] = {
    "llm": LLMAgent,
    "function": FunctionAgent,
    "tools": ToolsAgent,
    "language": LanguageAgent,
    "environment": EnvironmentAgent,
    "env_reward": RewardAgent,
    "sandbox": SandboxAgent,
    "dedup": DedupAgent,
}

__all__ = [
    "BUILTIN_AGENTS",
    "Agent",
    "AgentOptions",
    "DedupAgent",
    "EnvironmentAgent",
    "FunctionAgent",
    "LLMAgent",
    "LanguageAgent",
    "RewardAgent",
    "SandboxAgent",
    "ToolsAgent",
    "agent_class",
    "to_step",
]


def agent_class(name: str, *, role: str) -> type[Agent]:
    if name in BUILTIN_AGENTS:
        return BUILTIN_AGENTS[name]
    cls = load_object(name, what=f"roles.{role}.agent")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ValueError(f"roles.{role}.agent: {name!r} is not a peerflow Agent subclass")
    return cls
