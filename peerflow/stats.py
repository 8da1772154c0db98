"""Run statistics: counts, tokens, per-role latency and workflow metrics.

Latencies go into log-spaced histograms rather than lists, so a run of
millions of steps keeps a few kilobytes of state and stats from several
processes (Ray actors, partitions) can be merged by adding buckets.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from peerflow.cost import CostTally
from peerflow.message import ERROR, OK, Message, Step

_BUCKETS_PER_DOUBLING = 8
_MIN_LATENCY = 1e-6
_FOLD_AT = 4096


class Histogram:
    """Log-spaced buckets (8 per doubling); values are bucketed in bulk with numpy.

    `add` only appends to a short list, because it runs for every step of every task;
    every 4,096 values (and before any read) the list is folded into the buckets.
    """

    __slots__ = ("_buckets", "_count", "_max", "_total", "pending")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = defaultdict(int)
        self._count = 0
        self._total = 0.0
        self._max = 0.0
        self.pending: list[float] = []

    def add(self, value: float) -> None:
        pending = self.pending
        pending.append(value)
        if len(pending) >= _FOLD_AT:
            self.fold()

    def fold(self) -> None:
        pending = self.pending
        if not pending:
            return
        values = np.asarray(pending, dtype=np.float64)
        self.pending = []
        self._count += values.size
        self._total += float(values.sum())
        self._max = max(self._max, float(values.max()))
        keys = np.floor(np.log2(np.maximum(values, _MIN_LATENCY)) * _BUCKETS_PER_DOUBLING)
        found, counts = np.unique(keys.astype(np.int64), return_counts=True)
        buckets = self._buckets
        for b, n in zip(found.tolist(), counts.tolist(), strict=True):
            buckets[b] += n

    @property
    def buckets(self) -> dict[int, int]:
        self.fold()
        return self._buckets

    @property
    def count(self) -> int:
        return self._count + len(self.pending)

    @property
    def total(self) -> float:
        self.fold()
        return self._total

    @property
    def max(self) -> float:
        self.fold()
        return self._max

    def merge(self, other: Histogram) -> None:
        self.fold()
        other.fold()
        for b, n in other._buckets.items():
            self._buckets[b] += n
        self._count += other._count
        self._total += other._total
        self._max = max(self._max, other._max)

    def quantile(self, q: float) -> float:
        self.fold()
        if not self._count:
            return 0.0
        rank = q * self._count
        seen = 0
        for b in sorted(self._buckets):
            seen += self._buckets[b]
            if seen >= rank:
                return 2 ** ((b + 0.5) / _BUCKETS_PER_DOUBLING)
        return self._max

    def summary(self) -> dict[str, float]:
        self.fold()
        return {
            "mean": self._total / self._count if self._count else 0.0,
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "max": self._max,
        }

    def __getstate__(self) -> tuple[dict[int, int], int, float, float]:
        self.fold()
        return dict(self._buckets), self._count, self._total, self._max

    def __setstate__(self, state: tuple[dict[int, int], int, float, float]) -> None:
        buckets, self._count, self._total, self._max = state
        self._buckets = defaultdict(int, buckets)
        self.pending = []


class RoleStats:
    """One role's totals. `tool_calls`/`tool_errors` count the calls a tool role ran and
    those that failed (`is_error` results: they went back to the model, the step is ok).
    `tasks` counts the tasks that reached the role, `rejected` (by reason) and `failed`
    those that ended there: the funnel."""

    __slots__ = (
        "completion_tokens",
        "errors",
        "failed",
        "latency",
        "prompt_tokens",
        "rejected",
        "retries",
        "tasks",
        "tool_calls",
        "tool_errors",
    )

    def __init__(self) -> None:
        self.latency = Histogram()
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.retries = 0
        self.tool_calls = 0
        self.tool_errors = 0
        self.tasks = 0
        self.failed = 0
        self.rejected: Counter[str] = Counter()


def tool_counts(step: Step) -> tuple[int, int]:
    """(calls run, calls failed) by a tool step, from its results as the workflow counts
    them; a custom tool agent's single-result step is one call; (0, 0) for other steps."""
    results = step.tool_results
    if results:
        return len(results), sum(1 for r in results if r.get("is_error"))
    if step.tool_call_id is None:
        return 0, 0
    # A single result has no is_error of its own: the agent says so in its data.
    return 1, int(bool((step.data or {}).get("tool_errors")))


