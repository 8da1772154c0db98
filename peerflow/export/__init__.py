"""From records to training data: `peerflow export` (docs/export.md).

An export reads an output once (twice when a choice needs the whole output first:
preference pairs and balancing by difficulty), keeps the records the filters accept,
drops duplicates, assigns each input row to a split by a seeded hash, turns each record
into the chosen shape (chat examples, preference pairs, or flat records) and writes them
as JSONL, Parquet or a `datasets` folder with its card. Memory stays bounded by one batch
of rows, plus the deduplication index and, for pairs and balancing, a few bytes per row.

Every record read is accounted for: it is written, or it is left out with a reason that
is counted in `<dest>.export.json` and listed, per record, in `<dest>.removed.jsonl`.
"""

from __future__ import annotations

import dataclasses
import heapq
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson

from peerflow.export.records import (
    ExportError,
    RecordView,
    as_float,
    as_message,
    group_of,
    known_path,
    parse_condition,
    parse_split,
    read_records,
    split_of,
    unit_hash,
)
from peerflow.message import OK, REJECTED
from peerflow.sink import OutputRecord

__all__ = ["ExportError", "ExportRequest", "export"]

SHAPES = ("sft", "dpo", "records")
TARGETS = ("jsonl", "parquet", "hf")


@dataclass
class ExportRequest:
    """What `peerflow export` was asked (each field is a command-line option)."""

    output: Path
    dest: Path
    shape: str = "sft"
    to: str | None = None  # from dest's suffix: .jsonl, .parquet, else a `datasets` folder
    config: Path | None = None  # default: the config recorded in the output's summary
    assistant: list[str] | None = None  # default: the config's export.assistant
    status: list[str] | None = None  # default: ok (sft, records), ok and rejected (dpo)
    reasons: list[str] = field(default_factory=list)  # keep rejected rows only for these
    where: list[str] = field(default_factory=list)
    split: str | None = None
    seed: int = 0
    pair_by: str | None = None  # default: the config's export.score, else the status
    margin: float = 0.0
    dedup: str | None = None
    dedup_threshold: float | None = None
    balance: int | None = None  # difficulty bins
    per_bin: int | None = None
    columns: list[str] = field(default_factory=list)
    limit: int | None = None
    command: str = ""


def _target(req: ExportRequest) -> str:
    if req.to:
        if req.to not in TARGETS:
            raise ExportError(f"--to {req.to}: one of {', '.join(TARGETS)}")
        return req.to
    name = req.dest.name
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "hf"


def side_path(dest: Path, suffix: str) -> Path:
    return dest.with_name(dest.name + suffix)


def load_difficulty(output: Path) -> dict[str, dict[str, Any]] | None:
    """Per record id, what `peerflow calibrate` wrote, or None when it was not run."""
    from peerflow.export.calibrate import difficulty_path

    path = difficulty_path(output)
    if not path.exists():
        return None
    found: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                item = orjson.loads(line)
                found[str(item["id"])] = item
    return found


def load_config(output: Path, config_path: Path | None, summary: dict[str, Any] | None) -> Any:
    """The run's config: the file given, else the one the output's summary recorded."""
    from peerflow.config import ConfigError, RunConfig
    from peerflow.config import load_config as load_file

    if config_path is not None:
        try:
            return load_file(config_path)
        except ConfigError as exc:
            raise ExportError(str(exc)) from None
    recorded = (summary or {}).get("config")
    if not isinstance(recorded, dict):
        return None
    try:
        config = RunConfig.model_validate(recorded)
    except Exception as exc:
        raise ExportError(
            f"the config recorded in {output}'s summary does not load ({exc}); "
            "give the config file with --config"
        ) from None
    config.base_dir = Path(summary.get("config_dir") or output.parent)  # type: ignore[union-attr]
    return config


def _fields(config: Any) -> dict[str, Callable[[OutputRecord], Any]]:
    """The config's `export.fields`, each a function of a record (a rendered template)."""
    if config is None or not config.export.fields:
        return {}
    from peerflow.agents.llm import add_template_path, compile_template, render, template_context

    add_template_path(config.base_dir)
    out: dict[str, Callable[[OutputRecord], Any]] = {}
    for name, source in config.export.fields.items():
        try:
            template = compile_template(source, f"export.fields.{name}")
        except ValueError as exc:
            raise ExportError(str(exc)) from None

        def value(record: OutputRecord, template: Any = template) -> Any:
            message = as_message(record, config.dataset.fields)
            text = render(template, template_context(message, "export")).strip()
            return text or None

        out[name] = value
    return out


