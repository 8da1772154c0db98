"""The Ray runtime: the same workflows on a Ray cluster, with no row lost when actors crash.

Layout. Each role is `num_instances` async Ray actors (`RoleActor`), with the role's own
resource requests. A message hops straight from the actor that ran a step to an actor of
the role the message names next; the last hop goes to a sink actor, which appends the
record to its own shard. The driver only admits tasks (at most `max_in_flight` alive),
makes the first hop, hears from the sinks which ids finished, and collects metrics: it is
not on the path of any hop in between. `partitions: N` builds N such independent sets of
actors and sinks; a row belongs to partition `crc32(id) % N`. Admission and the one
failure path are `Admission`'s, shared with the local runtime; the role actors each watch
their services (`ServiceWatch`), and `ActorWatches` gives admission their joint state.

Batching. Each process has one courier with an outbox per destination actor and at most
one `deliver` call in flight per destination. A message for an idle destination leaves at
once; messages that arrive while a call is out wait and leave together when it returns.
Light load adds no latency; heavy load grows the batches and so amortises the per-call
cost of Ray, which is what caps one-message-per-call hops at ~2,000/s on a small machine.

Delivery protocol (at-least-once hops, exactly-once records):

1. A sender keeps every message it delivered, keyed by (task id, hop number), until the
   receiver acknowledges it. The driver is the sender of each task's first hop.
2. The receiver acknowledges a message once it has *passed it on*: when its own delivery
   of the next hop (the message plus the new step) has been received by the next actor,
   or, at a sink, once the record is written to the OS. So at every moment a task is held
   by the actor working on it and kept by the actor that sent it there.
3. Acknowledgements ride back on the replies to the sender's next call to the same
   actor; an idle sender with unacknowledged messages polls for them every 0.25 s.
4. Every actor has an incarnation id, new at each (re)start, returned with every reply.
   When a call to an actor fails because it died, or a reply shows a new incarnation, the
   sender re-sends everything that actor had not acknowledged: to another instance of the
   same role when there is one (so work goes on during the restart), or to the restarted
   actor. Actors restart forever (`max_restarts=-1`). A task caught in a dead actor thus
   resumes from its last completed hop, not from the start.
5. Re-sends can duplicate a hop (the dead actor may have passed it on already). Both
   copies carry on and reach the same sink (a task's sink is fixed by its id), which
   drops every record whose id it has already written: one record per id.
6. A safety net covers what the hop protocol cannot (two consecutive holders of a task
   dying within one step, an offloaded payload lost with its owner, or a task admitted
   twice whose second copy an actor dropped): once any restart or dropped copy was seen,
   the driver periodically asks all actors which tasks they hold, and a task in flight
   that nobody held in two consecutive sweeps is admitted again from its start.

A sink reports finished ids to the driver only after writing them, and a restarted sink
reports every id this run wrote to its shard, with the stats of their records rebuilt
from the file, so admission never waits for a record that exists and the summary's
counts equal the files'. Losing the driver loses no finished record either: records are
in the files, and re-running the same command reads every shard before admission, skips
the ids whose newest record is final and re-attempts transient failures. At the end of a
run the driver removes the old records of re-attempted rows, in whichever shard they are
(`peerflow.merge`), so every id keeps one record.

Offloading. A step's content longer than `offload_threshold` bytes is put into Ray's object
store (one object per outgoing batch, owned by the partition's `StoreActor` so an agent's
crash does not lose it) and replaced in the message by a marker; the object references
travel beside the encoded messages. Receivers fetch the objects before the agent runs (and
before the sink writes) and forward the same references, so a payload is stored once and
freed when the last message referring to it is acknowledged at the sink.

Output. `sinks: N` sink actors per partition each append to their own shard, so no single
writer limits a large cluster; with one sink and one partition the shard is `output.path`
itself, byte-for-byte what the local runtime writes. Sharded runs list their shards in a
manifest beside the output, and `peerflow merge OUTPUT` (`peerflow.merge.merge_shards`)
joins them into one file, one record per id. Sinks run on the driver's node, where the
output directory is. The driver holds output.path's lock for the whole run and each sink
its shard's, so a second run on the same output is refused.

Placement and metrics. Before any actor starts, every role's resource request (CPU, GPU,
memory, custom resources such as node labels) is checked against the cluster, and actors
that still cannot start within `start_timeout` fail the run with the roles named. Actors
report counters (messages in/out, queue depth, steps, errors, retries, tokens, re-sends)
every second; the driver aggregates them across restarts, serves them to Prometheus on
`metrics_port`, and adds them under "ray" to the run summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from peerflow.config import ConfigError, RunConfig, RuntimeConfig
from peerflow.idset import IdSet, id_hash
from peerflow.merge import (
    Recovered,
    compact,
    drop_superseded,
    errors_path,
    read_manifest,
    shard_path,
    with_errors,
    write_manifest,
)
from peerflow.message import Message, from_bytes, to_bytes
from peerflow.pipeline import Pipeline
from peerflow.runtimes.admission import Admission
from peerflow.services.base import Service
from peerflow.sink import OutputLock, Sink
from peerflow.stats import Histogram, RunStats

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0  # metrics and failure checks
SWEEP_INTERVAL = 3.0  # lost-task sweeps, once a restart has been seen
STATUS_TIMEOUT = 3.0
CLOSE_TIMEOUT = 5.0


class PlacementError(ConfigError):
    """The cluster cannot host the actors a config asks for; raised before any work starts."""


# --- config helpers ---------------------------------------------------------------------


def _normalise_resources(resources: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, amount in resources.items():
        key = {"cpu": "CPU", "gpu": "GPU"}.get(name.lower(), name)
        if amount:
            out[key] = out.get(key, 0.0) + float(amount)
    return out


def actor_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray actor options for a role's per-actor resource request (no request = 0 CPUs)."""
    rest = dict(resources)
    opts: dict[str, Any] = {"num_cpus": rest.pop("CPU", 0.0)}
    gpus = rest.pop("GPU", 0.0)
    if gpus:
        opts["num_gpus"] = gpus
    memory = rest.pop("memory", None)
    if memory:
        opts["memory"] = memory
    if rest:
        opts["resources"] = rest
    return opts


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()))


