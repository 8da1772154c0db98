"""Memory: peak RSS of a local run against input size, and the cost of resume per row.

Two measurements, each in its own process so that peak RSS is its own:

- `run`: a two-step sequence with trivial agents, output written, shipped defaults
  except `max_in_flight: 1024` (printed); back-pressure keeps memory flat, and only
  the sink's id sets grow with the input.
- `recover`: open a sink on an output of N records (one in ten a transient failure, so
  the re-attempt set is exercised too) and report what resuming costs: bytes per row of
  the done set, and the peak RSS growth per record while the output was read.

    python benchmarks/bench_memory.py --rows 100000 1000000 --recover 1000000
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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child_run(rows: int, tmp: Path) -> None:
    from peerflow.config import RunConfig
    from peerflow.pipeline import Pipeline
    from peerflow.run import run

    data = tmp / "rows.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "text": "x" * 200}) + "\n")
    config = RunConfig.model_validate(
        {
            "dataset": {"path": str(data), "id_field": "id"},
            "task": {"message": "{{ text }}"},
            "roles": {
                "a": {"agent": "peerflow.testing:Echo"},
                "b": {"agent": "peerflow.testing:Echo"},
            },
            "workflow": {"kind": "sequence", "roles": ["a", "b"]},
            "runtime": {"max_in_flight": 1024, "progress": False},
            "output": {"path": str(tmp / "out.jsonl")},
        }
    )
    t0 = time.perf_counter()
    summary = run(config, pipeline=Pipeline(config))
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rows": rows,
                "records": summary["records_written"],
                "wall": wall,
                "peak_rss_mb": peak_mb(),
            }
        )
    )


def child_recover(records: int, tmp: Path) -> None:
    import msgspec

    from peerflow.sink import Sink

    out = tmp / "out.jsonl"
    enc = msgspec.json.Encoder()
    history = [
        {"role": "task", "content": "x" * 120},
        {"role": "a", "content": "y" * 80, "usage": {"prompt_tokens": 30, "completion_tokens": 20}},
    ]
    with open(out, "wb") as f:
        for i in range(records):
            r: dict = {"id": f"row-{i:09d}", "status": "ok", "history": history, "finished": 1.0}
            if i % 10 == 0:
                r["status"] = "error"
                r["error"] = {"stage": "agent", "message": "timeout", "kind": "transient"}
            f.write(enc.encode(r) + b"\n")
    size = out.stat().st_size
    base_now = current_mb()
    t0 = time.perf_counter()
    sink = Sink(out)
    sink.open()
    wall = time.perf_counter() - t0
    done = sink.finished
    # The process's peak minus its size before the open: an upper bound of the open's growth.
    peak = max(peak_mb() - base_now, 0.0)
    print(
        json.dumps(
            {
                "records": records,
                "file_mb": size / 2**20,
                "done_ids": len(done),
                "retry_ids": sink.to_retry,
                "done_bytes_per_row": done.nbytes() / len(done),
                "sets_bytes_per_record": (done.nbytes() + sink.retry.nbytes()) / records,
                "held_rss_bytes_per_record": (current_mb() - base_now) * 2**20 / records,
                "peak_rss_growth_bytes_per_record": peak * 2**20 / records,
                "peak_rss_mb": peak_mb(),
                "wall": wall,
            }
        )
    )
    sink.close()


def spawn(kind: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, __file__, f"--child-{kind}", str(n), "--tmp", tmp],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--recover", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--child-run", type=int)
    parser.add_argument("--child-recover", type=int)
    parser.add_argument("--tmp")
    args = parser.parse_args()
    if args.child_run:
        child_run(args.child_run, Path(args.tmp))
        return
    if args.child_recover:
        child_recover(args.child_recover, Path(args.tmp))
        return
    if args.rows:
        print("local run, shipped defaults except max_in_flight 1024 (set), output written")
        print(f"{'rows':>9} {'records':>9} {'wall s':>7} {'peak RSS MB':>12}")
        for n in args.rows:
            r = spawn("run", n)
            print(f"{r['rows']:>9} {r['records']:>9} {r['wall']:>7.1f} {r['peak_rss_mb']:>12.0f}")
    if args.recover:
        print("\nresume: opening a sink on an output of N records (10% transient failures)")
        print(
            f"{'records':>9} {'file MB':>8} {'open s':>7} {'done B/row':>11} "
            f"{'held B/rec':>11} {'peak growth B/rec':>18} {'peak RSS MB':>12}"
        )
        for n in args.recover:
            r = spawn("recover", n)
            print(
                f"{r['records']:>9} {r['file_mb']:>8.0f} {r['wall']:>7.1f} "
                f"{r['done_bytes_per_row']:>11.1f} {r['held_rss_bytes_per_record']:>11.1f} "
                f"{r['peak_rss_growth_bytes_per_record']:>18.1f} {r['peak_rss_mb']:>12.0f}"
            )


if __name__ == "__main__":
    main()
