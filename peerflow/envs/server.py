"""The tool-environment server: isolated environments of one domain, over HTTP.

One process serves up to `max_envs` live environments, each held by one task from
`acquire` to `release`. Beyond the cap, `acquire` answers 503 with `Retry-After`: the
client waits and tries again (or another server); it never fails a task for it. An
environment idle for `lease_ttl` seconds is reclaimed, so a task whose process was
killed before it could release leaks nothing for long.

Endpoints (JSON bodies):

- `POST /envs` `{task, task_id, owner}`: a fresh environment with the task's initial
  actions run -> `{id, boot}`; 400 if an initial action fails, 503 at the cap. `owner`
  names the run (its output), so that `DELETE /envs?owner=...` can release at once what
  a run, or a killed one before it, left.
- `POST /envs/{id}/call` `{side, name, arguments}` -> `{content, is_error}`; 404 for an
  environment this server does not hold (released, expired, or the server restarted).
- `POST /reward` `{task, calls, assistant_messages, termination, env?}` -> the reward
  (`peerflow.envs.reward.evaluate`); stateless, so any server can score any task.
- `DELETE /envs/{id}` -> `{released}`.
- `GET /tools` (both sides' OpenAI schemas), `GET /policy`, `GET /health`, `GET /stats`.

`call_latency` and `call_cpu` add a per-call cost (a sleep, and a busy loop holding this
server's single thread), to measure a workload whose tools cost what real ones do.

What it shares with the sandbox server (503 at the cap, boot-prefixed ids, the idle
reaper, owner release, `/health` and `/stats`) is `peerflow.services.pool_server`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from aiohttp import web

from peerflow.envs.domain import Domain, DomainError, Environment, load_domain
from peerflow.envs.reward import evaluate
from peerflow.services import pool_server
from peerflow.services.pool_server import error, read_json

__all__ = ["EnvServer", "main"]


class _Held:
    __slots__ = ("env", "owner", "task", "task_id", "used")

    def __init__(self, env: Environment, task: dict[str, Any], task_id: str, owner: str):
        self.env, self.task, self.task_id, self.owner = env, task, task_id, owner
        self.used = time.monotonic()


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class EnvServer:
    """The environments of one process, and the HTTP handlers that use them."""

    def __init__(
        self,
        domain: Domain,
        *,
        max_envs: int = 256,
        lease_ttl: float = 900.0,
        call_latency: float = 0.0,
        call_cpu: float = 0.0,
    ):
        self.domain = domain
        self.max_envs = max_envs
        self.lease_ttl = lease_ttl
        self.call_latency = call_latency
        self.call_cpu = call_cpu
        self._ids = pool_server.BootIds()
        self.boot = self._ids.boot  # a restarted server holds none of the old ids
        self.envs: dict[str, _Held] = {}
        self.counters = {
            "acquired": 0,
            "released": 0,
            "expired": 0,
            "refused": 0,
            "calls": 0,
            "call_errors": 0,
            "rewards": 0,
            "peak": 0,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_domain_bugs])
        app.router.add_post("/envs", self.acquire)
        app.router.add_post("/envs/{id}/call", self.call)
        app.router.add_delete("/envs/{id}", self.release)
        app.router.add_delete("/envs", self.release_owner)
        app.router.add_post("/reward", self.reward)
        app.router.add_get("/tools", self.tools)
        app.router.add_get("/policy", self.policy)
        app.router.add_get("/health", self.health)
        app.router.add_get("/stats", self.stats)
        pool_server.start_reaper(app, lambda: self.lease_ttl, self._expire)
        return app

    async def _expire(self, cutoff: float) -> None:
        """Reclaim the environments idle since before `cutoff` (their lease ran out)."""
        for env_id in [k for k, h in self.envs.items() if h.used < cutoff]:
            del self.envs[env_id]
            self.counters["expired"] += 1

    # --- handlers --------------------------------------------------------
    async def acquire(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        task = body.get("task") or {}
        if not isinstance(task, dict):
            return error(400, "'task' must be an object")
        if len(self.envs) >= self.max_envs:
            self.counters["refused"] += 1
            what = f"{self.max_envs} environments"
            return pool_server.at_capacity(what, "0.1", live=len(self.envs))
        env = self.domain.environment()
        try:
            env.initialize((task.get("initial_state") or {}).get("initialization_actions"))
        except DomainError as exc:
            return error(400, str(exc))
        env_id = self._ids.new()
        task_id = str(body.get("task_id") or task.get("id") or "")
        self.envs[env_id] = _Held(env, task, task_id, str(body.get("owner") or ""))
        self.counters["acquired"] += 1
        self.counters["peak"] = max(self.counters["peak"], len(self.envs))
        return web.json_response({"id": env_id, "boot": self.boot})

    async def call(self, request: web.Request) -> web.Response:
        held = self._held(request)
        if held is None:
            return self._unknown(request)
        body = await read_json(request)
        if self.call_latency:
            await asyncio.sleep(self.call_latency)
        if self.call_cpu:
            _busy(self.call_cpu)
        held.used = time.monotonic()
        outcome = held.env.call(
            str(body.get("side") or "assistant"), str(body.get("name") or ""), body.get("arguments")
        )
        self.counters["calls"] += 1
        self.counters["call_errors"] += outcome.is_error
        return web.json_response({"content": outcome.content, "is_error": outcome.is_error})

    async def release_owner(self, request: web.Request) -> web.Response:
        return await pool_server.release_by_owner(request, self._release_owner)

    async def _release_owner(self, owner: str) -> int:
        mine = [k for k, h in self.envs.items() if h.owner == owner]
        for env_id in mine:
            del self.envs[env_id]
        self.counters["released"] += len(mine)
        return len(mine)

    async def release(self, request: web.Request) -> web.Response:
        held = self.envs.pop(request.match_info["id"], None)
        if held is not None:
            self.counters["released"] += 1
        return web.json_response({"released": held is not None})

    async def reward(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        task = body.get("task")
        if not isinstance(task, dict):
            return error(400, "'task' must be an object")
        live = self.envs.get(str(body.get("env") or ""))
        try:
            out = evaluate(
                self.domain,
                task,
                list(body.get("calls") or ()),
                [str(t) for t in body.get("assistant_messages") or ()],
                str(body.get("termination") or ""),
                live=live.env if live is not None else None,
            )
        except DomainError as exc:
            return error(400, str(exc))
        self.counters["rewards"] += 1
        return web.json_response(out)

    async def tools(self, request: web.Request) -> web.Response:
        return web.json_response({side: self.domain.schemas(side) for side in self.domain.tools})

    async def policy(self, request: web.Request) -> web.Response:
        return web.json_response({"policy": self.domain.policy})

    async def health(self, request: web.Request) -> web.Response:
        return pool_server.health(self._state())

    async def stats(self, request: web.Request) -> web.Response:
        return pool_server.stats(self._state(), self.counters)

    def _state(self) -> dict[str, Any]:
        return {"boot": self.boot, "live": len(self.envs), "cap": self.max_envs}

    # --- helpers ---------------------------------------------------------
    def _held(self, request: web.Request) -> _Held | None:
        return self.envs.get(request.match_info["id"])

    def _unknown(self, request: web.Request) -> web.Response:
        env_id = request.match_info["id"]
        why = "it was released, or expired after its lease"
        return self._ids.lost("environment", "environments", env_id, why)


@web.middleware
async def _domain_bugs(request: web.Request, handler: Any) -> web.StreamResponse:
    """A bug in the domain's code (`sync`, an assertion) answers 500 saying what raised."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        return error(500, f"the domain's code raised {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m peerflow.envs.server", description="Serve a tool-environment domain."
    )
    parser.add_argument("--domain", required=True, help="the domain folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--max-envs", type=int, default=256, help="live environments at most")
    parser.add_argument("--lease-ttl", type=float, default=900.0, help="idle seconds to reclaim")
    parser.add_argument("--call-latency", type=float, default=0.0, help="seconds added per call")
    parser.add_argument("--call-cpu", type=float, default=0.0, help="CPU seconds spent per call")
    args = parser.parse_args(argv)
    server = EnvServer(
        load_domain(args.domain),
        max_envs=args.max_envs,
        lease_ttl=args.lease_ttl,
        call_latency=args.call_latency,
        call_cpu=args.call_cpu,
    )
    print(f"peerflow env server pid {os.getpid()} on {args.host}:{args.port}", flush=True)
    web.run_app(server.app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
