"""One sweep point: a design on `replicas` simulator replicas, time-boxed, measured outside.

Each design runs as its own process against the first `replicas` of the simulator
processes (started once for the sweep), with 50 x replicas tasks in flight. A point runs
until `warmup + window` seconds after its first LLM request; then the process is stopped
(peerflow with SIGINT, its own Ctrl-C path; the orchestrator killed, its records being on
disk already). Figures are over the window:

- completion tokens/s and LLM steps/s: the simulators' `/stats` counters, read at the
  window's two ends (the one yardstick for every design);
- trajectories/min: records finished inside the window;
- CPU: the design's process (with its descendants: a Ray run's workers, raylet and GCS),
  from /proc, in cores; and **CPU per LLM-backed step**: its CPU seconds over the LLM
  requests the simulators completed in the window (the simulators' CPU is not in it);
- the Coral metric per task id (every record the point wrote), for the equality check.
"""

from __future__ import annotations

import contextlib
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

from desk_bench.sweep import TICK, _tree, wait_idle
from nr_bench.pools import Pools, _proc_jiffies, machine_jiffies

from coral_bench import peerflow_side
from coral_bench.workload import REPO, CoralWorkload

PER_REPLICA = 50  # tasks in flight per replica (per GPU in the paper)


@dataclass
class PointSpec:
    design: str  # "orch-openai" | "orch-peerflow" | "peerflow" | "peerflow-ray"
    replicas: int
    warmup: float
    window: float

    @property
    def concurrency(self) -> int:
        return PER_REPLICA * self.replicas


def stats(hostports: list[str]) -> list[dict[str, Any]]:
    out = []
    for hp in hostports:
        conn = http.client.HTTPConnection(hp, timeout=60)
        try:
            conn.request("GET", "/stats")
            out.append(json.loads(conn.getresponse().read()))
        finally:
            conn.close()
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every design's records in one shape: id, status, Coral metrics, calls, tokens, time."""
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
                    "agreement": m.get("agreement"),
                    "agreement_correctness": m.get("agreement_correctness"),
                    "turns": m.get("turns"),
                    "llm_calls": sum(1 for s in r.get("history") or () if s.get("usage")),
                    "completion_tokens": (r.get("tokens") or {}).get("completion", 0),
                    "finished": r.get("finished"),
                }
            )
        else:
            out.append(r)
    return out


def launch(
    spec: PointSpec, w: CoralWorkload, endpoints: list[str], tasks: Path, total: int, folder: Path
) -> subprocess.Popen[bytes]:
    out, log = folder / "records.jsonl", folder / "run.log"
    if spec.design.startswith("orch-"):
        cmd = [
            sys.executable,
            str(REPO / "benchmarks" / "coral_bench" / "orchestrator.py"),
            "--config",
            str(w.config),
            "--tasks",
            str(tasks),
            "--endpoints",
            ",".join(endpoints),
            "--concurrency",
            str(spec.concurrency),
            "--client",
            spec.design.removeprefix("orch-"),
            "--out",
            str(out),
        ]
        return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)
    runtime = "ray" if spec.design == "peerflow-ray" else "local"
    over = peerflow_side.overrides(
        w, tasks, total, out, endpoints, spec.concurrency, runtime=runtime
    )
    return peerflow_side.launch(w, over, log)


