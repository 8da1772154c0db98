"""Managed services on a Ray cluster: replicas placed by resources, found through a registry.

LLM servers, tool-environment and sandbox servers alike (a `tool_env` or `sandbox` service's
replicas are its servers; its clients follow the registry the same way).

On the local runtime a managed service (`local_model`, `sim`, `command`) launches its servers
as child processes on 127.0.0.1. On a cluster the servers must live where the accelerators
are, be reachable from every node, and come back when a node goes. So on Ray:

- Each replica is a `Replica` actor, placed by the service's `resources` (GPUs, custom node
  labels; replicas are spread over the nodes that fit). It launches ONE server process of
  the service bound to its node's address on a free port, waits until it answers
  `GET {base}/models`, and registers the endpoint with the run's registry, again every
  second (so a restarted registry learns it back). A supervisor thread watches the process
  and restarts it when it dies (on a new port if need be), unregistering it meanwhile. The
  process is forked by that thread with a parent-death signal, so it never outlives the
  actor; the actor restarts forever (`max_restarts=-1`), so when its node is removed Ray
  starts it on another node that fits, and the new server registers itself there.
- The `Registry` actor (one per run, named `pf-{run_id}-registry`, on the driver's node)
  knows each service's replicas and their endpoints, probes every endpoint every 0.5 s and
  answers `endpoints(service)` with the healthy ones. A replica whose port refuses
  connections leaves the list at the next probe; one that stops answering, after two.
- Clients (`RegistryClient`, an `OpenAIService`) refresh their pool from the registry every
  0.5 s, in place: endpoints that stay keep their state. A call in flight to a replica that
  dies fails with a connection error and is retried, on another endpoint, by the client's
  own retries; if no replica is left the run's `ServiceWatch` pauses admission until one
  is back. So requests stop going to a lost replica within about a second, and none is lost.
- The driver runs `services_on_cluster`: it starts the replicas and the registry, waits
  until every service has a healthy replica (or fails with the replica's own error and log
  tail), and yields the config in which each managed service is a `kind: openai` client
  with `registry` set, which driver and actors alike build into a `RegistryClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ray

from peerflow.config import OpenAIServiceConfig, RunConfig
from peerflow.services.base import ServiceError
from peerflow.services.openai_client import OpenAIService

__all__ = ["RegistryClient", "registry_name", "services_on_cluster"]

log = logging.getLogger(__name__)

PROBE_INTERVAL = 0.5  # registry probes of every endpoint
REFRESH_INTERVAL = 0.5  # clients' refresh of their pool from the registry
HEARTBEAT = 1.0  # replicas re-register this often
PROBE_TIMEOUT = 2.0
PLACEMENT_GRACE = 60.0  # beyond the start-up timeout, for Ray to place the replicas
STOP_GRACE = 15.0


def registry_name(run_id: str) -> str:
    return f"pf-{run_id}-registry"


class Replica:
    """One server process of one service, on the node Ray placed this actor on."""

    def __init__(self, service: str, index: int, cfg: Any, registry: str):
        self.service, self.index, self.cfg, self.registry = service, index, cfg, registry
        self.info: dict[str, Any] = {"index": index, "state": "starting", "starts": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        # The thread that forks the server must live as long as the actor: the server's
        # parent-death signal fires when it ends (see managed._death_signal_preexec).
        self._thread = threading.Thread(target=self._run, name="pf-replica", daemon=True)
        self._thread.start()

    def status(self) -> dict[str, Any]:
        return dict(self.info)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and the supervisor, before `ray.kill`."""
        if self._loop is not None and self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(STOP_GRACE)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._main = self._loop.create_task(self._supervise())
        try:
            self._loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass  # stopped
        except Exception as exc:  # a bug here must show in `status`, not hang the driver
            self.info.update(state="failed", error=f"replica supervisor: {exc!r}")
            log.exception("%s replica %d: supervisor failed", self.service, self.index)

    async def _supervise(self) -> None:
        from peerflow.services import build_service

        host = ray.util.get_node_ip_address()
        self.info.update(node_ip=host, node_id=ray.get_runtime_context().get_node_id())
        registry = None
        while registry is None:  # the driver creates it first, but names register async
            try:
                registry = ray.get_actor(self.registry)
            except ValueError:
                await asyncio.sleep(0.2)
        cfg = self.cfg.model_copy(update={"replicas": 1})
        delay = 1.0
        while True:
            svc: Any = build_service(self.service, cfg, host=host)
            svc.supervise = False  # this replica restarts its server itself (below)
            try:
                await svc.start()
            except Exception as exc:  # a server that would not start: say why, try later
                self.info.update(state="failed", error=str(exc))
                log.warning("%s replica %d: %s", self.service, self.index, exc)
                await svc.stop()
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            delay = 1.0
            proc, endpoint = svc.processes[0], svc.endpoints[0]
            self.info.update(
                state="ready",
                error=None,
                probe=getattr(svc, "probe_path", "/models"),
                endpoint=endpoint,
                pid=proc.pid,
                log=str(svc.log_paths[0]),
                starts=self.info["starts"] + 1,
            )
            try:
                beat = 0.0
                while proc.poll() is None:
                    if time.monotonic() - beat >= HEARTBEAT:
                        registry.register.remote(self.service, self.index, endpoint, self.status())
                        beat = time.monotonic()
                    await asyncio.sleep(0.1)
                registry.unregister.remote(self.service, self.index, endpoint)
                self.info.update(state="restarting", exit_code=proc.returncode)
                log.warning(
                    "%s replica %d: server pid %d exited with code %s; restarting it",
                    self.service,
                    self.index,
                    proc.pid,
                    proc.returncode,
                )
            finally:
                await svc.stop()  # reaps the process; keeps its log if it crashed


