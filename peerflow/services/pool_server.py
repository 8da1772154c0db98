"""What the environment server and the sandbox server share: an aiohttp JSON server that
holds a bounded pool of things for its clients.

`peerflow.envs.server` holds environments and `peerflow.sandbox.server` execution slots
and sessions; their clients are `peerflow.services.replicas.ServerPool`s. Both speak the
same protocol around what they hold, so it is written once here:

- JSON in (`read_json`: 400 for a body that is not a JSON object) and out (`error`:
  `{"error": ..., **more}` with a status).
- At the cap a request is answered 503 with `Retry-After` (`at_capacity`): the client
  waits and tries again, or another server, and never fails a task for it.
- Ids are `{boot}-{n}` (`BootIds`), the boot id new at each start: a server restarted
  after a crash holds none of the old ids and says so (`lost`: 404 with `lost: true`),
  so the client can tell a lost holding from one released or expired.
- Holdings idle past a ttl are reclaimed in the background (`start_reaper`), so a client
  killed before it could release leaks nothing for long; a run's owner releases all of
  its holdings at once (`release_by_owner`).
- `GET /health` (`health`: `ok` and the server's state) and `GET /stats` (`stats`: the
  state and the counters).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = [
    "BootIds",
    "at_capacity",
    "error",
    "health",
    "read_json",
    "release_by_owner",
    "start_reaper",
    "stats",
]


class BootIds:
    """The ids of what one server process holds: `{boot}-{n}`, `boot` random at each start."""

    def __init__(self) -> None:
        self.boot = secrets.token_hex(4)  # a restarted server holds none of the old ids
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self.boot}-{next(self._count)}"

    def lost(self, noun: str, nouns: str, item_id: str, otherwise: str) -> web.Response:
        """404 (with `lost: true`) for an id this server does not hold, saying why: one of
        an earlier boot was lost with its server; one of this boot is `otherwise`."""
        if not item_id.startswith(self.boot + "-"):
            why = f"this server was restarted since (its {nouns} were lost)"
        else:
            why = otherwise
        return error(404, f"no {noun} {item_id!r} here: {why}", lost=True)


async def read_json(request: web.Request, *, empty: bool = False) -> dict[str, Any]:
    """The request's JSON object; with `empty`, a request without a body is `{}`."""
    if empty and not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def error(status: int, text: str, **more: Any) -> web.Response:
    return web.json_response({"error": text, **more}, status=status)


def at_capacity(what: str, retry_after: str, **more: Any) -> web.Response:
    """503 "at capacity ({what})" with `Retry-After`: the client tries again soon."""
    return web.json_response(
        {"error": f"at capacity ({what})", **more},
        status=503,
        headers={"Retry-After": retry_after},
    )


def start_reaper(
    app: web.Application, ttl: Callable[[], float], expire: Callable[[float], Awaitable[None]]
) -> None:
    """Once `app` starts, call `expire(cutoff)` every quarter of `ttl()` (0.05 to 5 s): the
    holdings last used before `cutoff` (a `time.monotonic()`) are to go. The task is
    `app["reaper"]`."""

    async def start(app: web.Application) -> None:
        async def reap() -> None:
            while True:
                await asyncio.sleep(max(0.05, min(ttl() / 4, 5.0)))
                await expire(time.monotonic() - ttl())

        app["reaper"] = asyncio.ensure_future(reap())

    app.on_startup.append(start)


async def release_by_owner(
    request: web.Request, release: Callable[[str], Awaitable[int]]
) -> web.Response:
    """`DELETE ...?owner=`: `release(owner)` gives back all that owner holds ->
    `{released: n}`; 400 without an owner."""
    owner = request.query.get("owner")
    if not owner:
        return error(400, "give ?owner=")
    return web.json_response({"released": await release(owner)})


def health(state: dict[str, Any]) -> web.Response:
    return web.json_response({"ok": True, **state})


def stats(state: dict[str, Any], counters: dict[str, Any]) -> web.Response:
    """The state and the counters (floats to 3 decimals)."""
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in counters.items()}
    return web.json_response({**state, **rounded})