def run_point(
    spec: PointSpec, w: CoralWorkload, pools: Pools, tasks: Path, total: int, work: Path
) -> dict[str, Any]:
    """Run one design on `spec.replicas` replicas; returns its figures (module docstring)."""
    key = f"{spec.design}-r{spec.replicas}"
    folder = work / key
    folder.mkdir(parents=True, exist_ok=True)
    wait_idle(pools)
    endpoints = pools.endpoints["llm"][: spec.replicas]
    hostports = [hp for _, hp in pools.replicas[: spec.replicas]]
    sim_pids = pools.pids()[: spec.replicas]
    base = stats(hostports)
    proc = launch(spec, w, endpoints, tasks, total, folder)
    t_first: float | None = None
    wall0 = time.monotonic()
    snap0 = snap1 = None
    try:
        while t_first is None:
            time.sleep(0.25)
            if proc.poll() is not None:
                raise RuntimeError(f"{key}: the design exited early (see {folder / 'run.log'})")
            now = stats(hostports)
            if any(b["requests"] != a["requests"] for a, b in zip(base, now, strict=True)):
                t_first = time.monotonic()
            elif time.monotonic() - wall0 > 180:
                raise RuntimeError(f"{key}: no LLM request within 180 s")
        time.sleep(max(0.0, t_first + spec.warmup - time.monotonic()))
        pids = _tree(proc.pid)
        snap0 = _snapshot(pids, sim_pids, hostports)
        deadline = t_first + spec.warmup + spec.window
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            pids = sorted(set(pids) | set(_tree(proc.pid)))  # Ray starts workers late
        snap1 = _snapshot(pids, sim_pids, hostports)
    finally:
        _stop(proc, spec.design, pids if snap0 is not None else [])
    span = max(snap1["t"] - snap0["t"], 1e-9)
    sim_span = max(
        sum(b["measured_at"] - a["measured_at"] for a, b in _pairs(snap0, snap1)) / len(hostports),
        1e-9,
    )
    tokens = sum(b["completion_tokens"] - a["completion_tokens"] for a, b in _pairs(snap0, snap1))
    steps = sum(b["completed"] - a["completed"] for a, b in _pairs(snap0, snap1))
    # Per process; one that ended inside the window keeps its last count (read as 0 now).
    c0, c1 = snap0["cpu"], snap1["cpu"]
    cpu_s = sum(max(c1[p] or c0.get(p, 0), c0.get(p, 0)) - c0.get(p, 0) for p in c1) / TICK
    recs = read_records(folder / "records.jsonl")
    w0, w1 = snap0["wall"], snap1["wall"]
    in_window = [r for r in recs if r.get("finished") and w0 <= r["finished"] <= w1]
    ok = [r for r in recs if r.get("status") == "ok"]
    n = max(len(ok), 1)
    return {
        "design": spec.design,
        "replicas": spec.replicas,
        "concurrency": spec.concurrency,
        "window_s": span,
        "tokens_per_s": tokens / sim_span,
        "llm_steps_per_s": steps / sim_span,
        "llm_steps": steps,
        "trajectories_window": len(in_window),
        "traj_per_min": 60 * len(in_window) / span,
        "records": len(recs),
        "failed": len(recs) - len(ok),
        "agreement_correctness": sum(bool(r["agreement_correctness"]) for r in ok) / n,
        "agreement": sum(bool(r["agreement"]) for r in ok) / n,
        "llm_calls_per_traj": sum(r["llm_calls"] for r in ok) / n,
        "tokens_per_traj": sum(r["completion_tokens"] for r in ok) / n,
        "design_cpu": cpu_s / span,
        "cpu_us_per_step": 1e6 * cpu_s / max(steps, 1),
        "sims_cpu": (snap1["sims_cpu"] - snap0["sims_cpu"]) / TICK / span,
        "machine_busy": (snap1["machine"][0] - snap0["machine"][0])
        / max(snap1["machine"][1] - snap0["machine"][1], 1),
        "sim_idle": sum(
            max(0.0, 1 - (b["busy_seconds"] - a["busy_seconds"]) / sim_span)
            for a, b in _pairs(snap0, snap1)
        )
        / len(hostports),
        "seqs_per_replica": sum(
            b["seq_seconds"] - a["seq_seconds"] for a, b in _pairs(snap0, snap1)
        )
        / sim_span
        / len(hostports),
        "correct_by_id": {r["id"]: bool(r["agreement_correctness"]) for r in ok},
        "turns_by_id": {r["id"]: r["turns"] for r in ok},
        "out": str(folder / "records.jsonl"),
    }


def _pairs(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[dict, dict]]:
    return list(zip(a["sims"], b["sims"], strict=True))


def _snapshot(pids: list[int], sim_pids: list[int], hostports: list[str]) -> dict[str, Any]:
    return {
        "t": time.monotonic(),
        "cpu": {p: _proc_jiffies(p) for p in pids},
        "sims_cpu": sum(_proc_jiffies(p) for p in sim_pids),
        "machine": machine_jiffies(),
        "wall": time.time(),
        "sims": stats(hostports),
    }


def _stop(proc: subprocess.Popen[bytes], design: str, tree: list[int]) -> None:
    """Stop the design; then any process it started that outlived it (Ray's)."""
    if proc.poll() is None:
        if design.startswith("peerflow"):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        else:
            proc.kill()
        proc.wait(timeout=30)
    for pid in tree:
        cmdline = Path(f"/proc/{pid}/cmdline")
        if pid != proc.pid and cmdline.exists() and b"ray" in cmdline.read_bytes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
