"""Steps/s of the local runtime on the Coral workflow with dummy agents, output written.

The dummy teacher/student emit 1,024 characters +-20% per step, the dummy
extractor reads the letter back, the matcher is the real Coral matcher, and
agreement comes after about 3 turns (as in the paper's bottleneck study).
Next to it, the same steps in a bare asyncio loop with no framework (same
dummy text, same JSON encoding of every record), so the ratio shows
peerflow's own overhead.

    python benchmarks/bench_local_runtime.py --rows 20000
    python benchmarks/bench_local_runtime.py --memory --rows 50000   # 50,000 in flight
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from peerflow.config import RunConfig
from peerflow.pipeline import Pipeline
from peerflow.recipes.coral import _TEXT, LETTERS
from peerflow.run import run_async


def coral_dummy_config(data: Path, out: Path, max_in_flight: int | None = None) -> RunConfig:
    """The shipped defaults everywhere; only `max_in_flight` may be set (and is printed)."""
    speaker = {"agent": "peerflow.recipes.coral:DummySpeaker"}
    return RunConfig.model_validate(
        {
            "name": "coral-dummy",
            "dataset": {
                "path": str(data),
                "id_field": "question_id",
                "fields": {"question": "question", "answer": "answer"},
            },
            "task": {"message": "{{ question }}"},
            "roles": {
                "teacher": speaker,
                "student": speaker,
                "extractor": {"agent": "peerflow.recipes.coral:DummyExtractor"},
                "matcher": {"agent": "function", "function": "peerflow.recipes.coral:match"},
            },
            "workflow": {
                "kind": "loop",
                "check_after": "matcher",
                "max_turns": 20,
                "until": "peerflow.recipes.coral:finished",
                "roles": ["teacher", "extractor", "matcher", "student", "extractor", "matcher"],
            },
            "runtime": {
                "kind": "local",
                "progress": False,
                **({} if max_in_flight is None else {"max_in_flight": max_in_flight}),
            },
            "output": {"path": str(out)},
            "metrics": "peerflow.recipes.coral:metrics",
        }
    )


def write_rows(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "question_id": f"q{i}",
                        "question": f"Question {i}?",
                        "answer": LETTERS[i % 10],
                    }
                )
                + "\n"
            )


class _Rec(msgspec.Struct):
    id: str
    row: dict
    history: list


async def bare_asyncio(rows: int, out: Path, in_flight: int) -> tuple[int, float]:
    """The same dialogue steps with no framework: a coroutine per task, one shared file."""
    rng = random.Random(1)
    enc = msgspec.json.Encoder()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
    buf: list[bytes] = []
    size = 0
    steps = 0
    sem = asyncio.Semaphore(in_flight)

    def speak(turn: int) -> dict:
        n = int(1024 * (1 + rng.uniform(-0.2, 0.2)))
        start = rng.randrange(0, len(_TEXT) - n)
        p = 0.9 if turn + 1 >= 3 else 0.1
        letter = "A" if rng.random() < p else rng.choice(LETTERS[1:])
        return {
            "role": "speaker",
            "content": f"{_TEXT[start : start + n]} The answer is ({letter})",
        }

    async def task(i: int) -> None:
        nonlocal steps, size
        history: list[dict] = [{"role": "task", "content": f"Question {i}?"}]
        answers: dict[str, str] = {}
        for turn in range(20):
            who = "teacher" if turn % 2 == 0 else "student"
            said = speak(turn)
            history.append(said)
            await asyncio.sleep(0)
            answers[who] = said["content"][-2]
            history.append({"role": "extractor", "content": said["content"][-3:]})
            await asyncio.sleep(0)
            agree = answers.get("teacher") is not None and answers.get("teacher") == answers.get(
                "student"
            )
            history.append({"role": "matcher", "data": {"agree": agree}})
            await asyncio.sleep(0)
            steps += 3
            if agree:
                break
        line = enc.encode(_Rec(id=f"q{i}", row={"question": f"Question {i}?"}, history=history))
        buf.append(line + b"\n")
        size += len(line) + 1
        if size > 1 << 20:
            os.write(fd, b"".join(buf))
            buf.clear()
            size = 0
        sem.release()

    t0 = time.perf_counter()
    pending = set()
    for i in range(rows):
        await sem.acquire()
        t = asyncio.ensure_future(task(i))
        pending.add(t)
        t.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*list(pending))
    os.write(fd, b"".join(buf))
    os.close(fd)
    return steps, time.perf_counter() - t0


async def throughput(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        write_rows(data, args.rows)
        out = Path(tmp) / "out.jsonl"
        config = coral_dummy_config(data, out, args.max_in_flight)
        in_flight = config.runtime.max_in_flight
        knob = "default" if args.max_in_flight is None else "set by --max-in-flight"
        print(f"settings: shipped defaults; max_in_flight {in_flight} ({knob}), same for both")
        pipeline = Pipeline(config)
        t0 = time.perf_counter()
        summary = await run_async(config, pipeline=pipeline, progress=False)
        wall = time.perf_counter() - t0
        lines = out.read_bytes().count(b"\n")
        mb = out.stat().st_size / 1e6
        steps = summary["steps"]
        pf_rate = steps / wall
        print(
            f"peerflow local runtime: {args.rows} tasks, {steps} steps in {wall:.2f} s "
            f"= {pf_rate:,.0f} steps/s, {args.rows / wall:,.0f} tasks/s; "
            f"{lines} records, {mb:.1f} MB written"
        )
        b_steps, b_wall = await bare_asyncio(args.rows, Path(tmp) / "bare.jsonl", in_flight)
        b_rate = b_steps / b_wall
        print(
            f"bare asyncio loop:      {args.rows} tasks, {b_steps} steps in {b_wall:.2f} s "
            f"= {b_rate:,.0f} steps/s"
        )
        print(f"ratio peerflow / bare asyncio: {pf_rate / b_rate:.2f}")


async def memory_child(which: str, rows: int, in_flight: int) -> None:
    """One loop in this process, so that its peak RSS is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        write_rows(data, rows)
        out = Path(tmp) / "out.jsonl"
        t0 = time.perf_counter()
        if which == "peerflow":
            config = coral_dummy_config(data, out, in_flight)
            steps = (await run_async(config, pipeline=Pipeline(config), progress=False))["steps"]
        else:
            steps, _ = await bare_asyncio(rows, out, in_flight)
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"which": which, "peak_rss_mb": round(peak, 1), "steps_per_s": steps / wall}))


def memory(args: argparse.Namespace) -> None:
    in_flight = args.max_in_flight or 50_000
    rows = args.rows
    print(f"settings: shipped defaults but max_in_flight {in_flight} (set), {rows} rows")
    for which in ("peerflow", "bare"):
        cmd = [sys.executable, __file__, "--child", which, "--rows", str(rows)]
        cmd += ["--max-in-flight", str(in_flight)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{which:<9} {in_flight} tasks in flight: peak RSS {r['peak_rss_mb']:,.0f} MB, "
            f"{r['steps_per_s']:,.0f} steps/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="tasks in flight for both loops (default: peerflow's default, runtime.max_in_flight;"
        " 50,000 with --memory)",
    )
    parser.add_argument(
        "--memory", action="store_true", help="peak RSS of each loop, each in its own process"
    )
    parser.add_argument("--child", choices=["peerflow", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.child:
        runner(memory_child(args.child, args.rows, args.max_in_flight))
    elif args.memory:
        memory(args)
    else:
        runner(throughput(args))


if __name__ == "__main__":
    main()
