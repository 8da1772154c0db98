"""One run from a validated config: pipeline, sink, runtime, progress, summaries, exit status.

However a run ends (all rows done, a service that stopped answering, Ctrl-C, a
runtime fault), this module closes the sink, writes the run's own summary, updates
the combined summary of the output, and says how it ended in `summary["outcome"]`
and `summary["exit_code"]` (see `EXIT_CODES`). A run that stopped early left the
unattempted rows unrecorded: re-running the same command resumes with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from peerflow.config import ConfigError, RunConfig
from peerflow.pipeline import Pipeline
from peerflow.progress import console, show_progress
from peerflow.report import config_record, write_run_files
from peerflow.runtimes import get_runtime
from peerflow.runtimes.admission import RunStopped
from peerflow.services.base import ServiceUnavailable
from peerflow.services.cache import cache_summary
from peerflow.services.watch import ServiceWatch
from peerflow.sink import Sink
from peerflow.stats import RunStats
from peerflow.timeseries import Sampler

# The process exit status of `peerflow run`, documented in the README.
EXIT_OK = 0  # every row of the dataset has an ok record
EXIT_FAILED_ROWS = 1  # the run completed, but some rows ended as errors
EXIT_CONFIG = 2  # nothing ran: a configuration or usage error (bad key, busy output, ...)
EXIT_STOPPED = 3  # stopped early: no service answered, fail-fast, or an outage outlasted its limit
EXIT_INTERNAL = 4  # a runtime fault (a full disk, a bug); rows in flight were abandoned
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM; rows in flight were abandoned
EXIT_CODES = {
    EXIT_OK: "every row ended ok (or was rejected by the workflow)",
    EXIT_FAILED_ROWS: "completed; some rows ended as errors",
    EXIT_CONFIG: "configuration or usage error; nothing ran",
    EXIT_STOPPED: "stopped early; re-run the same command to resume",
    EXIT_INTERNAL: "runtime fault; re-run the same command to resume",
    EXIT_INTERRUPTED: "interrupted; re-run the same command to resume",
}

SIMULATOR_NOTE = (
    "SIMULATED LLM (peerflow sim-llm): replies are filler text or a script's, from a "
    "timing simulator, not model output"
)


def summary_path(config: RunConfig) -> Path:
    """The combined summary of the output (every run that wrote to it)."""
    if config.output.summary:
        return config.resolve(config.output.summary)
    out = config.resolve(config.output.path)
    return out.with_name(out.name + ".summary.json")


def runs_dir(config: RunConfig) -> Path:
    """Where each run's own summary is kept, one file per run."""
    out = config.resolve(config.output.path)
    return out.with_name(out.name + ".runs")


def service_labels(config: RunConfig) -> dict[str, str]:
    """What each service is, for the summary; SIMULATED for any simulator.

    A `kind: openai` service is a simulator when its server said so (the simulator's
    `X-Peerflow-Simulator` header) to the health probe every run makes before admitting rows.
    """
    from peerflow.services.openai_client import SIMULATED_BASES, _normalise_base

    labels = {}
    for name, svc in config.services.items():
        if svc.kind == "sim":
            labels[name] = SIMULATOR_NOTE
        elif svc.kind == "local_model":
            labels[name] = f"embedded model {svc.model} (llama.cpp server started by peerflow)"
        elif svc.kind == "tool_env":
            where = ", ".join(svc.urls) or f"{svc.replicas} server(s) started by peerflow"
            labels[name] = f"tool environments of domain {svc.domain} ({where})"
        elif svc.kind == "sandbox":
            where = ", ".join(svc.urls) or f"{svc.replicas} server(s) started by peerflow"
            isolation = "bwrap" if svc.isolation == "bwrap" else "none (UNSAFE)"
            labels[name] = f"code sandbox, isolation: {isolation} ({where})"
        elif svc.kind == "command":
            command = svc.command if isinstance(svc.command, str) else " ".join(svc.command)
            labels[name] = f"{svc.model} (server started by peerflow: {command})"
        else:
            where = f"{svc.model} at {', '.join(svc.endpoints)}"
            simulated = any(_normalise_base(e) in SIMULATED_BASES for e in svc.endpoints)
            labels[name] = f"{SIMULATOR_NOTE} ({where})" if simulated else where
    return labels


