"""What the report shows, read from an output in one pass and in constant memory.

An output may hold millions of records, so nothing here keeps a list per record: counts,
tokens, the funnel and per-role latency come from `RunStats.observe`, the same code that
makes a run's summary (so the report and the summary agree); queue times go into the same
log-spaced histograms; completions over time into bins that double their width when there
are too many; errors into at most `MAX_GROUPS` groups; and the rows shown in the trace view
are the first `MAX_FAILED` failed or rejected ones plus a fixed-seed sample of ok ones.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from peerflow.merge import read_manifest, with_side_files
from peerflow.message import OK
from peerflow.sink import OutputRecord, record_message, records_since
from peerflow.stats import Histogram, RunStats

MAX_FAILED = 100  # failed or rejected rows kept for the trace view
MAX_OK = 100  # ok rows kept for the trace view (a reservoir sample)
MAX_GROUPS = 100  # error groups; further kinds are counted under "other"
EXAMPLES = 5  # example row ids per error group
MAX_BINS = 2000  # time bins of the records' own timeline
MAX_TEXT = 2000  # characters kept of each string of a traced row
SHARE_BINS = 1000  # resolution (0.1%) of a task's time split
PARTS = ("agents", "queued", "admission")


def output_paths(output: Path) -> list[Path]:
    """Every file holding the output's records: the output or its shards (a sharded Ray
    run that was not merged yet), and their errors and rejected side files."""
    shards = [p for p in read_manifest(output) if p != output]
    mains = ([output] if output.exists() or not shards else []) + shards
    return [p for p in with_side_files(mains) if p.exists()]


class Timeline:
    """Counts per time bin, on the wall clock; the bins widen (doubling) to stay few.

    Records come in file order, not time order (shards, resumed runs), so the bins are
    keyed by `floor(t / width)` and re-keyed when `width` doubles; at most `max_bins`
    bins are ever held, whatever the span.
    """

    def __init__(self, fields: tuple[str, ...], *, width: float = 1.0, max_bins: int = MAX_BINS):
        self.fields = fields
        self.width = width
        self.max_bins = max_bins
        self.bins: dict[int, list[float]] = {}

    def add(self, t: float, **values: float) -> None:
        if t <= 0:
            return
        key = int(t // self.width)
        row = self.bins.get(key)
        if row is None:
            row = self.bins[key] = [0.0] * len(self.fields)
            if len(self.bins) > self.max_bins:
                self._widen()
                row = self.bins[int(t // self.width)]
        for name, value in values.items():
            row[self.fields.index(name)] += value

    def _widen(self) -> None:
        while len(self.bins) > self.max_bins:
            self.width *= 2
            merged: dict[int, list[float]] = {}
            for key, row in self.bins.items():
                into = merged.setdefault(key // 2, [0.0] * len(self.fields))
                for i, v in enumerate(row):
                    into[i] += v
            self.bins = merged

    def series(self) -> dict[str, Any]:
        """{"t0", "width", "t": bin starts (seconds after t0), field: counts per bin},
        with the empty bins in between filled in (at most `max_bins` times the span's bins)."""
        if not self.bins:
            return {"t0": 0.0, "width": self.width, "t": []}
        first, last = min(self.bins), max(self.bins)
        keys = range(first, last + 1)
        if len(keys) > 4 * self.max_bins:  # a long gap between runs: only the bins held
            keys = sorted(self.bins)
        t0 = first * self.width
        out: dict[str, Any] = {
            "t0": t0,
            "width": self.width,
            "t": [k * self.width - t0 for k in keys],
        }
        empty = [0.0] * len(self.fields)
        for i, name in enumerate(self.fields):
            out[name] = [self.bins.get(k, empty)[i] for k in keys]
        return out


_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s,;)'\"]*[^\s,;)'\":]", re.I)
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_NUMBER = re.compile(r"(?<!HTTP )(?<!status )(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b|\b[0-9a-f]{8}-[0-9a-f-]{27,}\b", re.I)
_TYPE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout|Exit|Interrupt|Failure)\w*):")


def _long_quote(match: re.Match[str]) -> str:
    """Quoted text of 16 characters or more (a reply's body, a prompt) becomes '…'; a short
    one (a service's name) stays. Quotes are paired left to right, so a short quoted name
    before a long body keeps its own quotes."""
    text = match.group(0)
    return text if len(text) < 18 else "'…'"


def error_kind(message: str) -> str:
    """An error message with what varies between occurrences taken out: the group key.

    URLs, long quoted text (a reply's body), ids and counts become placeholders; an HTTP
    status stays, since a 429 and a 500 are different problems.
    """
    text = " ".join(str(message).split())
    text = _URL.sub("<url>", text)
    text = _QUOTED.sub(_long_quote, text)
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("N", text)
    return text[:200]


