"""50,000 Coral tasks in flight on one machine: peerflow's memory and the simulators' occupancy.

Runs the shipped Coral config (`examples/coral/coral_sim.yaml`, the SIMULATED LLM started by
peerflow itself) on the local runtime with `runtime.max_in_flight` = 50,000, while a thread
of the same process samples, once a second: peerflow's RSS, tasks in flight (the run's own
Prometheus export), every simulator replica's `/stats` (busy and occupancy), tasks and LLM
steps per second, and the CPU of peerflow, of the simulators and of the machine.

    .venv/bin/python benchmarks/bench_scale.py --json /tmp/scale50k.json    # ~11 minutes
    .venv/bin/python benchmarks/bench_scale.py --in-flight 300 --rows 600 --time-scale 0.05
    .venv/bin/python benchmarks/bench_scale.py --replot /tmp/scale50k.json  # no run

Sizing. One process cannot hold more TCP connections than its file-descriptor limit, and
every LLM request in progress holds one (HTTP/1.1, no pipelining). So the simulators are
sized to the connections peerflow's client can hold, not to the tasks: replicas of
`max_num_seqs` = the client's `max_connections` per endpoint (1,024, its default), as many
as the descriptor limit allows after a reserve (`FD_RESERVE`), never more than the tasks
need. Tasks beyond that wait for a connection inside peerflow's client: still in flight
(admitted, holding their state), which is what is measured. Every replica's KV budget holds
`max_num_seqs` sequences of `KV_PER_SEQ` tokens, so the batch, not the KV cache, is the
engine's limit.

Every other setting is the shipped config's or peerflow's default, except the knobs listed
in `knobs()` (printed with the results, each with its reason). The service's adaptive
concurrency limit stays on (its default: for an http:// server, no limit until the server
pushes back); `--no-adaptive` turns it off.

Steady state, occupancy and busy are defined in `scale_bench.analysis`. The full garbage
collections of this process are recorded too (`scale_bench.sampler.GcWatch`): each one
stops the event loop, which shows as a dip in the simulators' occupancy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_bench import analysis, probe
from scale_bench.sampler import Sampler

from peerflow.config import load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run

REPO = Path(__file__).resolve().parents[1]
CORAL = REPO / "examples" / "coral" / "coral_sim.yaml"
DEFAULT_PLOT = REPO / "docs" / "benchmarks" / "scale_50k.png"
SERVICE = "llm"
FD_RESERVE = 2048  # descriptors left for everything but the LLM connections
KV_PER_SEQ = 16384  # tokens of KV budget per sequence slot: longer than any debate's
PAPER_MEDIAN = 330.0  # speaker reply tokens: ~1,900 completion tokens per debate, as the paper
TIMEOUT = 600.0  # peerflow's default request timeout (the example sets 60 s for time_scale 0.05)


@dataclass
class Plan:
    """What one run is: its size, the simulators' size, and the knobs it sets."""

    in_flight: int
    rows: int
    replicas: int
    max_num_seqs: int
    kv_capacity: int
    max_connections: int
    time_scale: float
    output_median: float
    timeout: float
    repeat: int
    adaptive: bool | None  # the service's adaptive concurrency limit on/off; None: none exists
    adaptive_initial: int | None
    fd_limit: int
    cores: int
    metrics_port: int


