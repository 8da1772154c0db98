"""One run from a validated config: pipeline, sink, runtime, progress, summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from peerflow.config import RunConfig
from peerflow.pipeline import Pipeline
from peerflow.progress import show_progress
from peerflow.runtimes import get_runtime
from peerflow.sink import Sink
from peerflow.stats import RunStats

SIMULATOR_NOTE = (
    "SIMULATED LLM (peerflow sim-llm): replies are filler text from a timing "
    "simulator, not model output"
)


def summary_path(config: RunConfig) -> Path:
    if config.output.summary:
        return config.resolve(config.output.summary)
    out = config.resolve(config.output.path)
    return out.with_name(out.name + ".summary.json")


def service_labels(config: RunConfig) -> dict[str, str]:
    labels = {}
    for name, svc in config.services.items():
        if svc.kind == "sim":
            labels[name] = SIMULATOR_NOTE
        elif svc.kind == "local_model":
            labels[name] = f"embedded model {svc.model} (llama.cpp server started by peerflow)"
        else:
            labels[name] = f"{svc.model} at {', '.join(svc.endpoints)}"
    return labels


async def run_async(
    config: RunConfig, *, pipeline: Pipeline | None = None, progress: bool | None = None
) -> dict[str, Any]:
    pipeline = pipeline or Pipeline(config)
    sink = Sink(
        config.resolve(config.output.path),
        success_only=config.output.success_only,
        flush_bytes=config.output.flush_bytes,
    )
    sink.open()
    already = len(sink.finished)
    stats = RunStats()
    stats.finished_before = already
    runtime = get_runtime(config.runtime)
    show = config.runtime.progress if progress is None else progress
    bar = None
    if show:
        total = _known_total(pipeline)
        bar = asyncio.create_task(
            show_progress(
                stats,
                lambda: runtime.in_flight,
                total=None if total is None else max(total - already, 0),
                label=config.name,
            )
        )
    try:
        await runtime.run(pipeline, sink, stats)
    finally:
        if bar is not None:
            bar.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bar
        sink.close()
    summary = stats.summary(
        name=config.name,
        runtime=runtime.name,
        output=str(sink.path),
        services=service_labels(config),
        total_records_in_output=stats.finished_before + stats.done,
        cut_torn_bytes=sink.cut_bytes,
    )
    path = summary_path(config)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)
    return summary


def _known_total(pipeline: Pipeline) -> int | None:
    """The bar's total, when it is known without reading the dataset."""
    limit = pipeline.config.dataset.limit
    return None if limit is None else limit * pipeline.config.task.trials


def run(config: RunConfig, **kw: Any) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(run_async(config, **kw))
    except ImportError:
        return asyncio.run(run_async(config, **kw))