def error_type(message: str) -> str:
    """The exception type an error message starts with, or its first words."""
    match = _TYPE.match(str(message).strip())
    if match:
        return match.group(1)
    words = str(message).split()[:4]
    return " ".join(words) or "(no message)"


@dataclass
class ErrorGroup:
    kind: str
    type: str
    tasks: int = 0  # tasks that ended with this error
    steps: int = 0  # failed steps with it (a task may go on after one)
    roles: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    transient: int = 0
    examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "tasks": self.tasks,
            "steps": self.steps,
            "roles": dict(self.roles.most_common()),
            "stages": dict(self.stages.most_common()),
            "transient": self.transient,
            "examples": self.examples,
        }


class Errors:
    """Errors grouped by kind (see `error_kind`), at most `MAX_GROUPS` groups."""

    def __init__(self) -> None:
        self.groups: dict[str, ErrorGroup] = {}

    def _group(self, message: str) -> ErrorGroup:
        kind = error_kind(message)
        group = self.groups.get(kind)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                kind = "(other kinds)"
                group = self.groups.get(kind)
            if group is None:
                group = self.groups[kind] = ErrorGroup(kind, error_type(message))
        return group

    def task(self, record_id: str, error: dict[str, Any], *, role: bool = True) -> None:
        """A task that ended with `error`; `role`: count its role (no failed step did)."""
        group = self._group(str(error.get("message") or error.get("stage") or "error"))
        group.tasks += 1
        group.stages[str(error.get("stage") or "?")] += 1
        if role and error.get("role"):
            group.roles[str(error["role"])] += 1
        if error.get("kind") == "transient":
            group.transient += 1
        if record_id not in group.examples and len(group.examples) < EXAMPLES:
            group.examples.append(record_id)

    def step(self, record_id: str, role: str, message: str) -> None:
        """A failed step (the one that ended its task, or one the task went on after)."""
        group = self._group(message)
        group.steps += 1
        group.roles[role] += 1
        if record_id not in group.examples and len(group.examples) < EXAMPLES:
            group.examples.append(record_id)

    def to_json(self) -> list[dict[str, Any]]:
        ordered = sorted(self.groups.values(), key=lambda g: (-g.tasks, -g.steps))
        return [g.to_json() for g in ordered]