def check_placement(
    config: RunConfig, nodes: list[dict[str, Any]], available: dict[str, float]
) -> None:
    """Fail before the run, naming role and resource, when actors could never be placed.

    Two checks: one actor of each role must fit on some single node, and all actors
    together must fit in what the cluster has available now.
    """
    partitions = config.runtime.partitions
    alive = [n for n in nodes if n.get("Alive", n.get("alive", True))]
    errors: list[tuple[tuple[str, ...], str]] = []
    total: Counter[str] = Counter()
    users: dict[str, list[str]] = defaultdict(list)
    for role, role_cfg in config.roles.items():
        need = _normalise_resources(role_cfg.resources)
        if not need:
            continue
        n_actors = role_cfg.num_instances * partitions
        fits = [
            n
            for n in alive
            if all(n.get("Resources", {}).get(k, 0.0) >= v for k, v in need.items())
        ]
        if not fits:
            short = sorted(
                k
                for k, v in need.items()
                if not any(n.get("Resources", {}).get(k, 0.0) >= v for n in alive)
            )
            offered = (
                "; ".join(
                    _fmt(
                        {
                            k: v
                            for k, v in n.get("Resources", {}).items()
                            if not k.startswith("node:") and k != "object_store_memory"
                        }
                    )
                    for n in alive
                )
                or "no nodes"
            )
            errors.append(
                (
                    ("roles", role, "resources"),
                    f"each of its {n_actors} actor(s) needs {_fmt(need)}, but no node of "
                    f"the Ray cluster has enough {', '.join(short) or 'of them together'} "
                    f"(nodes offer: {offered})",
                )
            )
        for k, v in need.items():
            total[k] += v * n_actors
            users[k].append(f"{role} {v:g} x {n_actors}")
    for k, v in total.items():
        have = available.get(k, 0.0)
        if v > have + 1e-9:
            errors.append(
                (
                    ("roles",),
                    f"the roles need {k}={v:g} in total "
                    f"({', '.join(users[k])}), but the Ray cluster has only {have:g} "
                    "available",
                )
            )
    if errors:
        raise PlacementError(config.error(errors))


def actor_config(config: RunConfig, services: dict[str, Service]) -> RunConfig:
    """The config actors rebuild their pipeline from: started services become plain clients.

    Services are started once, by the driver (managed ones launch server processes); actors
    only open client pools to the endpoints those servers listen on.
    """
    from peerflow.config import OpenAIServiceConfig
    from peerflow.services import client_options

    rewritten: dict[str, Any] = {}
    for name, cfg in config.services.items():
        if cfg.kind == "openai":
            rewritten[name] = cfg
            continue
        svc = services[name]
        rewritten[name] = OpenAIServiceConfig(
            kind="openai",
            model=svc.model,  # type: ignore[attr-defined]
            endpoints=list(svc.endpoints),  # type: ignore[attr-defined]
            **client_options(cfg),
        )
    return config.model_copy(update={"services": rewritten})


