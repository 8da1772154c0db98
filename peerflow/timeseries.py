"""A bounded time series of a run's counters, for the report's time axes.

Every second the run's cumulative counters (tasks finished by status, steps, tokens, steps
per role) and the number of tasks in flight are sampled. A run of hours must not grow a
per-step log, so the series is bounded: when it holds `cap` samples, every other one is
dropped and sampling continues at half the rate. The counters are cumulative, so thinning
loses resolution but never a total: a rate between any two kept samples is still exact.

The samples go to `<output>.timeseries.json` when the run ends, as one entry per run in
`runs` (a resumed output keeps its earlier runs' series, the newest `MAX_RUNS`). The same
counters exist on every runtime: the local runtime counts records as its sink writes them,
and the Ray driver merges its sinks' counts as they report (`RunStats.merge`); in flight is
what admission holds on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peerflow.stats import RunStats

CAP = 2000  # samples kept per run, at most
MAX_RUNS = 20  # runs kept in one output's file, newest last
STATUSES = ("ok", "error", "rejected")


def timeseries_path(output: Path) -> Path:
    """Where an output's time series lives: beside it, like its summary."""
    return output.with_name(output.name + ".timeseries.json")


class Thinned:
    """Keeps at most `cap` of the samples offered to it, evenly spaced.

    Sample `n` (counting every offer from 0) is kept when `n % stride == 0`. When the list
    is full, every other kept sample is dropped and `stride` doubles, so the samples kept
    are always the offers at multiples of `stride`: evenly spaced over the whole run.
    """

    def __init__(self, cap: int = CAP) -> None:
        if cap < 2:
            raise ValueError("cap must be at least 2")
        self.cap = cap
        self.stride = 1
        self.offered = 0
        self.samples: list[dict[str, float]] = []

    def offer(self, sample: dict[str, float]) -> bool:
        """Consider one sample; True when it was kept."""
        n = self.offered
        self.offered += 1
        if n % self.stride:
            return False
        if len(self.samples) >= self.cap:
            self.samples = self.samples[::2]
            self.stride *= 2
            if n % self.stride:
                return False
        self.samples.append(sample)
        return True

    def close(self, sample: dict[str, float]) -> None:
        """Add the final sample whatever the stride, so the series ends at the run's totals.

        It may take the place of the last kept one, so the list never exceeds `cap`.
        """
        if len(self.samples) >= self.cap:
            self.samples[-1] = sample
        else:
            self.samples.append(sample)


def counters(stats: RunStats, in_flight: int, started: float) -> dict[str, float]:
    """One sample: seconds since `started`, in flight, and the cumulative counters."""
    by_status = stats.by_status
    sample: dict[str, float] = {
        "t": round(time.time() - started, 3),
        "in_flight": in_flight,
        "tasks": stats.done,
        "steps": stats.steps,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
    }
    if stats.cost.usd:  # priced runs only (peerflow.cost); earlier samples read as 0
        sample["cost_usd"] = round(stats.cost.usd, 6)
    for status in STATUSES:
        sample[status] = by_status.get(status, 0)
    for role, rs in stats.roles.items():
        sample[f"steps:{role}"] = rs.latency.count
        sample[f"tokens:{role}"] = rs.prompt_tokens + rs.completion_tokens
    return sample


class Sampler:
    """Samples a run's counters every `interval` seconds on the run's event loop.

    `start` it once the run's loop is running and `await stop()` when the run ended (also
    when it stopped early: the series then says how far it went). Reading the counters is
    a few attribute reads, so sampling costs nothing measurable.
    """

    def __init__(
        self,
        stats: RunStats,
        in_flight: Callable[[], int],
        *,
        interval: float = 1.0,
        cap: int = CAP,
    ) -> None:
        self.stats = stats
        self.in_flight = in_flight
        self.interval = interval
        self.series = Thinned(cap)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, float]:
        try:
            flying = int(self.in_flight())
        except Exception:  # a runtime that is not up yet, or already torn down
            flying = 0
        return counters(self.stats, flying, self.stats.started)

    def start(self) -> Sampler:
        self.series.offer(self.sample())
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.series.offer(self.sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.series.close(self.sample())

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return series_json(self.series, self.interval, started=self.stats.started, **extra)


def series_json(series: Thinned, interval: float, **extra: Any) -> dict[str, Any]:
    """A run's series as columns: `columns` names them, `rows` holds one list per sample.

    A role first seen mid-run has 0 in the samples before it appeared.
    """
    columns: list[str] = []
    for sample in series.samples:
        for key in sample:
            if key not in columns:
                columns.append(key)
    rows = [[sample.get(key, 0) for key in columns] for sample in series.samples]
    return {
        **extra,
        "interval": interval * series.stride,
        "samples_offered": series.offered,
        "columns": columns,
        "rows": rows,
    }


def columns_of(run: dict[str, Any]) -> dict[str, list[float]]:
    """One run's series (as `series_json` wrote it) as {column: values}."""
    names = run.get("columns") or []
    rows = run.get("rows") or []
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def read_timeseries(output: Path) -> list[dict[str, Any]]:
    """Every run's series kept for `output`, oldest first; empty when there is none."""
    try:
        data = json.loads(timeseries_path(output).read_text())
    except (OSError, ValueError):
        return []
    runs = data.get("runs") if isinstance(data, dict) else None
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def write_timeseries(output: Path, run: dict[str, Any]) -> Path:
    """Append one run's series to the output's file (atomically), keeping the newest runs."""
    path = timeseries_path(output)
    runs = [*read_timeseries(output), run][-MAX_RUNS:]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"runs": runs}, separators=(",", ":")))
    os.replace(tmp, path)
    return path
