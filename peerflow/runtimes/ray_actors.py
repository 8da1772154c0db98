"""The Ray actors of the Ray runtime, and the courier that moves messages between them.

Only this module and `peerflow.runtimes.ray` import Ray: agents, workflows and services
run unchanged inside these actors. The delivery protocol is described in the docstring of
`peerflow.runtimes.ray`; this module implements it:

- `Courier`: one per process (each actor, and the driver). Per destination actor it keeps
  an outbox, at most one `deliver` call in flight (so messages that queue up while a call
  is out travel together in the next call, and a lone message leaves at once), and the
  sent-but-unacknowledged messages, which it re-sends when the destination dies.
- `RoleActor`: one instance of a role; runs the role's agent on delivered messages and
  passes each on to the role the message names next, or to a sink when it is done.
- `SinkActor`: writes finished messages into its own output shard, acknowledges them once
  they are written to the OS, and tells the driver which ids finished.
- `StoreActor`: owns the objects that offloaded message fields live in, so that an agent
  actor's crash does not take the payloads of the tasks it touched with it (in Ray, an
  object dies with the process that put it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
import warnings
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

from peerflow.message import Message, from_bytes, to_bytes
from peerflow.runtimes.steps import misroute
from peerflow.services.watch import ServiceWatch
from peerflow.stats import Histogram, RunStats

log = logging.getLogger(__name__)

# A step content offloaded to the object store is replaced by MARK + "<ref index>:<position>".
MARK = "\x00pf\x00"
SEEN_MAX = 1 << 16  # hop keys an actor remembers to drop re-sent copies it already has
MAX_BATCH = 512  # messages per deliver call; bounds one call's size, not latency
POLL_INTERVAL = 0.25  # idle links with unacknowledged messages ask for acks this often
# A deliver call only enqueues, so one still out after this long means the destination is
# dead or stuck: route new messages elsewhere (Ray takes ~1.2 s to fail the call itself).
SUSPECT_AFTER = 0.3
RETRY_DELAY = 0.2  # after a failed call, before trying the destination again
REF_BYTES = 100  # rough size of a serialized ObjectRef (id + owner address), for hop accounting

DRIVER = "driver"


def stable_hash(task_id: str) -> int:
    """Same value in every process and every run (Python's hash() is salted per process)."""
    return zlib.crc32(task_id.encode())


def partition_of(task_id: str, partitions: int) -> int:
    return stable_hash(task_id) % partitions


def sink_of(task_id: str, partitions: int, sinks: int) -> int:
    """Sink index within the task's partition; a task always finishes at the same sink."""
    return (stable_hash(task_id) // partitions) % sinks


def role_key(role: str, partition: int, index: int) -> str:
    return f"r:{role}:{partition}:{index}"


def sink_key(partition: int, index: int) -> str:
    return f"s:{partition}:{index}"


def store_key(partition: int) -> str:
    return f"o:{partition}"


EPOCH = "~restart"  # in message.route: how often the driver restarted the task from scratch


def hop_key(message: Message) -> str:
    """Identifies one hop of one task; re-sends of that hop carry the same key.

    A task the driver restarts from its first hop gets a new epoch, so its hops are not
    mistaken for copies of the lost attempt's.
    """
    epoch = message.route.get(EPOCH)
    if epoch:
        return f"{message.id}\x1f{message.hops}\x1f{epoch}"
    return f"{message.id}\x1f{message.hops}"


# --- offloading --------------------------------------------------------------------


Unpacked = tuple[Message, list[Any], dict[int, tuple[int, int]]]


def restore(
    message: Message, mine: list[Any], values: dict[Any, list[str]]
) -> dict[int, tuple[int, int]]:
    """Put a message's offloaded contents back; returns its offload map.

    The map (step index -> (ref index, position)) lets the next hop put the same references
    back in place of the texts without storing anything again.
    """
    off: dict[int, tuple[int, int]] = {}
    for idx, step in enumerate(message.history):
        content = step.content
        if content is not None and content.startswith(MARK):
            j, _, pos = content[len(MARK) :].partition(":")
            where = (int(j), int(pos))
            off[idx] = where
            step.content = values[mine[where[0]]][where[1]]
    return off


def unpack(
    datas: list[bytes], refs: list[list[Any]] | None, values: dict[Any, list[str]]
) -> list[Unpacked]:
    """Decode messages and put offloaded contents back from resolved objects."""
    out = []
    for i, data in enumerate(datas):
        message = from_bytes(data)
        mine = refs[i] if refs else []
        off = restore(message, mine, values) if mine else {}
        out.append((message, mine, off))
    return out


async def resolve(refs: list[list[Any]] | None) -> tuple[dict[Any, list[str]], set[int]]:
    """Fetch every object referenced by a batch in one `ray.get`, off the event loop.

    Returns the values by ref and the indexes of messages whose objects are lost (their
    owner died): those cannot continue and are left to the driver's sweep to restart.
    """
    if not refs:
        return {}, set()
    distinct = list({r: None for mine in refs for r in mine})
    if not distinct:
        return {}, set()
    loop = asyncio.get_running_loop()
    try:
        got = await loop.run_in_executor(None, ray.get, distinct)
        return dict(zip(distinct, got, strict=True)), set()
    except ObjectLostError:
        values: dict[Any, list[str]] = {}
        for ref in distinct:
            with contextlib.suppress(ObjectLostError):
                values[ref] = await loop.run_in_executor(None, ray.get, ref)
        lost = {i for i, mine in enumerate(refs) if any(r not in values for r in mine)}
        return values, lost


# --- the courier -------------------------------------------------------------------


class Entry:
    """One message on its way to one destination, kept until the destination acknowledges it."""

    __slots__ = ("base", "data", "key", "msg", "off", "parent", "refs", "tid")

    def __init__(
        self,
        key: str,
        tid: str,
        msg: Message | None,
        *,
        data: bytes | None = None,
        refs: list[Any] | None = None,
        off: dict[int, tuple[int, int]] | None = None,
        base: int = 0,
        parent: tuple[str, str] | None = None,
    ):
        self.key = key
        self.tid = tid
        self.msg = msg  # encoded lazily, when its batch leaves
        self.data = data
        self.refs = refs if refs is not None else []
        self.off = off if off is not None else {}
        self.base = base  # steps before this index were already checked for offloading
        self.parent = parent  # (sender, hop key) to acknowledge once this hop is received


class Link:
    __slots__ = (
        "abandoned",
        "busy",
        "calling",
        "down",
        "handle",
        "inc",
        "inflight",
        "key",
        "last",
        "need_poll",
        "outbox",
        "probed_at",
        "sent_at",
        "unacked",
        "waiter",
    )

    def __init__(self, key: str, handle: Any = None):
        self.key = key
        self.handle = handle
        self.outbox: list[Entry] = []
        self.inflight: list[Entry] = []  # the batch of the call that is out
        self.unacked: dict[str, Entry] = {}
        self.busy = False  # a call to this destination is out
        self.need_poll = False
        self.inc: str | None = None  # incarnation id last heard from the destination
        self.down = False
        self.last = time.monotonic()
        self.sent_at = 0.0
        self.calling = False  # a call is out and not answered yet
        self.waiter: asyncio.Future[Any] | None = None  # what the pump awaits for that call
        self.abandoned = False  # a probe found the callee restarted and took the call's batch
        self.probed_at = 0.0


class Courier:
    """Sends messages to actors in batches, keeps them until acknowledged, re-sends on death.

    `groups` maps a group name (a role) to the keys of its interchangeable instances, which
    is where messages for a dead instance are re-routed while it restarts.
    """

    def __init__(
        self,
        me: str,
        *,
        lookup: Callable[[str], Awaitable[Any]],
        groups: dict[str, list[str]],
        threshold: int | None = None,
        put: Callable[[list[str], list[str]], Awaitable[Any]] | None = None,
        lane_div: int = 1,
    ):
        self.me = me
        self.lane_div = lane_div  # partitions x sinks: use other digits of the hash
        self.lookup = lookup
        self.groups = groups
        self.group_of = {k: name for name, keys in groups.items() for k in keys}
        self.threshold = threshold
        self.put = put
        self.links: dict[str, Link] = {}
        self.owed: dict[str, list[str]] = defaultdict(list)
        self.closed = False
        self.fatal: BaseException | None = None
        self._poller: asyncio.Task[None] | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()

    # -- routing ---------------------------------------------------------------------
    def link(self, key: str) -> Link:
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = Link(key)
        return link

    def pick(self, group: str, tid: str) -> str:
        """The task's own instance of the group, or the next one up while that one is down.

        Sticky by task id, not round-robin: each instance pair then carries one stream of
        messages, so batches stay whole instead of splitting at every hop.
        """
        keys = self.groups[group]
        n = len(keys)
        start = (stable_hash(tid) // self.lane_div) % n
        for i in range(n):
            key = keys[(start + i) % n]
            link = self.links.get(key)
            if link is None or not link.down:
                return key
        return keys[start]

    # -- sending ---------------------------------------------------------------------
    def send(self, dest: str, entry: Entry) -> None:
        link = self.link(dest)
        link.outbox.append(entry)
        if not link.busy:
            self._kick(link)

    def _kick(self, link: Link) -> None:
        if link.busy or self.closed:
            return
        link.busy = True
        task = asyncio.ensure_future(self._pump(link))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    async def _pump(self, link: Link) -> None:
        """Drain one destination's outbox, one call at a time; what queues meanwhile rides next."""
        try:
            # One pass of the event loop first: messages finishing in the same tick as the
            # one that woke us (a batch of steps that ended together) leave with it.
            await asyncio.sleep(0)
            while not self.closed:
                if link.handle is None:
                    link.handle = await self.lookup(link.key)
                batch: list[Entry] = []
                if link.outbox:
                    batch = link.outbox[:MAX_BATCH]
                    del link.outbox[:MAX_BATCH]
                    link.inflight = batch
                    link.sent_at = time.monotonic()
                    keys, datas, refs = await self._prepare(batch)
                    call = link.handle.deliver.remote(self.me, keys, datas, refs)
                elif link.need_poll:
                    link.need_poll = False
                    link.sent_at = time.monotonic()
                    call = link.handle.poll.remote(self.me)
                else:
                    break
                link.abandoned = False
                link.calling = True
                link.waiter = waiter = asyncio.ensure_future(call)
                try:
                    inc, acks = await waiter
                except asyncio.CancelledError:
                    link.calling = False
                    if self.closed or not link.abandoned or not waiter.cancelled():
                        raise
                    continue  # a probe re-sent what the dead callee held; carry on at once
                except RayActorError:
                    link.calling = False
                    if link.abandoned:
                        continue
                    link.inflight = []
                    self._failed(link, batch)
                    await asyncio.sleep(RETRY_DELAY)
                    link.need_poll = True  # learn when it is back
                    continue
                except RayTaskError as exc:  # the receiver itself failed: a bug or a full disk
                    link.calling = False
                    link.inflight = []
                    link.outbox[:0] = batch
                    self.fatal = exc
                    log.error("delivery to %s failed: %s", link.key, exc)
                    return
                link.calling = False
                if link.abandoned:
                    batch = []  # already re-sent by the probe
                link.inflight = []
                self._replied(link, inc, acks, batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug in the courier: report it, do not hang silently
            self.fatal = exc
            log.exception("courier %s: pump for %s failed", self.me, link.key)
        finally:
            link.busy = False
        if (link.outbox or link.need_poll) and not self.closed and self.fatal is None:
            self._kick(link)

    async def _prepare(self, batch: list[Entry]) -> tuple[list[str], list[bytes], list[Any] | None]:
        threshold = self.threshold
        if threshold is not None:
            big: list[tuple[Entry, int, str]] = []
            for e in batch:
                if e.msg is None:
                    continue
                history = e.msg.history
                for idx in range(e.base, len(history)):
                    content = history[idx].content
                    if (
                        content is not None
                        and len(content) > threshold // 4
                        and idx not in e.off
                        and len(content.encode()) > threshold
                    ):
                        big.append((e, idx, content))
            if big:
                ref = await self._store([c for _, _, c in big], list({e.tid for e, _, _ in big}))
                slot: dict[int, int] = {}
                for pos, (e, idx, _) in enumerate(big):
                    j = slot.get(id(e))
                    if j is None:
                        j = slot[id(e)] = len(e.refs)
                        e.refs.append(ref)
                    e.off[idx] = (j, pos)
        keys: list[str] = []
        datas: list[bytes] = []
        any_refs = False
        nbytes = 0
        for e in batch:
            if e.data is None:
                msg = e.msg
                assert msg is not None
                if e.off:
                    history = msg.history
                    for idx, (j, pos) in e.off.items():
                        history[idx].content = f"{MARK}{j}:{pos}"
                e.data = to_bytes(msg)
                e.msg = None
            keys.append(e.key)
            datas.append(e.data)
            nbytes += len(e.data)
            if e.refs:
                any_refs = True
        c = self.counters
        c["calls"] += 1
        c["hops"] += len(batch)
        c["hop_bytes"] += nbytes
        refs = [e.refs for e in batch] if any_refs else None
        if refs:
            c["hop_refs"] += sum(len(r) for r in refs)
        return keys, datas, refs

    async def _store(self, values: list[str], tids: list[str]) -> Any:
        self.counters["offloaded_fields"] += len(values)
        self.counters["offloaded_bytes"] += sum(len(v) for v in values)
        if self.put is not None:
            try:
                return await self.put(values, tids)
            except RayActorError:
                pass  # the store is restarting: own the object ourselves meanwhile
        return ray.put(values)

    # -- replies and failures --------------------------------------------------------
    def _replied(self, link: Link, inc: str, acks: list[str], batch: list[Entry]) -> None:
        if link.inc is not None and inc != link.inc and link.unacked:
            # Restarted without us seeing a failed call: what it held is gone.
            lost = list(link.unacked.values())
            link.unacked.clear()
            self.counters["redelivered"] += len(lost)
            self._requeue(link, lost)
        link.inc = inc
        link.down = False
        link.last = time.monotonic()
        unacked = link.unacked
        owed = self.owed
        for e in batch:
            unacked[e.key] = e
            parent = e.parent
            if parent is not None:
                owed[parent[0]].append(parent[1])
                e.parent = None
        for key in acks:
            unacked.pop(key, None)

    def _failed(self, link: Link, batch: list[Entry]) -> None:
        """The destination died: everything it held or was being sent goes elsewhere."""
        link.down = True
        self.counters["call_failures"] += 1
        lost = list(link.unacked.values())
        link.unacked.clear()
        self.counters["redelivered"] += len(lost)
        self._requeue(link, batch + lost)

    def _requeue(self, link: Link, entries: list[Entry]) -> None:
        if not entries:
            return
        group = self.group_of.get(link.key)
        if group is None or len(self.groups[group]) == 1:
            link.outbox[:0] = entries
            return
        moved: dict[str, list[Entry]] = defaultdict(list)
        for e in entries:
            moved[self.pick(group, e.tid)].append(e)
        for key, batch in moved.items():
            target = self.link(key)
            if target is link:
                link.outbox[:0] = batch
            else:
                target.outbox.extend(batch)
                self._kick(target)

    # -- background ------------------------------------------------------------------
    def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.ensure_future(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Ask idle destinations for acknowledgements (and notice if they restarted)."""
        while not self.closed:
            await asyncio.sleep(POLL_INTERVAL)
            now = time.monotonic()
            for link in list(self.links.values()):
                if link.busy:
                    if link.calling and now - link.sent_at > SUSPECT_AFTER:
                        self._suspect(link, now)
                elif (link.unacked or link.down) and now - link.last >= POLL_INTERVAL:
                    link.need_poll = True
                    self._kick(link)

    def _suspect(self, link: Link, now: float) -> None:
        """A call to `link` hangs: route new messages around it and probe for a restart.

        A deliver call only enqueues, so a long one means the callee died (Ray fails such
        a call only ~1.2 s later, though the actor is usually back within milliseconds) or
        is badly stuck. Messages not yet sent move to another instance at once, which is
        harmless if it was merely slow; what it held is re-sent only once a probe shows a
        new incarnation, i.e. once its loss is certain.
        """
        if now - link.probed_at < SUSPECT_AFTER:
            return
        link.probed_at = now
        group = self.group_of.get(link.key)
        if group is not None and len(self.groups[group]) > 1 and not link.down:
            link.down = True
            self.counters["suspected"] += 1
            waiting, link.outbox = link.outbox, []
            self._requeue(link, waiting)
        task = asyncio.ensure_future(self._probe(link))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    async def _probe(self, link: Link) -> None:
        try:
            inc, acks = await link.handle.poll.remote(self.me)
        except RayActorError:
            return  # not back yet: the next poll round probes again
        if link.calling and link.inc is not None and inc != link.inc and not link.abandoned:
            # The hanging call went to a dead incarnation: take back what it carried and
            # what that incarnation held, and stop waiting for Ray to fail the call.
            link.abandoned = True
            lost = link.inflight + list(link.unacked.values())
            link.inflight = []
            link.unacked.clear()
            self.counters["redelivered"] += len(lost)
            self.counters["restarts_probed"] += 1
            link.inc = inc
            link.down = False
            self._requeue(link, lost)
            if link.waiter is not None:
                link.waiter.cancel()
        for key in acks:
            link.unacked.pop(key, None)

    def held_ids(self) -> set[str]:
        ids: set[str] = set()
        for link in self.links.values():
            ids.update(e.tid for e in link.outbox)
            ids.update(e.tid for e in link.inflight)
            ids.update(e.tid for e in link.unacked.values())
        return ids

    def pending(self) -> int:
        return sum(
            len(link.outbox) + len(link.inflight) + len(link.unacked)
            for link in self.links.values()
        )

    async def close(self) -> None:
        self.closed = True
        tasks = list(self._pumps)
        if self._poller is not None:
            tasks.append(self._poller)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- actors ------------------------------------------------------------------------


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
    names: dict[str, str] = field(default_factory=dict)  # actor key -> Ray actor name
    groups: dict[str, list[str]] = field(default_factory=dict)  # role -> instance keys
    workers: int = 1
    threshold: int | None = None
    store: str | None = None  # key of this partition's StoreActor, when offloading
    shard: str | None = None  # output path of a sink
    success_only: bool = False
    flush_bytes: int = 1 << 20
    started: float = 0.0  # when the run began: a sink's records since then are this run's
    provenance: dict[str, Any] | None = None  # stamped on every record a sink writes


async def _lookup_actor(names: dict[str, str], key: str) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, ray.get_actor, names[key])


class _Base:
    def __init__(self, spec: ActorSpec):
        # `resolve` calls ray.get from an executor thread, never on the event loop, which
        # Ray's blocking-get-in-async-actor warning cannot tell apart; silence it.
        import ray._private.worker as ray_worker

        ray_worker.blocking_get_inside_async_warned = True
        self.spec = spec
        self.inc = uuid.uuid4().hex[:12]
        self.node = ray.get_runtime_context().get_node_id()
        with warnings.catch_warnings():  # Ray's own property trips its deprecation warning
            warnings.simplefilter("ignore")
            self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._init_task: asyncio.Future[None] | None = None

    async def _ensure(self) -> None:
        if self._init_task is None:
            self._init_task = asyncio.ensure_future(self._init())
        await asyncio.shield(self._init_task)

    async def _init(self) -> None:
        pass

    async def ready(self) -> dict[str, Any]:
        """Awaited by the driver before the run: builds the actor and reports where it runs."""
        await self._ensure()
        return {
            "key": self.spec.key,
            "inc": self.inc,
            "restarted": self.restarted,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }


class RoleActor(_Base):
    """One instance of one role: agent steps on delivered messages, then the next hop."""

    async def _init(self) -> None:
        from peerflow.pipeline import Pipeline

        spec = self.spec
        pipeline = Pipeline(spec.config, open_data=False)
        assert spec.role is not None and pipeline.workflow is not None
        cls, options = pipeline.agent_specs[spec.role]
        self.services = pipeline.services()
        for service in self.services.values():
            await service.start()
        # This actor's own watch over the calls its agent makes: fail-fast and outage
        # pauses, reported by `status` (the driver checked health before admitting).
        self.events: list[str] = []
        self.watch = ServiceWatch.from_config(spec.config.runtime, on_event=self.events.append)
        self.agent = cls(spec.role, options, self.watch.wrap_all(self.services))
        await self.agent.setup()
        self.workflow = pipeline.workflow
        names = spec.names
        put = None
        if spec.threshold is not None and spec.store is not None:
            store_name = spec.store
            store_handle: list[Any] = []

            async def put(values: list[str], tids: list[str]) -> Any:
                if not store_handle:
                    store_handle.append(await _lookup_actor(names, store_name))
                return (await store_handle[0].put.remote(values, tids))[0]

        self.courier = Courier(
            spec.key,
            lookup=lambda k: _lookup_actor(names, k),
            groups=spec.groups,
            threshold=spec.threshold,
            put=put,
            lane_div=spec.partitions * spec.sinks,
        )
        self.sink_keys = [sink_key(spec.partition, s) for s in range(spec.sinks)]
        self.inbox: asyncio.Queue[
            tuple[str, str, Message, list[Any], dict[int, tuple[int, int]]]
        ] = asyncio.Queue()
        self.holding: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()
        self.latency = Histogram()
        self.counters: Counter[str] = Counter()
        self.active = 0
        self.max_queue = 0
        self.fatal: BaseException | None = None
        self.workers = [asyncio.ensure_future(self._worker()) for _ in range(spec.workers)]
        self.courier.start()

    async def deliver(
        self, sender: str, keys: list[str], datas: list[bytes], refs: list[list[Any]] | None
    ) -> tuple[str, list[str]]:
        await self._ensure()
        owed = self.courier.owed
        self.counters["in"] += len(keys)
        # A hop this actor already received is a re-sent copy (its sender saw a failure,
        # or the actor it came through died after passing it on): the first copy is here
        # or went on, so acknowledge the copy and drop it rather than do the work twice.
        seen = self.seen
        order = self.seen_order
        keep: list[int] = []
        for i, key in enumerate(keys):
            if key in seen:
                owed[sender].append(key)
            else:
                seen.add(key)
                order.append(key)
                keep.append(i)
        while len(order) > SEEN_MAX:
            seen.discard(order.popleft())
        if len(keep) < len(keys):
            self.counters["copies_dropped"] += len(keys) - len(keep)
            keys = [keys[i] for i in keep]
            datas = [datas[i] for i in keep]
            if refs:
                refs = [refs[i] for i in keep]
        values, lost = await resolve(refs)
        for i, (message, mine, off) in enumerate(
            unpack(datas, refs, values)
            if not lost
            else self._unpack_lost(datas, refs, values, lost)
        ):
            if message is None:  # its offloaded payload is gone; the driver will restart it
                owed[sender].append(keys[i])
                self.counters["lost"] += 1
                continue
            self.holding[message.id] += 1
            self.inbox.put_nowait((sender, keys[i], message, mine, off))
        depth = self.inbox.qsize() + self.active
        if depth > self.max_queue:
            self.max_queue = depth
        return self.inc, owed.pop(sender, [])

    def _unpack_lost(
        self,
        datas: list[bytes],
        refs: list[list[Any]] | None,
        values: dict[Any, list[str]],
        lost: set[int],
    ) -> list[Any]:
        out: list[Any] = []
        for i, data in enumerate(datas):
            if i in lost:
                out.append((None, [], {}))
            else:
                out.extend(unpack([data], [refs[i]] if refs else None, values))
        return out

    async def poll(self, sender: str) -> tuple[str, list[str]]:
        await self._ensure()
        return self.inc, self.courier.owed.pop(sender, [])

    async def _worker(self) -> None:
        agent = self.agent
        advance = self.workflow.advance
        courier = self.courier
        spec = self.spec
        partitions, sinks = spec.partitions, spec.sinks
        sink_keys = self.sink_keys
        groups = self.courier.groups
        inbox = self.inbox
        holding = self.holding
        latency = self.latency
        c = self.counters
        while True:
            sender, key, message, refs, off = await inbox.get()
            self.active += 1
            try:
                base = len(message.history)
                step = await agent.run(message)
                message.history.append(step)
                nxt = advance(message)
                c["steps"] += 1
                if step.latency:
                    latency.add(step.latency)
                if not step.ok:
                    c["errors"] += 1
                if step.attempts > 1:
                    c["retries"] += step.attempts - 1
                usage = step.usage
                if usage:
                    c["prompt_tokens"] += usage.get("prompt_tokens", 0)
                    c["completion_tokens"] += usage.get("completion_tokens", 0)
                if nxt is not None and nxt not in groups:
                    misroute(message, nxt)
                    nxt = None
                if nxt is None:
                    dest = sink_keys[sink_of(message.id, partitions, sinks)]
                else:
                    dest = courier.pick(nxt, message.id)
                courier.send(
                    dest,
                    Entry(
                        hop_key(message),
                        message.id,
                        message,
                        refs=refs,
                        off=off,
                        base=base,
                        parent=(sender, key),
                    ),
                )
                c["out"] += 1
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a runtime bug: stop the run loudly via the driver
                self.fatal = exc
                log.exception("role actor %s failed", spec.key)
            finally:
                self.active -= 1
                n = holding[message.id] - 1
                if n > 0:
                    holding[message.id] = n
                else:
                    del holding[message.id]

    async def held(self) -> list[str]:
        await self._ensure()
        return list(set(self.holding) | self.courier.held_ids())

    async def status(self) -> dict[str, Any]:
        await self._ensure()
        counters = dict(self.counters)
        counters.update({f"courier_{k}": v for k, v in self.courier.counters.items()})
        fatal = self.fatal or self.courier.fatal
        max_queue, self.max_queue = self.max_queue, self.inbox.qsize() + self.active
        watch = self.watch
        events = self.events[:]
        self.events.clear()
        return {
            "key": self.spec.key,
            "node": self.node,
            "role": self.spec.role,
            "inc": self.inc,
            "restarted": self.restarted,
            "counters": counters,
            "latency": self.latency,
            "queue": self.inbox.qsize() + self.active,
            "max_queue": max_queue,
            "retained": self.courier.pending(),
            "fatal": None if fatal is None else repr(fatal),
            "watch": {
                "paused": watch.paused,
                "tripped": watch.reason if watch.tripped else None,
                "report": watch.report(),
                "events": [f"[{self.spec.key}] {text}" for text in events],
            },
        }

    async def close(self) -> None:
        """Stop cleanly (service sessions closed) before the driver kills the actor."""
        if self._init_task is None or not self._init_task.done():
            return
        await self.courier.close()
        for task in self.workers:
            task.cancel()
        await self.watch.stop()
        for service in self.services.values():
            with contextlib.suppress(Exception):
                await service.stop()


class SinkActor(_Base):
    """Writes one shard; a record is acknowledged only once it is written to the OS.

    What the driver counts comes from the shard itself. A record and its report (id and
    stats) are made together, but the report waits in memory for the driver's next
    `finished` call, and a sink that dies in between takes it along while the record
    stays. So a (re)started sink rebuilds the stats of every record this run wrote to
    its shard (those finished since `spec.started`), and a caller that knew another
    incarnation gets them whole (`full`), in place of what it had from the dead ones: the
    run's counts then equal the file's. `close` returns the last report.
    """

    async def _init(self) -> None:
        from peerflow.pipeline import Pipeline

        spec = self.spec
        assert spec.shard is not None
        self.pipeline = Pipeline(spec.config, open_data=False)
        self.closed = False
        self._open_sink()
        self.new_ids: list[str] = []
        self.wake = asyncio.Event()
        self.counters: Counter[str] = Counter()
        self.fatal: BaseException | None = None
        self.store = None
        if spec.store is not None:
            self.store = await _lookup_actor(spec.names, spec.store)

    def _open_sink(self) -> None:
        from peerflow.sink import Sink, record_message, records_since

        spec = self.spec
        assert spec.shard is not None
        sink = Sink(
            Path(spec.shard),
            success_only=spec.success_only,
            flush_bytes=spec.flush_bytes,
            # The driver decides which failed rows to re-attempt; the shard takes them all.
            retry_failed=True,
            # A single shard is output.path itself, which the driver keeps locked.
            lock=spec.partitions * spec.sinks > 1,
            lock_wait=10.0,
            since=spec.started,
            # The driver compacts every shard together at the end of the run, and it
            # alone decides which rows are done: it reads what every shard holds.
            compact_on_close=False,
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
        return self.inc, self._hand_over()

    def _hand_over(self) -> Any:
        # Sent once: the driver keeps the id sets, this actor need not.
        rec, self.sink.recovered = self.sink.recovered, None
        return rec

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
        return self.inc, self._hand_over()

    async def deliver(
        self, sender: str, keys: list[str], datas: list[bytes], refs: list[list[Any]] | None
    ) -> tuple[str, list[str]]:
        await self._ensure()
        if self.closed:
            return self.inc, []  # nothing is written, so nothing is acknowledged
        messages = [from_bytes(data) for data in datas]
        if refs:
            # Only records still to be written need their payloads back; a duplicate's may
            # already be freed.
            seen = self.sink.seen
            fresh = [i for i, m in enumerate(messages) if not seen(m.id) and refs[i]]
            values, lost = await resolve([refs[i] for i in fresh])
            for n, i in enumerate(fresh):
                if n in lost:
                    messages[i] = None  # type: ignore[call-overload]
                    self.counters["lost"] += 1
                else:
                    restore(messages[i], refs[i], values)
            if self.closed:  # closed while the payloads were fetched
                return self.inc, []
        # Taken only now, after the last await: a `finished` call during the fetch above
        # hands `self.stats` to the driver and starts a new one, and counting into the
        # one already handed over would lose those records from the run's summary.
        sink = self.sink
        finish = self.pipeline.finish
        stats = self.stats
        for message in messages:
            if message is not None:
                finish(message, sink, stats)
        # Written, or a copy of one written this run: either way the id is finished, and
        # is reported so (a copy's report is how an id admitted twice frees its slot).
        new = [m.id for m in messages if m is not None]
        if self.store is not None:
            # No copy of these tasks needs its payloads any more.
            self.store.release.remote(new)
        sink.flush()  # to the OS before acknowledging: a driver crash now loses nothing
        self.counters["in"] += len(keys)
        if new:
            self.new_ids.extend(new)
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
        (`full`): the hashes (`peerflow.idset.id_hash`, a uint64 array) of every id this
        run wrote to the shard, and the stats of all their records, rebuilt from the file.
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
        return {
            "key": self.spec.key,
            "node": self.node,
            "role": "sink",
            "inc": self.inc,
            "restarted": self.restarted,
            "counters": {
                **self.counters,
                "written": self.sink.written,
                "duplicates": self.sink.duplicates,
            },
            "queue": 0,
            "max_queue": 0,
            "retained": 0,
            "fatal": None if self.fatal is None else repr(self.fatal),
        }

    async def close(self, known_inc: str | None = None) -> tuple[str, bool, Any, RunStats] | None:
        """Close the shard (no record is written after this) and return the last report."""
        task = self._init_task
        if task is None or not task.done() or task.exception() is not None:
            return None
        if not self.closed:
            self.closed = True
            self.sink.close()
        elif known_inc is None:
            return None
        return self._report(known_inc)


class StoreActor(_Base):
    """Owns offloaded fields and keeps them until every task referring to them is written.

    Holding the reference here, rather than relying on Ray's borrower counting alone, is
    what keeps a payload alive when a reference reached an actor through one that died: a
    dead borrower's references are released by Ray, which could otherwise free an object
    that a re-sent message still needs.
    """

    def __init__(self, spec: ActorSpec):
        super().__init__(spec)
        self.objects: dict[str, tuple[Any, set[str]]] = {}  # object id -> (ref, task ids)
        self.by_task: dict[str, list[str]] = defaultdict(list)
        self.counters: Counter[str] = Counter()

    async def put(self, values: list[str], tids: list[str]) -> list[Any]:
        ref = ray.put(values)
        oid = ref.hex()
        self.objects[oid] = (ref, set(tids))
        for tid in tids:
            self.by_task[tid].append(oid)
        self.counters["objects"] += 1
        # Wrapped in a list so the caller receives the reference, not the value.
        return [ref]

    async def release(self, tids: list[str]) -> None:
        """Tasks were written: drop the objects no unfinished task refers to any more."""
        objects = self.objects
        for tid in tids:
            for oid in self.by_task.pop(tid, ()):
                entry = objects.get(oid)
                if entry is None:
                    continue
                entry[1].discard(tid)
                if not entry[1]:
                    del objects[oid]
                    self.counters["freed"] += 1

    async def status(self) -> dict[str, Any]:
        return {
            "key": self.spec.key,
            "node": self.node,
            "role": "store",
            "inc": self.inc,
            "restarted": self.restarted,
            "counters": {**self.counters, "held": len(self.objects)},
            "queue": 0,
            "max_queue": 0,
            "retained": 0,
            "fatal": None,
        }

    async def held(self) -> list[str]:
        return []

    async def close(self) -> None:
        pass
