"""Run one sandboxed command to its end, whatever it does, and say what happened.

The command (bwrap's, or a plain interpreter's under `isolation: none`) is started with
the execution's rlimits; its stdout and stderr are read as they come, each up to the
output cap; a timer kills it at the wall limit. Killing bwrap kills the whole execution:
its init has a parent-death signal, and when a PID namespace's init dies the kernel kills
every process in it. The exit is collected with `wait4`; bwrap leaves its namespace's
init unreaped, so this process adopts it (a subreaper) and reaps it too: their resource
usage is the CPU seconds of every process the execution ran.

`classify` turns that into the execution's result: exactly one status of
ok, error, timeout, memory, output_limit or killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from peerflow.sandbox.isolation import Limits, rlimits_preexec

__all__ = ["Outcome", "classify", "run_command"]

# A plain subprocess's descendants may hold its pipes open after it exits; read that long.
_DRAIN_AFTER_EXIT = 0.5
_PR_SET_CHILD_SUBREAPER = 36

_libc: Any = None
with contextlib.suppress(OSError, AttributeError):
    _libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Outcome:
    """What one process did, before it is classified."""

    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    killed_for: str | None = None  # "wall" or "output": the server killed it
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


class _Capture(asyncio.Protocol):
    """One output pipe, kept up to `cap` bytes; `over` is called once it is exceeded."""

    def __init__(self, cap: int, over: Any, done: asyncio.Future[None]):
        self.cap, self.over, self.done = cap, over, done
        self.parts: list[bytes] = []
        self.size = 0
        self.exceeded = False
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.exceeded:
            return
        room = self.cap - self.size
        if len(data) > room:
            self.parts.append(data[:room])
            self.size = self.cap
            self.exceeded = True
            if self.transport is not None:
                self.transport.pause_reading()
            self.over()
            return
        self.parts.append(data)
        self.size += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def value(self) -> bytes:
        return b"".join(self.parts)


async def run_command(
    cmd: list[str],
    *,
    limits: Limits,
    stdin: bytes = b"",
    pass_fds: tuple[int, ...] = (),
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    bwrap: bool = True,
) -> Outcome:
    """Run `cmd` under `limits` and return its `Outcome`; never raises for what the
    command does (only OSError if it cannot be started at all).

    `bwrap` says `cmd` is bwrap's: it then reports its init's pid on a status pipe, and
    its command's death by signal N as exit code 128 + N.
    """
    loop = asyncio.get_running_loop()
    out = Outcome()
    status_r = status_w = -1
    if bwrap:
        _become_subreaper()
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        cmd = [cmd[0], "--json-status-fd", str(status_w), *cmd[1:]]
        pass_fds = (*pass_fds, status_w)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
            cwd=cwd,
            env=env if env is not None else {},
            start_new_session=True,
            preexec_fn=rlimits_preexec(limits),
        )
    except BaseException:
        if bwrap:
            os.close(status_r)
        raise
    finally:
        if bwrap:
            os.close(status_w)

    def kill(reason: str) -> None:
        if out.killed_for is None:
            out.killed_for = reason
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)

    cap = limits.output_bytes
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    captures = [
        _Capture(cap, lambda: kill("output"), loop.create_future()),
        _Capture(cap, lambda: kill("output"), loop.create_future()),
    ]
    transports: list[asyncio.BaseTransport] = []
    for pipe, capture in zip((proc.stdout, proc.stderr), captures, strict=True):
        transport, _ = await loop.connect_read_pipe(lambda c=capture: c, pipe)
        transports.append(transport)
    status_pipe: _Capture | None = None
    if bwrap:
        status_pipe = _Capture(1 << 16, lambda: None, loop.create_future())
        transport, _ = await loop.connect_read_pipe(
            lambda: status_pipe, os.fdopen(status_r, "rb", buffering=0)
        )
        transports.append(transport)
    if stdin:
        t_in, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, proc.stdin)
        t_in.write(stdin)
        t_in.close()  # closes once written (or when the command goes)
        transports.append(t_in)
    else:
        proc.stdin.close()
    timer = loop.call_later(limits.wall_s, kill, "wall")
    try:
        status, usage = await _wait(proc.pid)
    finally:
        timer.cancel()
    proc.returncode = status  # reaped here: Popen must not wait for it again
    out.cpu_s = usage.ru_utime + usage.ru_stime
    if status_pipe is not None:
        out.cpu_s += await _reap_init(status_pipe)
    out.wall_s = time.monotonic() - started
    # Under bwrap the pipes close as the namespace dies; a plain subprocess's children
    # may keep them: they are killed with its process group, and not waited for long.
    if not bwrap:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    await asyncio.wait([c.done for c in captures], timeout=_DRAIN_AFTER_EXIT)
    for transport in transports:
        transport.close()
    out.stdout, out.stderr = captures[0].value(), captures[1].value()
    out.truncated = captures[0].exceeded or captures[1].exceeded
    if os.WIFSIGNALED(status):
        out.signal = os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
        if bwrap and 128 < code <= 128 + 64:
            out.signal = code - 128
        else:
            out.exit_code = code
    return out


_subreaper = False


def _become_subreaper() -> None:
    """Adopt orphaned descendants: bwrap exits without reaping its PID namespace's init,
    which then becomes this process's child, so `_reap_init` can collect it and with it
    the CPU time of every process the execution ran."""
    global _subreaper
    if not _subreaper and _libc is not None:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _subreaper = True


async def _reap_init(status_pipe: _Capture) -> float:
    """Wait for bwrap's init (named on its status pipe) to end, reap it, and return the
    CPU seconds it and every process it reaped used; 0.0 if that cannot be known."""
    await asyncio.wait([status_pipe.done], timeout=_DRAIN_AFTER_EXIT)
    pid = None
    for line in status_pipe.value().splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            pid = json.loads(line).get("child-pid", pid)
    if not isinstance(pid, int) or not _subreaper:
        return 0.0  # not this process's child: its pid might be reused, leave it
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)  # bwrap is gone: so must be its sandbox (and is)
    try:
        _, usage = await asyncio.wait_for(_wait(pid), _DRAIN_AFTER_EXIT * 4)
    except (ChildProcessError, asyncio.TimeoutError, OSError):
        return 0.0
    return usage.ru_utime + usage.ru_stime


async def _wait(pid: int) -> tuple[int, Any]:
    """(wait status, rusage) of child `pid`, without blocking the loop: a pidfd where
    Linux has one, else a thread."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        _, status, usage = await asyncio.to_thread(os.wait4, pid, 0)
        return status, usage
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def classify(out: Outcome, limits: Limits) -> dict[str, Any]:
    """The execution's result, with one status:

    - `output_limit`: stdout or stderr went past `output_bytes` (it was killed there);
    - `timeout`: the wall limit, or the CPU limit (SIGXCPU, or SIGKILL at the hard limit);
    - `memory`: the address-space limit (Python's MemoryError, or a failed allocation);
    - `killed`: ended by any other signal;
    - `error`: a non-zero exit; `ok`: exit 0.
    """
    stderr = out.stderr.decode("utf-8", "replace")
    tail = stderr[-2000:]
    sig = out.signal
    if out.killed_for == "output":
        status = "output_limit"
    elif out.killed_for == "wall" or _cpu_limit(sig, out.cpu_s, limits):
        status = "timeout"
    elif (out.exit_code or sig) and _out_of_memory(tail):
        status = "memory"
    elif sig is not None:
        status = "killed"
    elif out.exit_code:
        status = "error"
    else:
        status = "ok"
    reason = {
        "output_limit": f"output beyond {limits.output_bytes} bytes",
        "timeout": f"cpu {limits.cpu_s:g} s / wall {limits.wall_s:g} s limit",
        "memory": f"memory limit ({limits.memory_mb} MB of address space)",
    }.get(status)
    result: dict[str, Any] = {
        "status": status,
        "exit_code": out.exit_code,
        "signal": _signal_name(sig) if sig else None,
        "stdout": out.stdout.decode("utf-8", "replace"),
        "stderr": stderr,
        "wall_s": round(out.wall_s, 4),
        "cpu_s": round(out.cpu_s, 4),
        "truncated": out.truncated,
    }
    if reason:
        result["reason"] = reason
    if out.notes:
        result["notes"] = list(out.notes)
    return result


def _cpu_limit(sig: int | None, cpu_s: float, limits: Limits) -> bool:
    """Killed for the CPU limit: SIGXCPU at the soft limit, SIGKILL at the hard one."""
    return sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.cpu_s - 0.05)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def _out_of_memory(stderr_tail: str) -> bool:
    return any(
        mark in stderr_tail
        for mark in ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
    )
