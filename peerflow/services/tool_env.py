"""The run's tool-environment service: a pool of environment servers, and their client.

Each task holds one environment (`peerflow.envs.server`) from its first step to its end.
The pool is `servers` processes this service launches (or `urls` of servers someone
else runs), each holding at most `max_envs` environments:

- `acquire` tries the servers in turn, round robin from the last one used; when all
  are full it waits with back-off and tries again, until `acquire_timeout`. A full pool
  slows tasks down; it never fails them.
- A handle `{url, id, boot}` names the server that holds the environment, so any process
  can use or release it: the handle travels in the message, the client keeps no state
  about tasks (only the ids it acquired, to release them if the run stops first).
- A server that dies takes its environments with it. A call to one of them raises
  `EnvironmentLost`, which fails that task only (transient: a re-run re-attempts the
  row). The supervisor restarts a launched server on the same port within a fraction of
  a second, with a new boot id, so new tasks go on and old ids are refused, never
  confused with new ones.
- Every task's environment is released when the task ends, whatever the ending: the
  reward step releases it, and `release_soon` (called by the pipeline as a task is
  finished) releases one a failed task still held. A process killed before either gets
  its environments reclaimed by the server's lease (`lease_ttl` idle seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from peerflow.services.base import ServiceError
from peerflow.services.http1 import Pool, split_http_url

__all__ = ["EnvironmentLost", "ToolEnvService", "drain_releases", "release_soon"]

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}

SUPERVISE_INTERVAL = 0.1


class EnvironmentLost(ServiceError):
    """The server holding a task's environment died or restarted: that task cannot go on."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class ToolEnvService:
    """See the module docstring. `call` is not used: agents call the methods below."""

    probe_path = "/health"  # what the Ray registry probes
    supervise = True  # replace a launched server that dies (a Ray replica does it instead)

    def __init__(
        self,
        name: str,
        *,
        domain: str,
        servers: int = 1,
        max_envs: int = 256,
        urls: list[str] | None = None,
        lease_ttl: float = 900.0,
        call_latency: float = 0.0,
        call_cpu: float = 0.0,
        acquire_timeout: float = 600.0,
        timeout: float = 120.0,
        startup_timeout: float = 60.0,
        max_connections: int = 1024,
        registry: str | None = None,
        owner: str | None = None,
        host: str = "127.0.0.1",
    ):
        self.name = name
        self.domain = domain
        self.servers = servers
        self.max_envs = max_envs
        self.urls = list(urls or ())
        self.lease_ttl = lease_ttl
        self.call_latency = call_latency
        self.call_cpu = call_cpu
        self.acquire_timeout = acquire_timeout
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.max_connections = max_connections
        self.host = host
        self.registry = registry  # Ray: the servers are cluster replicas it knows
        self.owner = owner or ""  # the run (its output): what a run's end releases at once
        self.reclaimed_at_start = 0
        self.endpoints: list[str] = list(self.urls)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.log_paths: list[Path] = []
        self.log_dir: Path | None = None
        self.restarts = 0
        self.held: dict[str, str] = {}  # env id -> url, acquired here and not yet released
        self._session: aiohttp.ClientSession | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._finalizer: weakref.finalize | None = None
        self._refresh_interval = 0.5
        self._turn = random.randrange(1 << 16)
        self._pools: dict[str, tuple[Pool, str] | bool] = {}

    # --- lifecycle -------------------------------------------------------
    @property
    def managed(self) -> bool:
        return not self.urls and self.registry is None

    async def start(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=10.0),
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.max_connections),
        )
        if self.registry is not None:
            await self._refresh()
            self._supervisor = asyncio.ensure_future(self._follow_registry())
            return
        if not self.managed:
            return
        from peerflow.services.managed import _free_ports, _reap

        self.log_dir = Path(tempfile.mkdtemp(prefix=f"peerflow-{self.name}-"))
        self.ports = _free_ports(self.servers, self.host)
        self._finalizer = weakref.finalize(self, _reap, self.processes)
        try:
            for i in range(self.servers):
                self.log_paths.append(self.log_dir / f"server-{i}.log")
                self.processes.append(self._launch(i))
            self.endpoints = [self._url(port) for port in self.ports]
            await asyncio.gather(*(self._wait_ready(i) for i in range(self.servers)))
        except BaseException:
            await self.stop()
            raise
        if self.supervise:
            self._supervisor = asyncio.ensure_future(self._supervise())

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "peerflow.envs.server", "--domain", self.domain]
        cmd += ["--host", self.host, "--port", str(port), "--max-envs", str(self.max_envs)]
        cmd += ["--lease-ttl", str(self.lease_ttl)]
        cmd += ["--call-latency", str(self.call_latency), "--call-cpu", str(self.call_cpu)]
        return cmd

    def _url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def _launch(self, i: int) -> subprocess.Popen[bytes]:
        from peerflow.services.managed import _death_signal_preexec, _with_peerflow_path

        with open(self.log_paths[i], "ab") as logf:
            try:
                return subprocess.Popen(
                    self.command(self.ports[i]),
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=_with_peerflow_path(dict(os.environ)),
                    close_fds=True,
                    preexec_fn=_death_signal_preexec(),
                )
            except OSError as exc:
                raise ServiceError(
                    f"service {self.name!r}: cannot launch its environment server: {exc}",
                    retryable=True,
                ) from exc

    async def _wait_ready(self, i: int) -> None:
        from peerflow.services.managed import _log_tail

        deadline = time.monotonic() + self.startup_timeout
        url = self._url(self.ports[i]) + "/health"
        while True:
            proc = self.processes[i]
            if proc.poll() is not None:
                raise ServiceError(
                    f"service {self.name!r}: environment server {i} exited with code "
                    f"{proc.returncode} before answering.\nLast lines of {self.log_paths[i]}:\n"
                    f"{_log_tail(self.log_paths[i])}",
                    retryable=False,
                )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                assert self._session is not None
                async with self._session.get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"service {self.name!r}: environment server {i} did not answer {url} "
                    f"within {self.startup_timeout:g} s",
                    retryable=True,
                )
            await asyncio.sleep(0.05)

    async def _supervise(self) -> None:
        """Replace a server that died, on the same port, so the pool keeps its size."""
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL)
            for i, proc in enumerate(self.processes):
                if proc.poll() is None:
                    continue
                log.warning(
                    "%s: environment server %d (pid %d) exited with code %s; replacing it",
                    self.name,
                    i,
                    proc.pid,
                    proc.returncode,
                )
                self.restarts += 1
                try:
                    self.processes[i] = self._launch(i)
                    await self._wait_ready(i)
                except Exception as exc:  # try again on the next round
                    log.warning("%s: restarting server %d failed: %s", self.name, i, exc)

    async def _refresh(self) -> None:
        import ray

        from peerflow.services.cluster import REFRESH_INTERVAL

        with contextlib.suppress(Exception):
            handle = await asyncio.to_thread(ray.get_actor, self.registry)
            found = await asyncio.wait_for(handle.endpoints.remote(self.name), 5.0)
            if found or not self.endpoints:
                self.endpoints = list(found)
        self._refresh_interval = REFRESH_INTERVAL

    async def _follow_registry(self) -> None:
        """On Ray: the healthy replicas the run's registry knows, refreshed continually."""
        while True:
            await asyncio.sleep(self._refresh_interval)
            await self._refresh()

    async def final_report(self) -> dict[str, Any]:
        """The servers' account at the end of the run, for the summary: environments still
        live (after this client released what it still held), and the totals."""
        await drain_releases()
        self.held = {k: u for k, u in self.held.items() if k not in _released}
        leftover = len(self.held)
        await self._release_held()
        # Environments of this run that no task released (a process killed mid-task).
        reclaimed = await self.release_owner()
        found = [s for s in await self.server_stats() if s is not None]
        totals = {
            key: sum(int(s.get(key, 0)) for s in found)
            for key in ("live", "acquired", "released", "expired", "refused", "calls")
        }
        return {
            "servers": len(self.endpoints),
            "answered": len(found),
            **totals,
            "peak_per_server": max((int(s.get("peak", 0)) for s in found), default=0),
            "server_restarts": self.restarts,
            "released_at_stop": leftover,
            "reclaimed_at_end": reclaimed,
            "reclaimed_at_start": self.reclaimed_at_start,
        }

    async def _release_held(self) -> None:
        held, self.held = list(self.held.items()), {}
        await asyncio.gather(
            *(self._delete(url, env_id) for env_id, url in held), return_exceptions=True
        )

    async def stop(self) -> None:
        """Release what this client still holds, then stop the servers it launched."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await drain_releases()
        if self._session is not None:
            await self._release_held()
            await self._session.close()
            for pool in self._pools.values():
                if pool:
                    pool[0].close()
            self._pools = {}
            self._session = None
        if self.processes:
            from peerflow.services.managed import _reap

            crashed = self.restarts or any(p.poll() is not None for p in self.processes)
            await asyncio.to_thread(_reap, self.processes)
            if self._finalizer is not None:
                self._finalizer.detach()
            self.processes = []
            if self.log_dir is not None and not crashed:  # a crash's log is the only clue
                await asyncio.to_thread(shutil.rmtree, self.log_dir, True)
            elif self.log_dir is not None:
                log.warning(
                    "%s: an environment server crashed; logs kept in %s", self.name, self.log_dir
                )

    async def health(self) -> bool:
        results = await asyncio.gather(*(self._get(u, "/health") for u in self.endpoints))
        return any(r is not None for r in results)

    async def call(self, request: Any, *, key: str | None = None) -> Any:
        raise ServiceError(
            f"service {self.name!r} is a tool environment: use the `environment` and "
            "`env_reward` agents, not an LLM role",
            retryable=False,
        )

    # --- environments ----------------------------------------------------
    async def acquire(self, task: dict[str, Any], task_id: str) -> dict[str, str]:
        """A fresh environment for `task`; waits (with back-off) while every server is full."""
        deadline = time.monotonic() + self.acquire_timeout
        delay = 0.02
        self._turn += 1  # round robin: spreads each client's tasks over the servers
        start = self._turn
        last = "no server answered"
        while True:
            urls = list(self.endpoints)
            for k in range(len(urls)):
                url = urls[(start + k) % len(urls)]
                asked = {"task": task, "task_id": task_id, "owner": self.owner}
                try:
                    status, body = await self._send("POST", url, "/envs", asked)
                    if status == 200:
                        self.held[body["id"]] = url
                        return {"url": url, "id": body["id"], "boot": body["boot"]}
                    if status == 400:  # the task's initial state is wrong
                        raise ServiceError(
                            f"environment for task {task_id!r}: {body.get('error')}",
                            retryable=False,
                            status=400,
                        )
                    last = f"{url}: {status} {body.get('error', '')}".strip()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    last = f"{url}: {type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline:
                raise ServiceError(
                    f"service {self.name!r}: no environment free for task {task_id!r} after "
                    f"{self.acquire_timeout:g} s (last: {last})",
                    retryable=True,
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(1.0, delay * 1.6)

    async def call_tool(
        self, handle: dict[str, str], side: str, name: str, arguments: Any
    ) -> dict[str, Any]:
        """One tool call on the task's environment -> `{content, is_error}`."""
        url, env_id = handle["url"], handle["id"]
        body = {"side": side, "name": name, "arguments": arguments}
        try:
            status, data = await self._send("POST", url, f"/envs/{env_id}/call", body)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            self.held.pop(env_id, None)
            raise EnvironmentLost(
                f"environment {env_id} lost: the environment server at {url} crashed "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if status == 200:
            return data
        if status == 404 and data.get("lost"):
            self.held.pop(env_id, None)
            raise EnvironmentLost(
                f"environment {env_id} lost: the environment server at {url} "
                f"crashed or restarted ({data.get('error')})"
            )
        raise ServiceError(
            f"environment server {url}: {status} {data.get('error', data)}",
            retryable=status >= 500,
            status=status,
        )

    async def reward(self, payload: dict[str, Any], handle: dict[str, str] | None) -> dict:
        """Score a finished conversation: on the server holding it, else on any server."""
        urls = list(self.endpoints)
        if handle is not None and handle.get("url") in urls:
            urls.remove(handle["url"])
            urls.insert(0, handle["url"])
        body = {**payload, "env": handle.get("id") if handle else None}
        last = "no server"
        for url in urls:
            try:
                status, data = await self._send("POST", url, "/reward", body)
                if status == 200:
                    return data
                if status == 400:
                    raise ServiceError(f"reward: {data.get('error')}", status=400)
                last = f"{url}: {status} {data.get('error', '')}".strip()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                last = f"{url}: {type(exc).__name__}: {exc}"
        raise ServiceError(
            f"service {self.name!r}: no server scored the task ({last})", retryable=True
        )

    async def release(self, handle: dict[str, str]) -> bool:
        """Give the environment back; False if the server no longer had it."""
        self.held.pop(handle["id"], None)
        return await self._delete(handle["url"], handle["id"])

    async def release_owner(self) -> int:
        """Release every environment of this run's owner on every server: at the end of a
        run (what crashed processes left), and at its start (what a killed run left)."""
        if not self.owner:
            return 0

        async def one(url: str) -> int:
            try:
                session = self._live_session()
                async with session.delete(url + "/envs", params={"owner": self.owner}) as resp:
                    data = await resp.json(content_type=None)
                    return int(data.get("released", 0)) if resp.status == 200 else 0
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                return 0

        return sum(await asyncio.gather(*(one(u) for u in self.endpoints)))

    async def _delete(self, url: str, env_id: str) -> bool:
        try:
            _, data = await self._send("DELETE", url, f"/envs/{env_id}")
            return bool(data.get("released"))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return False

    async def _send(
        self, method: str, url: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer) of one request to a server: the lean HTTP/1.1 client for
        `http://` servers (a tool call is a step of every conversation), else aiohttp."""
        self._live_session()
        payload = orjson.dumps(body) if body is not None else b""
        pool = self._pools.get(url)
        if pool is None:
            parts = split_http_url(url)
            if parts is not None:
                host, port, prefix = parts
                pool = self._pools[url] = (
                    Pool(host, port, limit=self.max_connections),
                    prefix.rstrip("/"),
                )
            else:
                pool = self._pools[url] = False
        if pool:
            lean, prefix = pool
            answer = await lean.request(method, prefix + path, payload, _JSON, self.timeout)
            status, raw = answer.status, answer.body
        else:
            session = self._live_session()
            async with session.request(method, url + path, data=payload, headers=_JSON) as resp:
                status, raw = resp.status, await resp.read()
        data = orjson.loads(raw) if raw else {}
        return status, data if isinstance(data, dict) else {}

    async def server_stats(self) -> list[dict[str, Any] | None]:
        """Each server's `/stats` (live environments, acquired, released, expired, ...)."""
        return list(await asyncio.gather(*(self._get(u, "/stats") for u in self.endpoints)))

    async def tools(self) -> dict[str, list[dict[str, Any]]] | None:
        for url in self.endpoints:
            found = await self._get(url, "/tools")
            if found is not None:
                return found
        return None

    async def _get(self, url: str, path: str) -> Any:
        try:
            async with self._live_session().get(url + path) as resp:
                return await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return None

    def _live_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ServiceError(f"service {self.name!r} is not started", retryable=True)
        return self._session

    def stats(self) -> dict[str, Any]:
        return {
            "endpoints": list(self.endpoints),
            "restarts": self.restarts,
            "held": len(self.held),
            "pids": [p.pid for p in self.processes],
        }


# --- releases of environments that failed tasks still held ----------------------
_pending: set[asyncio.Task[None]] = set()
_release_session: dict[int, aiohttp.ClientSession] = {}
# Ids released that way, so that a client does not count them as still held (bounded).
_released: set[str] = set()


def release_soon(handle: dict[str, str]) -> None:
    """Release an environment in the background (from synchronous code finishing a task)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop: the lease reclaims it
    if len(_released) > 100_000:
        _released.clear()
    _released.add(handle["id"])
    task = loop.create_task(_release(handle))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _release(handle: dict[str, str]) -> None:
    key = id(asyncio.get_running_loop())
    session = _release_session.get(key)
    if session is None or session.closed:
        session = _release_session[key] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10.0)
        )
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
        async with session.delete(f"{handle['url']}/envs/{handle['id']}") as resp:
            await resp.read()


async def drain_releases(timeout: float = 10.0) -> None:
    """Wait for background releases of this loop to finish, then close their session."""
    loop = asyncio.get_running_loop()
    mine = [t for t in _pending if t.get_loop() is loop]
    if mine:
        await asyncio.wait(mine, timeout=timeout)
    session = _release_session.pop(id(loop), None)
    if session is not None:
        await session.close()
