"""Peak RSS of a local run against input size: back-pressure keeps memory flat.

Each size runs in its own process (a two-step sequence with trivial agents,
output written); only the sink's set of finished ids grows with the input.

    python benchmarks/bench_memory.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(rows: int, tmp: Path) -> None:
    from peerflow.config import RunConfig
    from peerflow.pipeline import Pipeline
    from peerflow.run import run

    data = tmp / "rows.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "text": "x" * 200}) + "\n")
    config = RunConfig.model_validate({
        "dataset": {"path": str(data), "id_field": "id"},
        "task": {"message": "{{ text }}"},
        "roles": {"a": {"agent": "peerflow.testing:Echo"}, "b": {"agent": "peerflow.testing:Echo"}},
        "workflow": {"kind": "sequence", "roles": ["a", "b"]},
        "runtime": {"max_in_flight": 1024, "progress": False},
        "output": {"path": str(tmp / "out.jsonl")},
    })
    t0 = time.perf_counter()
    summary = run(config, pipeline=Pipeline(config))
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "records": summary["records_written"], "wall": wall,
                      "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", type=int)
    parser.add_argument("--tmp")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.tmp))
        return
    print(f"{'rows':>9} {'records':>9} {'wall s':>7} {'peak RSS MB':>12}")
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--tmp", tmp],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{r['rows']:>9} {r['records']:>9} {r['wall']:>7.1f} {r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
