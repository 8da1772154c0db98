"""A sampling profile of peerflow's hot path: `peerflow run` of Coral against simulators.

The simulated replicas run as processes of their own and are not profiled; py-spy samples
only `peerflow run` (the shipped Coral config pointed at them, on uvloop as the CLI runs
it). It writes a flame graph (SVG) and prints where the samples fall: each function's
share with what it calls (inclusive) and the lines that are hot themselves (self). By
default the simulators are slow enough (time_scale 0.3) that peerflow is not the
bottleneck, the regime of a real cluster, where each wake-up of the event loop finds one
or two answers rather than a batch.

    pip install py-spy   # in the `bench` extra
    python benchmarks/profile_step.py --svg docs/benchmarks/step_flame.svg
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_step_cpu import coral_sims

REPO = Path(__file__).resolve().parent.parent
CORAL = REPO / "examples" / "coral" / "coral_sim.yaml"


def peerflow_argv(endpoints: list[str], rows: int, in_flight: int, out: Path) -> list[str]:
    svc = {"kind": "openai", "model": "sim", "endpoints": endpoints}
    return [
        sys.executable,
        "-m",
        "peerflow.cli",
        "run",
        str(CORAL),
        f"dataset.limit={rows}",
        f"services.llm={json.dumps(svc)}",
        f"runtime.max_in_flight={in_flight}",
        "runtime.progress=false",
        f"output.path={out}",
    ]


def record(py_spy: str, argv: list[str], fmt: str, dest: Path, rate: int) -> None:
    cmd = [py_spy, "record", "-r", str(rate), "-f", fmt, "-o", str(dest), "--", *argv]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)


def summarise(raw: Path, top: int) -> None:
    """Inclusive shares per function and self shares per line, start-up included."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for name in {f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0] for f in frames}:
            inclusive[name] += n
    print(f"{total} samples of `peerflow run`")
    print("\ninclusive (a function with all it calls):")
    for name, n in inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name})")
    print("\nself (the line itself; C code such as a socket send counts to the line calling it):")
    for name, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=400)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--output-median", type=float, default=330, help="speaker tokens")
    parser.add_argument("--time-scale", type=float, default=0.3, help="the simulators'")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--svg", type=Path, default=None, help="write the flame graph here")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy (or the `bench` extra)")
    pools = coral_sims(args.replicas, args.time_scale, args.output_median)
    print(
        f"profile of `peerflow run` on Coral, SIMULATED LLM ({args.replicas} replicas, "
        f"time_scale {args.time_scale}), {args.rows} rows, max_in_flight {args.in_flight}"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            endpoints, raw = pools.endpoints["llm"], Path(tmp) / "stacks.txt"
            argv = peerflow_argv(endpoints, args.rows, args.in_flight, Path(tmp) / "a.jsonl")
            record(py_spy, argv, "raw", raw, args.rate)
            summarise(raw, args.top)
            if args.svg is not None:  # a second run, fresh output: one format per recording
                argv = peerflow_argv(endpoints, args.rows, args.in_flight, Path(tmp) / "b.jsonl")
                record(py_spy, argv, "flamegraph", args.svg, args.rate)
                print(f"\nflame graph: {args.svg}")
    finally:
        pools.stop()


if __name__ == "__main__":
    main()
