"""The Ray runtime: the same workflows on a Ray cluster, with no row lost when actors or
nodes die.

Layout. Each role is `num_instances` async Ray actors (`RoleActor`) with the role's own
resource requests; a message hops straight from the actor that ran a step to an actor of
the role the message names next, and its last hop goes to a sink actor, which appends the
record to its own shard (`sinks` per partition). `partitions: N` builds N such teams; a
row belongs to partition `crc32(id) % N`, and `partition_resources` can pin each team to
its own nodes. The driver admits tasks and hears which finished (`ray_driver`); how a
message moves and why a crash loses nothing is in `ray_delivery`; the actors are in
`ray_peers`. Admission, the failure path, the step loop and the stats merge are the ones
the local runtime uses.

Output. With one sink and one partition the shard is `output.path` itself, byte-for-byte
what the local runtime writes; sharded runs list their shards in a manifest beside the
output, and `peerflow merge OUTPUT` joins them. Sinks run on the driver's node (where the
output directory is) unless `sink_resources` places them. The driver holds output.path's
lock for the whole run and each sink its shard's, so a second run on the same output is
refused. Re-running the same command resumes: every shard is read before admission.

Placement. Before any actor starts, every role's resource request is checked against the
cluster, and actors that still cannot start within `start_timeout` fail the run with the
roles named. Actors report their counters every second; the summary has them under "ray",
and `metrics_port` serves them to Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from peerflow.config import ConfigError, RunConfig, RuntimeConfig
from peerflow.merge import shard_path
from peerflow.pipeline import Pipeline
from peerflow.placement import PlacementError, actor_options, check_placement
from peerflow.runtimes.admission import Admission
from peerflow.sink import OutputLock, Sink
from peerflow.stats import RunStats

log = logging.getLogger(__name__)


class RayRuntime:
    name = "ray"

    def __init__(self, config: RuntimeConfig):
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "runtime.kind: ray needs Ray; install it with `pip install 'peerflow[ray]'`"
            )
        from peerflow.runtimes.ray_driver import ActorStats, ActorWatches

        self.config = config
        self.admission: Admission | None = None
        self.watches = ActorWatches(fail_fast=config.fail_fast)
        self.actor_stats = ActorStats()
        self.report: dict[str, Any] = {}
        self.run_id = uuid.uuid4().hex[:8]
        self.actors = Actors(config, self.run_id)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight if self.admission is not None else 0

    def _init_ray(self, config: RunConfig) -> bool:
        """Start or join Ray; user code ships to its workers (`loading.ray_runtime_env`)."""
        import ray

        from peerflow.loading import ray_runtime_env

        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        cfg, env = self.config, ray_runtime_env(config)
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

        from peerflow.agents.dedup import shared_seen_sets
        from peerflow.services.adaptive import shared_limits
        from peerflow.services.cluster import services_on_cluster

        started_ray = self._init_ray(pipeline.config)
        server = None
        try:
            check_placement(pipeline.config, ray.nodes(), ray.cluster_resources())
            # Managed services run as replicas on the cluster; `config` has their clients,
            # which the driver (health checks, the watch) and the actors use.
            async with (
                services_on_cluster(pipeline.config, self.run_id) as config,
                # One adaptive limit per LLM service, shared by every actor calling it.
                shared_limits(config, self.run_id, stats) as config,
                # One seen set per dedup role, shared by every actor of the role.
                shared_seen_sets(config, self.run_id, stats) as config,
                pipeline.running_services(watch, config.services, stats),
            ):
                if self.config.metrics_port is not None:
                    from peerflow.metrics import serve_metrics

                    server = serve_metrics(
                        self.config.metrics_port, stats, lambda: self.in_flight, self._families
                    )
                out = pipeline.config.resolve(pipeline.config.output.path)
                lock = OutputLock(out) if not (sink.holds_lock and sink.path == out) else None
                with lock or contextlib.nullcontext():
                    self.watches.on_event = getattr(watch, "on_event", None)
                    await self._run(pipeline, config, sink, stats)
        finally:
            if server is not None:
                server.shutdown()
            if started_ray:
                ray.shutdown()
            # A stopped or interrupted run's summary has the runtime's numbers too.
            self.report.update(self.actor_stats.report())
            stats.extra["ray"] = self.report
            if "finished_before_this_run" in self.report:
                stats.finished_before = self.report["finished_before_this_run"]

    async def _run(self, pipeline: Pipeline, acfg: RunConfig, sink: Sink, stats: RunStats) -> None:
        from peerflow.runtimes.ray_driver import Driver, Ledger

        config, rt = pipeline.config, self.config
        out = config.resolve(config.output.path)
        t0 = time.time()
        ledger = Ledger(stats, retry_failed=sink.retry_failed)
        admission = self.admission = Admission(
            pipeline,
            ledger,
            stats,
            max_in_flight=rt.max_in_flight,
            watch=self.watches,  # type: ignore[arg-type]
        )
        shards = [
            shard_path(out, i, rt.partitions * rt.sinks) for i in range(rt.partitions * rt.sinks)
        ]
        actors = self.actors
        groups = actors.create(config, acfg, shards, sink.provenance, t0)
        driver = Driver(
            admission,
            ledger,
            actors.handles,
            groups,
            partitions=rt.partitions,
            sinks=rt.sinks,
            roles=set(config.roles),
            watches=self.watches,
            stats=self.actor_stats,
        )
        loops: list[asyncio.Future[Any]] = []
        try:
            await actors.await_ready(self.actor_stats)
            await driver.open_output(out, shards)
            self.report["finished_before_this_run"] = len(ledger.finished)
            self.report["failed_rows_to_retry"] = len(ledger.retry)
            loops = driver.start()
            if rt.offload_threshold is not None:
                loops.append(asyncio.ensure_future(actors.keep_keepers()))
            await admission.drive(driver.dispatch)
        finally:
            if loops:
                await driver.poll_status()  # final numbers for the summary
            closed = await driver.stop(loops)
            await actors.shutdown()
            # Re-attempted rows now have a new record: remove their old ones, wherever they
            # are; only once every sink closed its files (else the next run's open does).
            if ledger.taken:
                if closed:
                    await ledger.compact(t0)
                sink.by_status = ledger.counts()
                sink.cut_bytes += ledger.cut_bytes
                sink.superseded += ledger.superseded
                self.report["superseded_records"] = ledger.superseded
            self.report.update(
                driver.report(),
                partitions=rt.partitions,
                sinks=rt.sinks,
                shards=[str(p) for p in shards],
                actors=len(actors.handles),
                offload_threshold=rt.offload_threshold,
                run_seconds=round(time.time() - t0, 3),
            )

    def _families(self) -> Iterator[Any]:
        """Prometheus families only Ray has (the rest come from the run's stats)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        roles = self.actor_stats.report()["roles"]
        received = CounterMetricFamily(
            "peerflow_messages_in", "Messages delivered", labels=["role"]
        )
        queue = GaugeMetricFamily(
            "peerflow_queue_depth", "Tasks in the role's actors", labels=["role"]
        )
        for role, r in roles.items():
            received.add_metric([role], r["in"])
            queue.add_metric([role], r["queue"])
        restarts = CounterMetricFamily("peerflow_actor_restarts", "Actor restarts", labels=["role"])
        for role, n in self.actor_stats.restarts.items():
            restarts.add_metric([role], n)
        yield from (received, queue, restarts)


class Actors:
    """The actors of one run: created by role, sink and node, awaited, and shut down."""

    def __init__(self, config: RuntimeConfig, run_id: str):
        self.config = config
        self.run_id = run_id
        self.handles: dict[str, Any] = {}  # actor key -> handle; keepers join as nodes do

    def create(
        self,
        config: RunConfig,
        acfg: RunConfig,
        shards: list[Path],
        provenance: dict[str, Any] | None,
        started: float,
    ) -> dict[str, list[str]]:
        """Start every role and sink actor; returns the driver's role groups."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from peerflow.runtimes.ray_peers import ActorSpec, RoleActor, SinkActor

        rt = self.config
        P, S = rt.partitions, rt.sinks
        # Sinks write output.path on the node they run on: by default the node the command
        # was started on (the user's output directory).
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        on_driver_node = {"num_cpus": 0, "scheduling_strategy": here}
        driver_groups: dict[str, list[str]] = {}
        for p in range(P):
            team = rt.partition_resources[p] if rt.partition_resources else {}
            groups = {
                role: [f"r:{role}:{p}:{i}" for i in range(rc.num_instances)]
                for role, rc in config.roles.items()
            }
            driver_groups.update({f"{role}@{p}": keys for role, keys in groups.items()})
            base = ActorSpec(
                run_id=self.run_id,
                key="",
                config=acfg,
                partition=p,
                partitions=P,
                sinks=S,
                groups=groups,
                threshold=rt.offload_threshold,
                started=started,
                provenance=provenance,
            )
            for s in range(S):
                spec = replace(base, key=f"s:{p}:{s}", shard=str(shards[p * S + s]))
                placed = rt.sink_resources or team
                where = actor_options(rt.sink_resources, team) if placed else on_driver_node
                self._start(SinkActor, spec.key, where, spec)
            for role, rc in config.roles.items():
                opts = actor_options(rc.resources, team)
                workers = rc.workers or rt.max_in_flight
                for key in groups[role]:
                    spec = replace(base, key=key, role=role, workers=workers)
                    self._start(RoleActor, key, opts, spec)
        return driver_groups

    def _start(self, cls: type, key: str, options: dict[str, Any], *args: Any) -> None:
        import ray

        from peerflow.runtimes.ray_peers import actor_name

        self.handles[key] = (
            ray.remote(cls)
            .options(
                name=actor_name(self.run_id, key),
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=1000,
                **options,
            )
            .remote(*args)
        )

    async def keep_keepers(self) -> None:
        """One `Keeper` per alive node, for payloads offloaded there (nodes come and go)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from peerflow.runtimes.ray_peers import Keeper, keeper_key

        while True:
            for node in await asyncio.to_thread(ray.nodes):
                key = keeper_key(node["NodeID"])
                if node.get("Alive") and key not in self.handles:
                    strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                    self._start(Keeper, key, {"num_cpus": 0, "scheduling_strategy": strategy})
            await asyncio.sleep(2.0)

    async def await_ready(self, stats: Any) -> None:
        from ray.exceptions import RayTaskError

        from peerflow.runtimes.ray_driver import retrying

        tasks = {asyncio.ensure_future(retrying(h.ready)): key for key, h in self.handles.items()}
        done, pending = await asyncio.wait(tasks, timeout=self.config.start_timeout)
        for task in pending:
            task.cancel()
        for task in done:
            exc = task.exception()
            if exc is not None:
                cause = exc.cause if isinstance(exc, RayTaskError) else exc
                what = f"{type(cause).__name__}: {cause}"
                raise RuntimeError(
                    f"ray runtime: actor {tasks[task]} failed to start: {what}"
                ) from None
            stats.update(task.result())
        if pending:
            stuck = sorted({tasks[t].rsplit(":", 2)[0] for t in pending})
            raise PlacementError(
                f"ray runtime: {len(pending)} actor(s) of {', '.join(stuck)} did not start "
                f"within runtime.start_timeout={self.config.start_timeout:g}s; the cluster "
                "probably cannot place them (resources busy or missing)"
            )

    async def shutdown(self) -> None:
        import ray

        from peerflow.runtimes.ray_driver import gather_answers

        await gather_answers(
            [h.close for k, h in self.handles.items() if not k.startswith(("s:", "k:"))]
        )
        for handle in self.handles.values():
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
