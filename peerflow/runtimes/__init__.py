"""Runtimes move messages between roles; they are interchangeable by one config setting.

A runtime gets a built `Pipeline`, an opened `Sink`, a `RunStats` and a
`ServiceWatch` (for `pipeline.running_services`), and must:
admit tasks lazily with at most `max_in_flight` alive, run each role's agent
on messages of that role, route each message by `workflow.advance`, and
finish every task exactly once through `pipeline.finish`. The conformance
tests in `tests/test_conformance.py` hold every runtime to that.
"""

from __future__ import annotations

from typing import Protocol

from peerflow.config import RuntimeConfig
from peerflow.pipeline import Pipeline
from peerflow.services.watch import ServiceWatch
from peerflow.sink import Sink
from peerflow.stats import RunStats


class Runtime(Protocol):
    name: str
    in_flight: int

    async def run(
        self, pipeline: Pipeline, sink: Sink, stats: RunStats, watch: ServiceWatch | None = None
    ) -> None: ...


def get_runtime(config: RuntimeConfig) -> Runtime:
    if config.kind == "local":
        from peerflow.runtimes.local import LocalRuntime

        return LocalRuntime(config)
    if config.kind == "ray":
        from peerflow.runtimes.ray import RayRuntime

        return RayRuntime(config)
    raise ValueError(f"runtime.kind: unknown runtime {config.kind!r}")