async def run_async(
    config: RunConfig,
    *,
    pipeline: Pipeline | None = None,
    progress: bool | None = None,
    retry_failed: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run to the end (or until stopped) and return this run's summary.

    A runtime fault is re-raised after the summaries are written; every other ending
    is described by `summary["outcome"]` and `summary["exit_code"]`.
    """
    from peerflow import __version__
    from peerflow.config import config_fingerprint
    from peerflow.sink import check_fingerprint

    pipeline = pipeline or Pipeline(config)
    runtime = get_runtime(config.runtime)  # before the output is locked: it may refuse
    out = config.resolve(config.output.path)
    fingerprint = config_fingerprint(config)
    sink = Sink(
        out,
        success_only=config.output.success_only,
        flush_bytes=config.output.flush_bytes,
        retry_failed=retry_failed,
    )
    try:
        sink.open()  # takes the output's lock first: a second run on it stops here
    except OSError as exc:
        raise config.error(
            [(("output", "path"), f"cannot open {exc.filename or out}: {exc.strerror or exc}")]
        ) from None
    try:
        check_fingerprint(out, fingerprint, __version__, force=force)
    except BaseException:
        sink.close()
        raise
    sink.provenance = {"peerflow": __version__, "fingerprint": fingerprint}
    stats = RunStats()
    stats.finished_before = len(sink.finished)
    show = config.runtime.progress if progress is None else progress
    bar = None
    if show:
        total = _known_total(pipeline)
        bar = asyncio.create_task(
            show_progress(
                stats,
                lambda: runtime.in_flight,
                total=None if total is None else max(total - stats.finished_before, 0),
                label=config.name,
            )
        )
    sampler = Sampler(stats, lambda: runtime.in_flight).start()  # <output>.timeseries.json
    outcome, reason, code = "complete", None, None
    fault: BaseException | None = None
    watch = ServiceWatch.from_config(config.runtime, on_event=console)
    work = asyncio.create_task(runtime.run(pipeline, sink, stats, watch))
    interrupted = _on_signals(work)
    try:
        await work
    except RunStopped as exc:
        outcome, reason, code = "stopped", str(exc), exc.code
    except ServiceUnavailable as exc:
        outcome, reason, code = "stopped", f"no row was admitted: {exc}", EXIT_STOPPED
    except asyncio.CancelledError:
        if not interrupted:
            raise
        outcome, reason, code = "interrupted", "interrupted by a signal", EXIT_INTERRUPTED
    except ConfigError as exc:  # found once the runtime is up, e.g. unplaceable Ray actors
        outcome, reason, code = "config error", str(exc), EXIT_CONFIG
        fault = exc
    except Exception as exc:
        outcome, reason, code = "failed", f"{type(exc).__name__}: {exc}", EXIT_INTERNAL
        fault = exc
    finally:
        _restore_signals()
        if bar is not None:
            bar.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bar
        await sampler.stop()
        sink.close()
    counts = sink.counts()
    failed_rows = counts.get("error", 0)
    if code is None:
        code = EXIT_FAILED_ROWS if failed_rows else EXIT_OK
    summary = stats.summary(
        name=config.name,
        started=stats.started,
        runtime=runtime.name,
        output=str(sink.path),
        services=service_labels(config),
        total_records_in_output=sum(counts.values()),
        output_by_status=counts,
        cut_torn_bytes=sink.cut_bytes,
        peerflow=__version__,
        fingerprint=fingerprint,
        config=config_record(config),
        # Where the config's relative paths (templates, user code) resolve: `peerflow export`
        # rebuilds the roles' prompts from the recorded config.
        config_dir=str(Path(config.base_dir).resolve()),
        duplicate_input_ids=getattr(pipeline, "duplicate_ids", 0),
        outcome=outcome,
        reason=reason,
        exit_code=code,
        exit_meaning=EXIT_CODES[code],
        # On Ray the calls happen in the role actors, whose watches the driver merges.
        service_watch=stats.extra.get("ray", {}).get("service_watch") or watch.report(),
    )
    cache = cache_summary(summary["service_watch"])
    if cache:  # response-cache hits and misses per service (docs/cache.md)
        summary["cache"] = cache
    write_summaries(config, summary)
    write_run_files(config, summary, sampler)  # the time series and <output>.report.html
    if fault is not None:
        raise fault
    return summary


def write_summaries(config: RunConfig, summary: dict[str, Any]) -> None:
    """This run's summary in `<output>.runs/`, and the output's combined view beside it.

    An empty re-run or a resumed one never overwrites an earlier run's numbers: each
    run has its own file. The combined file holds the newest run's summary at the top
    (so scripts reading it keep working), `runs` (every run, briefly) and `combined`
    (the output as it now stands, and totals over all runs).
    """
    folder = runs_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    started = summary["started"]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    micros = int((started % 1) * 1e6)
    own = folder / f"{stamp}.{micros:06d}Z-{os.getpid()}.json"
    _write_json(own, summary)
    combined_path = summary_path(config)
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(combined_path.read_text())
    runs = [r for r in previous.get("runs", []) if isinstance(r, dict)]
    runs.append(
        {
            "summary": os.path.relpath(own, combined_path.parent),
            "started": started,
            "outcome": summary["outcome"],
            "records_written": summary["records_written"],
            "by_status": summary["by_status"],
            "wall_seconds": summary["wall_seconds"],
            "tokens": summary["tokens"],
            "cost_usd": (summary.get("cost") or {}).get("usd"),
            "exit_code": summary["exit_code"],
        }
    )
    combined = {
        "records": summary["total_records_in_output"],
        "by_status": summary["output_by_status"],
        "runs": len(runs),
        "records_written": sum(r["records_written"] for r in runs),
        "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 3),
        "tokens": {
            kind: sum(r.get("tokens", {}).get(kind, 0) for r in runs)
            for kind in ("prompt", "completion")
        },
        # Every run's spend on this output (peerflow.cost); a budget is per run.
        "cost_usd": round(sum(r.get("cost_usd") or 0.0 for r in runs), 6),
    }
    _write_json(combined_path, {**summary, "combined": combined, "runs": runs})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted:
    """Truthy once a signal asked the run to stop."""

    def __init__(self) -> None:
        self.hit = False

    def __bool__(self) -> bool:
        return self.hit


def _on_signals(work: asyncio.Task[Any]) -> _Interrupted:
    """The first Ctrl-C cancels the run cleanly (summary written); a second one is immediate."""
    flag = _Interrupted()
    loop = asyncio.get_running_loop()

    def handle(sig: signal.Signals) -> None:
        if flag.hit:
            raise KeyboardInterrupt
        flag.hit = True
        console(
            f"{sig.name}: stopping; in-flight rows are abandoned (press Ctrl-C again to quit now)"
        )
        work.cancel()

    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handle, sig)
    return flag


def _restore_signals() -> None:
    with contextlib.suppress(RuntimeError):
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


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
