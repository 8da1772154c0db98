"""The embedded runtime: one process, one asyncio loop, a queue per role.

Each role has `workers` coroutines pulling from its queue, so many messages
are in flight per role while agents await their services. A message moves by
`put` onto the next role's queue: there is no central loop deciding
anything, only the message's own workflow. Admission reads the dataset
lazily and blocks on a semaphore of `max_in_flight` slots, which the sink
side releases; that bound is the back-pressure that keeps memory flat.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from peerflow.agents import Agent
from peerflow.config import RuntimeConfig
from peerflow.message import RUNNING, Message
from peerflow.pipeline import Pipeline
from peerflow.sink import Sink
from peerflow.stats import RunStats


class Inbox:
    """A role's queue that hands a message straight to an idle worker.

    Leaner than `asyncio.Queue` (no size bound, no putters), which matters
    because every step of every task passes through one.
    """

    __slots__ = ("idle", "items", "loop")

    def __init__(self) -> None:
        self.items: deque[Message] = deque()
        self.idle: deque[asyncio.Future[Message]] = deque()
        self.loop = asyncio.get_running_loop()

    def put(self, message: Message) -> None:
        idle = self.idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return
        self.items.append(message)

    async def get(self) -> Message:
        if self.items:
            return self.items.popleft()
        waiter = self.loop.create_future()
        self.idle.append(waiter)
        return await waiter


class LocalRuntime:
    name = "local"

    def __init__(self, config: RuntimeConfig, *, flush_interval: float = 0.5):
        self.config = config
        self.flush_interval = flush_interval
        self.in_flight = 0

    async def run(self, pipeline: Pipeline, sink: Sink, stats: RunStats) -> None:
        server = None
        if self.config.metrics_port is not None:
            from peerflow.metrics import serve_metrics

            server = serve_metrics(self.config.metrics_port, stats, lambda: self.in_flight)
        try:
            async with pipeline.running_services() as services:
                agents = pipeline.agents(services)
                for agent in agents.values():
                    await agent.setup()
                await self._drive(pipeline, agents, sink, stats)
        finally:
            if server is not None:
                server.shutdown()

    async def _drive(
        self, pipeline: Pipeline, agents: dict[str, Agent], sink: Sink, stats: RunStats
    ) -> None:
        workflow = pipeline.workflow
        assert workflow is not None
        queues = {role: Inbox() for role in agents}
        slots = asyncio.Semaphore(self.config.max_in_flight)
        drained = asyncio.Event()
        failure: list[BaseException] = []
        admitting = True
        finish = pipeline.finish

        def done(message: Message) -> None:
            finish(message, sink, stats)
            self.in_flight -= 1
            slots.release()
            if not admitting and self.in_flight == 0:
                drained.set()

        async def worker(role: str) -> None:
            agent = agents[role]
            queue = queues[role]
            advance = workflow.advance
            try:
                while True:
                    message = await queue.get()
                    message.history.append(await agent.run(message))
                    nxt = advance(message)
                    if nxt is None:
                        done(message)
                    else:
                        queues[nxt].put(message)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a runtime bug or a full disk: stop the run, loudly
                failure.append(exc)
                drained.set()

        async def flusher() -> None:
            while True:
                await asyncio.sleep(self.flush_interval)
                sink.flush()

        tasks = [asyncio.create_task(flusher())]
        for role, role_cfg in pipeline.config.roles.items():
            n = role_cfg.workers or self.config.max_in_flight
            tasks += [asyncio.create_task(worker(role)) for _ in range(n)]
        try:
            for message in pipeline.tasks(sink.finished):
                if failure:
                    break
                if message.status != RUNNING:
                    finish(message, sink, stats)
                    continue
                await slots.acquire()
                role = pipeline.start(message)
                self.in_flight += 1
                if role is None:
                    done(message)
                else:
                    queues[role].put(message)
            admitting = False
            stats.skipped = pipeline.skipped
            if self.in_flight == 0:
                drained.set()
            await drained.wait()
            if failure:
                raise RuntimeError(f"local runtime failed: {failure[0]!r}") from failure[0]
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
