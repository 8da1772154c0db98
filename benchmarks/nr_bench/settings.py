"""The paper's parallelism settings table, scaled down, on peerflow's Ray runtime.

Paper (V1 Table 3): (data partitions, tasks in flight per partition, agent instances) on
500k pages, 14,000 tasks in flight at most: (1,14000,1)=1, (20,700,1)=1.61,
(240,1,1)=0.38, (240,50,1)=1.43, (1,14000,2)=1.03, (1,14000,10)=0.91.

Scaled to 2 cores and ~20 GB: total in flight /14 (14,000 -> 1,000), partitions /10
(20 -> 2, 240 -> 24), in flight per partition so that each setting keeps the paper's
share of the total (700 -> 500, 1 -> 1, 50 -> 36), instances as in the paper (1, 2, 10).
In peerflow `runtime.partitions` builds that many actor teams (one actor per role and
instance, one sink each) behind one driver that admits at most `max_in_flight` tasks in
total, so a setting (P, T, I) runs with partitions=P, max_in_flight=P*T and
num_instances=I for every role.

Each setting is time-boxed: it runs until `budget` seconds after its first LLM request,
then is stopped like Ctrl-C (in-flight rows abandoned, Ray shut down), and its throughput
is the pools' completion tokens/s from 25% of the budget to the stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from nr_bench import designs, measure
from nr_bench.pools import Poller, Pools, machine_jiffies

PAPER = [
    ((1, 14000, 1), 1.0),
    ((20, 700, 1), 1.61),
    ((240, 1, 1), 0.38),
    ((240, 50, 1), 1.43),
    ((1, 14000, 2), 1.03),
    ((1, 14000, 10), 0.91),
]
SCALED = [(1, 1000, 1), (2, 500, 1), (24, 1, 1), (24, 36, 1), (1, 1000, 2), (1, 1000, 10)]
ROLES = ("language", "classifier", "score", "question")


def _ray_processes() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("ray::"))


def _in_flight(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("peerflow_in_flight_tasks "):
            return float(line.split()[1])
    return None


def wait_idle(pools: Pools, timeout: float = 300.0) -> float:
    """Wait until no replica runs or queues a sequence: a stopped run's abandoned requests
    still decode on the simulators, and must not count for the next setting."""
    poller = Poller(pools.replicas)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        _, stats = poller.poll()
        if all(s["running"] == 0 and s["waiting"] == 0 for s in stats):
            break
        time.sleep(1.0)
    return time.monotonic() - t0


def run_setting(
    pools: Pools, docs: Path, work: Path, setting: tuple[int, int, int], budget: float
) -> dict[str, Any]:
    parts, per, inst = setting
    key = f"s{parts}x{per}x{inst}"
    out = work / key / "out.jsonl.zst"
    out.parent.mkdir(parents=True, exist_ok=True)
    services = {name: pools.service(name) for name in ("small", "big")}
    port = 18000 + (os.getpid() % 1000)
    extra = [
        "runtime.kind=ray",
        f"runtime.partitions={parts}",
        f"runtime.max_in_flight={parts * per}",
        f"runtime.metrics_port={port}",
        # 24 teams are ~120 actor processes: on 2 cores they take minutes to start.
        "runtime.start_timeout=900",
        *(f"roles.{r}.num_instances={inst}" for r in ROLES),
    ]
    config = designs.make_config(designs.overrides(docs, out, services, extra))
    del config.roles["grade"]  # defined in the example but unused: no actors for it
    wait_idle(pools)
    poller = Poller(pools.replicas)
    poller.start()
    in_flight: list[float] = []
    cpu: list[tuple[int, int]] = []  # machine (busy, total) jiffies: window start, stop
    stop = threading.Event()
    stopped_at: list[float] = []

    def watch() -> None:
        """Start the clock at the first LLM request; stop the run `budget` s later."""
        first = None
        while not stop.wait(1.0):
            samples = poller.samples
            if (
                first is None
                and len(samples) > 1
                and any(
                    b["requests"] != a["requests"]
                    for a, b in zip(samples[0][1], samples[-1][1], strict=True)
                )
            ):
                first = time.monotonic()
            if first is not None:
                value = _in_flight(port)
                if time.monotonic() - first > 0.25 * budget:
                    if not cpu:
                        cpu.append(machine_jiffies())
                    if value is not None:
                        in_flight.append(value)
                if time.monotonic() - first >= budget:
                    stopped_at.append(time.monotonic())
                    cpu.append(machine_jiffies())
                    os.kill(os.getpid(), signal.SIGINT)  # the run's own Ctrl-C handling
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    summary = designs.row_level(config)
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    samples = poller.stop()
    pools_names = [p for p, _ in pools.replicas]
    i, _ = measure.active_window(samples)
    t_first = samples[i][0]
    t_stop = stopped_at[0] if stopped_at else samples[-1][0]
    si, sj = measure.window(samples, t_first + 0.25 * (t_stop - t_first), t_stop)
    figs = measure.pool_figures(samples, pools_names, si, sj)
    span = max(samples[sj][0] - samples[si][0], 1e-9)
    tokens = sum(f["tokens"] for f in figs.values())
    return {
        "setting": setting,
        "wall": wall,
        "outcome": summary.get("outcome"),
        "records": summary.get("records_written"),
        "tokens_per_s": tokens / span,
        "docs_per_s": figs["small"]["requests"] / span / (1 - 0.0368),
        "idle_big": figs["big"]["idle"],
        "idle_small": figs["small"]["idle"],
        "occupancy_big": figs["big"]["occupancy"],
        "in_flight": sum(in_flight) / len(in_flight) if in_flight else None,
        "window": span,
        "machine_busy": (cpu[1][0] - cpu[0][0]) / max(cpu[1][1] - cpu[0][1], 1)
        if len(cpu) == 2
        else None,
        "ray_processes_after": _ray_processes(),
    }


def run_settings(pools: Pools, docs: Path, work: Path, args: Any) -> list[dict[str, Any]]:
    from nr_bench import report

    budget = args.settings_budget
    print(
        f"\nSettings table on peerflow's Ray runtime (SIMULATED pools), each setting "
        f"time-boxed to {budget:.0f} s of traffic; tokens/s from 25% of that to the stop"
    )
    rows = []
    which = {int(x) for x in args.settings_which.split(",") if x.strip()}
    for k, ((paper_setting, paper_value), setting) in enumerate(zip(PAPER, SCALED, strict=True)):
        if k not in which:
            continue
        print(f"--- paper {paper_setting} -> here {setting} ...", flush=True)
        try:
            r = run_setting(pools, docs, work, setting, budget)
        except Exception as exc:
            print(f"    FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        r.update(paper=paper_value, paper_setting=paper_setting)
        rows.append(r)
        print(
            f"    {r['tokens_per_s']:,.0f} tok/s, {r['docs_per_s']:.1f} docs/s, in flight "
            f"{r['in_flight'] or 0:.0f}, big pool idle {100 * r['idle_big']:.1f}%, "
            f"{r['occupancy_big']:.1f} seqs per big replica, machine CPU "
            f"{100 * (r['machine_busy'] or 0):.0f}% busy; ray:: processes left "
            f"{r['ray_processes_after']}",
            flush=True,
        )
    if not rows:
        return rows
    base = rows[0]["tokens_per_s"] or 1e-9  # setting 1 when it ran, else the first that did
    print(
        f"\n{'paper (P, T, I)':<18}{'paper':>7}   {'here (P, T, I)':<16}{'tok/s':>9}"
        f"{'normalised':>12}{'docs/s':>9}{'in flight':>11}{'idle big':>10}{'seqs/big':>10}"
        f"{'CPU':>6}"
    )
    for r in rows:
        r["normalised"] = r["tokens_per_s"] / base
        r["label"] = "{}\n{}".format(*(str(tuple(x)) for x in (r["paper_setting"], r["setting"])))
        print(
            f"{r['paper_setting']!s:<18}{r['paper']:>7.2f}   {r['setting']!s:<16}"
            f"{r['tokens_per_s']:>9,.0f}{r['normalised']:>12.2f}{r['docs_per_s']:>9.1f}"
            f"{r['in_flight'] or 0:>11.0f}{100 * r['idle_big']:>9.1f}%"
            f"{r['occupancy_big']:>10.1f}{100 * (r['machine_busy'] or 0):>5.0f}%"
        )
    if len(rows) == len(SCALED):  # a partial table would overwrite the full one's plot
        path = report.plot_settings(rows)
        print(f"plot: {path.relative_to(designs.REPO)}")
    return rows