class _Ledger:
    """The driver's account of the output: what the files held, and what each sink wrote.

    A sink reports the ids it wrote with the stats of their records; a restarted sink
    reports its whole run again (`full`, rebuilt from its shard), which replaces what the
    driver had from it, so the counts equal the files' whatever died when. Re-attempted
    ids that got a new record are kept (`superseding`) so that their old records, in
    whichever shard, are compacted away at the end.
    """

    def __init__(self, stats: RunStats, *, retry_failed: bool):
        self.stats = stats
        self.retry_failed = retry_failed
        self.done = IdSet()  # admission skips these
        self.retry = IdSet()  # failed rows to re-attempt
        self.superseding = IdSet()
        self.found: Counter[str] = Counter()  # records per status when the run began
        self.failed_in: list[Path] = []
        self.superseded = 0
        self.cut_bytes = 0
        self.per_sink: dict[str, RunStats] = {}
        self.taken = False  # the files were read (a run can fail before)

    @property
    def finished(self) -> IdSet:
        """What admission skips (the name `Admission` reads of a sink)."""
        return self.done

    def take(self, recs: list[Recovered]) -> bool:
        """Take what the files hold; False if an id has records in two of them."""
        done, retry = IdSet(), IdSet()
        for rec in recs:
            kinds = (
                (rec.ok, done),
                (rec.permanent, retry if self.retry_failed else done),
                (rec.transient, retry),
            )
            for hashes, into in kinds:
                if not hashes.size:
                    continue
                if done.contains_many(hashes).any() or retry.contains_many(hashes).any():
                    return False
                into.update_hashes(hashes, sorted_unique=True)
        self.done, self.retry = done, retry
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
            self._recount()
            hashes = np.asarray(ids, dtype=np.uint64)
            if len(self.retry) and hashes.size:
                self.superseding.update_hashes(hashes[self.retry.contains_many(hashes)])
            tids = list(pending)
            mine = np.fromiter((id_hash(t) for t in tids), dtype=np.uint64, count=len(tids))
            return [t for t, hit in zip(tids, np.isin(mine, hashes), strict=True) if hit]
        part = self.per_sink.get(key)
        if part is None:
            part = self.per_sink[key] = RunStats()
        part.merge(delta)
        self.stats.merge(delta)
        if len(self.retry):
            for tid in ids:
                h = id_hash(tid)
                if self.retry.contains_hash(h):
                    self.superseding.add_hash(h)
        return ids

    def _recount(self) -> None:
        s = self.stats
        s.by_status = defaultdict(int)
        s.roles = {}
        s.task_latency = Histogram()
        s.steps = s.prompt_tokens = s.completion_tokens = s.duplicates = 0
        s.metric_sums = defaultdict(float)
        s.metric_counts = defaultdict(int)
        s.error_samples = []
        for part in self.per_sink.values():
            s.merge(part)

    async def compact(self, started: float) -> None:
        if len(self.superseding):
            self.superseded += await asyncio.to_thread(
                drop_superseded, self.failed_in, self.superseding, started
            )

    def counts(self) -> Counter[str]:
        """Records per status in the output after the run (one per id)."""
        counts = Counter(self.found)
        for status, n in self.stats.by_status.items():
            counts[status] += n
        counts["error"] -= len(self.superseding)
        return +counts


