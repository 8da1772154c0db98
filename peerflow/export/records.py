"""Reading an output for export: every record once, in constant memory, and the values of it
that filters, pairing, splits and deduplication look at.

A value of a record is named by a *path*: `status`, `reason`, `id`, `trial`, `cost_usd`,
`tokens.completion`, `metrics.<name>`, `row.<column>`, `rejection.reason`,
`<role>.<key>` (the data of that role's last successful step, e.g. `judge.score`),
`difficulty` and `difficulty_se` (after `peerflow calibrate`), or a field the config's
`export.fields` names (a template over the record, e.g. the generated question). Paths,
not Python expressions, so a filter given on the command line cannot run code and a typo
is an error that names what exists.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from peerflow.merge import Lines
from peerflow.sink import OutputRecord

__all__ = [
    "Condition",
    "ExportError",
    "RecordView",
    "parse_condition",
    "read_records",
    "split_of",
]

_decode = msgspec.json.Decoder(OutputRecord).decode


class ExportError(Exception):
    """A problem with what was asked of an export (a bad path, filter or option)."""


def read_records(
    paths: list[Path], on_bad: Callable[[Path, int, str], None] | None = None
) -> Iterator[OutputRecord]:
    """Every complete record of `paths`, one at a time (a torn tail is excluded by `Lines`).

    A complete line that is not a record (damaged on disk, edited by hand) is skipped, as
    a run's own reader would, and, with `on_bad`, reported: (file, line number, why)."""
    for path in paths:
        for n, line in enumerate(Lines(path), 1):
            try:
                yield _decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if on_bad is not None:
                    on_bad(path, n, str(exc))


# What `peerflow calibrate` wrote for an item, each a path of its own.
DIFFICULTY_KEYS = ("difficulty", "difficulty_se", "discrimination", "discrimination_se")


class RecordView:
    """One record with its derived values computed at most once (fields render templates)."""

    __slots__ = ("_cache", "_fields", "difficulty", "record")

    def __init__(
        self,
        record: OutputRecord,
        fields: dict[str, Callable[[OutputRecord], Any]],
        difficulty: dict[str, Any] | None = None,
    ):
        self.record = record
        self._fields = fields
        self._cache: dict[str, Any] = {}
        self.difficulty = difficulty

    def get(self, path: str) -> Any:
        """The value at `path`, or None when the record has none there."""
        if path in self._cache:
            return self._cache[path]
        value = self._lookup(path)
        self._cache[path] = value
        return value

    def _lookup(self, path: str) -> Any:
        rec = self.record
        if path in self._fields:
            return self._fields[path](rec)
        head, _, rest = path.partition(".")
        if head in DIFFICULTY_KEYS:
            return None if self.difficulty is None else self.difficulty.get(head)
        if hasattr(rec, head) and head not in ("history",):
            return _dig(getattr(rec, head), rest)
        step = _last_step(rec, head)
        if step is None:
            return None
        return _dig(step.data or {}, rest) if rest else step.content


def _last_step(rec: OutputRecord, role: str) -> Any:
    """The role's last successful step in the record, or None."""
    for step in reversed(rec.history):
        if step.role == role and step.ok:
            return step
    return None


def _dig(value: Any, rest: str) -> Any:
    if not rest:
        return value
    for key in rest.split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.lstrip("-").isdigit():
            i = int(key)
            value = value[i] if -len(value) <= i < len(value) else None
        else:
            return None
        if value is None:
            return None
    return value


def known_path(path: str, fields: dict[str, Any], roles: set[str]) -> bool:
    """Whether `path` can name something (checked before reading, so a typo fails fast)."""
    head = path.partition(".")[0]
    return (
        path in fields
        or head in DIFFICULTY_KEYS
        or (head in OutputRecord.__struct_fields__ and head != "history")
        or head in roles
    )


