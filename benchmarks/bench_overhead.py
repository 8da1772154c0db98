"""Where a task's time goes: the paper's overhead tables (Matrix V2 Tables 2-4, PAPER.md B2).

Each finished record carries when the task was admitted (`created`), when each step
started and how long it took, and when the task was written (`finished`). A task's
end-to-end time splits into:

- agents: the sum of its steps' times (an LLM step includes its HTTP call);
- admission: from admission to the start of its first step (the paper's "initialization");
- queued: the rest, the gaps between steps and from the last step to the record.

The table gives each part's share of the task's end-to-end time at the median, P90 and
P99 over all tasks and over the slowest 10%, as the paper does. Next to it: messages
(hops) per second, trajectories per second and orchestration bytes per second. On Ray
those bytes are the runtime's own count of the encoded messages it sent; on the local
runtime a message never leaves the process, so the figure is what its hops would carry
if encoded (msgpack), measured by encoding every task's message before each step.

Two workloads, the shipped defaults everywhere (only `max_in_flight` is set, and printed):
Coral with dummy agents (no LLM, 1,024 characters +-20% per step, as the paper's
bottleneck study) and Coral against the SIMULATED LLM (paper lengths).

    python benchmarks/bench_overhead.py                       # both workloads, local
    python benchmarks/bench_overhead.py --runtime local ray --json overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from peerflow.config import load_config
from peerflow.message import Message, to_bytes
from peerflow.pipeline import Pipeline
from peerflow.run import run
from peerflow.sink import OutputRecord, record_message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local_runtime import coral_dummy_config, write_rows

CORAL_SIM = Path(__file__).resolve().parent.parent / "examples" / "coral" / "coral_sim.yaml"
PARTS = ("agents", "queued", "admission")


def task_shares(record: OutputRecord) -> dict[str, float] | None:
    """Each part's share of one task's end-to-end time, or None for a record with no steps."""
    steps = [s for s in record.history if s.role != "task" and s.started]
    total = record.finished - record.created
    if not steps or total <= 0:
        return None
    agents = sum(s.latency for s in steps)
    admission = max(0.0, steps[0].started - record.created)
    queued = max(0.0, total - agents - admission)
    return {
        "e2e": total,
        "agents": agents / total,
        "queued": queued / total,
        "admission": admission / total,
    }


def overhead_table(shares: list[dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """{all|slowest_10pct: {part: [median, p90, p99]}} in percent of end-to-end time."""
    e2e = np.array([s["e2e"] for s in shares])
    cut = np.quantile(e2e, 0.9)
    groups = {"all": shares, "slowest_10pct": [s for s in shares if s["e2e"] >= cut]}
    out: dict[str, dict[str, list[float]]] = {}
    for name, group in groups.items():
        out[name] = {
            part: [
                round(float(np.quantile([s[part] for s in group], q)) * 100, 4)
                for q in (0.5, 0.9, 0.99)
            ]
            for part in PARTS
        }
    return out


def hop_bytes(record: OutputRecord) -> int:
    """Bytes of the task's message as encoded before each of its steps, summed."""
    message = record_message(record)
    history = message.history
    total = 0
    for k in range(1, len(history)):
        total += len(to_bytes(Message(id=message.id, row=message.row, history=history[:k])))
    return total


def analyse(out: Path, summary: dict[str, Any], wall: float, sample: int) -> dict[str, Any]:
    decoder = msgspec.json.Decoder(OutputRecord)
    shares: list[dict[str, float]] = []
    encoded = hops_sampled = 0
    first, last = float("inf"), 0.0
    with open(out, "rb") as f:
        for i, line in enumerate(f):
            record = decoder.decode(line)
            first, last = min(first, record.created), max(last, record.finished)
            share = task_shares(record)
            if share is not None:
                shares.append(share)
            if i < sample:
                encoded += hop_bytes(record)
                hops_sampled += sum(1 for s in record.history if s.role != "task")
    hops = summary["steps"]
    span = last - first  # first admission to last record: start-up excluded
    ray = summary.get("ray") or {}
    if ray.get("hop_bytes"):
        bytes_per_s, source = ray["hop_bytes"] / span, "sent by the Ray runtime"
    else:
        per_hop = encoded / hops_sampled if hops_sampled else 0.0
        bytes_per_s, source = per_hop * hops / span, "in-process; size if encoded (msgpack)"
    e2e = np.array([s["e2e"] for s in shares])
    return {
        "tasks": len(shares),
        "wall_s": round(wall, 2),
        "span_s": round(span, 2),
        "messages_per_s": round(hops / span, 1),
        "trajectories_per_s": round(len(shares) / span, 1),
        "orchestration_bytes_per_s": round(bytes_per_s),
        "bytes_source": source,
        "e2e_median_s": round(float(np.median(e2e)), 4),
        "table": overhead_table(shares),
    }


