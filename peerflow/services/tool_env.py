"""The run's tool-environment service: a pool of environment servers, and their client.

Each task holds one environment (`peerflow.envs.server`) from its first step to its end.
The pool is `servers` processes this service launches (or `urls` of servers someone
else runs; on Ray, replicas found through the run's registry: `peerflow.services.replicas`,
shared with the sandbox service), each holding at most `max_envs` environments:

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
import sys
from typing import Any

import aiohttp

from peerflow.services.base import ServiceError
from peerflow.services.replicas import ServerPool

__all__ = ["EnvironmentLost", "ToolEnvService", "drain_releases", "release_soon"]


class EnvironmentLost(ServiceError):
    """The server holding a task's environment died or restarted: that task cannot go on."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class ToolEnvService(ServerPool):
    """See the module docstring. `call` is not used: agents call the methods below."""

    server_label = "environment server"
    owner_path = "/envs"

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
        self.domain = domain
        self.servers = servers
        self.max_envs = max_envs
        self.lease_ttl = lease_ttl
        self.call_latency = call_latency
        self.call_cpu = call_cpu
        self.owner = owner or ""  # the run (its output): what a run's end releases at once

    # --- lifecycle -------------------------------------------------------
    @property
    def server_count(self) -> int:
        return self.servers

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "peerflow.envs.server", "--domain", self.domain]
        cmd += ["--host", self.host, "--port", str(port), "--max-envs", str(self.max_envs)]
        cmd += ["--lease-ttl", str(self.lease_ttl)]
        cmd += ["--call-latency", str(self.call_latency), "--call-cpu", str(self.call_cpu)]
        return cmd

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
        await self._stop_supervisor()
        await drain_releases()
        await super().stop()

    async def _give_back(self) -> None:
        await self._release_held()

    async def call(self, request: Any, *, key: str | None = None) -> Any:
        raise ServiceError(
            f"service {self.name!r} is a tool environment: use the `environment` and "
            "`env_reward` agents, not an LLM role",
            retryable=False,
        )

    # --- environments ----------------------------------------------------
    async def acquire(self, task: dict[str, Any], task_id: str) -> dict[str, str]:
        """A fresh environment for `task`; waits (with back-off) while every server is full."""
        return await self._claim(
            "/envs",
            {"task": task, "task_id": task_id, "owner": self.owner},
            wanted=f"environment free for task {task_id!r}",
            bad_request=f"environment for task {task_id!r}",  # its initial state is wrong
        )

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

    async def _delete(self, url: str, env_id: str) -> bool:
        try:
            _, data = await self._send("DELETE", url, f"/envs/{env_id}")
            return bool(data.get("released"))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return False

    async def tools(self) -> dict[str, list[dict[str, Any]]] | None:
        for url in self.endpoints:
            found = await self._get(url, "/tools")
            if found is not None:
                return found
        return None

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
