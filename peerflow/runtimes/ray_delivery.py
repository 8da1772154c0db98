"""How a message moves between Ray actors, and why a crash loses nothing.

```
 driver ──first hop──▶ role actor A ──hop──▶ role actor B ──last hop──▶ sink ──▶ shard
   ▲   ◀────ack────────    │   ◀────ack────────    │   ◀─────ack──────── (written)
   └──────── ids finished (long poll) ─────────────────────────────────────┘
```

Each process (the driver, every actor) has one `Courier`. Per destination actor it keeps a
`Link`: an outbox, at most one `deliver` call in flight, and the parcels delivered but not
yet acknowledged. A parcel for an idle destination leaves at once; parcels that arrive
while a call is out leave together in the next call, so light load adds no latency and
heavy load grows the batches (one Ray call per batch, not per message).

Why a crash loses nothing (at-least-once hops, exactly-once records):

1. A sender keeps every parcel it delivered until the receiver acknowledges it.
2. A receiver acknowledges a parcel once it has passed it on: its own delivery of the next
   hop was received by the next actor, or, at a sink, the record is written to the OS. So
   at every moment a task is held by the actor working on it and kept by the one before.
3. Acknowledgements ride on the replies to the sender's next call; an idle sender that
   still keeps parcels asks for them (`poll`) every `POLL_INTERVAL`.
4. Every actor has an incarnation id, new at each (re)start, sent with every reply. When a
   call fails because the actor died, or a reply shows a new incarnation, the sender sends
   what that actor had not acknowledged again: to another instance of the same role when
   there is one (work goes on during the restart), else to the restarted actor (actors
   restart forever). A task in a dead actor resumes from its last completed hop.
5. A re-sent hop may be a copy of one the dead actor had already passed on. A receiver
   drops a hop it has already seen (by `hop_key`); copies that still get through reach
   the same sink (a task's sink is fixed by its id), which writes one record per id.
6. What the hops cannot cover (two consecutive holders dying within one step, a payload
   lost with its node) the driver's sweep covers: a task nobody holds is admitted again.

Offloading. A step's content longer than the threshold, and an input value as long (the
document a curation task reads at every step), travel through Ray's object store: the
sender puts the large texts of a batch into one object and sends, beside each encoded
message, a table of place -> (object, position), a place being a step index or
`row:<column>` / `vars:<name>`; the encoded message has no text at those places (a row
value that is also a prompt variable is stored once). Objects are put by the `Keeper`
actor of the sender's node, so the actor that produced a payload may die without losing
it, and the bytes stay on the node that produced them until a reader elsewhere fetches
them. Receivers fetch the objects before the agent runs and forward the same references
with the next hop, so a payload is stored once; Ray frees it when no parcel refers to it any more.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError

from peerflow.message import Message, to_bytes

log = logging.getLogger(__name__)

MAX_BATCH = 512  # parcels per deliver call; bounds one call's size, not latency
POLL_INTERVAL = 0.25  # idle links that keep parcels ask for acks this often
RETRY_DELAY = 0.2  # after a failed call, before trying the destination again
# A deliver call only enqueues, so one out this long means the destination is probably dead
# (Ray fails such a call only seconds later): new parcels go to another instance meanwhile.
SLOW_CALL = 0.3
FETCH_TIMEOUT = 60.0  # a payload not fetched by then is treated as lost (the sweep redoes it)
EPOCH = "~restart"  # in message.route: how often the driver restarted the task from scratch

# place (a step index, or "row:<column>" / "vars:<name>") -> (object ref, position in it)
Table = dict[int | str, tuple[Any, int]]


def stable_hash(task_id: str) -> int:
    """Same value in every process and every run (Python's hash() is salted per process)."""
    return zlib.crc32(task_id.encode())


def hop_key(message: Message) -> str:
    """Identifies one hop of one task; a re-sent copy of that hop has the same key.

    A task the driver restarted from its first hop is in a new epoch, so its hops are not
    mistaken for copies of the lost attempt's.
    """
    epoch = message.route.get(EPOCH)
    suffix = f"\x1f{epoch}" if epoch else ""
    return f"{message.id}\x1f{message.hops}{suffix}"


class Parcel:
    """One hop of one task on its way to one actor, kept until that actor acknowledges it."""

    __slots__ = ("data", "key", "message", "parent", "table", "tid")

    def __init__(
        self,
        message: Message,
        table: Table | None = None,
        parent: tuple[str, str] | None = None,
    ):
        self.key = hop_key(message)
        self.tid = message.id
        self.message: Message | None = message  # encoded when its batch first leaves
        self.data = b""
        self.table = table or {}
        self.parent = parent  # (sender, hop key) to acknowledge once this one is received


class Link:
    """What a courier knows of one destination actor."""

    __slots__ = (
        "busy",
        "down",
        "handle",
        "inc",
        "key",
        "need_poll",
        "node",
        "outbox",
        "restarted",
        "sending",
        "since",
        "unacked",
    )

    def __init__(self, key: str):
        self.key = key
        self.handle: Any = None
        self.outbox: list[Parcel] = []
        self.sending: list[Parcel] = []  # the batch of the call that is out
        self.since = 0.0  # when that call left (0: none is out)
        self.restarted: asyncio.Future[None] | None = None  # set by a probe: abandon the call
        self.unacked: dict[str, Parcel] = {}
        self.busy = False  # a pump is draining the outbox (one call in flight)
        self.need_poll = False
        self.down = False  # the last call failed: route around it until it answers
        self.inc: str | None = None  # "node/incarnation" last heard from the destination
        self.node = ""


class Courier:
    """Sends parcels to actors in batches, keeps them until acknowledged, re-sends on death.

    `groups` maps a role to the keys of its interchangeable instances, where parcels for a
    dead instance go while it restarts. `put` stores offloaded contents (the node's keeper);
    without it contents stay inline.
    """

    def __init__(
        self,
        me: str,
        *,
        lookup: Callable[[str], Awaitable[Any]],
        groups: dict[str, list[str]],
        lanes: int = 1,
        threshold: int | None = None,
        put: Callable[[list[str]], Awaitable[Any]] | None = None,
        node: str = "",
    ):
        self.me = me
        self.lookup = lookup
        self.groups = groups
        self.group_of = {k: role for role, keys in groups.items() for k in keys}
        self.lanes = lanes  # partitions x sinks: instances are chosen by other hash digits
        self.threshold = threshold if put is not None else None
        self.put = put
        self.node = node
        self.links: dict[str, Link] = {}
        self.owed: dict[str, list[str]] = defaultdict(list)  # acks to give, per sender
        self.counters: Counter[str] = Counter()
        self.fatal: BaseException | None = None
        self.closed = False
        self._tasks: set[asyncio.Future[Any]] = set()

    def link(self, key: str) -> Link:
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = Link(key)
        return link

    def pick(self, role: str, tid: str) -> str:
        """The task's own instance of the role, or the next one up while that one is down.

        Sticky by task id: each pair of instances then carries one stream of parcels, so
        batches stay whole instead of splitting at every hop.
        """
        keys = self.groups[role]
        start = (stable_hash(tid) // self.lanes) % len(keys)
        if len(keys) == 1:
            return keys[0]
        slow = time.monotonic() - SLOW_CALL
        for i in range(len(keys)):
            key = keys[(start + i) % len(keys)]
            link = self.links.get(key)
            if link is None or not (link.down or 0 < link.since < slow):
                return key
        return keys[start]

    def send(self, dest: str, parcel: Parcel) -> None:
        link = self.link(dest)
        link.outbox.append(parcel)
        self._kick(link)

    def _kick(self, link: Link) -> None:
        if link.busy or self.closed or self.fatal is not None:
            return
        link.busy = True
        self._spawn(self._pump(link))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, link: Link) -> None:
        """Drain one destination's outbox, one call at a time."""
        try:
            # One pass of the event loop first: parcels of steps that end in the same tick
            # as the one that woke us leave with it.
            await asyncio.sleep(0)
            while not self.closed:
                if link.handle is None:
                    link.handle = await self.lookup(link.key)
                batch = link.outbox[:MAX_BATCH]
                del link.outbox[:MAX_BATCH]
                link.sending = batch
                if batch:
                    if self.threshold is not None and self.put is not None:
                        fresh = [p for p in batch if p.message is not None]
                        self.counters.update(await offload(fresh, self.threshold, self.put))
                    remote = bool(link.node) and link.node != self.node
                    call = link.handle.deliver.remote(
                        self.me, *encode(batch, self.counters, remote)
                    )
                elif link.need_poll:
                    call = link.handle.poll.remote(self.me)
                else:
                    break
                link.need_poll = False
                link.since = time.monotonic()
                link.restarted = asyncio.get_running_loop().create_future()
                answer = asyncio.ensure_future(call)
                await asyncio.wait((answer, link.restarted), return_when=asyncio.FIRST_COMPLETED)
                link.since, link.sending = 0.0, []
                if not answer.done():  # a probe saw a new incarnation and re-sent the batch
                    answer.add_done_callback(retrieved)
                    continue
                try:
                    inc, acks = answer.result()
                except RayActorError:  # died, or its node did: Ray restarts it
                    self._failed(link, batch)
                    await asyncio.sleep(RETRY_DELAY)
                    link.need_poll = True  # learn when it is back
                    continue
                self._replied(link, inc, acks, batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the receiver failed (a bug, a full disk), or we did
            self.fatal = exc
            log.error("courier %s: delivery to %s failed: %r", self.me, link.key, exc)
        finally:
            link.busy = False
            link.outbox[:0] = link.sending  # a call that ended in an error: keep its batch
            link.since, link.sending = 0.0, []
        if link.outbox or link.need_poll:
            self._kick(link)

    def _replied(self, link: Link, inc: str, acks: list[str], batch: list[Parcel]) -> None:
        if link.inc is not None and inc != link.inc and link.unacked:
            # It restarted between two calls: what it held is gone.
            self._requeue(link, list(link.unacked.values()))
            link.unacked.clear()
        link.inc = inc
        link.node = inc.partition("/")[0]
        link.down = False
        unacked = link.unacked
        owed = self.owed
        for p in batch:
            unacked[p.key] = p
            if p.parent is not None:
                owed[p.parent[0]].append(p.parent[1])
                p.parent = None
        for key in acks:
            unacked.pop(key, None)

    def _failed(self, link: Link, batch: list[Parcel]) -> None:
        """The destination died: what it held or was being sent goes elsewhere."""
        link.down = True
        self.counters["call_failures"] += 1
        self._requeue(link, batch + list(link.unacked.values()))
        link.unacked.clear()

    def _requeue(self, link: Link, parcels: list[Parcel]) -> None:
        self.counters["redelivered"] += len(parcels)
        role = self.group_of.get(link.key)
        back = []
        for p in parcels:
            dest = self.pick(role, p.tid) if role is not None else link.key
            if dest == link.key:
                back.append(p)
            else:
                self.send(dest, p)
        link.outbox[:0] = back

    def start(self) -> None:
        self._spawn(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Ask idle destinations for acknowledgements (and notice if they restarted)."""
        while not self.closed:
            await asyncio.sleep(POLL_INTERVAL)
            slow = time.monotonic() - SLOW_CALL
            for link in list(self.links.values()):
                if not link.busy and (link.unacked or link.down or link.outbox):
                    link.need_poll = True
                    self._kick(link)
                elif 0 < link.since < slow and link.inc is not None:
                    self._spawn(self._probe(link))

    async def _probe(self, link: Link) -> None:
        """A call is out too long: if the actor restarted meanwhile, the call went to the
        dead incarnation, which Ray reports only seconds later. Re-send what it carried
        and what the dead one held now, and let the pump go on."""
        try:
            inc, acks = await link.handle.poll.remote(self.me)
        except RayActorError:
            return  # not back yet: the next round probes again
        restarted = link.restarted
        if inc != link.inc and link.since and restarted is not None and not restarted.done():
            lost, link.sending = link.sending + list(link.unacked.values()), []
            link.unacked.clear()
            link.inc = inc
            self.counters["restarts_probed"] += 1
            self._requeue(link, lost)
            restarted.set_result(None)
        for key in acks:
            link.unacked.pop(key, None)

    def held_ids(self) -> set[str]:
        """Tasks this courier keeps (not yet acknowledged or not yet sent)."""
        ids: set[str] = set()
        for link in self.links.values():
            ids.update(p.tid for p in link.outbox)
            ids.update(p.tid for p in link.sending)
            ids.update(p.tid for p in link.unacked.values())
        return ids

    def pending(self) -> int:
        links = self.links.values()
        return sum(len(ln.outbox) + len(ln.sending) + len(ln.unacked) for ln in links)

    async def close(self) -> None:
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def encode(
    batch: list[Parcel], counters: Counter[str], remote: bool
) -> tuple[list[str], list[bytes], list[Table] | None]:
    """A deliver call's arguments: hop keys, encoded messages, and their tables (if any)."""
    for p in batch:
        message = p.message
        if message is not None:  # not encoded yet (a re-sent parcel is)
            for place in p.table:  # carried by the table's object
                if isinstance(place, int):
                    message.history[place].content = None
                else:
                    where, _, name = place.partition(":")
                    (message.row if where == "row" else message.vars)[name] = None
            p.data = to_bytes(message)
            p.message = None
    size = sum(len(p.data) for p in batch)
    tables = [p.table for p in batch]
    refs = sum(len(t) for t in tables)
    counters.update(calls=1, hops=len(batch), hop_bytes=size, hop_refs=refs)
    if remote:
        counters["hop_bytes_to_other_nodes"] += size
    return [p.key for p in batch], [p.data for p in batch], tables if refs else None


def _texts(message: Message) -> Iterator[tuple[int | str, Any]]:
    """Every place of a message that may hold a large text, with its value."""
    for idx, step in enumerate(message.history):
        yield idx, step.content
    for name, value in message.row.items():
        yield f"row:{name}", value
    for name, value in message.vars.items():
        yield f"vars:{name}", value


async def offload(
    parcels: list[Parcel], threshold: int, put: Callable[[list[str]], Awaitable[Any]]
) -> Counter[str]:
    """Move the parcels' texts longer than `threshold` bytes into one object (by `put`)."""
    values: list[str] = []
    placed: list[tuple[Parcel, int | str, int]] = []
    for p in parcels:
        assert p.message is not None
        stored: dict[str, int] = {}  # text -> its position: one copy per parcel
        for place, text in _texts(p.message):
            if (
                isinstance(text, str)
                and len(text) > threshold // 4  # cheap test first: utf-8 is <= 4x
                and place not in p.table
                and len(text.encode()) > threshold
            ):
                pos = stored.get(text)
                if pos is None:
                    pos = stored[text] = len(values)
                    values.append(text)
                placed.append((p, place, pos))
    if not values:
        return Counter()
    try:
        ref = await put(values)
    except RayActorError:  # the keeper is restarting: own the object ourselves meanwhile
        ref = ray.put(values)
    for p, place, pos in placed:
        p.table[place] = (ref, pos)
    return Counter(offloaded_fields=len(values), offloaded_bytes=sum(len(v) for v in values))


def retrieved(task: asyncio.Future[Any]) -> None:
    """An abandoned call's outcome is of no interest (it went to a dead incarnation)."""
    if not task.cancelled():
        task.exception()


async def fetch(tables: list[Table]) -> tuple[dict[Any, list[str]], set[int]]:
    """Fetch every object the tables refer to, awaiting them on the event loop.

    Returns the values by ref, and the indexes of tables whose objects are lost (their
    node died): those tasks cannot go on, and the driver's sweep restarts them.
    """
    refs = list({ref: None for table in tables for ref, _ in table.values()})
    if not refs:
        return {}, set()
    got = await asyncio.gather(*(_get(ref) for ref in refs), return_exceptions=True)
    values: dict[Any, list[str]] = {}
    for ref, value in zip(refs, got, strict=True):
        if not isinstance(value, BaseException):
            values[ref] = value
        elif not isinstance(value, (ObjectLostError, TimeoutError)):
            raise value
    lost = {i for i, t in enumerate(tables) if any(r not in values for r, _ in t.values())}
    return values, lost


async def _get(ref: Any) -> Any:
    return await asyncio.wait_for(awaited(ref), FETCH_TIMEOUT)


async def awaited(ref: Any) -> Any:
    return await ref


def restore(message: Message, table: Table, values: dict[Any, list[str]]) -> Message:
    """Put a received message's offloaded texts back in place."""
    history = message.history
    for place, (ref, pos) in table.items():
        if isinstance(place, int):
            history[place].content = values[ref][pos]
        else:
            where, _, name = place.partition(":")
            (message.row if where == "row" else message.vars)[name] = values[ref][pos]
    return message
