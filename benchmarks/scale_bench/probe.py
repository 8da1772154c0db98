"""Cheap readers for the sampler: /proc, the simulators' `/stats`, peerflow's Prometheus text.

Everything here is read from outside peerflow's code paths: the process table and the
kernel's counters, the simulators' own HTTP endpoint, and the run's Prometheus export
(`runtime.metrics_port`), which is the runtime's public way of saying how many tasks are
in flight. Each reader is a few system calls, so sampling once a second costs the driver
far less than 1% of a core (the sampler measures its own CPU to show it).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
SIM_MODULE = "peerflow.services.sim_llm"


def _status_kb(field: str, pid: int | str = "self") -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM) in bytes; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(field.encode() + b":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size now (VmRSS)."""
    return _status_kb("VmRSS", pid)


def peak_rss_bytes(pid: int | str = "self") -> int:
    """The kernel's high-water mark of the resident set (VmHWM): the true peak."""
    return _status_kb("VmHWM", pid)


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): field 3 onwards."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User plus system CPU of a process so far; None once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15)


def sched_seconds(pid: int | str = "self") -> tuple[float, float] | None:
    """(on a CPU, runnable but waiting for a CPU) seconds of the process's main thread.

    From /proc/<pid>/schedstat. The two together growing as fast as the clock mean the
    thread always had work; the waiting part is time other processes held the cores.
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            fields = f.read().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already inside user
    return total - idle, total


def open_fds() -> int:
    """File descriptors this process holds (sockets included)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def sim_children(parent: int | None = None) -> dict[int, int]:
    """Simulator processes started by `parent` (default: this process): pid -> port.

    peerflow starts each replica as `python -m peerflow.services.sim_llm --host H --port P`;
    the port is read from that command line, so nothing inside peerflow is reached into.
    """
    parent = os.getpid() if parent is None else parent
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[1]) != parent:
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if SIM_MODULE in args and "--port" in args:
            with contextlib.suppress(ValueError, IndexError):
                found[int(entry)] = int(args[args.index("--port") + 1])
    return found


class Getter:
    """GETs on one keep-alive connection to `host:port`; None (and a fresh one next time) on error.

    One connection per server for the whole run: the sampler then adds a fixed handful of
    file descriptors, not one per poll, to a process running at its descriptor limit.
    """

    def __init__(self, host: str, port: int, timeout: float = 2.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> bytes | None:
        for _ in range(2):  # a keep-alive connection the server dropped is retried once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                body = resp.read()
                return body if resp.status == 200 else None
            except (OSError, http.client.HTTPException):
                self.close()
        return None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> metric name -> value summed over its label sets."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, rest = line.rpartition(" ")
        if not name_labels:
            continue
        name = name_labels.split("{", 1)[0].strip()
        try:
            value = float(rest)
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for the run's metrics server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