class Registry:
    """Each service's replicas and endpoints, probed; clients ask for the healthy ones."""

    def __init__(self) -> None:
        # service -> replica index -> {"endpoint", "healthy", "fails", "info"}
        self.replicas: dict[str, dict[int, dict[str, Any]]] = {}
        self._prober: asyncio.Task[None] | None = None

    def _ensure_prober(self) -> None:
        if self._prober is None:
            self._prober = asyncio.ensure_future(self._probe_loop())

    async def register(self, service: str, index: int, endpoint: str, info: dict) -> None:
        self._ensure_prober()
        entries = self.replicas.setdefault(service, {})
        entry = entries.get(index)
        if entry is None or entry["endpoint"] != endpoint:
            # The replica checked its server answers just before registering it.
            entry = entries[index] = {"endpoint": endpoint, "healthy": True, "fails": 0}
        entry["info"] = info

    async def unregister(self, service: str, index: int, endpoint: str) -> None:
        entries = self.replicas.get(service, {})
        if index in entries and entries[index]["endpoint"] == endpoint:
            del entries[index]

    async def endpoints(self, service: str) -> list[str]:
        entries = self.replicas.get(service, {})
        return [e["endpoint"] for _, e in sorted(entries.items()) if e["healthy"]]

    async def status(self) -> dict[str, dict[int, dict[str, Any]]]:
        self._ensure_prober()
        return {s: {i: dict(e) for i, e in entries.items()} for s, entries in self.replicas.items()}

    async def _probe_loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                entries = [e for by_index in self.replicas.values() for e in by_index.values()]
                await asyncio.gather(*(self._probe(session, e) for e in entries))
                await asyncio.sleep(PROBE_INTERVAL)

    @staticmethod
    async def _probe(session: aiohttp.ClientSession, entry: dict[str, Any]) -> None:
        refused = False
        try:
            probe = (entry.get("info") or {}).get("probe", "/models")
            async with session.get(entry["endpoint"] + probe) as resp:
                await resp.read()
                ok = resp.status < 500
        except aiohttp.ClientConnectorError:
            ok, refused = False, True  # nothing listens there any more
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            ok = False
        entry["fails"] = 0 if ok else entry["fails"] + 1
        entry["healthy"] = ok or (not refused and entry["fails"] < 2)


class RegistryClient(OpenAIService):
    """An `OpenAIService` whose endpoints are the healthy replicas the registry names."""

    dynamic = True

    def __init__(self, name: str, *, registry: str, model: str, **client_kwargs: Any):
        client_kwargs.pop("endpoints", None)
        super().__init__(name, model=model, endpoints=[], **client_kwargs)
        self.registry = registry
        self._handle: Any = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        await self.refresh()
        await super().start()
        self._refresher = asyncio.ensure_future(self._refresh_loop())

    async def refresh(self) -> bool:
        """Take the registry's current list of healthy endpoints; False if it did not answer."""
        try:
            if self._handle is None:
                self._handle = await asyncio.to_thread(ray.get_actor, self.registry)
            endpoints = await asyncio.wait_for(self._handle.endpoints.remote(self.name), 5.0)
        except Exception as exc:  # keep the last list; the next refresh may do better
            self._last_error = f"service {self.name!r}: registry {self.registry}: {exc}"
            return False
        self.set_endpoints(endpoints)
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            await self.refresh()

    async def health(self) -> bool:
        await self.refresh()
        return await super().health()

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await super().stop()