def _trim(value: Any, limit: int = MAX_TEXT) -> Any:
    """A traced row with every long string cut, so the page stays small."""
    if isinstance(value, str):
        if len(value) > limit:
            return value[:limit] + f" … [{len(value) - limit:,} more characters]"
        return value
    if isinstance(value, dict):
        return {k: _trim(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim(v, limit) for v in value]
    return value


class Report:
    """Aggregates records one at a time (`add`); `to_json` is what the page shows."""

    def __init__(self, *, seed: int = 0) -> None:
        self.stats = RunStats()
        self.records = 0
        self.queue: dict[str, Histogram] = {}
        self.admission = Histogram()
        self.to_record = Histogram()
        self.shares = np.zeros((len(PARTS), SHARE_BINS + 1), dtype=np.int64)
        self.timeline = Timeline(
            ("started", "ok", "error", "rejected", "prompt_tokens", "completion_tokens")
        )
        self.errors = Errors()
        self.tools: Counter[str] = Counter()
        self.models: Counter[str] = Counter()  # steps per model named in the replies
        self.tool_errors: Counter[str] = Counter()
        self.first_created = 0.0
        self.last_finished = 0.0
        self.failed_rows: list[dict[str, Any]] = []
        self.ok_rows: list[dict[str, Any]] = []
        self.ok_seen = 0
        self.fingerprints: Counter[str] = Counter()
        self._rng = random.Random(seed)

    def add(self, record: OutputRecord) -> None:
        self.records += 1
        self.stats.observe(record_message(record), record.metrics)
        if record.fingerprint:
            self.fingerprints[record.fingerprint] += 1
        created, finished = record.created, record.finished
        if created > 0 and (not self.first_created or created < self.first_created):
            self.first_created = created
        self.last_finished = max(self.last_finished, finished)
        self._times(record)
        self._tools_and_errors(record)
        self._keep(record)

    def _times(self, record: OutputRecord) -> None:
        """Queue times per role, the task's time split, and the timeline."""
        created, finished = record.created, record.finished
        prompt = completion = 0
        if record.tokens:
            prompt = record.tokens.get("prompt", 0)
            completion = record.tokens.get("completion", 0)
        self.timeline.add(created, started=1)
        status = record.status if record.status in ("ok", "error", "rejected") else "error"
        self.timeline.add(
            finished, **{status: 1}, prompt_tokens=prompt, completion_tokens=completion
        )
        steps = [s for s in record.history if s.role != "task" and s.started]
        if not steps or created <= 0:
            return
        end = None
        for step in steps:
            if end is None:
                self.admission.add(max(step.started - created, 0.0))
            else:
                hist = self.queue.get(step.role)
                if hist is None:
                    hist = self.queue[step.role] = Histogram()
                hist.add(max(step.started - end, 0.0))
            end = step.started + step.latency
        total = finished - created
        if end is not None and finished > 0:
            self.to_record.add(max(finished - end, 0.0))
        if total > 0:
            agents = sum(s.latency for s in steps)
            admission = max(0.0, steps[0].started - created)
            queued = max(0.0, total - agents - admission)
            for i, part in enumerate((agents, queued, admission)):
                share = min(max(part / total, 0.0), 1.0)
                self.shares[i, round(share * SHARE_BINS)] += 1

    def _tools_and_errors(self, record: OutputRecord) -> None:
        failed: set[str] = set()
        for step in record.history:
            if step.model and (step.model in self.models or len(self.models) < MAX_GROUPS):
                self.models[step.model] += 1
            for call in step.tool_calls or ():
                name = (call.get("function") or {}).get("name") or call.get("name") or "?"
                if name in self.tools or len(self.tools) < MAX_GROUPS:
                    self.tools[str(name)] += 1
            for result in step.tool_results or ():
                if result.get("is_error"):
                    self.tool_errors[str(result.get("name") or "?")] += 1
            if not step.ok and step.error:
                self.errors.step(record.id, step.role, step.error)
                failed.add(step.error)
        if record.error:
            message = record.error.get("message")
            self.errors.task(record.id, record.error, role=message not in failed)

    def _keep(self, record: OutputRecord) -> None:
        """The trace view's rows: failed/rejected first come, ok ones by reservoir."""
        if record.status != OK:
            if len(self.failed_rows) < MAX_FAILED:
                self.failed_rows.append(_trim(msgspec.to_builtins(record)))
            return
        self.ok_seen += 1
        if len(self.ok_rows) < MAX_OK:
            self.ok_rows.append(_trim(msgspec.to_builtins(record)))
            return
        j = self._rng.randrange(self.ok_seen)
        if j < MAX_OK:
            self.ok_rows[j] = _trim(msgspec.to_builtins(record))

    def add_all(self, records: Iterable[OutputRecord]) -> Report:
        for record in records:
            self.add(record)
        return self

    def shares_table(self) -> dict[str, list[float]]:
        """Each part's share of a task's time (percent) at the median, P90 and P99."""
        out: dict[str, list[float]] = {}
        for i, part in enumerate(PARTS):
            counts = self.shares[i]
            total = int(counts.sum())
            if not total:
                continue
            cum = np.cumsum(counts)
            out[part] = [
                round(float(np.searchsorted(cum, q * total)) / SHARE_BINS * 100, 1)
                for q in (0.5, 0.9, 0.99)
            ]
        return out

    def to_json(self) -> dict[str, Any]:
        stats = self.stats
        roles = {}
        for role, rs in sorted(stats.roles.items()):
            entry = RunStats._role_summary(rs)
            entry["latency_buckets"] = dict(rs.latency.buckets)
            queue = self.queue.get(role)
            if queue is not None and queue.count:
                entry["queue_seconds"] = queue.summary()
                entry["queue_buckets"] = dict(queue.buckets)
            roles[role] = entry
        kept = self.failed_rows + self.ok_rows
        cost = getattr(stats, "cost", None)  # the priced steps' dollars (peerflow.cost)
        return {
            "cost": cost.summary() if cost is not None else None,
            "tokens_extra": cost.tokens() if cost is not None else {},
            "records": self.records,
            "by_status": dict(stats.by_status),
            "by_reason": dict(sorted(stats.by_reason.items(), key=lambda kv: -kv[1])),
            "steps": stats.steps,
            "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
            "models": dict(self.models.most_common()),
            "tool_calls": dict(self.tools.most_common()),
            "tool_errors": dict(self.tool_errors.most_common()),
            "roles": roles,
            "funnel": stats.funnel(),
            "metrics": {
                k: stats.metric_sums[k] / stats.metric_counts[k] for k in sorted(stats.metric_sums)
            },
            "task_latency_seconds": stats.task_latency.summary(),
            "task_latency_buckets": dict(stats.task_latency.buckets),
            "admission_seconds": self.admission.summary(),
            "to_record_seconds": self.to_record.summary(),
            "time_split_percent": self.shares_table(),
            "timeline": self.timeline.series(),
            "first_created": self.first_created,
            "last_finished": self.last_finished,
            "errors": self.errors.to_json(),
            "fingerprints": dict(self.fingerprints.most_common()),
            "traces": kept,
            "traces_note": {
                "failed_or_rejected": len(self.failed_rows),
                "failed_or_rejected_total": self.records - self.ok_seen,
                "ok": len(self.ok_rows),
                "ok_total": self.ok_seen,
            },
        }


def aggregate(output: Path) -> Report:
    """Read every record of `output` (streamed; `.jsonl` or `.jsonl.zst`, sharded or not)."""
    return Report().add_all(records_since(output_paths(output), 0.0))