def run_dummy(rows: int, runtime: str, max_in_flight: int | None, tmp: Path) -> tuple:
    data, out = tmp / "rows.jsonl", tmp / "out.jsonl"
    write_rows(data, rows)
    config = coral_dummy_config(data, out, max_in_flight)
    if runtime == "ray":
        config = config.model_copy(
            update={"runtime": config.runtime.model_copy(update={"kind": "ray"})}
        )
    return config, out


def run_sim(rows: int, runtime: str, max_in_flight: int | None, tmp: Path, time_scale: float):
    out = tmp / "out.jsonl"
    overrides = [
        f"dataset.limit={rows}",
        f"output.path={out}",
        "runtime.progress=false",
        f"runtime.kind={runtime}",
        f"services.llm.options.time_scale={time_scale}",
    ]
    if max_in_flight is not None:
        overrides.append(f"runtime.max_in_flight={max_in_flight}")
    return load_config(CORAL_SIM, overrides), out


def measure(workload: str, runtime: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if workload == "dummy":
            config, out = run_dummy(args.dummy_rows, runtime, args.max_in_flight, Path(tmp))
        else:
            config, out = run_sim(
                args.sim_rows, runtime, args.max_in_flight, Path(tmp), args.time_scale
            )
        t0 = time.perf_counter()
        summary = run(config, pipeline=Pipeline(config))
        wall = time.perf_counter() - t0
        result = analyse(out, summary, wall, args.sample)
    result.update(workload=workload, runtime=runtime, max_in_flight=config.runtime.max_in_flight)
    return result


def print_result(r: dict[str, Any]) -> None:
    print(
        f"\n{r['workload']} Coral, {r['runtime']} runtime, {r['tasks']} tasks, "
        f"max_in_flight {r['max_in_flight']} ({'set' if r.get('set_in_flight') else 'default'}), "
        f"median task {r['e2e_median_s'] * 1000:.1f} ms, first admission to last record "
        f"{r['span_s']:.1f} s (run {r['wall_s']:.1f} s)"
    )
    print(f"  {'share of end-to-end time':<34}{'median':>10}{'P90':>10}{'P99':>10}")
    for group, label in (("all", "all tasks"), ("slowest_10pct", "slowest 10%")):
        for part in PARTS:
            m, p90, p99 = r["table"][group][part]
            print(f"  {part + ' (' + label + ')':<34}{m:>9.3f}%{p90:>9.3f}%{p99:>9.3f}%")
    print(
        f"  messages/s {r['messages_per_s']:,.0f}   trajectories/s {r['trajectories_per_s']:,.1f}"
        f"   orchestration {r['orchestration_bytes_per_s'] / 1e6:.2f} MB/s ({r['bytes_source']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", nargs="+", default=["dummy", "sim"], choices=["dummy", "sim"])
    parser.add_argument("--runtime", nargs="+", default=["local"], choices=["local", "ray"])
    parser.add_argument("--dummy-rows", type=int, default=20000)
    parser.add_argument("--sim-rows", type=int, default=2000)
    parser.add_argument("--time-scale", type=float, default=0.05, help="the simulator's")
    parser.add_argument("--max-in-flight", type=int, default=None, help="default: shipped")
    parser.add_argument("--sample", type=int, default=300, help="records encoded for bytes/hop")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(
        "Overhead of peerflow per task (shipped defaults"
        + (f"; max_in_flight set to {args.max_in_flight}" if args.max_in_flight else "")
        + "); the LLM is SIMULATED in the sim workload"
    )
    results = []
    for runtime in args.runtime:
        for workload in args.workload:
            r = measure(workload, runtime, args)
            r["set_in_flight"] = args.max_in_flight is not None
            print_result(r)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
