"""The step loop every runtime runs: a role's inbox, and the workers that drain it.

A message waits in its role's `Inbox`; a worker takes it, runs the role's agent, appends
the step, asks the workflow where the message goes next and hands it on with the
runtime's `dispatch`. The local runtime dispatches to another inbox or to the sink in the
same process; a Ray role actor dispatches through its courier to another actor. The loop
is the same, so a workflow behaves the same on both.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from peerflow.agents import Agent
from peerflow.message import Message

# dispatch(message, role): hand the message to `role`, or to its sink when role is None;
# False when no such role exists (the task then fails as misrouted).
Dispatch = Callable[[Message, "str | None"], bool]


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


def misroute(message: Message, role: str) -> Message:
    """The workflow named a role that does not exist: that task fails, the run goes on."""
    return message.fail(
        "workflow",
        f"the workflow routed to role {role!r}, which is not defined under roles",
        role=message.history[-1].role if message.history else None,
    )


class Workers:
    """Spawns the workers of every inbox of one process and cancels them at the end."""

    def __init__(
        self,
        advance: Callable[[Message], str | None],
        dispatch: Dispatch,
        stop: Callable[[BaseException], None],
    ) -> None:
        self.advance = advance
        self.dispatch = dispatch
        self.stop = stop  # a runtime bug or a full disk: the run stops, loudly
        self.tasks: set[asyncio.Task[None]] = set()

    def inbox(self, agent: Agent, cap: int) -> Inbox:
        def spawn(inbox: Inbox) -> None:
            task = asyncio.ensure_future(self._work(inbox, agent))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        return Inbox(cap, spawn)

    async def _work(self, inbox: Inbox, agent: Agent) -> None:
        inbox.coming -= 1
        advance = self.advance
        dispatch = self.dispatch
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
                    dispatch(misroute(message, nxt or "?"), None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.stop(exc)

    async def cancel(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
