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
from collections import deque
from collections.abc import Callable

from peerflow.agents import Agent
from peerflow.config import RuntimeConfig
from peerflow.message import Message
from peerflow.pipeline import Pipeline
from peerflow.runtimes.admission import Admission
from peerflow.services.watch import ServiceWatch
from peerflow.sink import Sink
from peerflow.stats import RunStats


class Inbox:
    """A role's queue that calls one helper at a time for the messages that wait.

    A put wakes an idle worker, or starts a new one (up to `cap`), only when nobody is
    already on the way; a worker that takes a message and sees more waiting calls the
    next helper. So a burst of puts costs one wake-up, a worker that never suspends
    drains the queue alone, and a worker that awaits a server is joined by as many
    others as there are waiting messages. Leaner than `asyncio.Queue`, which matters
    because every step of every task passes through one.
    """

    __slots__ = ("cap", "coming", "idle", "items", "loop", "spawn", "workers")

    def __init__(self, cap: int, spawn: Callable[[Inbox], None]) -> None:
        self.items: deque[Message] = deque()
        self.idle: deque[asyncio.Future[None]] = deque()
        self.loop = asyncio.get_running_loop()
        self.cap = cap
        self.spawn = spawn
        self.workers = 0
        self.coming = 0  # workers woken or started that have not yet looked at the queue

    def call_help(self) -> None:
        if self.coming:
            return
        idle = self.idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.coming += 1
                return
        if self.workers < self.cap:
            self.workers += 1
            self.coming += 1
            self.spawn(self)

    def put(self, message: Message) -> None:
        self.items.append(message)
        if not self.coming:
            self.call_help()

    async def get(self) -> Message:
        items = self.items
        while not items:
            waiter = self.loop.create_future()
            self.idle.append(waiter)
            await waiter
            self.coming -= 1
        message = items.popleft()
        if items and not self.coming:
            self.call_help()
        return message


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
            async with pipeline.running_services(watch) as services:
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
        misroute = admission.misroute
        advance = workflow.advance
        tasks: set[asyncio.Task[None]] = set()

        async def worker(inbox: Inbox, agent: Agent) -> None:
            inbox.coming -= 1
            inline = agent.inline
            run_inline = agent.run_inline
            try:
                while True:
                    message = await inbox.get()
                    if inline:
                        message.history.append(run_inline(message))
                    else:
                        message.history.append(await agent.run(message))
                    nxt = advance(message)
                    if not dispatch(message, nxt):
                        finish(misroute(message, nxt))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a runtime bug or a full disk: stop the run, loudly
                admission.stop(exc)

        def spawner(agent: Agent) -> Callable[[Inbox], None]:
            def spawn(inbox: Inbox) -> None:
                task = asyncio.ensure_future(worker(inbox, agent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            return spawn

        inboxes: dict[str, Inbox] = {}
        for role, agent in agents.items():
            cap = pipeline.config.roles[role].workers or self.config.max_in_flight
            inboxes[role] = Inbox(cap, spawner(agent))

        def dispatch(message: Message, role: str | None) -> bool:
            if role is None:
                finish(message)
                return True
            inbox = inboxes.get(role)
            if inbox is None:
                return False
            inbox.put(message)
            return True

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
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(flush_task, *tasks, return_exceptions=True)