def raise_fd_limit() -> int:
    """Lift this process's soft descriptor limit to its hard limit; returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def size_sims(in_flight: int, max_connections: int, fd_limit: int) -> tuple[int, int]:
    """(replicas, max_num_seqs): connection-sized replicas, as many as the tasks or fds allow."""
    budget = max(max_connections, fd_limit - FD_RESERVE)
    replicas = max(1, min(math.ceil(in_flight / max_connections), budget // max_connections))
    return replicas, min(max_connections, math.ceil(in_flight / replicas))


def make_plan(
    in_flight: int,
    rows: int,
    time_scale: float,
    *,
    output_median: float = PAPER_MEDIAN,
    replicas: int | None = None,
    max_num_seqs: int | None = None,
    adaptive: bool = True,
) -> Plan:
    base = load_config(CORAL)
    svc = base.services[SERVICE]
    limit = getattr(svc, "concurrency", None)  # peerflow versions with an adaptive limit
    fd_limit = raise_fd_limit()
    auto_r, auto_s = size_sims(in_flight, svc.max_connections, fd_limit)
    if replicas is None:
        replicas = auto_r
    else:
        auto_s = min(svc.max_connections, math.ceil(in_flight / replicas))
    max_num_seqs = max_num_seqs or auto_s
    with open(base.resolve(base.dataset.path), "rb") as f:
        dataset_rows = sum(1 for line in f if line.strip())
    return Plan(
        in_flight=in_flight,
        rows=rows,
        replicas=replicas,
        max_num_seqs=max_num_seqs,
        kv_capacity=max_num_seqs * KV_PER_SEQ,
        max_connections=svc.max_connections,
        time_scale=time_scale,
        output_median=output_median,
        timeout=TIMEOUT,
        repeat=max(1, math.ceil(rows / dataset_rows)),
        adaptive=None if limit is None else adaptive,
        adaptive_initial=None if limit is None else limit.initial,
        fd_limit=fd_limit,
        cores=os.cpu_count() or 1,
        metrics_port=probe.free_port(),
    )


def overrides(plan: Plan, out: Path) -> list[str]:
    s = f"services.{SERVICE}"
    over = [f"{s}.concurrency.adaptive=false"] if plan.adaptive is False else []
    return [
        *over,
        f"dataset.repeat={plan.repeat}",
        f"dataset.limit={plan.rows}",
        f"output.path={out}",
        f"runtime.max_in_flight={plan.in_flight}",
        "runtime.progress=false",
        f"runtime.metrics_port={plan.metrics_port}",
        f"{s}.replicas={plan.replicas}",
        f"{s}.options.max_num_seqs={plan.max_num_seqs}",
        f"{s}.options.kv_capacity={plan.kv_capacity}",
        f"{s}.options.time_scale={plan.time_scale}",
        f"{s}.options.output_median={plan.output_median}",
        f"{s}.timeout={plan.timeout}",
    ]


def knobs(plan: Plan) -> list[str]:
    """Each setting beyond the shipped config, and why (printed with the results)."""
    return [
        f"runtime.max_in_flight={plan.in_flight:,}: the load under test",
        f"dataset.limit={plan.rows:,}, dataset.repeat={plan.repeat}: enough rows for a steady "
        "state of a few minutes (the 77 questions, repeated with new ids and seeds)",
        f"simulator size: replicas={plan.replicas}, max_num_seqs={plan.max_num_seqs:,} (= the "
        f"client's default max_connections {plan.max_connections:,} per endpoint), kv_capacity="
        f"{plan.kv_capacity:,}: as many connection-sized replicas as {plan.fd_limit:,} file "
        f"descriptors allow (reserve {FD_RESERVE:,})",
        f"simulator time_scale={plan.time_scale:g}: requests long enough that the simulators, "
        "not peerflow's CPU, set the pace",
        f"simulator output_median={plan.output_median:g}: the paper's reply lengths "
        "(as bench_coral_orchestrator.py)",
        f"services.llm.timeout={plan.timeout:g} (peerflow's default): the example's 60 s is "
        "sized for time_scale 0.05",
        *(
            ["services.llm.concurrency.adaptive=false: asked for with --no-adaptive"]
            if plan.adaptive is False
            else []
        ),
        "runtime.metrics_port (free port), runtime.progress=false, output.path: observation "
        "and plumbing only",
    ]


def check_records(path: Path) -> dict[str, Any]:
    """Records in the output: how many, how many distinct ids, by status."""
    import orjson

    ids: set[str] = set()
    statuses: Counter[str] = Counter()
    n = 0
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            rec = orjson.loads(line)
            n += 1
            ids.add(rec["id"])
            statuses[rec["status"]] += 1
    return {"records": n, "unique_ids": len(ids), "by_status": dict(statuses)}


def llm_steps(samples: list[dict[str, Any]]) -> int:
    """Requests the simulators completed: each replica's last reading (they exit at the end)."""
    last: dict[str, int] = {}
    for s in samples:
        for port, st in s["sims"].items():
            last[port] = st["completed"]
    return sum(last.values())


