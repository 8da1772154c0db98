"""Admission and the one failure path, shared by every runtime.

A runtime only knows how to hand a message to a role (`dispatch`) and how a finished
message gets to the sink. Everything else about a run's lifetime lives here, once:

- rows are admitted lazily, at most `max_in_flight` alive, and only while the services
  are up (`ServiceWatch.admit` blocks during an outage);
- a message routed to a role that does not exist fails as that task;
- any runtime fault (a worker bug, a full disk, a flusher error), an aborted service
  watch, or Ctrl-C goes through `stop`: admission ends, whoever waits wakes up, and the
  runtime abandons in-flight work. Abandoned tasks write no record, so the next run of
  the same command does them; nothing waits forever on a slot that will never be freed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from peerflow.cost import budget_reason
from peerflow.message import RUNNING, Message
from peerflow.pipeline import Pipeline
from peerflow.runtimes.steps import misroute
from peerflow.sink import Sink
from peerflow.stats import RunStats


class RunStopped(Exception):
    """The run ended before every row was done, for a reason the user can act on.

    `code` is the process exit status the CLI uses (see `peerflow.run.EXIT_CODES`).
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class Admission:
    """Admits tasks, finishes them, and carries the run's single stop signal."""

    def __init__(
        self,
        pipeline: Pipeline,
        sink: Sink,
        stats: RunStats,
        *,
        max_in_flight: int,
        watch: Any = None,
    ) -> None:
        self.pipeline = pipeline
        self.sink = sink
        self.stats = stats
        self.watch = watch
        self.slots = asyncio.Semaphore(max_in_flight)
        self.in_flight = 0
        self.admitting = True
        self.failure: BaseException | None = None
        # Set when every admitted task is finished, or when the run must stop.
        self.over = asyncio.Event()
        # `runtime.budget_usd`: admission ends once finished records cost that much; the
        # tasks in flight finish, and the run then ends with `exhausted` (peerflow.cost).
        self.budget: float | None = pipeline.config.runtime.budget_usd
        self.exhausted: RunStopped | None = None
        if self.budget is not None:
            stats.extra["budget"] = {"usd": self.budget, "reached": False}

    # --- the failure path ----------------------------------------------------------------
    def stop(self, exc: BaseException) -> None:
        """Stop the run: the first reason wins; idempotent, callable from any callback."""
        if self.failure is None:
            self.failure = exc
        self.over.set()

    @property
    def stopped(self) -> bool:
        return self.failure is not None

    # --- finishing ----------------------------------------------------------------------
    def release(self) -> None:
        """One admitted task has its record: free its slot."""
        self.in_flight -= 1
        self.slots.release()
        if not self.admitting and self.in_flight == 0:
            self.over.set()

    def finish(self, message: Message) -> None:
        """Write a task's record here (a runtime whose sink is in this process) and release."""
        self.pipeline.finish(message, self.sink, self.stats)
        self.release()

    # --- admitting ----------------------------------------------------------------------
    async def run(self, dispatch: Callable[[Message, str | None], bool]) -> None:
        """Admit every unfinished row.

        `dispatch(message, role)` hands the message to `role`, or, with role None, to the
        sink (the task ended at admission: a bad row, or a workflow with nothing to do);
        it returns False when no such role exists, and the task then fails as misrouted.
        """
        pipeline = self.pipeline
        slots = self.slots
        watch = self.watch
        try:
            for message in pipeline.tasks(self.sink.finished):
                await slots.acquire()
                if watch is not None and not watch.open and not await watch.admit():
                    return
                if self.failure is not None:
                    return
                if self.budget is not None and self.stats.cost.usd >= self.budget:
                    self._out_of_budget()
                    return
                self.in_flight += 1
                role = pipeline.start(message) if message.status == RUNNING else None
                if not dispatch(message, role):
                    dispatch(misroute(message, role or "?"), None)
        except Exception as exc:  # reading the dataset failed mid-way: stop, loudly
            self.stop(exc)
        finally:
            self.admitting = False
            self.stats.skipped = pipeline.skipped
            if self.in_flight == 0:
                self.over.set()

    async def drive(self, dispatch: Callable[[Message, str | None], bool]) -> None:
        """Admit and wait until every task is finished or the run is stopped; then raise why."""
        admit = asyncio.create_task(self.run(dispatch))
        watcher = None
        if self.watch is not None:
            watcher = asyncio.create_task(self._watch_aborts())
        try:
            await self.over.wait()
        finally:
            for task in (admit, watcher):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        if self.failure is not None:
            raise self.failure
        if self.exhausted is not None:
            raise self.exhausted

    def _out_of_budget(self) -> None:
        spent = self.stats.cost.usd
        self.stats.extra["budget"] = {
            "usd": self.budget,
            "reached": True,
            "spent_at_stop_usd": round(spent, 6),
            "in_flight_at_stop": self.in_flight,
        }
        self.exhausted = RunStopped(budget_reason(spent, self.budget or 0.0), code=3)

    async def _watch_aborts(self) -> None:
        watch = self.watch
        await watch.aborted.wait()
        self.stop(RunStopped(watch.reason, code=3))
