"""Tasks/s and tokens/s of the Coral workflow on the local runtime against the simulated LLM.

The simulator is a measuring instrument (continuous-batching timing, filler
text): these figures measure peerflow's orchestration against an engine of
known capacity, not a model. Each run uses a fresh output file.

    python benchmarks/bench_coral_sim.py --rows 2000 --time-scale 0.05
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from peerflow.config import load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run

CORAL = Path(__file__).resolve().parent.parent / "examples" / "coral" / "coral_sim.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--max-in-flight", type=int, nargs="+", default=[64, 256, 1024])
    args = parser.parse_args()
    print(f"Coral on the SIMULATED LLM (time_scale={args.time_scale}), {args.rows} tasks")
    print(
        f"{'max_in_flight':>13} {'tasks/s':>9} {'compl tok/s':>12} {'steps/s':>9} "
        f"{'turns':>6} {'ok':>6}"
    )
    for n in args.max_in_flight:
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(
                CORAL,
                [
                    f"dataset.limit={args.rows}",
                    f"output.path={Path(tmp) / 'o.jsonl'}",
                    f"runtime.max_in_flight={n}",
                    "runtime.progress=false",
                    f"services.llm.options.time_scale={args.time_scale}",
                    # one engine replica with room for every in-flight request
                    f"services.llm.options.max_num_seqs={max(n, 256)}",
                ],
            )
            t0 = time.perf_counter()
            s = run(config, pipeline=Pipeline(config))
            wall = time.perf_counter() - t0
            ok = s["by_status"].get("ok", 0)
            print(
                f"{n:>13} {args.rows / wall:>9.1f} {s['tokens']['completion'] / wall:>12,.0f} "
                f"{s['steps'] / wall:>9,.0f} {s['metrics']['turns']:>6.2f} {ok:>6}"
            )


if __name__ == "__main__":
    main()
