"""The run's code sandbox: a pool of sandbox servers, and their client.

`kind: sandbox` runs untrusted code (what a model wrote) under isolation, on
`peerflow.sandbox.server` processes: `replicas` servers this service launches and
supervises (or `urls` of servers someone else runs; on Ray, replicas placed by
`resources` and found through the run's registry). Each server runs at most
`max_concurrent` executions at once:

- `run` tries the servers in turn, round robin; when all are full it waits with back-off
  and tries again, until `acquire_timeout`. A full pool slows tasks down; it never fails
  them. What the code does (an error, a timeout, a memory or output overrun, an escape
  attempt) is the result's `status`, never an exception.
- `open_session` gives a handle `{url, id, boot}` to a working directory kept between
  runs on one server (affinity): `run(..., session=handle)` runs there, and
  `close_session` removes it. A server that died or restarted lost its sessions:
  running in one raises `SessionLost` (transient: a re-run of the row starts afresh).
  Sessions left open are removed by the server after `session_ttl` idle seconds, and at
  the end of the run by owner.
- The servers state the isolation in force (`bwrap`, or `none (UNSAFE)` when the config
  asks for no isolation); every result carries it, and so does the run summary. A
  server that cannot isolate answers every run with `status: refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from peerflow.services.base import ServiceError
from peerflow.services.http1 import Pool, split_http_url

__all__ = ["SandboxService", "SessionLost"]

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}
_DEFAULT_WALL = 20.0  # the server's default wall limit (peerflow.sandbox.isolation.Limits)
SUPERVISE_INTERVAL = 0.1


class SessionLost(ServiceError):
    """The server holding a session died, restarted or expired it: that task cannot go on."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class SandboxService:
    """See the module docstring. `call(request)` is `run(**request)`."""

    probe_path = "/health"  # what the Ray registry probes
    supervise = True  # replace a launched server that dies (a Ray replica does it instead)

    def __init__(
        self,
        name: str,
        *,
        replicas: int = 1,
        urls: list[str] | None = None,
        max_concurrent: int = 4,
        max_sessions: int = 256,
        session_ttl: float = 600.0,
        isolation: str = "bwrap",
        bwrap: str | None = None,
        python: str | None = None,
        ro_paths: list[str] | None = None,
        limits: dict[str, float] | None = None,
        acquire_timeout: float = 600.0,
        timeout: float = 60.0,
        startup_timeout: float = 60.0,
        max_connections: int = 256,
        registry: str | None = None,
        owner: str | None = None,
        host: str = "127.0.0.1",
    ):
        self.name = name
        self.replicas = replicas
        self.urls = list(urls or ())
        self.max_concurrent = max_concurrent
        self.max_sessions = max_sessions
        self.session_ttl = session_ttl
        self.isolation_mode = isolation
        self.bwrap = bwrap
        self.python = python
        self.ro_paths = list(ro_paths or ())
        self.limits = {k: v for k, v in (limits or {}).items() if v is not None}
        self.acquire_timeout = acquire_timeout
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.max_connections = max_connections
        self.host = host
        self.registry = registry  # Ray: the servers are cluster replicas it knows
        # The run's sessions: what the run's end removes at once, whatever a task left.
        self.owner = owner or f"run-{secrets.token_hex(6)}"
        self.reclaimed_at_start = 0
        self.endpoints: list[str] = list(self.urls)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.log_paths: list[Path] = []
        self.log_dir: Path | None = None
        self.restarts = 0
        self.isolation: dict[str, str] = {}  # endpoint -> the isolation it reported
        self.held: dict[str, str] = {}  # session id -> url, opened here and not yet closed
        self.statuses: Counter[str] = Counter()
        self.sandbox_s = 0.0
        self.waits = 0  # waits because every server was full
        self.caps: dict[str, int] = {}  # endpoint -> its max_concurrent, as it reported
        self.inflight: Counter[str] = Counter()  # endpoint -> this client's runs there
        self._freed: asyncio.Future[None] | None = None  # set when a run of ours ends
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
            timeout=aiohttp.ClientTimeout(total=30.0, connect=10.0),
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.max_connections),
        )
        if self.registry is not None:
            await self._refresh()
            self._supervisor = asyncio.ensure_future(self._follow_registry())
        elif self.managed:
            await self._launch_all()
        await self._announce()

    async def _launch_all(self) -> None:
        from peerflow.services.managed import _free_ports, _reap

        self.log_dir = Path(tempfile.mkdtemp(prefix=f"peerflow-{self.name}-"))
        self.ports = _free_ports(self.replicas, self.host)
        self._finalizer = weakref.finalize(self, _reap, self.processes)
        try:
            for i in range(self.replicas):
                self.log_paths.append(self.log_dir / f"server-{i}.log")
                self.processes.append(self._launch(i))
            self.endpoints = [self._url(port) for port in self.ports]
            await asyncio.gather(*(self._wait_ready(i) for i in range(self.replicas)))
        except BaseException:
            await self.stop()
            raise
        if self.supervise:
            self._supervisor = asyncio.ensure_future(self._supervise())

    async def _announce(self) -> None:
        """Log the isolation each server has in force: loudly when it is not isolating."""
        for url in self.endpoints:
            health = await self._get(url, "/health")
            if not health:
                continue
            self.isolation[url] = str(health.get("isolation"))
            if isinstance(health.get("cap"), int):
                self.caps[url] = health["cap"]
            if health.get("refused"):
                log.error(
                    "%s: sandbox server %s REFUSES to run code: %s",
                    self.name,
                    url,
                    health["refused"],
                )
            elif not health.get("safe"):
                log.warning(
                    "%s: sandbox server %s runs code UNSAFELY (isolation: none)", self.name, url
                )
            else:
                log.info(
                    "%s: sandbox server %s: %s", self.name, url, health.get("isolation_detail")
                )

    def command(self, port: int) -> list[str]:
        """The command line of one sandbox server."""
        import json

        cmd = [sys.executable, "-m", "peerflow.sandbox.server", "--host", self.host]
        cmd += ["--port", str(port), "--max-concurrent", str(self.max_concurrent)]
        cmd += ["--max-sessions", str(self.max_sessions), "--session-ttl", str(self.session_ttl)]
        cmd += ["--isolation", self.isolation_mode, "--limits", json.dumps(self.limits)]
        if self.bwrap:
            cmd += ["--bwrap", self.bwrap]
        if self.python:
            cmd += ["--python", self.python]
        for path in self.ro_paths:
            cmd += ["--ro-path", path]
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
                    f"service {self.name!r}: cannot launch its sandbox server: {exc}",
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
                    f"service {self.name!r}: sandbox server {i} exited with code "
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
                    f"service {self.name!r}: sandbox server {i} did not answer {url} "
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
                    "%s: sandbox server %d (pid %d) exited with code %s; replacing it",
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

    async def stop(self) -> None:
        """Close the sessions this client still holds, then stop the servers it launched."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._session is not None:
            await self._close_held()
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
                    "%s: a sandbox server had crashed; logs kept in %s", self.name, self.log_dir
                )

    async def health(self) -> bool:
        results = await asyncio.gather(*(self._get(u, "/health") for u in self.endpoints))
        return any(r is not None for r in results)

    async def call(self, request: Any, *, key: str | None = None) -> dict[str, Any]:
        """`run(**request)`: `request` is `{code, language?, files?, stdin?, limits?}`."""
        if not isinstance(request, dict) or "code" not in request:
            raise ServiceError(
                f"service {self.name!r} is a code sandbox: call it with "
                "{'code': ..., 'files': ..., 'stdin': ..., 'limits': ...}",
                retryable=False,
            )
        return await self.run(**request)

    # --- executions ------------------------------------------------------
    async def run(
        self,
        code: str,
        *,
        language: str = "python",
        files: dict[str, str] | None = None,
        stdin: str = "",
        limits: dict[str, float] | None = None,
        session: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Run `code` isolated and return its result:
        `{status, exit_code, signal, stdout, stderr, wall_s, cpu_s, truncated, isolation}`
        (and `reason` for timeout, memory, output_limit and refused).

        `files` (relative name -> text) are put beside the code; `limits` lowers the
        server's limits (`cpu_s`, `wall_s`, `memory_mb`, `processes`, `open_files`,
        `file_size_mb`, `output_bytes`, `disk_mb`); `session` (from `open_session`) runs
        in that session's working directory. Waits while every server is busy; raises
        `ServiceError` only for a bad request (not retryable), no free slot within
        `acquire_timeout` (retryable), or a lost session (`SessionLost`).
        """
        body: dict[str, Any] = {"language": language, "code": code}
        if files:
            body["files"] = files
        if stdin:
            body["stdin"] = stdin
        if limits:
            body["limits"] = limits
        wall = float((limits or {}).get("wall_s") or self.limits.get("wall_s") or _DEFAULT_WALL)
        timeout = self.timeout + wall
        if session is not None:
            urls, path = [session["url"]], f"/sessions/{session['id']}/run"
        else:
            urls, path = None, "/run"
        deadline = time.monotonic() + self.acquire_timeout
        delay = 0.02
        self._turn += 1  # round robin: spreads each client's runs over the servers
        start = self._turn
        last = "no server answered"
        while True:
            order = urls or list(self.endpoints)
            order = order[start % len(order) :] + order[: start % len(order)] if order else []
            # Servers this client alone keeps full are not asked: it waits for one of its
            # own runs to end instead (503s remain for servers shared with other clients).
            free = [u for u in order if self.inflight[u] < self.caps.get(u, 1 << 30)]
            for url in free:
                self.inflight[url] += 1
                try:
                    status, data = await self._send("POST", url, path, body, timeout)
                except (asyncio.TimeoutError, TimeoutError) as exc:  # before OSError: it is one
                    raise ServiceError(
                        f"sandbox server {url} did not answer within {timeout:g} s",
                        retryable=True,
                    ) from exc
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    if session is not None:
                        self.held.pop(session["id"], None)
                        raise SessionLost(
                            f"session {session['id']} lost: the sandbox server at {url} "
                            f"crashed ({type(exc).__name__}: {exc})"
                        ) from exc
                    last = f"{url}: {type(exc).__name__}: {exc}"
                    continue
                finally:
                    self._release_slot(url)
                if status == 200:
                    self.statuses[str(data.get("status"))] += 1
                    self.sandbox_s += float(data.get("wall_s") or 0.0)
                    return data
                if status == 400:
                    raise ServiceError(f"sandbox: {data.get('error')}", retryable=False, status=400)
                if status == 404 and session is not None:
                    self.held.pop(session["id"], None)
                    raise SessionLost(f"session {session['id']} lost: {data.get('error')}")
                if status != 503:
                    raise ServiceError(
                        f"sandbox server {url}: {status} {data.get('error', data)}",
                        retryable=status >= 500,
                        status=status,
                    )
                last = f"{url}: {status} {data.get('error', '')}".strip()
            if time.monotonic() + delay > deadline:
                raise ServiceError(
                    f"service {self.name!r}: no sandbox slot free after "
                    f"{self.acquire_timeout:g} s (last: {last})",
                    retryable=True,
                )
            self.waits += 1
            if not free:  # all full of this client's runs: the first to end wakes it
                await asyncio.wait([self._freed_future()], timeout=deadline - time.monotonic())
                continue
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(0.25, delay * 1.6)  # executions are short: never sleep long

    def _freed_future(self) -> asyncio.Future[None]:
        if self._freed is None or self._freed.done():
            self._freed = asyncio.get_running_loop().create_future()
        return self._freed

    def _release_slot(self, url: str) -> None:
        self.inflight[url] -= 1
        if self._freed is not None and not self._freed.done():
            self._freed.set_result(None)

    # --- sessions --------------------------------------------------------
    async def open_session(self) -> dict[str, str]:
        """A working directory kept between runs -> handle `{url, id, boot}` (run with
        `run(..., session=handle)`, remove with `close_session`). Waits while every
        server holds its most sessions."""
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
                    status, body = await self._send(
                        "POST", url, "/sessions", {"owner": self.owner}, 30.0
                    )
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    last = f"{url}: {type(exc).__name__}: {exc}"
                    continue
                if status == 200:
                    self.held[body["id"]] = url
                    return {"url": url, "id": body["id"], "boot": body["boot"]}
                last = f"{url}: {status} {body.get('error', '')}".strip()
            if time.monotonic() + delay > deadline:
                raise ServiceError(
                    f"service {self.name!r}: no sandbox session free after "
                    f"{self.acquire_timeout:g} s (last: {last})",
                    retryable=True,
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(1.0, delay * 1.6)

    async def close_session(self, handle: dict[str, str]) -> bool:
        """Remove the session's working directory; False if the server no longer had it."""
        self.held.pop(handle["id"], None)
        try:
            _, data = await self._send("DELETE", handle["url"], f"/sessions/{handle['id']}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return False
        return bool(data.get("released"))

    async def release_owner(self) -> int:
        """Close every session of this run's owner on every server (what tasks left)."""

        async def one(url: str) -> int:
            try:
                session = self._live_session()
                async with session.delete(url + "/sessions", params={"owner": self.owner}) as r:
                    data = await r.json(content_type=None)
                    return int(data.get("released", 0)) if r.status == 200 else 0
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                return 0

        return sum(await asyncio.gather(*(one(u) for u in self.endpoints)))

    async def _close_held(self) -> None:
        held, self.held = list(self.held.items()), {}
        await asyncio.gather(
            *(self.close_session({"url": u, "id": i}) for i, u in held), return_exceptions=True
        )

    # --- accounts --------------------------------------------------------
    async def final_report(self) -> dict[str, Any]:
        """The servers' account at the end of the run, for the summary (after closing the
        sessions this run left): the isolation in force, executions by status, time."""
        leftover = len(self.held)
        await self._close_held()
        closed = await self.release_owner()
        found = [s for s in await self.server_stats() if s is not None]
        statuses = Counter[str]()
        for s in found:
            for key, value in s.items():
                if key.startswith("status_") and value:
                    statuses[key.removeprefix("status_")] += int(value)
        labels = sorted({str(s.get("isolation")) for s in found} | set(self.isolation.values()))
        return {
            "isolation": ", ".join(labels) or "unknown",
            "safe": bool(found) and all(s.get("safe") for s in found),
            "servers": len(self.endpoints),
            "answered": len(found),
            "runs": sum(int(s.get("runs", 0)) for s in found),
            "statuses": dict(statuses),
            "busy": sum(int(s.get("busy", 0)) for s in found),
            "peak_per_server": max((int(s.get("peak", 0)) for s in found), default=0),
            "sandbox_wall_s": round(sum(float(s.get("wall_s", 0.0)) for s in found), 3),
            "sandbox_cpu_s": round(sum(float(s.get("cpu_s", 0.0)) for s in found), 3),
            "sessions_opened": sum(int(s.get("sessions_opened", 0)) for s in found),
            "sessions_live": sum(int(s.get("sessions", 0)) for s in found),
            "sessions_expired": sum(int(s.get("sessions_expired", 0)) for s in found),
            "sessions_closed_at_end": leftover + closed,
            "reclaimed_at_start": self.reclaimed_at_start,
            "server_restarts": self.restarts,
        }

    async def server_stats(self) -> list[dict[str, Any] | None]:
        """Each server's `/stats`: isolation, running, counters by status, sessions."""
        return list(await asyncio.gather(*(self._get(u, "/stats") for u in self.endpoints)))

    def stats(self) -> dict[str, Any]:
        return {
            "endpoints": list(self.endpoints),
            "isolation": dict(self.isolation),
            "restarts": self.restarts,
            "held_sessions": len(self.held),
            "statuses": dict(self.statuses),
            "sandbox_s": round(self.sandbox_s, 3),
            "waits": self.waits,
            "pids": [p.pid for p in self.processes],
        }

    # --- transport -------------------------------------------------------
    async def _send(
        self, method: str, url: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer) of one request: the lean HTTP/1.1 client for `http://`
        servers, else aiohttp."""
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
            answer = await lean.request(method, prefix + path, payload, _JSON, timeout)
            status, raw = answer.status, answer.body
        else:
            session = self._live_session()
            async with session.request(
                method,
                url + path,
                data=payload,
                headers=_JSON,
                timeout=aiohttp.ClientTimeout(total=timeout),
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
