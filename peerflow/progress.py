"""The progress bar: tasks/s, tokens/s, in-flight count and errors, refreshed twice a second."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from peerflow.cost import progress_text
from peerflow.stats import RunStats


def console(text: str) -> None:
    """A line for the user on stderr that does not tear the progress bar."""
    tqdm.write(f"peerflow: {text}", file=sys.stderr)


async def show_progress(
    stats: RunStats,
    in_flight: Callable[[], int],
    *,
    total: int | None,
    label: str,
    interval: float = 0.5,
) -> None:
    """Runs until cancelled; the caller cancels it when the run ends."""
    tty = sys.stderr.isatty()
    bar = tqdm(
        total=total,
        desc=label,
        unit="task",
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=interval if tty else 10.0,
        smoothing=0.1,
    )
    last_t, last_tokens = time.time(), 0
    try:
        while True:
            await asyncio.sleep(interval if tty else 10.0)
            now = time.time()
            done = stats.done
            tokens = stats.completion_tokens
            tok_rate = (tokens - last_tokens) / max(now - last_t, 1e-9)
            last_t, last_tokens = now, tokens
            rejected = stats.by_status.get("rejected", 0)
            bar.set_postfix_str(
                f"tok/s={tok_rate:,.0f} in_flight={in_flight()} errors={stats.errors}"
                + (f" rejected={rejected}" if rejected else "")
                + progress_text(stats),
                refresh=False,
            )
            bar.update(done - bar.n)
    finally:
        bar.update(stats.done - bar.n)
        bar.close()