def run_scale(
    plan: Plan, out_dir: Path, interval: float = 1.0, log_every: float = 0.0
) -> dict[str, Any]:
    """One run of `plan`, sampled; returns the plan, samples, rates and summaries."""
    out = out_dir / "coral_scale.jsonl"
    over = overrides(plan, out)
    config = load_config(CORAL, over)
    pipeline = Pipeline(config)
    baseline = probe.rss_bytes()
    load_before = os.getloadavg()
    sampler = Sampler(plan.metrics_port, plan.replicas, interval, log_every)
    sampler.start()
    started_at = time.monotonic() - sampler.t0
    t0 = time.perf_counter()
    try:
        summary = run(config, pipeline=pipeline)
    finally:
        wall = time.perf_counter() - t0
        sampler.stop()
    samples = sampler.samples
    result = {
        "plan": asdict(plan),
        "knobs": knobs(plan),
        "overrides": over,
        "wall_seconds": wall,
        "run_started_at": started_at,
        "outcome": summary.get("outcome"),
        "by_status": summary.get("by_status"),
        "steps": summary.get("steps"),
        "tokens": summary.get("tokens"),
        "metrics": summary.get("metrics"),
        "records": check_records(out),
        "baseline_rss": baseline,
        "peak_rss": max(probe.peak_rss_bytes(), max((s["rss"] for s in samples), default=0)),
        "peak_rss_sampled": max((s["rss"] for s in samples), default=0),
        "peak_fds": max((s["fds"] for s in samples), default=0),
        "in_flight_reached": max((s["in_flight"] or 0 for s in samples), default=0),
        "llm_steps": llm_steps(samples),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "samples": samples,
        "gc_events": sampler.gc.events,
    }
    return analyse(result)


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    """Rates, the steady state and the diagnosis from a result's samples (also for --replot)."""
    p, samples = result["plan"], result["samples"]
    if not result.get("gc_events"):
        result["gc_events"] = analysis.gc_events_from_samples(samples)
    result["series"] = analysis.series(samples, p["max_num_seqs"])
    window = analysis.steady_window(samples, p["in_flight"], p["rows"])
    steady = None
    if window is not None:
        steady = analysis.steady_summary(
            samples, window, p["max_num_seqs"], result.get("gc_events")
        )
    result["steady"] = steady
    result["diagnosis"] = analysis.diagnosis(
        steady,
        replicas=p["replicas"],
        max_num_seqs=p["max_num_seqs"],
        max_connections=p["max_connections"],
        target=p["in_flight"],
        cores=p["cores"],
    )
    return result