class ActorWatches:
    """The role actors' service watches, seen by `Admission` as one `ServiceWatch`.

    On Ray the LLM calls happen in the role actors, each watching its own services; the
    driver's status poll feeds their state here. Admission pauses while any actor has a
    service in an outage, and the run stops (exit code 3) once any actor's watch tripped:
    fail-fast, or an outage longer than `runtime.outage_timeout`.
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
            if self.on_event is not None:
                self.on_event(text)
            else:
                log.warning("%s", text)
        self.paused[key] = bool(state.get("paused"))
        self.reports[key] = state.get("report") or {}
        if state.get("tripped") and not self.aborted.is_set():
            self.reason = state["tripped"]
            self.aborted.set()
        if self.fail_fast and not self.aborted.is_set():
            self._fail_fast_over_actors()
        self.open = not self.aborted.is_set() and not any(self.paused.values())
        if self.open or self.aborted.is_set():
            self._resumed.set()
        else:
            self._resumed.clear()

    def _fail_fast_over_actors(self) -> None:
        """Fail-fast counted over every actor: with many instances and few rows no single
        actor may reach `runtime.fail_fast` failures, though the service never answered."""
        for name, r in self.report().items():
            if not r.get("successes") and r.get("failures", 0) >= self.fail_fast:
                self.reason = (
                    f"service {name!r} failed its first {r['failures']} requests across the "
                    "role actors, none succeeded — check the endpoint URL, model name and API "
                    "key; nothing more was admitted, re-run the same command to resume"
                )
                self.aborted.set()
                return

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
                o = out.get(name)
                if o is None:
                    out[name] = dict(r)
                    continue
                for k in ("calls", "failures", "successes", "outages"):
                    o[k] += r[k]
                o["paused_seconds"] = max(o["paused_seconds"], r["paused_seconds"])
                o["tripped"] = o["tripped"] or r["tripped"]
        return out


# --- metrics -----------------------------------------------------------------------------


# Per-role counters shown in the run summary; the rest are the courier's own.
_STEP_COUNTERS = (
    "in",
    "out",
    "steps",
    "errors",
    "retries",
    "prompt_tokens",
    "completion_tokens",
)
_ROLE_COUNTERS = (
    *_STEP_COUNTERS,
    "lost",
    "courier_redelivered",
    "courier_call_failures",
    "courier_calls",
    "courier_hops",
    "courier_hop_bytes",
    "courier_hop_refs",
    "courier_offloaded_fields",
    "courier_offloaded_bytes",
)


class RuntimeMetrics:
    """Aggregates actors' periodic status into per-role numbers, across actor restarts."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}
        self.base: dict[str, Counter[str]] = defaultdict(Counter)
        self.base_latency: dict[str, Histogram] = defaultdict(Histogram)
        self.restarts: Counter[str] = Counter()
        self.restarted_incs: set[str] = set()
        self.roles: dict[str, str] = {}
        self.max_queue: dict[str, int] = defaultdict(int)
        self.driver: Counter[str] = Counter()

    def update(self, status: dict[str, Any]) -> bool:
        """Record one actor's status; True if it restarted since the last one."""
        key = status["key"]
        self.roles[key] = status["role"]
        prev = self.last.get(key)
        restarted = prev is not None and prev["inc"] != status["inc"]
        if restarted:
            assert prev is not None
            self.base[key].update(prev["counters"])
            if prev.get("latency") is not None:
                self.base_latency[key].merge(prev["latency"])
        if (restarted or status.get("restarted")) and status["inc"] not in self.restarted_incs:
            # A restart between two status rounds is still seen: the new incarnation says
            # it was reconstructed (incarnations that died unseen are not counted).
            self.restarted_incs.add(status["inc"])
            self.restarts[self.roles[key]] += 1
            restarted = True
        self.last[key] = status
        role = status["role"]
        self.max_queue[role] = max(self.max_queue[role], status.get("max_queue", 0))
        return restarted

    def by_role(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, status in self.last.items():
            role = status["role"]
            r = out.setdefault(
                role,
                {
                    "counters": Counter(),
                    "latency": Histogram(),
                    "queue": 0,
                    "retained": 0,
                    "actors": 0,
                },
            )
            r["counters"].update(self.base[key])
            r["counters"].update(status["counters"])
            if key in self.base_latency:
                r["latency"].merge(self.base_latency[key])
            if status.get("latency") is not None:
                r["latency"].merge(status["latency"])
            r["queue"] += status.get("queue", 0)
            r["retained"] += status.get("retained", 0)
            r["actors"] += 1
        return out

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter(self.driver)
        for r in self.by_role().values():
            total.update(r["counters"])
        return total

    def report(self) -> dict[str, Any]:
        roles = self.by_role()
        total = self.totals()
        hops = total["courier_hops"]
        calls = total["courier_calls"]
        return {
            "hops": hops,
            "calls": calls,
            "messages_per_call": round(hops / calls, 2) if calls else None,
            "bytes_per_hop": round(
                (total["courier_hop_bytes"] + 100 * total["courier_hop_refs"]) / hops, 1
            )
            if hops
            else None,
            "inline_bytes_per_hop": round(total["courier_hop_bytes"] / hops, 1) if hops else None,
            "refs_per_hop": round(total["courier_hop_refs"] / hops, 2) if hops else None,
            "offloaded_fields": total["courier_offloaded_fields"],
            "offloaded_bytes": total["courier_offloaded_bytes"],
            "redelivered": total["courier_redelivered"],
            "copies_dropped": total["copies_dropped"],
            "failed_calls": total["courier_call_failures"],
            "lost_payloads": total["lost"],
            "restarts": dict(self.restarts),
            "placement": {key: st.get("node") for key, st in sorted(self.last.items())},
            "store_objects_alive": sum(
                st["counters"].get("held", 0) for st in self.last.values() if st["role"] == "store"
            ),
            "roles": {
                role: {
                    "actors": r["actors"],
                    **{k: r["counters"][k] for k in _STEP_COUNTERS},
                    "max_queue": self.max_queue[role],
                    "latency_seconds": r["latency"].summary(),
                }
                for role, r in sorted(roles.items())
                if role not in ("sink", "store")
            },
        }


class _Collector:
    """Prometheus collector reading the runtime's latest aggregated numbers on each scrape."""

    def __init__(self, runtime: RayRuntime):
        self.runtime = runtime

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rt = self.runtime
        roles = rt.metrics.by_role()
        counters = {
            "in": ("peerflow_messages_in", "Messages delivered to the role's actors"),
            "out": ("peerflow_messages_out", "Messages the role passed on"),
            "steps": ("peerflow_steps", "Agent steps run"),
            "errors": ("peerflow_step_errors", "Agent steps that failed"),
            "retries": ("peerflow_step_retries", "Service call retries inside steps"),
            "courier_redelivered": ("peerflow_redelivered", "Messages re-sent after a crash"),
        }
        for field, (name, doc) in counters.items():
            fam = CounterMetricFamily(name, doc, labels=["role"])
            for role, r in roles.items():
                fam.add_metric([role], r["counters"][field])
            yield fam
        tokens = CounterMetricFamily("peerflow_tokens", "Tokens spent", labels=["role", "kind"])
        for role, r in roles.items():
            tokens.add_metric([role, "prompt"], r["counters"]["prompt_tokens"])
            tokens.add_metric([role, "completion"], r["counters"]["completion_tokens"])
        yield tokens
        queue = GaugeMetricFamily(
            "peerflow_queue_depth", "Messages waiting or in a step", labels=["role"]
        )
        latency = GaugeMetricFamily(
            "peerflow_step_latency_seconds", "Step latency quantiles", labels=["role", "quantile"]
        )
        for role, r in roles.items():
            queue.add_metric([role], r["queue"])
            for q in (0.5, 0.95, 0.99):
                latency.add_metric([role, str(q)], r["latency"].quantile(q))
        yield queue
        yield latency
        restarts = CounterMetricFamily(
            "peerflow_actor_restarts", "Actor restarts seen", labels=["role"]
        )
        for role, n in rt.metrics.restarts.items():
            restarts.add_metric([role], n)
        yield restarts
        yield GaugeMetricFamily(
            "peerflow_in_flight_tasks", "Tasks admitted and not finished", value=rt.in_flight
        )
        done = CounterMetricFamily("peerflow_tasks_finished", "Records written", labels=["status"])
        if rt.stats is not None:
            for status, n in rt.stats.by_status.items():
                done.add_metric([status], n)
        yield done


# --- the runtime -------------------------------------------------------------------------


class RayRuntime:
    name = "ray"

    def __init__(self, config: RuntimeConfig):
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "runtime.kind: ray needs Ray; install it with `pip install 'peerflow[ray]'`"
            )
        self.config = config
        self.admission: Admission | None = None
        self.watches = ActorWatches(fail_fast=config.fail_fast)
        self.metrics = RuntimeMetrics()
        self.stats: RunStats | None = None
        self.report: dict[str, Any] = {}
        self.handles: dict[str, Any] = {}
        self.run_id = uuid.uuid4().hex[:8]
        self.started = 0.0  # sinks count records finished since then as this run's
        self.provenance: dict[str, Any] | None = None

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight if self.admission is not None else 0

    # -- lifecycle ------------------------------------------------------------------------
    def _init_ray(self, config: RunConfig | None = None) -> bool:
        """Start or join Ray; user code ships to its workers (`loading.ray_runtime_env`)."""
        import ray

        from peerflow.loading import ray_runtime_env

        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        cfg = self.config
        env = ray_runtime_env(config) if config is not None else None
        if cfg.address:
            ray.init(address=cfg.address, logging_level=logging.WARNING, runtime_env=env)
        else:
            ray.init(
                address="local",  # a new Ray even where RAY_ADDRESS names a running one
                num_cpus=cfg.num_cpus or os.cpu_count(),
                include_dashboard=cfg.dashboard,
                logging_level=logging.WARNING,
                runtime_env=env,
            )
        return True

    async def run(self, pipeline: Pipeline, sink: Sink, stats: RunStats, watch: Any = None) -> None:
        import ray

        self.stats = stats
        started_ray = self._init_ray(pipeline.config)
        server = None
        try:
            check_placement(pipeline.config, ray.nodes(), ray.available_resources())
            async with pipeline.running_services(watch) as services:
                if self.config.metrics_port is not None:
                    server = self._serve_metrics(self.config.metrics_port)
                with self._output_lock(pipeline.config, sink):
                    self.watches.on_event = getattr(watch, "on_event", None)
                    await self._drive(
                        pipeline, actor_config(pipeline.config, services), sink, stats
                    )
        finally:
            if server is not None:
                server.shutdown()
            if started_ray:
                ray.shutdown()
            self._attach_report(stats)  # a stopped or interrupted run's summary has them too

    @staticmethod
    def _output_lock(config: RunConfig, sink: Sink) -> contextlib.AbstractContextManager[Any]:
        """The run holds output.path's lock throughout; the sink opened on it by `run`
        usually does already, and the shard sinks lock their own shards."""
        out = config.resolve(config.output.path)
        if sink.holds_lock and sink.path == out:
            return contextlib.nullcontext()
        return OutputLock(out)

    def _serve_metrics(self, port: int) -> Any:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(_Collector(self))  # type: ignore[arg-type]
        server, _ = start_http_server(port, registry=registry)
        return server

    def _attach_report(self, stats: RunStats) -> None:
        """Put the runtime's own numbers into the run summary run.py writes."""
        report = {**self.report, **self.metrics.report()}
        self.report = report
        stats.extra["ray"] = report
        if "finished_before_this_run" in report:
            stats.finished_before = report["finished_before_this_run"]

    # -- actors ---------------------------------------------------------------------------
    def _create_actors(
        self, config: RunConfig, acfg: RunConfig, out: Path
    ) -> tuple[dict[str, Any], list[tuple[str, str, Any]], list[Path]]:
        import ray

        from peerflow.runtimes.ray_actors import (
            ActorSpec,
            RoleActor,
            SinkActor,
            StoreActor,
            role_key,
            sink_key,
            store_key,
        )

        rt = self.config
        P, S = rt.partitions, rt.sinks
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        common = {"max_restarts": -1, "max_task_retries": 0, "max_concurrency": 1000}
        # Sinks write output.path on the node they run on, so they run where the command was
        # started (the user's output directory); so does the store (offloaded payloads live
        # as long as a permanent node does, not a preemptible one).
        here = {
            "num_cpus": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False
            ),
        }
        kinds: list[tuple[str, str, Any]] = []  # (key, what, handle)
        handles: dict[str, Any] = {}
        shards: list[Path] = []
        prefix = f"pf-{self.run_id}-"
        threshold = rt.offload_threshold
        for p in range(P):
            groups = {
                role: [role_key(role, p, i) for i in range(rc.num_instances)]
                for role, rc in config.roles.items()
            }
            keys = [k for ks in groups.values() for k in ks]
            keys += [sink_key(p, s) for s in range(S)]
            store = store_key(p) if threshold is not None else None
            if store is not None:
                keys.append(store)
            names = {k: prefix + k for k in keys}
            base = {
                "run_id": self.run_id,
                "config": acfg,
                "partition": p,
                "partitions": P,
                "sinks": S,
                "names": names,
                "groups": groups,
                "threshold": threshold,
                "store": store,
            }
            if store is not None:
                h = (
                    ray.remote(StoreActor)
                    .options(name=names[store], **here, **common)
                    .remote(ActorSpec(key=store, **base))
                )
                handles[store] = h
                kinds.append((store, "store", h))
            for s in range(S):
                key = sink_key(p, s)
                path = shard_path(out, p * S + s, P * S)
                shards.append(path)
                spec = ActorSpec(
                    key=key,
                    shard=str(path),
                    success_only=config.output.success_only,
                    flush_bytes=config.output.flush_bytes,
                    started=self.started,
                    provenance=self.provenance,
                    **base,
                )
                team = rt.partition_resources[p] if rt.partition_resources else {}
                where = here
                if rt.sink_resources or team:
                    where = actor_options(_normalise_resources({**rt.sink_resources, **team}))
                h = ray.remote(SinkActor).options(name=names[key], **where, **common).remote(spec)
                handles[key] = h
                kinds.append((key, "sink", h))
            for role, role_cfg in config.roles.items():
                team = rt.partition_resources[p] if rt.partition_resources else {}
                opts = actor_options(_normalise_resources({**role_cfg.resources, **team}))
                workers = role_cfg.workers or rt.max_in_flight
                for key in groups[role]:
                    spec = ActorSpec(key=key, role=role, workers=workers, **base)
                    h = (
                        ray.remote(RoleActor)
                        .options(name=names[key], **opts, **common)
                        .remote(spec)
                    )
                    handles[key] = h
                    kinds.append((key, f"roles.{role}", h))
        return handles, kinds, shards

    async def _await_ready(self, kinds: list[tuple[str, str, Any]]) -> None:
        from ray.exceptions import RayTaskError

        tasks = {asyncio.ensure_future(self._ready(h)): (key, what) for key, what, h in kinds}
        done, pending = await asyncio.wait(tasks, timeout=self.config.start_timeout)
        for task in pending:
            task.cancel()
        for task in done:
            exc = task.exception()
            if exc is not None:
                key, what = tasks[task]
                cause = exc.cause if isinstance(exc, RayTaskError) else exc
                raise RuntimeError(
                    f"ray runtime: actor {key} ({what}) failed to start: "
                    f"{type(cause).__name__}: {cause}"
                ) from None
        if pending:
            stuck = sorted({tasks[t][1] for t in pending})
            raise PlacementError(
                f"ray runtime: {len(pending)} actor(s) of {', '.join(stuck)} did not start within "
                f"runtime.start_timeout={self.config.start_timeout:g}s; the cluster probably "
                "cannot place them (resources busy or missing)"
            )

    @staticmethod
    async def _ready(handle: Any) -> Any:
        return await _retrying(handle.ready)

    # -- the run --------------------------------------------------------------------------
    async def _drive(
        self, pipeline: Pipeline, acfg: RunConfig, sink: Sink, stats: RunStats
    ) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        from peerflow.runtimes.ray_actors import (
            DRIVER,
            EPOCH,
            Courier,
            Entry,
            hop_key,
            partition_of,
            sink_key,
            sink_of,
        )

        config = pipeline.config
        rt = self.config
        P, S = rt.partitions, rt.sinks
        out = config.resolve(config.output.path)
        self.started = time.time()
        self.provenance = sink.provenance
        ledger = _Ledger(stats, retry_failed=sink.retry_failed)
        # Admission skips what the ledger reads as done from every shard; `confirm` frees slots.
        admission = self.admission = Admission(
            pipeline,
            ledger,  # type: ignore[arg-type]  # all admission reads of a sink: `finished`
            stats,
            max_in_flight=rt.max_in_flight,
            watch=self.watches,
        )
        handles, kinds, shards = self._create_actors(config, acfg, out)
        self.handles = handles
        closing = False
        loops: list[asyncio.Future[Any]] = []
        groups = {
            f"{role}@{p}": [f"r:{role}:{p}:{i}" for i in range(rc.num_instances)]
            for p in range(P)
            for role, rc in config.roles.items()
        }

        async def lookup(key: str) -> Any:
            return handles[key]

        # The driver owns the objects of the first hops' offloaded fields itself: losing the
        # driver ends the run anyway, so they live exactly as long as they can be needed.
        courier = Courier(
            DRIVER, lookup=lookup, groups=groups, threshold=rt.offload_threshold, lane_div=P * S
        )

        pending: dict[str, tuple[int, str | None, bytes, Entry]] = {}
        faults_seen = False
        reinjected = repeated = 0
        epochs: dict[str, int] = {}
        t_start = time.time()

        def dest(p: int, role: str | None, tid: str) -> str:
            if role is None:
                return sink_key(p, sink_of(tid, P, S))
            return courier.pick(f"{role}@{p}", tid)

        def dispatch(message: Message, role: str | None) -> bool:
            nonlocal repeated
            if role is not None and role not in config.roles:
                return False  # Admission fails the task as misrouted and sends it to its sink
            tid = message.id
            if tid in pending:  # both copies would end in one record, confirmed once
                repeated += 1
                log.warning("ray runtime: task %r is already in flight; dropped a copy", tid)
                admission.release()
                return True
            p = partition_of(tid, P)
            # Kept until the task is written: it holds the references to the first hop's
            # offloaded fields, of which the driver is the owner.
            entry = Entry(hop_key(message), tid, message)
            pending[tid] = (p, role, to_bytes(message), entry)
            courier.send(dest(p, role, tid), entry)
            return True

        def confirm(ids: list[str]) -> None:
            for tid in ids:
                if pending.pop(tid, None) is not None:
                    admission.release()

        sink_keys = [sink_key(p, s) for p in range(P) for s in range(S)]
        sink_incs: dict[str, str] = {}
        confirm_loops: list[asyncio.Future[Any]] = []

        async def confirm_loop(key: str, handle: Any) -> None:
            nonlocal faults_seen
            while not closing:
                try:
                    inc, full, ids, delta = await handle.finished.remote(sink_incs[key], 1.0)
                except RayActorError:
                    faults_seen = True
                    await asyncio.sleep(0.2)
                    continue
                except RayTaskError as exc:
                    admission.stop(exc)
                    return
                if inc != sink_incs[key]:
                    faults_seen = True
                sink_incs[key] = inc
                confirm(ledger.report(key, full, ids, delta, pending))

        async def close_sinks() -> bool:
            """Close every sink and count its last records; True if all closed cleanly."""
            calls = {
                key: asyncio.ensure_future(handles[key].close.remote(sink_incs.get(key)))
                for key in sink_keys
            }
            await asyncio.wait(calls.values(), timeout=CLOSE_TIMEOUT)
            clean = True
            for key, task in calls.items():
                if not task.done():
                    task.cancel()
                    clean = False
                elif task.exception() is not None or task.result() is None:
                    clean = False
                else:
                    inc, full, ids, delta = task.result()
                    sink_incs[key] = inc
                    confirm(ledger.report(key, full, ids, delta, pending))
            return clean

        async def status_loop() -> None:
            while not closing:
                await asyncio.sleep(STATUS_INTERVAL)
                await poll_status()

        async def poll_status() -> None:
            nonlocal faults_seen
            calls = {key: _spawn(h.status) for key, _, h in kinds}
            await asyncio.wait(calls.values(), timeout=STATUS_TIMEOUT)
            for key, task in calls.items():
                if not task.done():
                    task.cancel()
                    faults_seen = True  # a restarting actor does not answer
                    continue
                if task.exception() is not None:
                    faults_seen = True
                    continue
                status = task.result()
                if self.metrics.update(status):
                    faults_seen = True
                counters = status.get("counters", {})
                if counters.get("lost") or counters.get("copies_dropped"):
                    faults_seen = True  # a task may be held by nobody now: sweep for it
                if status.get("watch") is not None:
                    self.watches.update(key, status["watch"])
                if status.get("fatal"):
                    admission.stop(
                        RuntimeError(f"ray runtime: actor {key} failed: {status['fatal']}")
                    )
            self.metrics.driver = Counter({f"courier_{k}": v for k, v in courier.counters.items()})
            if courier.fatal is not None:
                admission.stop(RuntimeError(f"ray runtime: delivery failed: {courier.fatal!r}"))

        async def sweep_loop() -> None:
            nonlocal reinjected
            missing_before: set[str] = set()
            while not closing:
                await asyncio.sleep(SWEEP_INTERVAL)
                if not faults_seen:
                    continue
                before = set(pending)
                role_handles = [h for key, what, h in kinds if what.startswith("roles.")]
                calls = [_spawn(h.held) for h in role_handles]
                finished_calls, slow = await asyncio.wait(calls, timeout=STATUS_TIMEOUT)
                for task in slow:
                    task.cancel()
                # An actor that cannot answer is counted as holding nothing: if it died, it
                # does hold nothing, and anything sent to it since is still kept by its
                # sender (who does answer). If it is only slow, the second sweep must miss
                # the task too before it is restarted, and a needless restart only costs a
                # duplicate that the sink drops.
                held = courier.held_ids()
                for task in finished_calls:
                    if task.exception() is None:
                        held.update(task.result())
                missing = {tid for tid in before if tid in pending and tid not in held}
                again = missing & missing_before
                missing_before = missing - again
                for tid in again:
                    p, role, data, _ = pending[tid]
                    message = from_bytes(data)
                    epochs[tid] = message.route[EPOCH] = epochs.get(tid, 0) + 1
                    data = to_bytes(message)
                    entry = Entry(hop_key(message), tid, message)
                    pending[tid] = (p, role, data, entry)
                    courier.send(dest(p, role, tid), entry)
                    reinjected += 1
                if again:
                    log.warning("ray runtime: restarted %d task(s) no actor held", len(again))

        admitted = False
        try:
            await self._await_ready(kinds)
            # What the output holds: every current shard, shards of earlier runs, and a
            # merged output.path; the newest record of each id says if it is done.
            opened = await asyncio.gather(*[_retrying(handles[key].open) for key in sink_keys])
            recs: list[Recovered] = []
            for key, (inc, rec) in zip(sink_keys, opened, strict=True):
                sink_incs[key] = inc
                recs.append(rec)
            listed = read_manifest(out)
            others = [
                p
                for p in dict.fromkeys([*listed, out])
                if p not in shards and (p.exists() or errors_path(p).exists())
            ]
            if others:
                recs.append(await asyncio.to_thread(compact, with_errors(others)))
            if not ledger.take(recs):
                # An id has records in two files: a crash came between a retried row's
                # new record and the compaction, and the shard layout changed since.
                # Compact all files together, with the sinks' files closed meanwhile.
                handles_ = [handles[key] for key in sink_keys]
                await asyncio.gather(*[_retrying(h.suspend) for h in handles_])
                whole = await asyncio.to_thread(compact, with_errors([*shards, *others]))
                await asyncio.gather(*[_retrying(h.resume) for h in handles_])
                ledger.take([whole])
            opened.clear()  # the ledger holds the id sets now
            recs.clear()
            if len(shards) > 1 or listed:
                write_manifest(out, shards)
            for key in sink_keys:
                confirm_loops.append(asyncio.ensure_future(confirm_loop(key, handles[key])))
            loops.extend(confirm_loops)
            loops.append(asyncio.ensure_future(status_loop()))
            loops.append(asyncio.ensure_future(sweep_loop()))
            for loop_task in loops:
                # A loop that dies (an undecodable reply, a bug) would leave slots that are
                # never freed: the run stops on it instead of waiting forever.
                loop_task.add_done_callback(_stop_on_error(admission))
            courier.start()
            self.report["finished_before_this_run"] = len(ledger.done)
            self.report["failed_rows_to_retry"] = len(ledger.retry)
            admitted = True
            await admission.drive(dispatch)
        finally:
            closing = True
            if admitted:
                await poll_status()  # final numbers for the summary
            # A sink's report in flight is let in: cancelling the call would lose it.
            waiting = [task for task in confirm_loops if not task.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=2 * STATUS_TIMEOUT)
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await courier.close()
            closed = await close_sinks()
            await self._shutdown_actors(kinds)
            # Re-attempted rows now have a new record: remove their old ones, in whichever
            # shard they are. Only once every sink has closed its files (else the next
            # run's open compacts them).
            if ledger.taken:
                if closed:
                    await ledger.compact(self.started)
                sink.by_status = ledger.counts()
                sink.cut_bytes += ledger.cut_bytes
                sink.superseded += ledger.superseded
                self.report["superseded_records"] = ledger.superseded
            self.report.update(
                {
                    "partitions": P,
                    "sinks": S,
                    "shards": [str(p) for p in shards],
                    "actors": len(kinds),
                    "reinjected_tasks": reinjected,
                    "repeated_ids_dropped": repeated,
                    "offload_threshold": rt.offload_threshold,
                    "service_watch": self.watches.report(),
                    "run_seconds": round(time.time() - t_start, 3),
                }
            )

    async def _shutdown_actors(self, kinds: list[tuple[str, str, Any]]) -> None:
        import ray

        closes = [_spawn(h.close) for _, what, h in kinds if what != "store"]
        if closes:
            await asyncio.wait(closes, timeout=CLOSE_TIMEOUT)
            for task in closes:
                if not task.done():
                    task.cancel()
                elif task.exception() is not None:
                    log.debug("closing an actor failed: %r", task.exception())
        for _, _, h in kinds:
            with contextlib.suppress(Exception):
                ray.kill(h, no_restart=True)


def _stop_on_error(admission: Admission) -> Any:
    def done(task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            admission.stop(task.exception())  # type: ignore[arg-type]

    return done


async def _call(method: Any) -> Any:
    return await method.remote()


def _spawn(method: Any) -> asyncio.Task[Any]:
    """A call as a task whose failure is never reported as unretrieved (dead actors are
    expected here, and the caller may stop waiting for it)."""
    task = asyncio.ensure_future(_call(method))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


async def _retrying(method: Any, *args: Any, attempts: int = 50) -> Any:
    """Call an actor method, again while the actor restarts (a crash during start-up)."""
    from ray.exceptions import RayActorError

    for attempt in range(attempts):
        try:
            return await method.remote(*args)
        except RayActorError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
