"""The run's code sandbox: a pool of sandbox servers, and their client.

`kind: sandbox` runs untrusted code (what a model wrote) under isolation, on
`peerflow.sandbox.server` processes: `replicas` servers this service launches and
supervises (or `urls` of servers someone else runs; on Ray, replicas placed by
`resources` and found through the run's registry: `peerflow.services.replicas`, shared
with the tool-environment service). Each server runs at most `max_concurrent` executions
at once:

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
import logging
import random
import secrets
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from peerflow.services.base import ServiceError
from peerflow.services.replicas import ServerPool

__all__ = ["SandboxService", "SessionLost"]

log = logging.getLogger(__name__)

_DEFAULT_WALL = 20.0  # the server's default wall limit (peerflow.sandbox.isolation.Limits)


class SessionLost(ServiceError):
    """The server holding a session died, restarted or expired it: that task cannot go on."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class SandboxService(ServerPool):
    """See the module docstring. `call(request)` is `run(**request)`."""

    server_label = "sandbox server"
    owner_path = "/sessions"
    client_timeout = 30.0

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
        super().__init__(
            name,
            urls=urls,
            acquire_timeout=acquire_timeout,
            timeout=timeout,
            startup_timeout=startup_timeout,
            max_connections=max_connections,
            registry=registry,
            host=host,
        )
        self.replicas = replicas
        self.max_concurrent = max_concurrent
        self.max_sessions = max_sessions
        self.session_ttl = session_ttl
        self.isolation_mode = isolation
        self.bwrap = bwrap
        self.python = python
        self.ro_paths = list(ro_paths or ())
        self.limits = {k: v for k, v in (limits or {}).items() if v is not None}
        # The run's sessions: what the run's end removes at once, whatever a task left.
        self.owner = owner or f"run-{secrets.token_hex(6)}"
        self.isolation: dict[str, str] = {}  # endpoint -> the isolation it reported
        self.statuses: Counter[str] = Counter()
        self.sandbox_s = 0.0
        self.waits = 0  # waits because every server was full
        self.caps: dict[str, int] = {}  # endpoint -> its max_concurrent, as it reported
        self.inflight: Counter[str] = Counter()  # endpoint -> this client's runs there
        self._freed: asyncio.Future[None] | None = None  # set when a run of ours ends

    # --- lifecycle -------------------------------------------------------
    @property
    def server_count(self) -> int:
        return self.replicas

    async def _started(self) -> None:
        await self._announce()

    async def _give_back(self) -> None:
        await self._close_held()

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
        return await self._claim(
            "/sessions", {"owner": self.owner}, wanted="sandbox session free", timeout=30.0
        )

    async def close_session(self, handle: dict[str, str]) -> bool:
        """Remove the session's working directory; False if the server no longer had it."""
        self.held.pop(handle["id"], None)
        try:
            url, path = handle["url"], f"/sessions/{handle['id']}"
            _, data = await self._send("DELETE", url, path, timeout=30.0)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return False
        return bool(data.get("released"))

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
