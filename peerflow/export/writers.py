"""Where exported rows go: JSONL, Parquet, or a Hugging Face `datasets` folder.

Every writer takes rows one at a time and holds at most one batch (`BATCH` rows) in
memory, so an export of an output larger than RAM streams through. Files are written
under temporary names and renamed when complete: a killed export leaves no file that
looks finished.

Parquet needs one schema for a whole file, so the chat columns have a fixed one (the
OpenAI message fields; absent keys are nulls), `tools` (free-form JSON Schemas) is a JSON
string, and an extra column takes its type from its first value (number, bool, text;
anything else is stored as JSON text) and later values are converted to it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from peerflow.export.records import as_float

__all__ = ["BATCH", "Writer", "open_writer"]

BATCH = 2048  # rows per Parquet row group, and the most rows held before a write
SHARD_ROWS = 200_000  # rows per file of a `datasets` folder

_CALL = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("name", pa.string()),
        ("tool_calls", pa.list_(_CALL)),
        ("tool_call_id", pa.string()),
    ]
)
CHAT = pa.list_(MESSAGE)

# The fixed columns of each shape; anything else is an extra column (typed by value).
FIXED: dict[str, list[tuple[str, pa.DataType]]] = {
    "sft": [("id", pa.string()), ("messages", CHAT), ("tools", pa.string())],
    "dpo": [
        ("id", pa.string()),
        ("prompt", CHAT),
        ("chosen", CHAT),
        ("rejected", CHAT),
        ("score_chosen", pa.float64()),
        ("score_rejected", pa.float64()),
        ("id_chosen", pa.string()),
        ("id_rejected", pa.string()),
        ("tools", pa.string()),
    ],
    "records": [
        ("id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("trial", pa.int64()),
        ("created", pa.float64()),
        ("finished", pa.float64()),
        ("tokens_prompt", pa.int64()),
        ("tokens_completion", pa.int64()),
        ("cost_usd", pa.float64()),
        ("row", pa.string()),
        ("history", pa.string()),
        ("rejection", pa.string()),
        ("error", pa.string()),
        ("metrics", pa.string()),
    ],
}
_JSON_COLUMNS = {"tools", "row", "history", "rejection", "error", "metrics"}


def _type_of(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, (int, float)):
        return pa.float64()
    return pa.string()


def _convert(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if kind == pa.string():
        if isinstance(value, str):
            return value
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if kind == pa.bool_():
        return value if isinstance(value, bool) else None
    return as_float(value)


class _ParquetFile:
    """One Parquet file written in row groups; the schema is fixed by its first batch."""

    def __init__(self, path: Path, shape: str):
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.shape = shape
        self.rows: list[dict[str, Any]] = []
        self.schema: pa.Schema | None = None
        self.writer: pq.ParquetWriter | None = None
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.count += 1
        if len(self.rows) >= BATCH:
            self.flush()

    def _schema(self) -> pa.Schema:
        fixed = FIXED[self.shape]
        names = {n for n, _ in fixed}
        extra: dict[str, pa.DataType] = {}
        for row in self.rows:
            for key, value in row.items():
                if key not in names and key not in extra and value is not None:
                    extra[key] = _type_of(value)
        for row in self.rows:  # columns that are null in the whole first batch
            for key in row:
                if key not in names and key not in extra:
                    extra[key] = pa.string()
        return pa.schema([*fixed, *extra.items()])

    def flush(self) -> None:
        if not self.rows:
            return
        if self.schema is None:
            self.schema = self._schema()
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        columns = {}
        for field in self.schema:
            values = [row.get(field.name) for row in self.rows]
            if field.name in _JSON_COLUMNS:
                values = [
                    None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode()
                    for v in values
                ]
            elif not (pa.types.is_list(field.type) or pa.types.is_struct(field.type)):
                values = [_convert(v, field.type) for v in values]
            columns[field.name] = pa.array(values, type=field.type)
        assert self.writer is not None
        self.writer.write_table(pa.table(columns, schema=self.schema))
        self.rows = []

    def close(self) -> None:
        self.flush()
        if self.writer is None:  # no row: an empty file with the fixed columns
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({n: pa.array([], t) for n, t in FIXED[self.shape]}), self.tmp)
        else:
            self.writer.close()
        os.replace(self.tmp, self.path)


class _JsonlFile:
    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        self.buf: list[bytes] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.buf.append(orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
        self.count += 1
        if len(self.buf) >= BATCH:
            self.f.write(b"".join(self.buf))
            self.buf = []

    def close(self) -> None:
        self.f.write(b"".join(self.buf))
        self.f.close()
        os.replace(self.tmp, self.path)


class Writer:
    """Rows of one shape into `dest`, one file (or several, for `datasets`) per split.

    - `jsonl`: `dest` is the file; with splits, one file per split beside it
      (`out.jsonl` -> `out.train.jsonl`, `out.test.jsonl`).
    - `parquet`: the same with `.parquet`.
    - `hf`: `dest` is a folder holding `data/<split>-NNNNN-of-NNNNN.parquet` and a
      `README.md` dataset card (written by the caller), which `datasets.load_dataset(dest)`
      reads and `huggingface-cli upload` publishes as is.
    """

    def __init__(self, dest: Path, to: str, shape: str, *, split: bool):
        if to not in ("jsonl", "parquet", "hf"):
            raise ValueError(f"unknown export target {to!r} (jsonl, parquet, hf)")
        self.dest, self.to, self.shape, self.split = dest, to, shape, split
        self.files: dict[str, list[Any]] = {}
        self.counts: dict[str, int] = {}
        if to == "hf" and dest.exists():
            if not dest.is_dir():
                raise FileExistsError(f"{dest} exists and is not a folder")
            stale = dest / "data"
            if stale.exists():
                shutil.rmtree(stale)  # an earlier export's shards would mix with this one's

    def _path(self, split: str, index: int) -> Path:
        if self.to == "hf":
            return self.dest / "data" / f"{split}-{index:05d}.parquet"
        if not self.split:
            return self.dest
        suffix = ".jsonl" if self.to == "jsonl" else ".parquet"
        stem = self.dest.name.removesuffix(suffix)
        return self.dest.with_name(f"{stem}.{split}{suffix}")  # out.jsonl -> out.train.jsonl

    def _open(self, split: str, index: int) -> Any:
        path = self._path(split, index)
        return _JsonlFile(path) if self.to == "jsonl" else _ParquetFile(path, self.shape)

    def write(self, split: str, row: dict[str, Any]) -> None:
        files = self.files.get(split)
        if files is None:
            files = self.files[split] = [self._open(split, 0)]
        current = files[-1]
        if self.to == "hf" and current.count >= SHARD_ROWS:
            current.close()
            current = self._open(split, len(files))
            files.append(current)
        current.add(row)
        self.counts[split] = self.counts.get(split, 0) + 1

    def close(self, splits: list[str]) -> dict[str, list[str]]:
        """Finish every file (an empty one for a split no row fell in); returns split ->
        the files, relative to `dest` for a folder."""
        for split in splits:
            if split not in self.files:
                self.files[split] = [self._open(split, 0)]
        out: dict[str, list[str]] = {}
        order = [*splits, *(s for s in self.files if s not in splits)]
        for split in order:
            files = self.files[split]
            for f in files:
                f.close()
            if self.to == "hf":
                n = len(files)
                names = []
                for i, f in enumerate(files):
                    final = f.path.with_name(f"{split}-{i:05d}-of-{n:05d}.parquet")
                    os.replace(f.path, final)
                    names.append(str(final.relative_to(self.dest)))
                out[split] = names
            else:
                out[split] = [str(f.path)]
        return out


def open_writer(dest: str | Path, to: str, shape: str, *, split: bool) -> Writer:
    return Writer(Path(dest), to, shape, split=split)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
