"""Admission is lazy: memory does not grow with the dataset, only with max_in_flight."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

from peerflow.config import RunConfig
from peerflow.pipeline import Pipeline
from peerflow.runtimes.local import LocalRuntime
from peerflow.sink import Sink
from peerflow.stats import RunStats


def config(tmp: Path, rows: int, max_in_flight: int) -> RunConfig:
    data = tmp / f"rows{rows}.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "text": "x" * 200}) + "\n")
    return RunConfig.model_validate(
        {
            "dataset": {"path": str(data), "id_field": "id"},
            "task": {"message": "{{ text }}"},
            "roles": {
                "a": {"agent": "peerflow.testing:Echo"},
                "b": {"agent": "peerflow.testing:Echo"},
            },
            "workflow": {"kind": "sequence", "roles": ["a", "b"]},
            "runtime": {"max_in_flight": max_in_flight, "progress": False},
            "output": {"path": str(tmp / f"out{rows}.jsonl")},
        }
    )


async def peak_bytes(cfg: RunConfig) -> int:
    pipeline = Pipeline(cfg)
    sink = Sink(Path(cfg.output.path))
    sink.open()
    tracemalloc.start()
    try:
        await LocalRuntime(cfg.runtime).run(pipeline, sink, RunStats())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        sink.close()


async def test_peak_memory_does_not_grow_with_dataset_size(tmp_path: Path) -> None:
    small = await peak_bytes(config(tmp_path, 3_000, 64))
    large = await peak_bytes(config(tmp_path, 30_000, 64))
    # Only the finished-id set grows with the input (~100 bytes per id); the messages
    # themselves (~1 KB each here) must not pile up.
    assert large - small < 27_000 * 250, (small, large)


async def test_in_flight_never_exceeds_the_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path, 400, 5)
    pipeline = Pipeline(cfg)
    sink = Sink(Path(cfg.output.path))
    sink.open()
    runtime = LocalRuntime(cfg.runtime)
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(runtime.in_flight)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await runtime.run(pipeline, sink, RunStats())
    watcher.cancel()
    sink.close()
    assert max(seen) <= 5
    assert max(seen) >= 2  # and it does run several at once