def table(r: dict[str, Any]) -> str:
    """The summary as a two-column table."""
    p, st = r["plan"], r["steady"]
    wall = r["wall_seconds"]
    per_task = (r["peak_rss"] - r["baseline_rss"]) / max(r["in_flight_reached"], 1)
    rows = [
        (
            "rows (records, distinct ids)",
            f"{p['rows']:,} ({r['records']['records']:,}, {r['records']['unique_ids']:,})",
        ),
        (
            "outcome; by status",
            f"{r['outcome']}; "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(r["by_status"].items())),
        ),
        ("in flight: target / reached", f"{p['in_flight']:,} / {r['in_flight_reached']:,}"),
        (
            "simulators",
            f"{p['replicas']} x {p['max_num_seqs']:,} seqs = "
            f"{p['replicas'] * p['max_num_seqs']:,} slots, time_scale {p['time_scale']:g}",
        ),
        ("wall (s)", f"{wall:,.1f}"),
        ("tasks/s (whole run)", f"{r['records']['records'] / wall:,.1f}"),
        (
            "steps/s (whole run; LLM steps/s)",
            f"{r['steps'] / wall:,.0f} ({r['llm_steps'] / wall:,.0f})",
        ),
        (
            "peak RSS (GiB; baseline before run)",
            f"{r['peak_rss'] / 2**30:.2f} ({r['baseline_rss'] / 2**30:.2f})",
        ),
        ("RSS per in-flight task (KiB)", f"{per_task / 1024:,.1f}"),
        ("peak open fds", f"{r['peak_fds']:,} (limit {p['fd_limit']:,})"),
    ]
    if st is not None:
        rows += [
            (
                "steady state (s from run start)",
                f"{st['start'] - r['run_started_at']:.0f} - "
                f"{st['end'] - r['run_started_at']:.0f} ({st['span']:.0f} s)",
            ),
            (
                "steady: in flight / running in sims (mean)",
                f"{st['in_flight_mean']:,.0f} / {st['running_mean']:,.0f}",
            ),
            ("steady: sims busy (>= 1 seq)", f"{st['busy']:.1%}"),
            ("steady: sims occupancy (seqs / max_num_seqs)", f"{st['occupancy']:.1%}"),
            (
                f"  same, without the first {analysis.SETTLE_SECONDS:g} s",
                "-" if st["settled"] is None else f"{st['settled']['occupancy']:.1%}",
            ),
            (
                "steady: peerflow full GCs (seconds in them)",
                f"{st['gc_full']} ({st['gc_pause_total']:.1f} s, "
                f"longest {st['gc_pause_max']:.2f} s)",
            ),
            (
                "steady: tasks/s, LLM steps/s",
                f"{st['tasks_per_s']:,.1f}, {st['llm_steps_per_s']:,.0f}",
            ),
            (
                "steady: peerflow loop on a CPU / waiting for one",
                "-"
                if st.get("run_driver") is None
                else f"{st['run_driver']:.0%} / {st['wait_driver']:.0%}",
            ),
            (
                "steady: CPU peerflow / sims / machine",
                f"{st['cpu_driver']:.2f} / {st['cpu_sims']:.2f} cores / "
                f"{st['machine_busy']:.0%} of {p['cores']}",
            ),
        ]
    else:
        rows.append(("steady state", "none (in-flight never held its target with rows left)"))
    rows.append(
        ("load average before / after", f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}")
    )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def report(result: dict[str, Any], a: argparse.Namespace) -> None:
    """Print the table and the diagnosis; write the JSON and the chart if asked."""
    print(table(result))
    for line in result["diagnosis"]:
        print(f"  {line}")
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result))
        print(f"time series: {a.json}")
    if not a.no_plot:
        from scale_bench.plot import plot

        plot(result, a.plot)
        print(f"chart: {a.plot}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-flight", type=int, default=50_000, help="runtime.max_in_flight")
    parser.add_argument(
        "--rows", "--tasks", type=int, default=None, help="rows (default 1.06 x in flight)"
    )
    parser.add_argument("--time-scale", type=float, default=1.4, help="the simulators' latency")
    parser.add_argument("--output-median", type=float, default=PAPER_MEDIAN)
    parser.add_argument("--replicas", type=int, default=None, help="override the sizing")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="override the sizing")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument(
        "--no-adaptive",
        dest="adaptive",
        action="store_false",
        help="turn the service's adaptive concurrency limit off (it is on by default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the time series here")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="keep the run's output here")
    parser.add_argument(
        "--log-every", type=float, default=15.0, help="seconds between progress lines (0: none)"
    )
    parser.add_argument(
        "--replot", type=Path, default=None, help="no run: re-analyse and re-plot a --json file"
    )
    a = parser.parse_args(argv)
    if a.replot is not None:
        result = analyse(json.loads(a.replot.read_text()))
        for line in result["knobs"]:
            print(f"  set: {line}")
        report(result, a)
        return result
    rows = a.rows if a.rows is not None else round(1.06 * a.in_flight)
    plan = make_plan(
        a.in_flight,
        rows,
        a.time_scale,
        output_median=a.output_median,
        replicas=a.replicas,
        max_num_seqs=a.max_num_seqs,
        adaptive=a.adaptive,
    )
    print(f"Coral on the SIMULATED LLM: {rows:,} rows, {a.in_flight:,} in flight (local runtime)")
    for line in knobs(plan):
        print(f"  set: {line}")
    print(f"  load average now: {os.getloadavg()[0]:.2f}", flush=True)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        result = run_scale(plan, a.out, a.interval, a.log_every)
    else:
        with tempfile.TemporaryDirectory(prefix="peerflow-scale-") as tmp:
            result = run_scale(plan, Path(tmp), a.interval, a.log_every)
    report(result, a)
    return result


if __name__ == "__main__":
    main()
