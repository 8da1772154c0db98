"""The embedded runtime: one process, one asyncio loop, an inbox per role.

A message moves by `put` onto the next role's inbox: there is no central loop
deciding anything, only the message's own workflow. Each role's workers are
elastic: a worker is started only when a message waits and no worker is idle or
about to start, up to the role's `workers` cap (default `max_in_flight`). An agent
that awaits a server thus gets as many concurrent steps as there are waiting
messages, while an agent that never suspends runs on one worker with no task
switches. Admission, finishing and stopping are `Admission`'s, shared with Ray.
"""

from __future__ import annotations

import asyncio
import contextlib

from peerflow.agents import Agent
from peerflow.config import RuntimeConfig
from peerflow.message import Message
from peerflow.pipeline import Pipeline
from peerflow.runtimes.admission import Admission
from peerflow.runtimes.steps import Inbox, Workers
from peerflow.services.watch import ServiceWatch
from peerflow.sink import Sink
from peerflow.stats import RunStats


class LocalRuntime:
    name = "local"

    def __init__(self, config: RuntimeConfig):
        self.config = config
        self.admission: Admission | None = None

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight if self.admission is not None else 0

    async def run(
        self, pipeline: Pipeline, sink: Sink, stats: RunStats, watch: ServiceWatch | None = None
    ) -> None:
        server = None
        if self.config.metrics_port is not None:
            from peerflow.metrics import serve_metrics

            server = serve_metrics(self.config.metrics_port, stats, lambda: self.in_flight)
        try:
            async with pipeline.running_services(watch, stats=stats) as services:
                agents = pipeline.agents(services)
                for agent in agents.values():
                    await agent.setup()
                await self._drive(pipeline, agents, sink, stats, watch)
        finally:
            if server is not None:
                server.shutdown()

    async def _drive(
        self,
        pipeline: Pipeline,
        agents: dict[str, Agent],
        sink: Sink,
        stats: RunStats,
        watch: ServiceWatch | None,
    ) -> None:
        workflow = pipeline.workflow
        assert workflow is not None
        admission = self.admission = Admission(
            pipeline, sink, stats, max_in_flight=self.config.max_in_flight, watch=watch
        )
        finish = admission.finish
        inboxes: dict[str, Inbox] = {}

        def dispatch(message: Message, role: str | None) -> bool:
            if role is None:
                finish(message)
                return True
            inbox = inboxes.get(role)
            if inbox is None:
                return False
            inbox.put(message)
            return True

        workers = Workers(workflow.advance, dispatch, admission.stop)
        for role, agent in agents.items():
            cap = pipeline.config.roles[role].workers or self.config.max_in_flight
            inboxes[role] = workers.inbox(agent, cap)

        interval = pipeline.config.output.flush_interval

        async def flusher() -> None:
            try:
                while True:
                    await asyncio.sleep(interval)
                    sink.flush()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a full disk must stop the run, not go unseen
                admission.stop(exc)

        flush_task = asyncio.create_task(flusher())
        try:
            await admission.drive(dispatch)
        finally:
            flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flush_task
            await workers.cancel()
