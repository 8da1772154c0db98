"""One sweep point: a design at a concurrency, time-boxed, measured from the outside.

Each design runs as its own process against the same simulator replicas (started once
for the sweep). A point runs until `warmup + window` seconds after its first LLM
request, then the process is stopped (peerflow with SIGINT, its own Ctrl-C path; the
thread pool killed, its records being already on disk). Figures are over the window:

- completion tokens/s and LLM requests/s: the simulators' `/stats` counters (the one
  yardstick for both designs), and how busy the replicas were (idle share, sequences
  running per replica);
- trajectories/min: conversations whose record was finished inside the window;
- CPU: the design's process (jiffies from /proc, in cores), and with the env servers
  (peerflow's tools run there; the baseline's in its own process), and the machine;
- peak threads of the design's process, and conversations in flight (peerflow: live
  environments on the env servers; the thread pool: its busy threads).

Means per trajectory (LLM calls, tool calls, reward) are over every record the point
wrote; rewards are compared per task id across designs (`report.reward_check`).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nr_bench import measure
from nr_bench.pools import Poller, Pools, _proc_jiffies, machine_jiffies

from desk_bench import peerflow_side
from desk_bench.workload import REPO, Workload

TICK = os.sysconf("SC_CLK_TCK")


class SimPoller(Poller):
    """nr_bench's poller, patient with replicas that are slow to answer: thousands of
    connections closing at once (a killed thread pool) can hold a replica's loop for
    seconds. A replica that does not answer keeps its previous counters for that poll."""

    def poll(self) -> tuple[float, list[dict[str, Any]]]:
        out = []
        for i, (_, hostport) in enumerate(self.replicas):
            try:
                conn = http.client.HTTPConnection(hostport, timeout=60)
                conn.request("GET", "/stats")
                out.append(json.loads(conn.getresponse().read()))
                conn.close()
            except (OSError, http.client.HTTPException, ValueError):
                if not self.samples:
                    raise
                out.append(self.samples[-1][1][i])
        return time.monotonic(), out


def wait_idle(pools: Pools, timeout: float = 300.0) -> float:
    """Wait until no replica runs or queues a sequence (a stopped design's requests)."""
    poller = SimPoller(pools.replicas)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            _, stats = poller.poll()
        except (OSError, http.client.HTTPException, ValueError):
            time.sleep(1.0)
            continue
        if all(s["running"] == 0 and s["waiting"] == 0 for s in stats):
            break
        time.sleep(1.0)
    return time.monotonic() - t0


@dataclass
class PointSpec:
    design: str  # "threadpool" | "peerflow" | "peerflow-ray"
    concurrency: int
    warmup: float
    window: float
    call_latency: float
    call_cpu: float
    env_servers: int


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """The process and its descendants (a Ray run starts workers)."""
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines()[1:]:
        a, b = (int(x) for x in line.split())
        children.setdefault(b, []).append(a)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def read_records(path: Path) -> list[dict[str, Any]]:
    """Both designs' records in one shape: id, reward, termination, calls, tokens, times."""
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by the stop
        if "metrics" in r:  # a peerflow record
            m = r.get("metrics") or {}
            out.append(
                {
                    "id": r["id"],
                    "status": r.get("status"),
                    "reward": m.get("reward"),
                    "termination": r.get("reason"),
                    "llm_calls": m.get("llm_calls", 0),
                    "tool_calls": m.get("tool_calls", 0),
                    "completion_tokens": (r.get("tokens") or {}).get("completion", 0),
                    "finished": r.get("finished"),
                }
            )
        else:
            out.append({**r, "status": "ok"})
    return out


def run_point(
    spec: PointSpec, w: Workload, pools: Pools, tasks: Path, work: Path
) -> dict[str, Any]:
    """Run one design at one concurrency; returns its figures (see the module docstring)."""
    key = f"{spec.design}-c{spec.concurrency}"
    folder = work / key
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "records.jsonl"
    log = folder / "run.log"
    wait_idle(pools)
    llm = [u for urls in pools.endpoints.values() for u in urls]
    envs: peerflow_side.EnvServers | None = None
    if spec.design == "threadpool":
        cmd = [
            sys.executable,
            str(REPO / "benchmarks" / "desk_bench" / "baseline.py"),
            "--config",
            str(w.config),
            "--domain",
            str(w.domain_path),
            "--tasks",
            str(tasks),
            "--endpoints",
            ",".join(llm),
            "--concurrency",
            str(spec.concurrency),
            "--out",
            str(out),
            "--call-latency",
            str(spec.call_latency),
            "--call-cpu",
            str(spec.call_cpu),
        ]
        proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)
    else:
        envs = peerflow_side.EnvServers(
            w.domain_path,
            spec.env_servers,
            max_envs=max(256, spec.concurrency),
            call_latency=spec.call_latency,
            call_cpu=spec.call_cpu,
            log_dir=folder,
        )
        envs.start()
        runtime = "ray" if spec.design == "peerflow-ray" else "local"
        over = peerflow_side.overrides(
            w, tasks, out, llm, envs.urls, spec.concurrency, runtime=runtime
        )
        proc = peerflow_side.launch(w, over, log)
    poller = SimPoller(pools.replicas, interval=0.5)
    poller.start()
    env_pids = envs.pids() if envs else []
    peak_threads = peak_flight = 0
    flight: list[float] = []
    t_first: float | None = None
    snap0: tuple[float, ...] | None = None
    snap1: tuple[float, ...] | None = None
    wall0 = time.time()
    try:
        while True:
            time.sleep(0.5)
            if proc.poll() is not None and t_first is None:
                raise RuntimeError(f"{key}: the design exited early (see {log})")
            pids = _tree(proc.pid) if spec.design == "peerflow-ray" else [proc.pid]
            peak_threads = max(peak_threads, sum(_threads(p) for p in pids))
            samples = poller.samples
            if t_first is None and len(samples) > 1:
                moved = any(
                    b["requests"] != a["requests"]
                    for a, b in zip(samples[0][1], samples[-1][1], strict=True)
                )
                if moved:
                    t_first = time.monotonic()
            if t_first is None:
                if time.time() - wall0 > 120:
                    raise RuntimeError(f"{key}: no LLM request within 120 s (see {log})")
                continue
            now = time.monotonic()
            live = None
            if envs is not None:
                st = envs.stats()
                live = sum(int(s.get("live", 0)) for s in st if s)
            if snap0 is not None and live is not None:
                flight.append(live)
                peak_flight = max(peak_flight, live)
            if snap0 is None and now - t_first >= spec.warmup:
                snap0 = _snapshot(pids, env_pids, pools.pids())
            if snap0 is not None and (
                now - t_first >= spec.warmup + spec.window or proc.poll() is not None
            ):
                snap1 = _snapshot(pids, env_pids, pools.pids())
                break
    finally:
        _stop(proc, spec.design)
        samples = poller.stop()
        env_stats = envs.stats() if envs else []
        if envs is not None:
            envs.stop()
    assert snap0 is not None and snap1 is not None
    t0, t1 = snap0[0], snap1[0]
    span = max(t1 - t0, 1e-9)
    names = [p for p, _ in pools.replicas]
    i, j = measure.window(samples, t0, t1)
    pool = measure.pool_figures(samples, names, i, j)
    sim_span = max(samples[j][0] - samples[i][0], 1e-9)
    tokens = sum(f["tokens"] for f in pool.values())
    requests = sum(f["requests"] for f in pool.values())
    recs = read_records(out)
    # Records carry wall-clock finish times; the window is on the monotonic clock.
    off = snap0[5] - snap0[0]
    w0, w1 = t0 + off, t1 + off
    in_window = [r for r in recs if r.get("finished") and w0 <= r["finished"] <= w1]
    ok = [r for r in recs if r.get("reward") is not None]
    n = max(len(ok), 1)
    design_cpu = (snap1[1] - snap0[1]) / TICK / span
    env_cpu = (snap1[2] - snap0[2]) / TICK / span
    figs = {
        "design": spec.design,
        "concurrency": spec.concurrency,
        "window_s": span,
        "trajectories_window": len(in_window),
        "traj_per_min": 60 * len(in_window) / span,
        "tokens_per_s": tokens / sim_span,
        "llm_requests_per_s": requests / sim_span,
        "records": len(recs),
        "mean_reward": sum(r["reward"] for r in ok) / n if ok else None,
        "mean_llm_calls": sum(r["llm_calls"] for r in ok) / n,
        "mean_tool_calls": sum(r["tool_calls"] for r in ok) / n,
        "tokens_per_traj": sum(r["completion_tokens"] for r in ok) / n,
        "design_cpu": design_cpu,
        "with_env_cpu": design_cpu + env_cpu,
        "sims_cpu": (snap1[3] - snap0[3]) / TICK / span,
        "machine_busy": (snap1[4][0] - snap0[4][0]) / max(snap1[4][1] - snap0[4][1], 1),
        "peak_threads": peak_threads,
        "peak_in_flight": peak_flight if envs is not None else min(spec.concurrency, peak_threads),
        "mean_in_flight": sum(flight) / len(flight) if flight else None,
        "sim_idle": sum(f["idle"] for f in pool.values()) / len(pool),
        "sim_occupancy": sum(f["occupancy"] for f in pool.values()) / len(pool),
        "env_stats": env_stats,
        "rewards_by_id": {r["id"]: r["reward"] for r in ok},
        "llm_calls_by_id": {r["id"]: r["llm_calls"] for r in ok},
        "out": str(out),
    }
    if figs["trajectories_window"]:
        figs["cpu_ms_per_traj"] = 1000 * design_cpu * span / figs["trajectories_window"]
    return figs


def _snapshot(pids: list[int], env_pids: list[int], sim_pids: list[int]) -> tuple[Any, ...]:
    return (
        time.monotonic(),
        sum(_proc_jiffies(p) for p in pids),
        sum(_proc_jiffies(p) for p in env_pids),
        sum(_proc_jiffies(p) for p in sim_pids),
        machine_jiffies(),
        time.time(),
    )


def _stop(proc: subprocess.Popen[bytes], design: str) -> None:
    if proc.poll() is not None:
        return
    if design.startswith("peerflow"):
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(timeout=30)
