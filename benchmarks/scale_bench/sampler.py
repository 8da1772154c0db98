"""A thread of the driver process that records the run once per interval.

Each sample is a plain dict (JSON as is) of cumulative counters and levels; rates are
taken later, between samples (`analysis`), so a late sample only widens an interval and
loses nothing. Per sample:

- `t`: seconds since the sampler started (monotonic);
- `rss`, `fds`, `cpu_driver`: this process's resident set, open descriptors, CPU seconds;
- `in_flight`, `finished`, `steps`: from the run's Prometheus export (tasks admitted and
  not finished, records written, agent steps of finished tasks); None before it serves;
- `cpu_sims`: CPU seconds of every simulator replica seen so far (a replica that exited
  keeps its last reading, so the sum never goes back);
- `run_driver`, `wait_driver`: seconds peerflow's loop thread spent on a CPU and runnable
  but waiting for one (/proc/self/schedstat); `wait_sims` the latter for the simulators'
  threads, kept the same way: waiting is starvation by other processes;
- `machine`: (busy, total) jiffies of the whole machine, whoever used them;
- `sims`: port -> that replica's `/stats` counters (`measured_at`, `busy_seconds`,
  `seq_seconds`, `completed`, `running`, `waiting`, `completion_tokens`);
- `gc_full`, `gc_pause`: full garbage collections of this process so far and the seconds
  they took (`GcWatch`; each one stops the event loop);
- `sampler_cpu`: the CPU this thread itself has used, to show what sampling costs.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import threading
import time
from typing import Any

from scale_bench import probe

SIM_FIELDS = (
    "measured_at",
    "busy_seconds",
    "seq_seconds",
    "completed",
    "running",
    "waiting",
    "completion_tokens",
)


class Sampler(threading.Thread):
    """Samples every `interval` seconds until `stop()`; the samples are in `self.samples`."""

    def __init__(
        self, metrics_port: int, replicas: int, interval: float = 1.0, log_every: float = 0.0
    ):
        super().__init__(name="scale-bench-sampler", daemon=True)
        self.interval = interval
        self.log_every = log_every  # seconds between progress lines on stderr (0: none)
        self._logged = 0.0
        self.replicas = replicas
        self.metrics = probe.Getter("127.0.0.1", metrics_port)
        self.samples: list[dict[str, Any]] = []
        self.sims: dict[int, probe.Getter] = {}  # pid -> a connection to its /stats
        self.ports: dict[int, int] = {}
        self._sim_cpu: dict[int, float] = {}
        self._sim_wait: dict[int, float] = {}
        self._halt = threading.Event()
        self.t0 = time.monotonic()
        self.gc = GcWatch(self.t0)

    def run(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.log_every and self.samples[-1]["t"] - self._logged >= self.log_every:
                self._logged = self.samples[-1]["t"]
                self._log(self.samples[-1])
            if self._halt.wait(self.interval):
                return

    def start(self) -> None:
        self.gc.install()
        super().start()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.gc.remove()
        self.metrics.close()
        for getter in self.sims.values():
            getter.close()

    @staticmethod
    def _log(s: dict[str, Any]) -> None:
        running = sum(x.get("running", 0) for x in s["sims"].values())
        print(
            f"  [{s['t']:5.0f} s] in flight {s['in_flight']}, finished {s['finished']}, "
            f"running in {len(s['sims'])} sims {running:,}, RSS {s['rss'] / 2**30:.2f} GiB, "
            f"fds {s['fds']:,}",
            file=sys.stderr,
            flush=True,
        )

    def sample(self) -> dict[str, Any]:
        # The local counters first, together with `t`: the HTTP polls after them can wait
        # for the GIL (a long garbage collection holds it), which must not skew the rates.
        t = time.monotonic() - self.t0
        sched_self = probe.sched_seconds()
        local = {
            "t": t,
            "rss": probe.rss_bytes(),
            "fds": probe.open_fds(),
            "cpu_driver": probe.cpu_seconds(),
            "run_driver": None if sched_self is None else sched_self[0],
            "wait_driver": None if sched_self is None else sched_self[1],
            "machine": probe.machine_jiffies(),
            "gc_full": self.gc.count,
            "gc_pause": self.gc.pause,
        }
        if len(self.sims) < self.replicas:
            for pid, port in probe.sim_children().items():
                if pid not in self.sims:
                    self.sims[pid] = probe.Getter("127.0.0.1", port)
                    self.ports[pid] = port
        alive = []
        for pid in self.sims:
            cpu = probe.cpu_seconds(pid)
            if cpu is not None:
                alive.append(pid)
                self._sim_cpu[pid] = cpu
                sched = probe.sched_seconds(pid)
                if sched is not None:
                    self._sim_wait[pid] = sched[1]
        local["cpu_sims"] = sum(self._sim_cpu.values())
        local["wait_sims"] = sum(self._sim_wait.values())
        sims: dict[str, dict[str, float]] = {}
        for pid in alive:
            body = self.sims[pid].get("/stats")
            if body is not None:
                stats = json.loads(body)
                sims[str(self.ports[pid])] = {k: stats[k] for k in SIM_FIELDS if k in stats}
        prom: dict[str, float] = {}
        text = self.metrics.get("/metrics")
        if text is not None:
            prom = probe.parse_prometheus(text.decode())
        in_flight = prom.get("peerflow_in_flight_tasks")
        return {
            **local,
            "in_flight": None if in_flight is None else int(in_flight),
            "finished": int(prom.get("peerflow_tasks_finished_total", 0)) if prom else None,
            "steps": int(prom.get("peerflow_steps_total", 0)) if prom else None,
            "sims": sims,
            "sampler_cpu": time.thread_time(),
        }


class GcWatch:
    """Python's full (generation 2) garbage collections in this process: when, how long.

    A full collection walks every tracked object while holding the GIL, so with tens of
    thousands of tasks' histories alive it stops the event loop for as long as it takes.
    Installed as a `gc.callbacks` hook; younger generations are only counted past.
    """

    def __init__(self, t0: float):
        self.t0 = t0
        self.events: list[tuple[float, float, int]] = []  # (start, seconds, objects collected)
        self.count = 0
        self.pause = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        now = time.monotonic()
        if phase == "start":
            self._start = now
            return
        took = now - self._start
        self.events.append((self._start - self.t0, took, info["collected"]))
        self.count += 1
        self.pause += took

    def install(self) -> None:
        gc.callbacks.append(self)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)