def as_message(record: OutputRecord, fields: dict[str, Any]) -> Any:
    """A finished record as the message its templates saw: history, row, and the row's
    variables (`dataset.fields`; not in the record, since they follow from the row)."""
    from peerflow.datasets import map_fields
    from peerflow.sink import record_message

    message = record_message(record)
    try:
        message.vars = map_fields(message.row, fields)
    except Exception:  # a row the run failed at admission: no variables to give
        message.vars = {}
    return message


def as_float(value: Any) -> float | None:
    """A number from a record's value (bools count as 0/1), or None when it is none."""
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- conditions ---------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_CONDITION = re.compile(r"^\s*([\w.\-]+)\s*(==|!=|>=|<=|>|<| in | not in |=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    """`path op value`: `metrics.reward >= 0.5`, `reason != too_short`, `judge.verdict in
    [yes, maybe]`. A record without a value at `path` does not match (except `!=`/`not in`)."""

    path: str
    op: str
    value: Any
    text: str

    def __call__(self, view: RecordView) -> bool:
        got = view.get(self.path)
        if got is None:
            return self.op in ("!=", "not in")
        if self.op == "in":
            return got in self.value
        if self.op == "not in":
            return got not in self.value
        try:
            return bool(_OPS[self.op](got, self.value))
        except TypeError:
            return False  # compared across types (text against a number): no match


def _value(text: str) -> Any:
    """A condition's right side: JSON when it parses (numbers, true, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.startswith("[") and text.endswith("]"):
        return [_value(part.strip()) for part in text[1:-1].split(",") if part.strip()]
    return text.strip("'\"")


def parse_condition(text: str) -> Condition:
    m = _CONDITION.match(text)
    if not m:
        raise ExportError(
            f"filter {text!r}: expected `PATH OP VALUE` with OP one of ==, !=, >=, <=, >, <, "
            "in, not in (e.g. `metrics.reward >= 0.5`)"
        )
    path, op, value = m.group(1), m.group(2).strip(), _value(m.group(3))
    if op == "=":
        op = "=="
    if op in ("in", "not in") and not isinstance(value, list):
        value = [value]
    return Condition(path, op, value, text)


# --- splits ------------------------------------------------------------------------------


def group_of(record_id: str) -> str:
    """The input row a record came from: trials of one row (`id#k`) share it, so that they
    land in the same split and a model is never tested on a row it was trained on."""
    head, sep, tail = record_id.rpartition("#")
    return head if sep and tail.isdigit() else record_id


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, key): the same row, the same draw, on any
    machine and in any order, which is what lets a split stream."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(record_id: str, fractions: list[tuple[str, float]], seed: int) -> str:
    """The split of a record: by a seeded hash of its input row, cut by `fractions`."""
    u = unit_hash(seed, group_of(record_id))
    acc = 0.0
    for name, share in fractions:
        acc += share
        if u < acc:
            return name
    return fractions[-1][0]


def parse_split(text: str) -> list[tuple[str, float]]:
    """`train=0.9,validation=0.05,test=0.05` (or `0.9,0.05,0.05`, named in that order)."""
    default_names = ("train", "validation", "test")
    out: list[tuple[str, float]] = []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for i, part in enumerate(parts):
        name, sep, share = part.partition("=")
        if not sep:
            if i >= len(default_names):
                raise ExportError(f"split {text!r}: name the fourth split (`name=share`)")
            name, share = default_names[i], part
        try:
            value = float(share)
        except ValueError:
            raise ExportError(f"split {text!r}: {share!r} is not a number") from None
        if not (0.0 <= value <= 1.0) or not re.fullmatch(r"[A-Za-z][\w-]*", name.strip()):
            raise ExportError(f"split {text!r}: each part is `name=share` with 0 <= share <= 1")
        out.append((name.strip(), value))
    total = sum(v for _, v in out)
    if not out or abs(total - 1.0) > 1e-6:
        raise ExportError(f"split {text!r}: the shares add up to {total:g}, not 1")
    if len({n for n, _ in out}) != len(out):
        raise ExportError(f"split {text!r}: a split is named twice")
    return out
