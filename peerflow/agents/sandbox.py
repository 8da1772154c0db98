"""`agent: sandbox`: run code the workflow produced, isolated, and keep what happened.

The role's `code`, `files` and `stdin` are templates over the task (the same context as an
LLM role's prompts: `row`, `vars`, `last(...)`, `history`), rendered per step and sent to
a `kind: sandbox` service. Whatever the code does (crash, loop, exhaust memory, try to
escape), the step succeeds and its data holds the execution's result (`result`: status,
exit code, signal, time, isolation, and the tails of stdout and stderr), so a record shows
why a sample was kept or turned away. Only the sandbox itself failing (no slot in time, a
lost session, a bad request) fails the step.

`parse: module:function(message, result) -> dict` turns the full result (untrimmed output)
into more of the step's data: a test report, a verdict, a reason to reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from peerflow.agents.base import Agent, AgentOptions
from peerflow.agents.llm import compile_template, render, template_context
from peerflow.loading import load_object
from peerflow.message import Message, Step
from peerflow.services.base import Service

__all__ = ["SandboxAgent", "SandboxOptions"]

_RESULT_KEYS = ("status", "exit_code", "signal", "wall_s", "cpu_s", "truncated", "isolation")


class SandboxOptions(AgentOptions):
    service: str = Field(description="A `kind: sandbox` service.")
    code: str = Field(
        description="The program to run (a template over the task); "
        '`{% include "file.py" %}` reads a file of the config\'s folder.'
    )
    language: str = Field(default="python", description="The program's language.")
    files: dict[str, str] = Field(
        default_factory=dict,
        description="More files in the working directory: name -> template of its text.",
    )
    stdin: str | None = Field(default=None, description="The program's input (a template).")
    limits: dict[str, float] = Field(
        default_factory=dict,
        description="Per-execution limits (`wall_s`, `memory_mb`, ...), at most the service's.",
    )
    parse: str | None = Field(
        default=None,
        description="`module:function(message, result) -> dict`: more of the step's data "
        "from the full result (untrimmed output).",
    )
    keep_output: int = Field(
        default=2000, ge=0, description="Characters of stdout and of stderr kept (the tail)."
    )


class SandboxAgent(Agent):
    """See the module docstring."""

    Options = SandboxOptions
    options: SandboxOptions

    def __init__(self, role: str, options: SandboxOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        service = services.get(options.service)
        if service is None:
            raise ValueError(
                f"roles.{role}.service: no service named {options.service!r} "
                f"(services: {', '.join(sorted(services)) or 'none'})"
            )
        if not hasattr(service, "open_session"):
            raise ValueError(
                f"roles.{role}.service: {options.service!r} is not a code sandbox (`kind: sandbox`)"
            )
        self.service: Any = service
        where = f"roles.{role}"
        self.code = compile_template(options.code, f"{where}.code")
        self.files = {
            name: compile_template(source, f"{where}.files.{name}")
            for name, source in options.files.items()
        }
        self.stdin = compile_template(options.stdin, f"{where}.stdin")
        self.parse_fn = load_object(options.parse, what=f"{where}.parse") if options.parse else None

    async def process(self, message: Message, request: Any) -> Step:
        ctx = template_context(message, self.role)
        result = await self.service.run(
            render(self.code, ctx),  # type: ignore[arg-type]
            language=self.options.language,
            files={name: render(t, ctx) for name, t in self.files.items()},  # type: ignore[arg-type]
            stdin=render(self.stdin, ctx) if self.stdin is not None else "",
            limits=dict(self.options.limits) or None,
        )
        keep = self.options.keep_output
        kept = {key: result.get(key) for key in _RESULT_KEYS}
        for stream in ("stdout", "stderr"):
            text = str(result.get(stream) or "")
            kept[stream] = text[-keep:] if keep else ""
        if result.get("reason"):
            kept["reason"] = result["reason"]
        data: dict[str, Any] = {"result": kept}
        if self.parse_fn is not None:
            parsed = self.parse_fn(message, result)
            if parsed:
                data.update(parsed)
        return Step(role=self.role, data=data)
