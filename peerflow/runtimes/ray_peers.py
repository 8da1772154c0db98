"""The Ray actors a message moves between: role actors, sinks, and the keepers of payloads.

- `RoleActor`: one instance of one role. Delivered parcels go into the role's `Inbox`; the
  shared step loop (`peerflow.runtimes.steps`) runs the agent and hands each message to
  `_dispatch`, which sends it through the actor's courier to the next role or to the sink.
- `SinkActor`: appends finished tasks to its own shard, acknowledges them once written to
  the OS, and tells the driver (long poll) which ids finished, with their records' stats.
- `Keeper`: one per node, puts offloaded contents into Ray's object store, so that they
  belong to a process that outlives the role actors of its node.

Every actor is restarted by Ray when it dies (`max_restarts=-1`) and rebuilds itself from
its `ActorSpec`; the protocol in `peerflow.runtimes.ray_delivery` recovers what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from peerflow.message import Message, from_bytes
from peerflow.runtimes.ray_delivery import Courier, Parcel, Table, fetch, restore, stable_hash
from peerflow.runtimes.steps import Workers
from peerflow.services.watch import ServiceWatch
from peerflow.stats import RunStats

SEEN_MAX = 1 << 16  # hop keys an actor remembers, to drop re-sent copies it already has


@dataclass
class ActorSpec:
    """Everything an actor needs to (re)build itself; Ray re-runs __init__ on restart."""

    run_id: str
    key: str
    config: Any = None  # RunConfig whose services are plain OpenAI-compatible clients
    role: str | None = None
    partition: int = 0
    partitions: int = 1
    sinks: int = 1
    groups: dict[str, list[str]] = field(default_factory=dict)  # role -> instance keys
    workers: int = 1
    threshold: int | None = None
    shard: str | None = None  # output path of a sink
    started: float = 0.0  # when the run began: a sink's records since then are this run's
    provenance: dict[str, Any] | None = None  # stamped on every record a sink writes


def actor_name(run_id: str, key: str) -> str:
    return f"pf-{run_id}-{key}"


def keeper_key(node: str) -> str:
    return f"k:{node}"


async def lookup(run_id: str, key: str) -> Any:
    return await asyncio.to_thread(ray.get_actor, actor_name(run_id, key))


class _Peer:
    def __init__(self, spec: ActorSpec):
        self.spec = spec
        self.node = ray.get_runtime_context().get_node_id()
        self.inc = f"{self.node}/{uuid.uuid4().hex[:12]}"
        self.counters: Counter[str] = Counter()
        self.fatal: BaseException | None = None
        self._init_task: asyncio.Future[None] | None = None

    async def _ensure(self) -> None:
        if self._init_task is None:
            self._init_task = asyncio.ensure_future(self._init())
        await asyncio.shield(self._init_task)

    async def _init(self) -> None:
        pass

    def _built(self) -> bool:
        task = self._init_task
        return task is not None and task.done() and task.exception() is None

    async def ready(self) -> dict[str, Any]:
        """Awaited by the driver before the run: builds the actor; its first status (so a
        restart before the first status round is still seen as one)."""
        await self._ensure()
        return self._status()

    def _status(self, **more: Any) -> dict[str, Any]:
        fatal = self.fatal
        return {
            "key": self.spec.key,
            "role": self.spec.role or "sink",
            "inc": self.inc,
            "node": self.node,
            "counters": dict(self.counters),
            "fatal": None if fatal is None else repr(fatal),
            **more,
        }


class RoleActor(_Peer):
    """One instance of one role: agent steps on delivered messages, then the next hop."""

    async def _init(self) -> None:
        from peerflow.pipeline import Pipeline

        spec = self.spec
        assert spec.role is not None
        pipeline = Pipeline(spec.config, open_data=False)
        assert pipeline.workflow is not None
        cls, options = pipeline.agent_specs[spec.role]
        self.services = pipeline.services()
        for service in self.services.values():
            await service.start()
        # This actor's own watch over its agent's calls: fail-fast and outage pauses,
        # reported by `status` (the driver checked health before admitting).
        self.events: list[str] = []
        self.watch = ServiceWatch.from_config(spec.config.runtime, on_event=self.events.append)
        self.agent = cls(spec.role, options, self.watch.wrap_all(self.services))
        await self.agent.setup()
        self.keeper: Any = None
        self.courier = Courier(
            spec.key,
            lookup=lambda key: lookup(spec.run_id, key),
            groups=spec.groups,
            lanes=spec.partitions * spec.sinks,
            threshold=spec.threshold,
            put=self._put if spec.threshold is not None else None,
            node=self.node,
        )
        self.sink_keys = [f"s:{spec.partition}:{s}" for s in range(spec.sinks)]
        self.holding: Counter[str] = Counter()  # task id -> parcels of it in this actor
        self.riding: dict[int, tuple[tuple[str, str], Table]] = {}  # id(message) -> parcel
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()
        self.queue = self.max_queue = 0  # tasks in this actor: waiting, fetching, stepping
        self.workers = Workers(pipeline.workflow.advance, self._dispatch, self._stop)
        self.inbox = self.workers.inbox(self.agent, spec.workers)
        self.courier.start()

    async def _put(self, values: list[str]) -> Any:
        """Store offloaded contents with this node's keeper (or ourselves, until it exists)."""
        if self.keeper is None:
            try:
                self.keeper = await lookup(self.spec.run_id, keeper_key(self.node))
            except ValueError:  # a node added since the run began: the driver adds one soon
                return ray.put(values)
        return (await self.keeper.put.remote(values))[0]

    async def deliver(
        self, sender: str, keys: list[str], datas: list[bytes], tables: list[Table] | None
    ) -> tuple[str, list[str]]:
        await self._ensure()
        owed = self.courier.owed[sender]
        self.counters["in"] += len(keys)
        # A hop this actor already received is a re-sent copy: the first copy is here or
        # went on, so acknowledge the copy and drop it rather than do the work twice.
        seen, order = self.seen, self.seen_order
        fresh: list[int] = []
        for i, key in enumerate(keys):
            if key in seen:
                owed.append(key)
                self.counters["copies_dropped"] += 1
            else:
                seen.add(key)
                order.append(key)
                fresh.append(i)
        while len(order) > SEEN_MAX:
            seen.discard(order.popleft())
        # Held from now on (the sweep asks what we hold), though payloads may still come.
        parcels = [(keys[i], from_bytes(datas[i]), tables[i] if tables else {}) for i in fresh]
        for _, message, _ in parcels:
            self.holding[message.id] += 1
        self.queue += len(parcels)
        self.max_queue = max(self.max_queue, self.queue)
        if tables:
            task = asyncio.ensure_future(self._fetch(sender, parcels))
            task.add_done_callback(self._check)
        else:
            for key, message, _ in parcels:
                self._enter(sender, key, message, {})
        return self.inc, self.courier.owed.pop(sender, [])

    async def _fetch(self, sender: str, parcels: list[tuple[str, Message, Table]]) -> None:
        values, lost = await fetch([table for _, _, table in parcels])
        for i, (key, message, table) in enumerate(parcels):
            if i in lost:  # its payload died with its node: the driver's sweep restarts it
                self.courier.owed[sender].append(key)
                self.counters["lost"] += 1
                self._release(message.id)
            else:
                self._enter(sender, key, restore(message, table, values), table)

    def _enter(self, sender: str, key: str, message: Message, table: Table) -> None:
        self.riding[id(message)] = ((sender, key), table)
        self.inbox.put(message)

    def _dispatch(self, message: Message, role: str | None) -> bool:
        courier = self.courier
        if role is not None and role not in courier.groups:
            return False
        parent, table = self.riding.pop(id(message))
        tid = message.id
        if role is None:
            spec = self.spec
            dest = self.sink_keys[(stable_hash(tid) // spec.partitions) % spec.sinks]
        else:
            dest = courier.pick(role, tid)
        courier.send(dest, Parcel(message, table, parent))
        self.counters["out"] += 1
        self._release(tid)
        return True

    def _release(self, tid: str) -> None:
        self.queue -= 1
        n = self.holding[tid] - 1
        if n > 0:
            self.holding[tid] = n
        else:
            del self.holding[tid]

    def _stop(self, exc: BaseException) -> None:  # a runtime bug: the driver stops the run
        self.fatal = exc

    def _check(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._stop(task.exception())  # type: ignore[arg-type]

    async def poll(self, sender: str) -> tuple[str, list[str]]:
        await self._ensure()
        return self.inc, self.courier.owed.pop(sender, [])

    async def held(self) -> list[str]:
        await self._ensure()
        return list(set(self.holding) | self.courier.held_ids())

    async def status(self) -> dict[str, Any]:
        await self._ensure()
        counters = {f"courier_{k}": v for k, v in self.courier.counters.items()}
        queue = self.queue
        max_queue, self.max_queue = self.max_queue, queue
        events, self.events = self.events, []
        status = self._status(
            queue=queue,
            max_queue=max_queue,
            retained=self.courier.pending(),
            watch={
                "paused": self.watch.paused,
                "tripped": self.watch.reason if self.watch.tripped else None,
                "report": self.watch.report(),
                "events": [f"[{self.spec.key}] {text}" for text in events],
            },
        )
        status["counters"].update(counters)
        if self.courier.fatal is not None and status["fatal"] is None:
            status["fatal"] = repr(self.courier.fatal)
        return status

    async def close(self) -> None:
        """Stop cleanly (service sessions closed) before the driver kills the actor."""
        if not self._built():
            return
        await self.courier.close()
        await self.workers.cancel()
        await self.watch.stop()
        for service in self.services.values():
            with contextlib.suppress(Exception):
                await service.stop()


class SinkActor(_Peer):
    """Writes one shard; a record is acknowledged only once it is written to the OS.

    What the driver counts comes from the shard itself. A record's report (id and stats)
    waits in memory for the driver's next `finished` call, and a sink that dies in between
    takes it along while the record stays. So a (re)started sink rebuilds the stats of
    every record this run wrote to its shard, and a caller that knew another incarnation
    gets that whole report (`full`) in place of what it had from the dead ones.
    """

    async def _init(self) -> None:
        from peerflow.pipeline import Pipeline

        self.pipeline = Pipeline(self.spec.config, open_data=False)
        self.closed = False
        self.new_ids: list[str] = []
        self.wake = asyncio.Event()
        self._open_sink()

    def _open_sink(self) -> None:
        from peerflow.sink import Sink, record_message, records_since

        spec = self.spec
        assert spec.shard is not None
        output = spec.config.output
        sink = Sink(
            Path(spec.shard),
            success_only=output.success_only,
            flush_bytes=output.flush_bytes,
            retry_failed=True,  # the driver decides which failed rows to re-attempt
            lock=spec.partitions * spec.sinks > 1,  # else the driver holds output.path's
            lock_wait=10.0,
            since=spec.started,
            compact_on_close=False,  # the driver compacts every shard together at the end
            track_done=False,
        )
        sink.provenance = spec.provenance
        sink.open()
        self.sink = sink
        self.stats = RunStats()
        if sink.recovered is not None and sink.recovered.recent.size:
            for record in records_since(sink.paths, spec.started):
                self.stats.observe(record_message(record), record.metrics)

    async def open(self) -> tuple[str, Any]:
        """(incarnation, what the shard holds: a `peerflow.merge.Recovered`) for admission."""
        await self._ensure()
        recovered, self.sink.recovered = self.sink.recovered, None  # the driver keeps it
        return self.inc, recovered

    async def suspend(self) -> None:
        """Close the shard so the driver can compact it (before admission only)."""
        await self._ensure()
        self.closed = True
        self.sink.close()

    async def resume(self) -> tuple[str, Any]:
        """Open the shard again after `suspend`; returns what `open` does."""
        await self._ensure()
        self._open_sink()
        self.closed = False
        return await self.open()

    async def deliver(
        self, sender: str, keys: list[str], datas: list[bytes], tables: list[Table] | None
    ) -> tuple[str, list[str]]:
        await self._ensure()
        if self.closed:
            return self.inc, []  # nothing is written, so nothing is acknowledged
        messages: list[Message | None] = [from_bytes(d) for d in datas]
        if tables:
            # Only records still to be written need their payloads back.
            seen = self.sink.seen
            fresh = [(i, m) for i, m in enumerate(messages) if m is not None and not seen(m.id)]
            todo = [(i, m) for i, m in fresh if tables[i]]
            values, lost = await fetch([tables[i] for i, _ in todo])
            for n, (i, message) in enumerate(todo):
                if n in lost:  # its payload died with its node: the sweep restarts it
                    messages[i] = None
                    self.counters["lost"] += 1
                else:
                    restore(message, tables[i], values)
            if self.closed:  # closed while the payloads were fetched
                return self.inc, []
        # Taken after the last await: a `finished` call during the fetch hands `self.stats`
        # to the driver and starts a new one, which these records must go into.
        sink, finish, stats = self.sink, self.pipeline.finish, self.stats
        done = [m for m in messages if m is not None]
        for message in done:
            finish(message, sink, stats)
        sink.flush()  # to the OS before acknowledging: a driver crash now loses nothing
        self.counters["in"] += len(keys)
        # Written, or a copy of one written this run: either way the id is finished, and
        # is reported so (a copy's report is how an id admitted twice frees its slot).
        if done:
            self.new_ids.extend(m.id for m in done)
            self.wake.set()
        return self.inc, keys

    async def poll(self, sender: str) -> tuple[str, list[str]]:
        await self._ensure()
        return self.inc, []

    async def finished(
        self, known_inc: str | None, timeout: float
    ) -> tuple[str, bool, Any, RunStats]:
        """Long poll: ids finished since the last call, and the stats of their records.

        A caller that knew another incarnation gets the report of the whole run so far
        (`full`): the hashes (`peerflow.idset.id_hash`) of every id this run wrote to the
        shard, and the stats of all their records, rebuilt from the file.
        """
        await self._ensure()
        if known_inc == self.inc and not self.new_ids and not self.closed:
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
        return self._report(known_inc)

    def _report(self, known_inc: str | None) -> tuple[str, bool, Any, RunStats]:
        stats, self.stats = self.stats, RunStats()
        ids, self.new_ids = self.new_ids, []
        if known_inc != self.inc:
            return self.inc, True, self.sink.written_ids.to_array(), stats
        return self.inc, False, ids, stats

    async def held(self) -> list[str]:
        return []

    async def status(self) -> dict[str, Any]:
        await self._ensure()
        status = self._status(queue=0, max_queue=0, retained=0)
        status["counters"].update(written=self.sink.written, duplicates=self.sink.duplicates)
        return status

    async def close(self, known_inc: str | None = None) -> tuple[str, bool, Any, RunStats] | None:
        """Close the shard (no record is written after this) and return the last report."""
        if not self._built():
            return None
        if not self.closed:
            self.closed = True
            self.sink.close()
        elif known_inc is None:
            return None
        return self._report(known_inc)


class Keeper:
    """Owns the offloaded payloads of one node.

    An object belongs to the process that put it and dies with it. Role actors crash and
    restart; the keeper of their node does not run user code and lives as long as the
    node, so payloads survive their producer. Ray frees an object once no parcel refers to
    it; the keeper keeps no reference itself.
    """

    async def put(self, values: list[str]) -> list[Any]:
        return [ray.put(values)]  # in a list: the caller gets the reference, not the value

    async def ready(self) -> str:
        return ray.get_runtime_context().get_node_id()
