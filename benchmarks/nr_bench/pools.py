"""The two SIMULATED pools, a poller of their `/stats`, and CPU accounting.

Every design talks to the same already-running simulator processes, so their counters
(completion tokens, busy seconds, running-sequence seconds) are the one yardstick for all
designs. The poller runs in a thread of the benchmark's process and asks each replica for
`/stats` every `interval` seconds; a pool's idle fraction over a window is the replicas'
``1 - d(busy_seconds) / d(measured_at)``, averaged over the pool's replicas.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RULES = Path(__file__).resolve().parent / "rules.yaml"


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """One pool: how many replicas and the simulator's engine options for each."""

    name: str
    replicas: int
    options: dict[str, Any]


def pool_specs(time_scale: float, small: int, big: int) -> list[PoolSpec]:
    """The engine model, fixed before any design ran (see BENCHMARKS.md for the why).

    small ("3B" classifier): the simulator's default engine (6 ms a step + 0.04 ms per running
    sequence, 2 ms prefill per 1k prompt tokens); replies are scripted ("Yes"/"No", 1 token).
    big ("70B" scorer and question writer): the same engine shape at 5x every cost (a 70B
    model on four GPUs steps about five times slower than a 3B on one); sampled reply length
    median 64 tokens, sigma 0.5, so that tokens per processed page (~17) are near the
    paper's (378.6M tokens / 25M pages = 15).
    Every replica of a pool has the same seed: a reply depends only on its request, so every
    design gets the same replies and the same funnel.
    """
    common = {"time_scale": time_scale, "script": str(RULES), "max_num_seqs": 256}
    return [
        PoolSpec(
            "small",
            small,
            {
                **common,
                "step_base_ms": 6.0,
                "step_per_seq_ms": 0.04,
                "prefill_ms_per_1k": 2.0,
                "output_median": 1,
                "output_sigma": 0.0,
                "seed": 1,
            },
        ),
        PoolSpec(
            "big",
            big,
            {
                **common,
                "step_base_ms": 30.0,
                "step_per_seq_ms": 0.2,
                "prefill_ms_per_1k": 10.0,
                "output_median": 64,
                "output_sigma": 0.5,
                "seed": 2,
            },
        ),
    ]


def _drain(proc: subprocess.Popen[str]) -> None:
    """Keep reading a simulator's output after start-up, to its log file.

    A pipe nobody reads fills at 64 KB, and a replica that then logs (thousands of
    connections reset when a design is killed) blocks its event loop on the write for good.
    """
    log = Path(tempfile.gettempdir()) / f"peerflow-bench-sim-{proc.pid}.log"

    def copy(stream: Any) -> None:
        with log.open("a") as f:
            for line in iter(stream.readline, ""):
                f.write(line)
                f.flush()

    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            threading.Thread(target=copy, args=(stream,), daemon=True).start()


class Pools:
    """Simulator processes, started once for the whole benchmark and stopped at its end."""

    def __init__(self, specs: list[PoolSpec]):
        self.specs = specs
        self.procs: list[subprocess.Popen[str]] = []
        self.endpoints: dict[str, list[str]] = {}
        self.replicas: list[tuple[str, str]] = []  # (pool, host:port) in polling order

    def start(self) -> None:
        for spec in self.specs:
            urls = []
            for _ in range(spec.replicas):
                argv = [sys.executable, "-m", "peerflow.services.sim_llm", "--port", "0"]
                for key, value in spec.options.items():
                    argv += [f"--{key.replace('_', '-')}", str(value)]
                proc = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                self.procs.append(proc)
                line = proc.stdout.readline() if proc.stdout else ""
                if "listening on" not in line:
                    err = proc.stderr.read() if proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"simulator did not start: {line}{err}")
                _drain(proc)
                url = line.strip().rsplit(" ", 1)[-1]
                urls.append(url)
                self.replicas.append((spec.name, url.split("//", 1)[1].split("/", 1)[0]))
            self.endpoints[spec.name] = urls

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def service(self, name: str) -> dict[str, Any]:
        """The `services.<name>` section that points a design at this pool."""
        return {"kind": "openai", "model": "sim", "endpoints": self.endpoints[name]}


class Poller:
    """Polls every replica's /stats in a thread; `samples` are (local time, [stats...])."""

    def __init__(self, replicas: list[tuple[str, str]], interval: float = 0.5):
        self.replicas = replicas
        self.interval = interval
        self.samples: list[tuple[float, list[dict[str, Any]]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns = [http.client.HTTPConnection(hp, timeout=10) for _, hp in replicas]

    def poll(self) -> tuple[float, list[dict[str, Any]]]:
        out = []
        for i, conn in enumerate(self._conns):
            try:
                conn.request("GET", "/stats")
                out.append(json.loads(conn.getresponse().read()))
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conns[i] = conn = http.client.HTTPConnection(self.replicas[i][1], timeout=10)
                conn.request("GET", "/stats")
                out.append(json.loads(conn.getresponse().read()))
        return time.monotonic(), out

    def start(self) -> None:
        self.samples = [self.poll()]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nr-bench-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.poll())

    def stop(self) -> list[tuple[float, list[dict[str, Any]]]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(self.poll())
        return self.samples


# ----------------------------------------------------------------------------- CPU


def _proc_jiffies(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])
    return total - idle, total


class CpuMeter:
    """CPU use over a design's run: this process, the simulators, and the whole machine."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, sim_pids: list[int]):
        self.sim_pids = sim_pids

    def _read(self) -> tuple[float, int, int, int, int]:
        busy, total = machine_jiffies()
        me = _proc_jiffies(os.getpid())
        sims = sum(_proc_jiffies(p) for p in self.sim_pids)
        return time.monotonic(), me, sims, busy, total

    def start(self) -> None:
        self.t0 = self._read()

    def stop(self) -> dict[str, float]:
        t1 = self._read()
        wall = max(t1[0] - self.t0[0], 1e-9)
        return {
            "driver_cpu": (t1[1] - self.t0[1]) / self.TICK / wall,  # cores
            "sims_cpu": (t1[2] - self.t0[2]) / self.TICK / wall,
            "machine_busy": (t1[3] - self.t0[3]) / max(t1[4] - self.t0[4], 1),  # share of all
            "cores": os.cpu_count() or 1,
        }