_RECORD_FIELDS = (
    "by_status",
    "by_reason",
    "roles",
    "task_latency",
    "steps",
    "prompt_tokens",
    "completion_tokens",
    "metric_sums",
    "metric_counts",
    "cost",
)


class RunStats:
    """Accumulates over finished tasks (the sink calls `observe` once per record)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.by_status: dict[str, int] = defaultdict(int)
        # Why tasks ended (`done`, `until`, a conversation's termination, `max_steps`, ...).
        self.by_reason: dict[str, int] = defaultdict(int)
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
        self.cost = CostTally()  # dollars and token details (peerflow.cost)

    def observe(self, message: Message, metrics: dict[str, Any] | None) -> None:
        self.by_status[message.status] += 1
        self.by_reason[message.reason or message.status] += 1
        if message.finished and message.created:
            self.task_latency.add(message.finished - message.created)
        roles = self.roles
        prompt = completion = 0
        reached: set[str] = set()
        for step in message.history:
            role = step.role
            if role == "task":  # the task's opening message, not an agent step
                continue
            rs = roles.get(role)
            if rs is None:
                rs = roles[role] = RoleStats()
            if role not in reached:
                reached.add(role)
                rs.tasks += 1
            if step.latency:
                rs.latency.pending.append(step.latency)
            if not step.ok:
                rs.errors += 1
            if step.attempts > 1:
                rs.retries += step.attempts - 1
            if step.tool_results or step.tool_call_id is not None:
                calls, failed = tool_counts(step)
                rs.tool_calls += calls
                rs.tool_errors += failed
            usage = step.usage
            if usage:
                p = usage.get("prompt_tokens", 0)
                c = usage.get("completion_tokens", 0)
                rs.prompt_tokens += p
                rs.completion_tokens += c
                prompt += p
                completion += c
        for rs in roles.values():
            if len(rs.latency.pending) >= _FOLD_AT:
                rs.latency.fold()
        self.prompt_tokens += prompt
        self.cost.observe(message)
        self.completion_tokens += completion
        self.steps += message.hops
        ended = message.rejection or (message.error if message.status == ERROR else None)
        if ended and ended.get("role") in roles:
            rs = roles[ended["role"]]
            if message.rejection:
                rs.rejected[str(message.rejection.get("reason"))] += 1
            else:
                rs.failed += 1
        if metrics:
            for key, value in metrics.items():
                if isinstance(value, bool | int | float):
                    self.metric_sums[key] += float(value)
                    self.metric_counts[key] += 1
        if message.status != OK and len(self.error_samples) < 5 and message.error:
            self.error_samples.append({"id": message.id, **message.error})

    def forget_records(self) -> None:
        """Drop what `observe` and `merge` added: a Ray driver rebuilds it from its sinks."""
        fresh = RunStats()
        for name in (*_RECORD_FIELDS, "duplicates", "error_samples"):
            setattr(self, name, getattr(fresh, name))

    def merge(self, src: RunStats) -> None:
        """Add another process's stats (a Ray sink's records) into these: the one merge."""
        for status, n in src.by_status.items():
            self.by_status[status] += n
        for reason, n in src.by_reason.items():
            self.by_reason[reason] += n
        for role, rs in src.roles.items():
            d = self.roles.get(role)
            if d is None:
                d = self.roles[role] = RoleStats()
            d.latency.merge(rs.latency)
            d.errors += rs.errors
            d.prompt_tokens += rs.prompt_tokens
            d.completion_tokens += rs.completion_tokens
            d.retries += rs.retries
            d.tool_calls += rs.tool_calls
            d.tool_errors += rs.tool_errors
            d.tasks += rs.tasks
            d.failed += rs.failed
            d.rejected.update(rs.rejected)
        self.task_latency.merge(src.task_latency)
        self.steps += src.steps
        self.prompt_tokens += src.prompt_tokens
        self.completion_tokens += src.completion_tokens
        for k, v in src.metric_sums.items():
            self.metric_sums[k] += v
        for k, n in src.metric_counts.items():
            self.metric_counts[k] += n
        self.duplicates += src.duplicates
        self.cost.merge(src.cost)
        room = 5 - len(self.error_samples)
        if room > 0:
            self.error_samples.extend(src.error_samples[:room])

    @property
    def done(self) -> int:
        return sum(self.by_status.values())

    @property
    def errors(self) -> int:
        return self.by_status.get(ERROR, 0)

    @staticmethod
    def _role_summary(rs: RoleStats) -> dict[str, Any]:
        out: dict[str, Any] = {
            "steps": rs.latency.count,
            "errors": rs.errors,
            "retries": rs.retries,
            "prompt_tokens": rs.prompt_tokens,
            "completion_tokens": rs.completion_tokens,
            "latency_seconds": rs.latency.summary(),
        }
        if rs.tool_calls:  # a tool role
            out["tool_calls"] = rs.tool_calls
            out["tool_errors"] = rs.tool_errors
        return out

    def funnel(self) -> dict[str, Any]:
        """Where rows ended: per role (in funnel order) the rows that reached it, those it
        rejected by reason and those that failed there, with the tokens it spent; shares
        are of all rows finished in this run."""
        rows = self.done
        share = (lambda n: round(n / rows, 4)) if rows else (lambda n: None)
        steps = []
        # The order roles were first seen in, then by rows reached: a funnel narrows.
        order = sorted(self.roles.items(), key=lambda item: -item[1].tasks)
        for role, rs in order:
            rejected = sum(rs.rejected.values())
            steps.append(
                {
                    "role": role,
                    "reached": rs.tasks,
                    "rejected": rejected,
                    "failed": rs.failed,
                    "passed": rs.tasks - rejected - rs.failed,
                    "reasons": {
                        reason: {"rows": n, "share": share(n), "of_reached": round(n / rs.tasks, 4)}
                        for reason, n in rs.rejected.most_common()
                    },
                    "tokens": rs.prompt_tokens + rs.completion_tokens,
                    "completion_tokens": rs.completion_tokens,
                }
            )
        ok = self.by_status.get(OK, 0)
        return {"rows": rows, "steps": steps, "accepted": ok, "accepted_share": share(ok)}

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
            "by_reason": dict(sorted(self.by_reason.items(), key=lambda kv: -kv[1])),
            "success_rate": self.by_status.get(OK, 0) / done if done else None,
            "wall_seconds": round(wall, 3),
            "tasks_per_second": round(done / wall, 3),
            "steps": self.steps,
            "steps_per_second": round(self.steps / wall, 1),
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                **self.cost.tokens(),
            },
            "cost": self.cost.summary(),
            "completion_tokens_per_second": round(self.completion_tokens / wall, 1),
            "task_latency_seconds": self.task_latency.summary(),
            # Tool calls run and those that failed (returned to the model with is_error).
            "tool_calls": sum(rs.tool_calls for rs in self.roles.values()),
            "tool_errors": sum(rs.tool_errors for rs in self.roles.values()),
            "roles": {role: self._role_summary(rs) for role, rs in sorted(self.roles.items())},
            "metrics": {
                k: self.metric_sums[k] / self.metric_counts[k] for k in sorted(self.metric_sums)
            },
            "funnel": self.funnel(),
            "error_samples": self.error_samples,
            **self.extra,
        }