@contextlib.asynccontextmanager
async def services_on_cluster(config: RunConfig, run_id: str) -> AsyncIterator[RunConfig]:
    """Run every managed service of `config` as replicas on the cluster, for the block.

    Yields the config in which those services are clients that follow the registry; on exit
    every replica (and so every server process) and the registry are gone.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from peerflow.placement import actor_options
    from peerflow.services import build_service, client_options
    from peerflow.services.cache import replays

    managed = {
        name: cfg
        for name, cfg in config.services.items()
        if cfg.kind != "openai"
        and not (cfg.kind in ("tool_env", "sandbox") and cfg.urls)
        and not replays(config, name, cfg)  # a replay answers from its cache: no server
    }
    if not managed:
        yield config
        return
    name = registry_name(run_id)
    here = ray.get_runtime_context().get_node_id()
    registry = (
        ray.remote(Registry)
        .options(
            name=name,
            num_cpus=0,
            max_restarts=-1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        )
        .remote()
    )
    replicas: dict[str, list[Any]] = {}
    try:
        remote_replica = ray.remote(Replica)
        for service, cfg in managed.items():
            opts = actor_options(cfg.resources)
            replicas[service] = [
                remote_replica.options(
                    name=f"pf-{run_id}-{service}-{i}",
                    max_restarts=-1,
                    scheduling_strategy="SPREAD",
                    **opts,
                ).remote(service, i, cfg, name)
                for i in range(cfg.replicas)
            ]
        await asyncio.gather(
            *(_wait_healthy(registry, s, cfg, replicas[s]) for s, cfg in managed.items())
        )
        clients = {
            service: (
                cfg.model_copy(update={"registry": name})
                if cfg.kind in ("tool_env", "sandbox")
                else OpenAIServiceConfig(
                    kind="openai",
                    model=build_service(service, cfg).model,  # type: ignore[attr-defined]
                    registry=name,
                    cache=cfg.cache,
                    **client_options(cfg),
                )
            )
            for service, cfg in managed.items()
        }
        yield config.model_copy(update={"services": {**config.services, **clients}})
    finally:
        await _stop(registry, [h for hs in replicas.values() for h in hs])


async def _wait_healthy(registry: Any, service: str, cfg: Any, handles: list[Any]) -> None:
    """Return once the service has a healthy replica; raise, saying why, if it cannot."""
    timeout = getattr(cfg, "startup_timeout", 180.0) + PLACEMENT_GRACE
    deadline = time.monotonic() + timeout
    while True:
        if await registry.endpoints.remote(service):
            return
        infos = await asyncio.gather(*(_status(h) for h in handles))
        failed = [i for i in infos if i is not None and i.get("state") == "failed"]
        if failed or time.monotonic() > deadline:
            raise ServiceError(_not_ready(service, cfg, infos, timeout), retryable=True)
        await asyncio.sleep(0.25)


async def _status(handle: Any) -> dict[str, Any] | None:
    """A replica's own account, or None while it is not placed (or not answering)."""
    try:
        return await asyncio.wait_for(handle.status.remote(), 2.0)
    except Exception:
        return None


def _not_ready(service: str, cfg: Any, infos: list[dict[str, Any] | None], timeout: float) -> str:
    lines = [f"service {service!r}: no replica became healthy on the Ray cluster"]
    for i, info in enumerate(infos):
        if info is None:
            want = ", ".join(f"{k}={v:g}" for k, v in cfg.resources.items()) or "no resources"
            lines.append(f"replica {i}: not placed (it asks for {want}; does a node offer it?)")
        elif info.get("error"):
            lines.append(f"replica {i} on {info.get('node_ip')}: {info['error']}")
        else:
            lines.append(f"replica {i} on {info.get('node_ip')}: not ready after {timeout:g}s")
    return "\n".join(lines)


async def _stop(registry: Any, handles: list[Any]) -> None:
    """Stop every server gracefully, then kill the actors (which also kills any server)."""
    if handles:
        stops = [asyncio.ensure_future(_quiet(h.stop.remote())) for h in handles]
        _, late = await asyncio.wait(stops, timeout=STOP_GRACE)
        for task in late:
            task.cancel()
    for handle in [*handles, registry]:
        with contextlib.suppress(Exception):
            ray.kill(handle)


async def _quiet(ref: Any) -> None:
    with contextlib.suppress(Exception):
        await ref
