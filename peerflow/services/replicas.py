"""A service made of N replica server processes: what the sandbox and tool-env services share.

`kind: sandbox` (`peerflow.services.sandbox`) and `kind: tool_env`
(`peerflow.services.tool_env`) are both clients of a pool of peerflow HTTP servers of one
kind, each server holding a bounded number of things for its clients (executions and
sessions; environments). What differs is what they ask the servers; where the servers
come from, and how they are reached, is the same for both, and lives here once:

- launched here (`managed`): `server_count` processes on free ports of `host`, each
  logging to its own file in a fresh temporary folder, waited for until `GET /health`
  answers. A supervisor replaces a server that dies, on the same port, so the pool keeps
  its size. `stop` reaps them (a finaliser does it too if the service is dropped
  without `stop`) and removes the logs, unless a server crashed: its log is the only
  clue, so it stays and its folder is named.
- `urls`: servers someone else runs; nothing is launched.
- `registry` (Ray): each replica is a one-server service of the same class, placed on
  the cluster by `peerflow.services.cluster` with `supervise = False` (the replica
  actor restarts its server itself), found through the run's registry; clients follow
  the registry's healthy endpoints, refreshed continually.

Requests go through `_send`: the lean HTTP/1.1 client (`peerflow.services.http1`) for
`http://` servers, aiohttp otherwise. `_claim` is the round robin with back-off both
services use to get a server to hold something, when a full pool must slow a task down
but never fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from peerflow.services.base import ServiceError
from peerflow.services.http1 import Pool, split_http_url

__all__ = ["SUPERVISE_INTERVAL", "ServerPool"]

_JSON = {"Content-Type": "application/json"}
SUPERVISE_INTERVAL = 0.1  # how often the supervisor looks for a server that died


class ServerPool:
    """The servers of one replicated service, and the transport to them.

    A subclass gives `server_label` (what the messages call one server), `owner_path`
    (where `DELETE ?owner=` releases a run's holdings), `server_count` and `command`;
    it may extend `_started` (after the servers are known) and `_give_back` (release
    what this client holds, before the transport closes).
    """

    probe_path = "/health"  # what the Ray registry probes
    supervise = True  # replace a launched server that dies (a Ray replica does it instead)
    server_label = "server"
    owner_path: str  # e.g. "/envs": `DELETE {url}{owner_path}?owner=...` releases a run's
    # aiohttp's total timeout for a request that names none; None: the service's `timeout`.
    client_timeout: float | None = None

    def __init__(
        self,
        name: str,
        *,
        urls: list[str] | None,
        acquire_timeout: float,
        timeout: float,
        startup_timeout: float,
        max_connections: int,
        registry: str | None,
        host: str,
    ):
        self.name = name
        self.urls = list(urls or ())
        self.acquire_timeout = acquire_timeout
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.max_connections = max_connections
        self.host = host
        self.registry = registry  # Ray: the servers are cluster replicas it knows
        self.owner = ""  # the run: what its end (or the next start) releases at once
        self.reclaimed_at_start = 0
        self.endpoints: list[str] = list(self.urls)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.log_paths: list[Path] = []
        self.log_dir: Path | None = None
        self.restarts = 0
        self.held: dict[str, str] = {}  # id -> url, obtained here and not yet given back
        self._session: aiohttp.ClientSession | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._finalizer: weakref.finalize | None = None
        self._refresh_interval = 0.5
        self._turn = random.randrange(1 << 16)
        self._pools: dict[str, tuple[Pool, str] | bool] = {}

    # --- what a subclass says ----------------------------------------------------
    @property
    def server_count(self) -> int:
        """How many servers a managed service launches."""
        raise NotImplementedError

    def command(self, port: int) -> list[str]:
        """The command line of one server listening on `port`."""
        raise NotImplementedError

    async def _started(self) -> None:
        """Called once the servers are known (launched, given, or found on Ray)."""

    async def _give_back(self) -> None:
        """Release what this client still holds on the servers (the transport is open)."""

    # --- lifecycle ---------------------------------------------------------------
    @property
    def _log(self) -> logging.Logger:
        """The subclass's module logger: its servers' news logs under the service's name."""
        return logging.getLogger(type(self).__module__)

    @property
    def managed(self) -> bool:
        return not self.urls and self.registry is None

    async def start(self) -> None:
        if self._session is not None:
            return
        total = self.timeout if self.client_timeout is None else self.client_timeout
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=total, connect=10.0),
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.max_connections),
        )
        if self.registry is not None:
            await self._refresh()
            self._supervisor = asyncio.ensure_future(self._follow_registry())
        elif self.managed:
            await self._launch_all()
        await self._started()

    async def _launch_all(self) -> None:
        from peerflow.services.managed import _free_ports, _reap

        count = self.server_count
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"peerflow-{self.name}-"))
        self.ports = _free_ports(count, self.host)
        # The finaliser holds the list, not self, so it also fires when self is collected.
        self._finalizer = weakref.finalize(self, _reap, self.processes)
        try:
            for i in range(count):
                self.log_paths.append(self.log_dir / f"server-{i}.log")
                self.processes.append(self._launch(i))
            self.endpoints = [self._url(port) for port in self.ports]
            await asyncio.gather(*(self._wait_ready(i) for i in range(count)))
        except BaseException:
            await self.stop()
            raise
        if self.supervise:
            self._supervisor = asyncio.ensure_future(self._supervise())

    def _url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def _launch(self, i: int) -> subprocess.Popen[bytes]:
        from peerflow.services.managed import _death_signal_preexec, _with_peerflow_path

        with open(self.log_paths[i], "ab") as logf:  # "ab": a replacement's log follows
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
                    f"service {self.name!r}: cannot launch its {self.server_label}: {exc}",
                    retryable=True,
                ) from exc

    async def _wait_ready(self, i: int) -> None:
        """Until server `i` answers `/health`: a server that exits first fails for good
        (its log tail says why), one that stays silent past `startup_timeout` may not."""
        from peerflow.services.managed import _log_tail

        deadline = time.monotonic() + self.startup_timeout
        url = self._url(self.ports[i]) + "/health"
        while True:
            proc = self.processes[i]
            if proc.poll() is not None:
                raise ServiceError(
                    f"service {self.name!r}: {self.server_label} {i} exited with code "
                    f"{proc.returncode} before answering.\nLast lines of {self.log_paths[i]}:\n"
                    f"{_log_tail(self.log_paths[i])}",
                    retryable=False,
                )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                async with self._live_session().get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"service {self.name!r}: {self.server_label} {i} did not answer {url} "
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
                self._log.warning(
                    "%s: %s %d (pid %d) exited with code %s; replacing it",
                    self.name,
                    self.server_label,
                    i,
                    proc.pid,
                    proc.returncode,
                )
                self.restarts += 1
                try:
                    self.processes[i] = self._launch(i)
                    await self._wait_ready(i)
                except Exception as exc:  # try again on the next round
                    self._log.warning("%s: restarting server %d failed: %s", self.name, i, exc)

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

    async def stop(self) -> None:
        """Give back what this client still holds, then stop the servers it launched."""
        await self._stop_supervisor()
        if self._session is not None:
            await self._give_back()
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
                self._log.warning(
                    "%s: one of its %ss had crashed; logs kept in %s",
                    self.name,
                    self.server_label,
                    self.log_dir,
                )

    async def _stop_supervisor(self) -> None:
        """Stop replacing servers (or following the registry) before stopping them."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    # --- the servers' side of a run ----------------------------------------------
    async def health(self) -> bool:
        results = await asyncio.gather(*(self._get(u, "/health") for u in self.endpoints))
        return any(r is not None for r in results)

    async def release_owner(self) -> int:
        """Release everything this run's owner holds on every server: at the end of a
        run (what tasks or crashed processes left), and at its start (what a killed run
        left) -> how many were released."""
        if not self.owner:
            return 0

        async def one(url: str) -> int:
            try:
                session = self._live_session()
                path = url + self.owner_path
                async with session.delete(path, params={"owner": self.owner}) as resp:
                    data = await resp.json(content_type=None)
                    return int(data.get("released", 0)) if resp.status == 200 else 0
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                return 0

        return sum(await asyncio.gather(*(one(u) for u in self.endpoints)))

    async def server_stats(self) -> list[dict[str, Any] | None]:
        """Each server's `/stats` (None for one that did not answer)."""
        return list(await asyncio.gather(*(self._get(u, "/stats") for u in self.endpoints)))

    async def _claim(
        self,
        path: str,
        body: dict[str, Any],
        *,
        wanted: str,
        timeout: float | None = None,
        bad_request: str | None = None,
    ) -> dict[str, str]:
        """POST `body` to `path` on the servers in turn, round robin from a turn of
        this client's own (so its requests spread over the servers), until one holds
        something for it -> the handle `{url, id, boot}`, remembered in `held`.

        While every server is full (or unreachable) it waits with back-off and tries
        again until `acquire_timeout`, then raises a retryable `ServiceError` saying
        "no {wanted}": a full pool slows a task down, it does not fail it. With
        `bad_request`, a 400 is the request's fault and raises at once, not retryable.
        """
        deadline = time.monotonic() + self.acquire_timeout
        delay = 0.02
        self._turn += 1
        start = self._turn
        last = "no server answered"
        while True:
            urls = list(self.endpoints)
            for k in range(len(urls)):
                url = urls[(start + k) % len(urls)]
                try:
                    status, data = await self._send("POST", url, path, body, timeout)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    last = f"{url}: {type(exc).__name__}: {exc}"
                    continue
                if status == 200:
                    self.held[data["id"]] = url
                    return {"url": url, "id": data["id"], "boot": data["boot"]}
                if status == 400 and bad_request is not None:
                    raise ServiceError(
                        f"{bad_request}: {data.get('error')}", retryable=False, status=400
                    )
                last = f"{url}: {status} {data.get('error', '')}".strip()
            if time.monotonic() + delay > deadline:
                raise ServiceError(
                    f"service {self.name!r}: no {wanted} after "
                    f"{self.acquire_timeout:g} s (last: {last})",
                    retryable=True,
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(1.0, delay * 1.6)

    # --- transport ---------------------------------------------------------------
    async def _send(
        self, method: str, url: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer) of one request to a server: the lean HTTP/1.1 client for
        `http://` servers (a request is a step of every task), else aiohttp. `timeout`
        None is the service's own (`timeout`, aiohttp's session default)."""
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
            wait = self.timeout if timeout is None else timeout
            answer = await lean.request(method, prefix + path, payload, _JSON, wait)
            status, raw = answer.status, answer.body
        else:
            session = self._live_session()
            extra: dict[str, Any] = {}
            if timeout is not None:
                extra["timeout"] = aiohttp.ClientTimeout(total=timeout)
            async with session.request(
                method, url + path, data=payload, headers=_JSON, **extra
            ) as resp:
                status, raw = resp.status, await resp.read()
        data = orjson.loads(raw) if raw else {}
        return status, data if isinstance(data, dict) else {}

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