def _clean_call(call: dict[str, Any], n: int) -> dict[str, Any]:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = orjson.dumps(args if args is not None else {}).decode()
    return {
        "id": call.get("id") or f"call_{n}",
        "type": "function",
        "function": {"name": fn.get("name"), "arguments": args},
    }


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The OpenAI chat shape, no more: known keys, tool calls in their standard form."""
    out = []
    for msg in messages:
        entry = {k: msg[k] for k in ("role", "content", "name", "tool_call_id") if k in msg}
        if entry.get("content") is None:
            entry["content"] = ""
        if msg.get("tool_calls"):
            entry["tool_calls"] = [_clean_call(c, n) for n, c in enumerate(msg["tool_calls"])]
        out.append(entry)
    return out


class _Removed:
    """Counts of records left out, by reason, and the per-record list beside the export."""

    def __init__(self, path: Path):
        self.counts: Counter[str] = Counter()
        self.tmp = path.with_name(path.name + ".tmp")
        self.path = path
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()

    def __call__(self, record_id: str, reason: str, **detail: Any) -> None:
        self.counts[reason] += 1
        self.f.write(orjson.dumps({"id": record_id, "reason": reason, **detail}) + b"\n")

    def close(self) -> None:
        import os

        self.f.close()
        os.replace(self.tmp, self.path)


class _Exporter:
    def __init__(self, req: ExportRequest):
        from peerflow.report import _summary_for
        from peerflow.report.aggregate import output_paths

        if req.shape not in SHAPES:
            raise ExportError(f"--format {req.shape}: one of {', '.join(SHAPES)}")
        self.req = req
        self.to = _target(req)
        self.paths = output_paths(req.output)
        if not self.paths:
            raise ExportError(f"no output at {req.output} (nor shards listed for it)")
        self.summary = _summary_for(req.output, None)
        self.config = load_config(req.output, req.config, self.summary)
        self.fields = _fields(self.config)
        self.difficulty = load_difficulty(req.output)
        export_cfg = self.config.export if self.config is not None else None
        default_status = [OK, REJECTED] if req.shape == "dpo" else [OK]
        self.status = set(req.status or default_status)
        if req.reasons:
            self.status.add(REJECTED)
        self.conditions = [parse_condition(w) for w in req.where]
        self.pair_by = req.pair_by or (export_cfg.score if export_cfg else None)
        dedup = req.dedup
        if dedup == "" or dedup == "default":
            dedup = export_cfg.dedup if export_cfg else None
            if not dedup:
                raise ExportError("--dedup: name the field to compare (or set export.dedup)")
        self.dedup_path = dedup
        roles = set(self.config.roles) if self.config is not None else set()
        for what, path in [
            *[("--where", c.path) for c in self.conditions],
            ("--pair-by", self.pair_by),
            ("--dedup", self.dedup_path),
            *[("--columns", c) for c in req.columns],
        ]:
            if path and not known_path(path, self.fields, roles):
                names = sorted({*self.fields, *roles, "status", "reason", "metrics.*", "row.*"})
                raise ExportError(
                    f"{what} {path}: nothing of that name in a record (known: "
                    f"{', '.join(names)}; fields come from the config's export.fields)"
                )
        if req.balance is not None and self.difficulty is None:
            raise ExportError(
                f"--balance: {req.output} has no difficulty yet; run `peerflow calibrate "
                f"{req.output}` first"
            )
        self.fractions = parse_split(req.split) if req.split else [("train", 1.0)]
        self.perspective = None
        if req.shape in ("sft", "dpo"):
            if self.config is None:
                raise ExportError(
                    f"{req.output} has no summary recording its config: give it with --config"
                )
            from peerflow.export.chat import FieldChat, Perspective

            roles_pov = req.assistant or (export_cfg.assistant if export_cfg else [])
            if not roles_pov and export_cfg is not None and export_cfg.chat:
                self.perspective = FieldChat(export_cfg.chat, self.fields)
            else:
                self.perspective = Perspective(self.config, roles_pov)
        self.removed = _Removed(side_path(req.dest, ".removed.jsonl"))
        self.deduper = None
        if self.dedup_path:
            from peerflow.dedup import Deduper, DedupSettings

            settings = DedupSettings()
            if req.dedup_threshold is not None:
                try:
                    settings = dataclasses.replace(settings, threshold=req.dedup_threshold)
                except ValueError as exc:
                    raise ExportError(f"--threshold {req.dedup_threshold}: {exc}") from None
            self.deduper = Deduper(settings)
        self.read = 0

    # --- selection ------------------------------------------------------------------
    def _unreadable(self, path: Path, line: int, why: str) -> None:
        self.removed(f"{path.name}:{line}", "unreadable record", error=why)

    def views(self, *, again: bool = False) -> Iterator[RecordView]:
        """Every record; `again` for a second pass (a damaged line is listed once)."""
        diff = self.difficulty or {}
        on_bad = None if again else self._unreadable
        for n, record in enumerate(read_records(self.paths, on_bad)):
            if self.req.limit is not None and n >= self.req.limit:
                return
            yield RecordView(record, self.fields, diff.get(record.id))

    def admitted(self, view: RecordView, *, count: bool) -> bool:
        """Whether a record passes the status, reason and `--where` filters."""
        rec = view.record
        reason = None
        if rec.status not in self.status:
            reason = f"status {rec.status}"
        elif self.req.reasons and rec.status == REJECTED and rec.reason not in self.req.reasons:
            reason = "rejection reason not chosen"
        else:
            for cond in self.conditions:
                if not cond(view):
                    reason = f"filter: {cond.text}"
                    break
        if reason is not None and count:
            self.removed(rec.id, reason)
        return reason is None

    def unique(self, view: RecordView) -> bool:
        """First occurrence of its text (exact or near): kept; a later one: removed."""
        if self.deduper is None:
            return True
        text = view.get(self.dedup_path)
        if text is None or (isinstance(text, str) and not text.strip()):
            self.removed(view.record.id, "no text to deduplicate", path=self.dedup_path)
            return False
        dup = self.deduper.check_and_add(view.record.id, str(text))
        if dup is None:
            return True
        if self.req.shape == "dpo" and group_of(dup.of) == group_of(view.record.id):
            return True  # trials of one row share their question: they are the pair
        self.removed(
            view.record.id,
            f"duplicate ({dup.kind})",
            of=dup.of,
            similarity=round(float(dup.similarity), 4),
        )
        return False

    def selected(self) -> Iterator[RecordView]:
        """The records to write, after filters, deduplication and balancing."""
        if self.req.balance is None:
            for view in self.views():
                self.read += 1
                if self.admitted(view, count=True) and self.unique(view):
                    yield view
            return
        keep = self._balanced()
        for view in self.views(again=True):
            if view.record.id in keep:
                yield view

    def _balanced(self) -> set[str]:
        """Pass 1 of balancing: the ids kept, at most `per_bin` per difficulty bin."""
        import numpy as np

        ids: list[str] = []
        values: list[float] = []
        for view in self.views():
            self.read += 1
            if not (self.admitted(view, count=True) and self.unique(view)):
                continue
            d = view.get("difficulty")
            if d is None:
                self.removed(view.record.id, "no difficulty (not calibrated)")
                continue
            ids.append(view.record.id)
            values.append(float(d))
        self.balance_info: dict[str, Any] = {"bins": []}
        if not ids:
            return set()
        arr = np.asarray(values)
        bins = int(self.req.balance or 1)
        lo, hi = np.percentile(arr, [1, 99]) if len(arr) > 10 else (arr.min(), arr.max())
        edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo, lo + 1e-9])
        which = np.clip(np.searchsorted(edges, arr, side="right") - 1, 0, len(edges) - 2)
        counts = np.bincount(which, minlength=len(edges) - 1)
        cap = self.req.per_bin or int(counts[counts > 0].min())
        heaps: list[list[tuple[float, str]]] = [[] for _ in counts]
        for record_id, b in zip(ids, which, strict=True):
            key = -unit_hash(self.req.seed, record_id)  # keep the `cap` smallest hashes
            h = heaps[b]
            if len(h) < cap:
                heapq.heappush(h, (key, record_id))
            elif key > h[0][0]:
                heapq.heapreplace(h, (key, record_id))
        keep = {record_id for h in heaps for _, record_id in h}
        for record_id, b in zip(ids, which, strict=True):
            if record_id not in keep:
                self.removed(record_id, "difficulty bin full", bin=int(b))
        for b in range(len(counts)):
            left = "-inf" if b == 0 else f"{edges[b]:.2f}"
            right = "inf" if b == len(counts) - 1 else f"{edges[b + 1]:.2f}"
            self.balance_info["bins"].append(
                {"range": f"[{left}, {right})", "rows": len(heaps[b]), "before": int(counts[b])}
            )
        self.balance_info["per_bin"] = cap
        return keep

    # --- shapes ---------------------------------------------------------------------
    def extra(self, view: RecordView) -> dict[str, Any]:
        return {c: view.get(c) for c in self.req.columns}

    def sft_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        from peerflow.export.validate import chat_errors

        assert self.perspective is not None
        for view in self.selected():
            rec = view.record
            examples = list(self.perspective.examples(rec, view))
            if not examples:
                self.removed(rec.id, self.perspective.missing)
                continue
            split = split_of(rec.id, self.fractions, self.req.seed)
            for ex in examples:
                messages = clean_messages(ex["messages"])
                tools = ex.get("tools")
                errors = chat_errors(messages, tools)
                ex_id = rec.id if len(examples) == 1 else f"{rec.id}:{ex['role']}:{ex['turn']}"
                if errors:
                    self.removed(ex_id, "invalid chat", errors=errors[:5])
                    continue
                row: dict[str, Any] = {"id": ex_id, "messages": messages, "tools": tools}
                row.update(self.extra(view))
                yield split, row

    def record_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for view in self.selected():
            rec = view.record
            tokens = rec.tokens or {}
            row = {
                "id": rec.id,
                "status": rec.status,
                "reason": rec.reason,
                "trial": rec.trial,
                "created": rec.created,
                "finished": rec.finished,
                "tokens_prompt": tokens.get("prompt"),
                "tokens_completion": tokens.get("completion"),
                "cost_usd": rec.cost_usd,
                "row": rec.row,
                "history": msgspec.to_builtins(rec.history),
                "rejection": rec.rejection,
                "error": rec.error,
                "metrics": rec.metrics,
            }
            for name in self.fields:
                row.setdefault(name, view.get(name))
            if self.difficulty is not None and view.difficulty is not None:
                row.setdefault("difficulty", view.difficulty.get("difficulty"))
            row.update(self.extra(view))
            yield split_of(rec.id, self.fractions, self.req.seed), row

    def pairing_rule(self) -> str:
        if self.pair_by:
            return (
                f"per input row (its trials), the record with the highest `{self.pair_by}` is "
                f"chosen and the one with the lowest rejected, when they differ by more than "
                f"{self.req.margin:g}; the prompt is what the two conversations share up to "
                "the first assistant turn where they differ."
            )
        return (
            "per input row (its trials), an accepted record is chosen and a rejected one "
            "rejected (one pair per row, both picked by a seeded hash); the prompt is what the "
            "two conversations share up to the first assistant turn where they differ."
        )

    def dpo_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        from peerflow.export.chat import common_prefix
        from peerflow.export.validate import chat_errors

        assert self.perspective is not None
        no_pair = "no pair (one trial, or scores too close)"
        # Pass 1: per input row, the best and the worst candidate (a few bytes per record).
        best: dict[str, tuple[float, float, str]] = {}
        worst: dict[str, tuple[float, float, str]] = {}
        candidates: set[str] = set()
        for view in self.selected():
            score = self._score(view)
            rid = view.record.id
            if score is None:
                self.removed(rid, "no score", path=self.pair_by)
                continue
            candidates.add(rid)
            group = group_of(rid)
            tie = unit_hash(self.req.seed, rid)
            if group not in best or (score, tie) > best[group][:2]:
                best[group] = (score, tie, rid)
            if group not in worst or (score, -tie) < worst[group][:2]:
                worst[group] = (score, -tie, rid)
        wanted: dict[str, tuple[str, str]] = {}  # record id -> (group, "chosen"/"rejected")
        for group, (score, _, rid) in best.items():
            low, _, wid = worst[group]
            if rid != wid and score - low > self.req.margin:
                wanted[rid] = (group, "chosen")
                wanted[wid] = (group, "rejected")
        # Pass 2: the two conversations of each pair; a half waits for its other half.
        pending: dict[str, tuple[Any, ...]] = {}
        dropped: set[str] = set()
        for view in self.views(again=True):
            rid = view.record.id
            if rid not in wanted:
                if rid in candidates:
                    paired = best[group_of(rid)][2] in wanted
                    self.removed(rid, "neither the best nor the worst trial" if paired else no_pair)
                continue
            group, side = wanted[rid]
            if group in dropped:
                self.removed(rid, "its pair could not be made")
                continue
            examples = list(self.perspective.examples(view.record, view))
            if not examples:
                self.removed(rid, self.perspective.missing)
                dropped.add(group)
                other = pending.pop(group, None)
                if other is not None:
                    self.removed(other[0], "its pair could not be made")
                continue
            ex = examples[-1]
            half = (rid, side, clean_messages(ex["messages"]), self._score(view), ex.get("tools"))
            other = pending.pop(group, None)
            if other is None:
                pending[group] = half
                continue
            chosen, rejected = (half, other) if side == "chosen" else (other, half)
            n = common_prefix(chosen[2], rejected[2])
            errors = chat_errors(chosen[2], chosen[4]) + chat_errors(rejected[2], rejected[4])
            if n == 0 or errors:
                reason = "no shared prompt" if n == 0 else "invalid chat"
                for one, two in ((chosen, rejected), (rejected, chosen)):
                    self.removed(one[0], reason, other=two[0], errors=errors[:5])
                continue
            row = {
                "id": group,
                "prompt": chosen[2][:n],
                "chosen": chosen[2][n:],
                "rejected": rejected[2][n:],
                "score_chosen": chosen[3],
                "score_rejected": rejected[3],
                "id_chosen": chosen[0],
                "id_rejected": rejected[0],
                "tools": chosen[4],
            }
            row.update(self.extra(view))
            yield split_of(group, self.fractions, self.req.seed), row
        for half in pending.values():  # its other half was not read again (a changed output)
            self.removed(half[0], "its pair could not be made")

    def _score(self, view: RecordView) -> float | None:
        if not self.pair_by:
            return {OK: 1.0, REJECTED: 0.0}.get(view.record.status)
        return as_float(view.get(self.pair_by))

    # --- the whole export --------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from peerflow.export.writers import open_writer, write_json

        req = self.req
        rows = {"sft": self.sft_rows, "dpo": self.dpo_rows, "records": self.record_rows}
        writer = open_writer(req.dest, self.to, req.shape, split=req.split is not None)
        try:
            for split, row in rows[req.shape]():
                writer.write(split, row)
        finally:
            self.removed.close()
        files = writer.close([name for name, _ in self.fractions])
        report: dict[str, Any] = {
            "output": str(req.output),
            "dest": str(req.dest),
            "format": req.shape,
            "to": self.to,
            "command": req.command,
            "records_read": self.read,
            "written": {split: writer.counts.get(split, 0) for split in files},
            "removed": dict(self.removed.counts),
            "removed_list": str(self.removed.path),
            "files": files,
            "split": {name: share for name, share in self.fractions},
            "seed": req.seed,
        }
        if req.shape == "dpo":
            report["pairing"] = self.pairing_rule()
        if self.deduper is not None:
            report["dedup"] = {
                "path": self.dedup_path,
                "kept": len(self.deduper),
                **dataclasses.asdict(self.deduper.settings),
            }
        if self.difficulty is not None:
            report["difficulty"] = self._difficulty_info()
        if self.to == "hf":
            from peerflow.export.card import dataset_card

            card = dataset_card(
                name=req.dest.name,
                shape=req.shape,
                summary=self.summary,
                export=report,
                splits=files,
                command=req.command,
            )
            (req.dest / "README.md").write_text(card, encoding="utf-8")
        write_json(side_path(req.dest, ".export.json"), report)
        return report

    def _difficulty_info(self) -> dict[str, Any]:
        from peerflow.export.calibrate import read_calibration_meta

        info = dict(read_calibration_meta(self.req.output) or {})
        if getattr(self, "balance_info", None):
            info.update(self.balance_info)
        return info


def export(req: ExportRequest) -> dict[str, Any]:
    """Run one export; returns its report (also written to `<dest>.export.json`)."""
    return _Exporter(req).run()


def command_line(argv: list[str] | None = None) -> str:
    return "peerflow " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
