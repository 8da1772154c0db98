"""Run statistics: counts, tokens, per-role latency and workflow metrics.

Latencies go into log-spaced histograms rather than lists, so a run of
millions of steps keeps a few kilobytes of state and stats from several
processes (Ray actors, partitions) can be merged by adding buckets.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from peerflow.message import OK, Message

_BUCKETS_PER_DOUBLING = 8
_MIN_LATENCY = 1e-6


class Histogram:
    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = defaultdict(int)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        b = int(math.log2(max(value, _MIN_LATENCY)) * _BUCKETS_PER_DOUBLING)
        self.buckets[b] += 1

    def merge(self, other: Histogram) -> None:
        for b, n in other.buckets.items():
            self.buckets[b] += n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return 2 ** ((b + 0.5) / _BUCKETS_PER_DOUBLING)
        return self.max

    def summary(self) -> dict[str, float]:
        return {
            "mean": self.total / self.count if self.count else 0.0,
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "max": self.max,
        }


class RoleStats:
    __slots__ = ("completion_tokens", "errors", "latency", "prompt_tokens", "retries")

    def __init__(self) -> None:
        self.latency = Histogram()
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.retries = 0


class RunStats:
    """Accumulates over finished tasks (the sink calls `observe` once per record)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.by_status: dict[str, int] = defaultdict(int)
        self.roles: dict[str, RoleStats] = {}
        self.task_latency = Histogram()
        self.steps = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.metric_sums: dict[str, float] = defaultdict(float)
        self.metric_counts: dict[str, int] = defaultdict(int)
        self.skipped = 0
        self.duplicates = 0
        # Records already in the output when this run began (runtimes with sharded
        # output correct it), and runtime-specific sections for the summary.
        self.finished_before = 0
        self.extra: dict[str, Any] = {}
        self.error_samples: list[dict[str, Any]] = []

    def observe(self, message: Message, metrics: dict[str, Any] | None) -> None:
        self.by_status[message.status] += 1
        if message.finished and message.created:
            self.task_latency.add(message.finished - message.created)
        roles = self.roles
        for step in message.history:
            if step.role == "task":  # the task's opening message, not an agent step
                continue
            rs = roles.get(step.role)
            if rs is None:
                rs = roles[step.role] = RoleStats()
            if step.latency:
                rs.latency.add(step.latency)
            if not step.ok:
                rs.errors += 1
            if step.attempts > 1:
                rs.retries += step.attempts - 1
            usage = step.usage
            if usage:
                p = usage.get("prompt_tokens", 0)
                c = usage.get("completion_tokens", 0)
                rs.prompt_tokens += p
                rs.completion_tokens += c
                self.prompt_tokens += p
                self.completion_tokens += c
        self.steps += message.hops
        if metrics:
            for key, value in metrics.items():
                if isinstance(value, bool | int | float):
                    self.metric_sums[key] += float(value)
                    self.metric_counts[key] += 1
        if message.status != OK and len(self.error_samples) < 5 and message.error:
            self.error_samples.append({"id": message.id, **message.error})

    @property
    def done(self) -> int:
        return sum(self.by_status.values())

    @property
    def errors(self) -> int:
        return self.done - self.by_status.get(OK, 0)

    def summary(self, **extra: Any) -> dict[str, Any]:
        wall = max(time.time() - self.started, 1e-9)
        done = self.done
        return {
            **extra,
            "records_written": done,
            "finished_before_this_run": self.finished_before,
            "skipped_already_finished": self.skipped,
            "duplicates_dropped": self.duplicates,
            "by_status": dict(self.by_status),
            "success_rate": self.by_status.get(OK, 0) / done if done else None,
            "wall_seconds": round(wall, 3),
            "tasks_per_second": round(done / wall, 3),
            "steps": self.steps,
            "steps_per_second": round(self.steps / wall, 1),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "completion_tokens_per_second": round(self.completion_tokens / wall, 1),
            "task_latency_seconds": self.task_latency.summary(),
            "roles": {
                role: {
                    "steps": rs.latency.count,
                    "errors": rs.errors,
                    "retries": rs.retries,
                    "prompt_tokens": rs.prompt_tokens,
                    "completion_tokens": rs.completion_tokens,
                    "latency_seconds": rs.latency.summary(),
                }
                for role, rs in sorted(self.roles.items())
            },
            "metrics": {
                k: self.metric_sums[k] / self.metric_counts[k] for k in sorted(self.metric_sums)
            },
            "error_samples": self.error_samples,
            **self.extra,
        }
