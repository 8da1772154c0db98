"""The Ray driver: admits tasks, hears which finished, and restarts what no actor holds.

The driver is on no hop's path but the first. It reads what the output already holds
(`Ledger`), admits rows through the shared `Admission` (at most `max_in_flight` alive),
sends each task's first hop with its own courier, and frees a slot when a sink reports the
task's id written (one long poll per sink). Once a second it reads every actor's status
(counters, service watches, fatal errors; `ActorStats`), and once an actor restarted or a
copy was dropped it sweeps: a task in flight that no actor held in two consecutive sweeps
is sent again from its first hop. Any failure goes through `Admission.stop`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ray.exceptions import RayActorError, RayTaskError

from peerflow import merge
from peerflow.idset import IdSet, id_hash
from peerflow.message import Message, from_bytes, to_bytes
from peerflow.runtimes.admission import Admission
from peerflow.runtimes.ray_delivery import EPOCH, Courier, Parcel, awaited, retrieved, stable_hash
from peerflow.stats import RunStats

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0  # metrics and failure checks
SWEEP_INTERVAL = 3.0  # lost-task sweeps, once a restart has been seen
CALL_TIMEOUT = 3.0  # status and sweep answers; a restarting actor does not answer
CLOSE_TIMEOUT = 5.0


class Ledger:
    """The driver's account of the output: what the files held, and what each sink wrote.

    A restarted sink reports its whole run again (`full`, rebuilt from its shard), which
    replaces what the driver had from it, so the counts equal the files' whatever died
    when. Re-attempted ids that got a new record are kept (`superseding`) so that their
    old records, in whichever shard, are compacted away at the end.
    """

    def __init__(self, stats: RunStats, *, retry_failed: bool):
        self.stats = stats
        self.retry_failed = retry_failed
        self.finished = IdSet()  # done: admission skips these (the name it reads of a sink)
        self.retry = IdSet()  # failed rows to re-attempt
        self.superseding = IdSet()
        self.found: Counter[str] = Counter()  # records per status when the run began
        self.failed_in: list[Path] = []
        self.superseded = self.cut_bytes = 0
        self.per_sink: dict[str, RunStats] = {}
        self.taken = False  # the files were read (a run can fail before)

    async def read(
        self, handles: dict[str, Any], sink_keys: list[str], out: Path, shards: list[Path]
    ) -> dict[str, str]:
        """Take what every shard (and earlier layouts' files) holds; returns the sinks'
        incarnations."""
        opened = await asyncio.gather(*[retrying(handles[k].open) for k in sink_keys])
        incs = {key: inc for key, (inc, _) in zip(sink_keys, opened, strict=True)}
        recs: list[merge.Recovered] = [rec for _, rec in opened]
        listed = merge.read_manifest(out)
        others = [
            p
            for p in dict.fromkeys([*listed, out])
            if p not in shards and any(f.exists() for f in (p, *merge.side_paths(p)))
        ]
        if others:
            recs.append(await asyncio.to_thread(merge.compact, merge.with_side_files(others)))
        if not self.take(recs):
            # An id has records in two files: a crash came between a retried row's new
            # record and the compaction, and the shard layout changed since. Compact all
            # files together, with the sinks' files closed meanwhile.
            sinks = [handles[k] for k in sink_keys]
            await asyncio.gather(*[retrying(h.suspend) for h in sinks])
            whole = await asyncio.to_thread(
                merge.compact, merge.with_side_files([*shards, *others])
            )
            await asyncio.gather(*[retrying(h.resume) for h in sinks])
            self.take([whole])
        if len(shards) > 1 or listed:
            merge.write_manifest(out, shards)
        return incs

    def take(self, recs: list[merge.Recovered]) -> bool:
        """Take what the files hold; False if an id has records in two of them."""
        done, retry = IdSet(), IdSet()
        for rec in recs:
            permanent = retry if self.retry_failed else done
            for hashes, into in (
                (rec.ok, done),
                (rec.rejected, done),
                (rec.permanent, permanent),
                (rec.transient, retry),
            ):
                if hashes.size and (
                    done.contains_many(hashes).any() or retry.contains_many(hashes).any()
                ):
                    return False
                if hashes.size:
                    into.update_hashes(hashes, sorted_unique=True)
        self.finished, self.retry = done, retry
        self.found = Counter()
        for rec in recs:
            self.found.update(rec.by_status())
            self.failed_in.extend(p for p in rec.failed_in if p not in self.failed_in)
            self.superseded += rec.superseded
            self.cut_bytes += rec.cut_bytes
        self.taken = True
        return True

    def report(
        self, key: str, full: bool, ids: Any, delta: RunStats, pending: dict[str, Any]
    ) -> list[str]:
        """Account one sink's report; returns the pending ids it confirms."""
        if full:
            old = self.per_sink.get(key)
            if old is not None:
                delta.duplicates += old.duplicates
            self.per_sink[key] = delta
            self.stats.forget_records()
            for part in self.per_sink.values():
                self.stats.merge(part)
            hashes = np.asarray(ids, dtype=np.uint64)
            if len(self.retry) and hashes.size:
                self.superseding.update_hashes(hashes[self.retry.contains_many(hashes)])
            tids = list(pending)
            mine = np.fromiter((id_hash(t) for t in tids), dtype=np.uint64, count=len(tids))
            return [t for t, hit in zip(tids, np.isin(mine, hashes), strict=True) if hit]
        self.per_sink.setdefault(key, RunStats()).merge(delta)
        self.stats.merge(delta)
        if len(self.retry):
            for tid in ids:
                h = id_hash(tid)
                if self.retry.contains_hash(h):
                    self.superseding.add_hash(h)
        return ids

    async def compact(self, started: float) -> None:
        if len(self.superseding):
            self.superseded += await asyncio.to_thread(
                merge.drop_superseded, self.failed_in, self.superseding, started
            )

    def counts(self) -> Counter[str]:
        """Records per status in the output after the run (one per id)."""
        counts = Counter(self.found)
        counts.update(self.stats.by_status)
        counts["error"] -= len(self.superseding)
        return +counts


# Response-cache counters of a service (`CachedService.cache_stats`), summed over actors.
_CACHE_COUNTS = ("hits", "misses", "stored", "store_errors")


class ActorWatches:
    """The role actors' service watches, seen by `Admission` as one `ServiceWatch`.

    On Ray the LLM calls happen in the role actors, each watching its own services; their
    status feeds this. Admission pauses while any actor has a service in an outage, and
    the run stops (exit code 3) once any actor's watch tripped, or once the failures of
    all actors together trip fail-fast (with many instances and few rows no single actor
    may reach `runtime.fail_fast`, though the service never answered).
    """

    def __init__(self, on_event: Callable[[str], None] | None = None, *, fail_fast: int = 0):
        self.on_event = on_event
        self.fail_fast = fail_fast
        self.open = True
        self.aborted = asyncio.Event()
        self.reason: str | None = None
        self.paused: dict[str, bool] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self._resumed = asyncio.Event()
        self._resumed.set()

    def update(self, key: str, state: dict[str, Any]) -> None:
        """One actor's `status()["watch"]`: paused, tripped (a reason or None), report, events."""
        for text in state.get("events", ()):
            (self.on_event or log.warning)(text)
        self.paused[key] = bool(state.get("paused"))
        self.reports[key] = state.get("report") or {}
        if state.get("tripped"):
            self._abort(state["tripped"])
        for name, r in self.report().items():
            if self.fail_fast and not r.get("successes") and r.get("failures", 0) >= self.fail_fast:
                self._abort(
                    f"service {name!r} failed its first {r['failures']} requests across the "
                    "role actors, none succeeded — check the endpoint URL, model name and API "
                    "key; nothing more was admitted, re-run the same command to resume"
                )
        self.open = not self.aborted.is_set() and not any(self.paused.values())
        if self.open or self.aborted.is_set():
            self._resumed.set()
        else:
            self._resumed.clear()

    def _abort(self, reason: str) -> None:
        if not self.aborted.is_set():
            self.reason = reason
            self.aborted.set()

    async def admit(self) -> bool:
        """Wait while an actor reports an outage; False once the run is aborted."""
        while not self.open:
            if self.aborted.is_set():
                return False
            await self._resumed.wait()
        return True

    def report(self) -> dict[str, Any]:
        """Per service, summed over the actors (paused_seconds: the longest in any actor)."""
        out: dict[str, dict[str, Any]] = {}
        for report in self.reports.values():
            for name, r in report.items():
                o = out.setdefault(name, dict(r, calls=0, failures=0, successes=0, outages=0))
                for k in ("calls", "failures", "successes", "outages"):
                    o[k] += r[k]
                o["paused_seconds"] = max(o["paused_seconds"], r["paused_seconds"])
                o["tripped"] = o["tripped"] or r["tripped"]
                if "cache" in r:  # response-cache counters: summed over the actors
                    if o.get("cache", r["cache"]) is r["cache"]:  # sum into a zeroed copy
                        o["cache"] = dict(r["cache"], **dict.fromkeys(_CACHE_COUNTS, 0))
                    for k in _CACHE_COUNTS:
                        o["cache"][k] += r["cache"].get(k, 0)
        return out


class ActorStats:
    """Every actor's latest status, with counters kept across its restarts."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}
        self.base: dict[str, Counter[str]] = defaultdict(Counter)
        self.restarts: Counter[str] = Counter()
        self.max_queue: Counter[str] = Counter()
        self.driver: Counter[str] = Counter()

    def update(self, status: dict[str, Any]) -> bool:
        """Record one actor's status; True if it restarted since the last one."""
        key, role = status["key"], status["role"]
        prev = self.last.get(key)
        restarted = prev is not None and prev["inc"] != status["inc"]
        if restarted:
            self.base[key].update(prev["counters"])  # type: ignore[index]
            self.restarts[role] += 1
        self.last[key] = status
        self.max_queue[role] = max(self.max_queue[role], status.get("max_queue", 0))
        return restarted

    def totals(self, role: str | None = None) -> Counter[str]:
        total: Counter[str] = Counter() if role else Counter(self.driver)
        for key, status in self.last.items():
            if role is None or status["role"] == role:
                total.update(self.base[key])
                total.update(status["counters"])
        return total

    def report(self) -> dict[str, Any]:
        t = self.totals()
        hops, calls = t["courier_hops"], t["courier_calls"]
        out: dict[str, Any] = {name: t[counter] for name, counter in _REPORTED.items()}
        out.update(
            messages_per_call=round(hops / calls, 2) if calls else None,
            inline_bytes_per_hop=round(t["courier_hop_bytes"] / hops, 1) if hops else None,
            restarts=dict(self.restarts),
            placement={key: s["node"] for key, s in sorted(self.last.items())},
        )
        roles = sorted({s["role"] for s in self.last.values()} - {"sink"})
        out["roles"] = {role: self._role(role) for role in roles}
        return out

    def _role(self, role: str) -> dict[str, Any]:
        mine = [s for s in self.last.values() if s["role"] == role]
        t = self.totals(role)
        queue = sum(s.get("queue", 0) for s in mine)
        return {
            "actors": len(mine),
            "in": t["in"],
            "out": t["out"],
            "queue": queue,
            "max_queue": self.max_queue[role],
        }


_REPORTED = {  # summary name -> actor counter
    "hops": "courier_hops",
    "calls": "courier_calls",
    "hop_bytes": "courier_hop_bytes",
    "hop_bytes_to_other_nodes": "courier_hop_bytes_to_other_nodes",
    "hop_refs": "courier_hop_refs",
    "offloaded_fields": "courier_offloaded_fields",
    "offloaded_bytes": "courier_offloaded_bytes",
    "redelivered": "courier_redelivered",
    "restarts_probed": "courier_restarts_probed",
    "failed_calls": "courier_call_failures",
    "copies_dropped": "copies_dropped",
    "lost_payloads": "lost",
}


class Driver:
    """One run on a set of started actors (see the module docstring)."""

    def __init__(
        self,
        admission: Admission,
        ledger: Ledger,
        handles: dict[str, Any],
        groups: dict[str, list[str]],
        *,
        partitions: int,
        sinks: int,
        roles: set[str],
        watches: ActorWatches,
        stats: ActorStats,
    ):
        self.admission = admission
        self.ledger = ledger
        self.handles = handles
        self.P, self.S = partitions, sinks
        self.sink_keys = [f"s:{p}:{s}" for p in range(partitions) for s in range(sinks)]
        self.watches = watches
        self.actor_stats = stats
        self.courier = Courier(
            "driver", lookup=self._lookup, groups=groups, lanes=partitions * sinks
        )
        self.pending: dict[str, tuple[int, str | None, bytes]] = {}  # first hops, by task id
        self.sink_incs: dict[str, str | None] = {}
        self.closing = False
        self.faults_seen = False
        self.reinjected = self.repeated = 0
        self.roles = roles

    async def _lookup(self, key: str) -> Any:
        return self.handles[key]

    async def open_output(self, out: Path, shards: list[Path]) -> None:
        """Read what the output holds before admission (and learn the sinks' incarnations)."""
        self.sink_incs.update(await self.ledger.read(self.handles, self.sink_keys, out, shards))

    # -- admission ---------------------------------------------------------------------
    def dispatch(self, message: Message, role: str | None) -> bool:
        if role is not None and role not in self.roles:
            return False  # Admission fails the task as misrouted and sends it to its sink
        tid = message.id
        if tid in self.pending:  # both copies would end in one record, confirmed once
            self.repeated += 1
            log.warning("ray runtime: task %r is already in flight; dropped a copy", tid)
            self.admission.release()
            return True
        p = stable_hash(tid) % self.P
        self._send(p, role, message)
        return True

    def _send(self, p: int, role: str | None, message: Message) -> None:
        """Send a first hop, kept encoded (in `pending`) to start the task again if lost."""
        tid = message.id
        if role is None:
            dest = f"s:{p}:{(stable_hash(tid) // self.P) % self.S}"
        else:
            dest = self.courier.pick(f"{role}@{p}", tid)
        parcel = Parcel(message)
        parcel.data, parcel.message = to_bytes(message), None  # the driver offloads nothing
        self.pending[tid] = (p, role, parcel.data)
        self.courier.send(dest, parcel)

    def confirm(self, key: str, report: tuple[str, bool, Any, RunStats]) -> None:
        inc, full, ids, delta = report
        known = self.sink_incs.get(key)
        if known is not None and inc != known:
            self.faults_seen = True  # the sink restarted
        self.sink_incs[key] = inc
        for tid in self.ledger.report(key, full, ids, delta, self.pending):
            if self.pending.pop(tid, None) is not None:
                self.admission.release()

    # -- background loops --------------------------------------------------------------
    def start(self) -> list[asyncio.Future[Any]]:
        """Start the loops; one that dies stops the run (its slots would never be freed)."""
        self.courier.start()
        loops = [asyncio.ensure_future(self._confirm_loop(k)) for k in self.sink_keys]
        loops += [
            asyncio.ensure_future(self._status_loop()),
            asyncio.ensure_future(self._sweep_loop()),
        ]
        for task in loops:
            task.add_done_callback(self._stop_on_error)
        return loops

    def _stop_on_error(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.admission.stop(task.exception())  # type: ignore[arg-type]

    async def _confirm_loop(self, key: str) -> None:
        handle = self.handles[key]
        while not self.closing:
            try:
                report = await handle.finished.remote(self.sink_incs[key], 1.0)
            except RayActorError:
                self.faults_seen = True
                await asyncio.sleep(0.2)
                continue
            except RayTaskError as exc:
                self.admission.stop(exc)
                return
            self.confirm(key, report)

    async def _status_loop(self) -> None:
        while not self.closing:
            await asyncio.sleep(STATUS_INTERVAL)
            await self.poll_status()

    async def poll_status(self) -> None:
        keys = [k for k in self.handles if not k.startswith("k:")]
        answers = await gather_answers([self.handles[k].status for k in keys])
        for status in answers:
            if status is None:
                self.faults_seen = True  # a restarting actor does not answer
                continue
            if self.actor_stats.update(status):
                self.faults_seen = True
            counters = status["counters"]
            if counters.get("lost") or counters.get("copies_dropped"):
                self.faults_seen = True  # a task may be held by nobody now: sweep for it
            if status.get("watch") is not None:
                self.watches.update(status["key"], status["watch"])
            if status["fatal"]:
                self.admission.stop(
                    RuntimeError(f"ray runtime: actor {status['key']} failed: {status['fatal']}")
                )
        self.actor_stats.driver = Counter(
            {f"courier_{k}": v for k, v in self.courier.counters.items()}
        )
        if self.courier.fatal is not None:
            self.admission.stop(
                RuntimeError(f"ray runtime: delivery failed: {self.courier.fatal!r}")
            )

    async def _sweep_loop(self) -> None:
        missing_before: set[str] = set()
        while not self.closing:
            await asyncio.sleep(SWEEP_INTERVAL)
            if not self.faults_seen:
                continue
            before = set(self.pending)
            roles = [h for k, h in self.handles.items() if k.startswith("r:")]
            # An actor that cannot answer counts as holding nothing: if it died, it does
            # hold nothing, and what was sent to it since is kept by its sender. If it is
            # only slow, the next sweep must miss the task too, and a needless restart
            # costs only a copy that the sink drops.
            held = self.courier.held_ids()
            for ids in await gather_answers([h.held for h in roles]):
                held.update(ids or ())
            missing = {t for t in before if t in self.pending and t not in held}
            again = missing & missing_before
            missing_before = missing - again
            for tid in again:
                p, role, data = self.pending[tid]
                message = from_bytes(data)
                message.route[EPOCH] = message.route.get(EPOCH, 0) + 1
                self._send(p, role, message)
            if again:
                self.reinjected += len(again)
                log.warning("ray runtime: restarted %d task(s) no actor held", len(again))

    # -- the end -----------------------------------------------------------------------
    async def stop(self, loops: list[asyncio.Future[Any]]) -> bool:
        """Stop the loops and close the sinks; True if every sink closed cleanly."""
        self.closing = True
        # A sink's report in flight is let in: cancelling the call would lose it.
        confirming = [t for t in loops[: len(self.sink_keys)] if not t.done()]
        if confirming:
            await asyncio.wait(confirming, timeout=2 * CALL_TIMEOUT)
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.courier.close()
        calls = [self.handles[k].close for k in self.sink_keys]
        args = [self.sink_incs.get(k) for k in self.sink_keys]
        reports = await gather_answers(calls, args, timeout=CLOSE_TIMEOUT)
        for key, report in zip(self.sink_keys, reports, strict=True):
            if report is not None:
                self.confirm(key, report)
        return all(r is not None for r in reports)

    def report(self) -> dict[str, Any]:
        return {
            "reinjected_tasks": self.reinjected,
            "repeated_ids_dropped": self.repeated,
            "service_watch": self.watches.report(),
        }


async def gather_answers(
    methods: list[Any], args: list[Any] | None = None, *, timeout: float = CALL_TIMEOUT
) -> list[Any]:
    """Call actor methods together; None for each that failed or did not answer in time."""
    calls = [m.remote(args[i]) if args else m.remote() for i, m in enumerate(methods)]
    tasks = [asyncio.ensure_future(awaited(call)) for call in calls]
    for task in tasks:
        task.add_done_callback(retrieved)  # dead actors are expected here
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        task.cancel()  # no-op for those done
    done = [t.done() and not t.cancelled() and t.exception() is None for t in tasks]
    return [t.result() if ok else None for t, ok in zip(tasks, done, strict=True)]


async def retrying(method: Any, *args: Any, attempts: int = 50) -> Any:
    """Call an actor method, again while the actor restarts (a crash during start-up)."""
    for attempt in range(attempts):
        try:
            return await method.remote(*args)
        except RayActorError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
