"""Input datasets: lazy row readers and the mapping from input columns to prompt variables.

Three promises shape this module:

- Every input row becomes exactly one `RawRow`: either a row or an error
  naming where the problem is. A bad line never stops the run and is never
  silently dropped, so `rows in == records out` holds for every run.
- Memory stays flat whatever the input size: files are streamed line by line
  or batch by batch and re-read for each `repeat` pass, never loaded whole.
- Problems with the dataset as a whole (missing file, unknown format, unknown
  split, ...) are found by `open_dataset`, before any service is started.

Row ids: without `id_field` every id is the positional `row-<n>` (0-based
position in the file), unique by construction. With `id_field` the id is the
string value of that column; a row without one (a broken line, a missing or
empty id) gets the reader-made id `@line<N>` (`@row<N>` for Parquet and
Hugging Face data), N being its 1-based line or row. With `repeat > 1` every id
carries a `~<pass>` suffix.

Ids must be unique, since the sink keys records on them. With `id_field` the
reader keeps an `IdSet` of every id it produced in this pass (8 bytes per row)
and turns a row whose id was already produced - a repeated id, or a real id
equal to a reader-made one - into an error record with the derived id
`<id>#dup@line<N>` (`#dup2@`, `#dup3@`, ... if that is taken too). The rule
depends only on the input's order, so a re-run derives the same ids and
resume stays exact. Duplicates are also logged, and counted in
`Dataset.duplicate_ids`.

Line numbers in errors are 1-based: lines for JSONL and CSV (a CSV record's
first line), rows for Parquet and Hugging Face data.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import csv
import functools
import gzip
import io
import itertools
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from peerflow.config import DatasetConfig, FieldSpec
from peerflow.idset import IdSet

log = logging.getLogger(__name__)

__all__ = [
    "Dataset",
    "DatasetError",
    "RawRow",
    "RowError",
    "map_fields",
    "open_dataset",
]

# Rows converted to Python objects at a time: bounds memory for wide rows
# while keeping the per-row cost of the Arrow -> Python conversion low.
_BATCH_ROWS = 512
# Longest raw input kept in an error record or shown in an error message.
_PREVIEW_CHARS = 2000
_VALUE_PREVIEW_CHARS = 60

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSED_SUFFIXES = {".gz", ".zst", ".zstd"}
_FORMATS = ("jsonl", "csv", "parquet", "hf")
# Duplicate ids logged one by one before the rest are only counted.
_DUPLICATES_LOGGED = 10


class DatasetError(Exception):
    """The dataset as a whole cannot be read; raised before the run starts."""


class RowError(Exception):
    """One row cannot be turned into prompt variables; that row fails, the run goes on."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class RawRow(NamedTuple):
    """One input row, or the reason it could not be read.

    `row` is the row dict for good rows; for error rows it is None or the raw
    value (the offending line, a non-object JSON value, a CSV record's fields)
    so the error record still shows what was wrong.
    """

    index: int  # 0-based ordinal across all repeat passes (not a line number)
    row: Any
    error: str | None
    id: str
    line: int = 0  # 1-based line (JSONL, CSV) or row (Parquet, HF) in the file; see Dataset.unit


# A source yields (row, error, line) for one pass over the data: error is None for good rows,
# line is the 1-based line (or row, for Parquet and Arrow) the item starts on.
Source = Callable[[], Iterator[tuple[Any, str | None, int]]]


class Dataset:
    """A re-iterable, lazy view of the input: each `iter()` re-reads the source from the start.

    It holds only paths and settings (no open files), so it can be pickled
    and shipped to another process.
    """

    def __init__(self, cfg: DatasetConfig, path: Path, fmt: str, source: Source) -> None:
        self.config = cfg
        self.path = path
        self.format = fmt
        # What error locations count: lines of a text file, rows of a columnar one.
        self.unit = "row" if fmt in ("parquet", "hf") else "line"
        self._source = source
        # Rows of the current (or last) iteration that became errors for a repeated id.
        self.duplicate_ids = 0

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[RawRow]:
        self.duplicate_ids = 0
        limit = self.config.limit
        if limit == 0:
            return
        repeat = self.config.repeat
        id_field = self.config.id_field
        unit = self.unit
        # Positional ids are unique by construction; only real ids need remembering.
        seen = IdSet() if id_field is not None else None
        index = 0
        try:
            for k in range(repeat):
                suffix = f"~{k}" if repeat > 1 else ""
                for position, (row, error, line) in enumerate(self._source()):
                    if seen is None:
                        row_id = f"row-{position}{suffix}"
                    else:
                        row_id, error = _keyed_id(row, error, id_field, unit, line, suffix)
                        if not seen.add(row_id):
                            row_id, error = self._duplicate(seen, row_id, unit, line, suffix)
                    yield RawRow(index, row, error, row_id, line)
                    index += 1
                    if index == limit:
                        return
        finally:
            hidden = self.duplicate_ids - _DUPLICATES_LOGGED
            if hidden > 0:
                log.warning(
                    "%s: %d more duplicate id(s) not shown; each became an error record",
                    self.path,
                    hidden,
                )

    def _duplicate(
        self, seen: IdSet, row_id: str, unit: str, line: int, suffix: str
    ) -> tuple[str, str]:
        """A derived id for a row whose id was already produced, and the error saying so."""
        derived = f"{row_id}#dup@{unit}{line}"
        n = 2
        while not seen.add(derived):
            derived = f"{row_id}#dup{n}@{unit}{line}"
            n += 1
        shown = row_id.removesuffix(suffix) if suffix else row_id
        error = (
            f"{unit} {line}: duplicate id {shown!r}: it repeats the id of an earlier "
            f"{unit}; this {unit} is recorded as {derived!r} and not run"
        )
        self.duplicate_ids += 1
        if self.duplicate_ids <= _DUPLICATES_LOGGED:
            log.warning("%s: %s", self.path, error)
        return derived, error

    def columns(self) -> list[str] | None:
        """The input's column names, read cheaply (CSV header, Parquet or Arrow schema,
        the first JSON line's keys); None when they cannot be known without reading rows."""
        try:
            if self.format == "csv":
                return _csv_header(self.path)
            if self.format == "parquet":
                import pyarrow.parquet as pq

                return list(pq.read_schema(self.path).names)
            if self.format == "hf":
                return _arrow_columns(self.path, self.config.split)
            return _jsonl_first_keys(self.path)
        except Exception:  # the rows will report whatever is wrong, located
            return None


def _keyed_id(
    row: Any, error: str | None, id_field: str, unit: str, line: int, suffix: str
) -> tuple[str, str | None]:
    """The row's id from its id column; a row without one gets the reader-made `@<unit><N>`.

    The `@` form names the row's place in the file, so it is stable across re-runs.
    """
    made = f"@{unit}{line}{suffix}"
    if error is not None:
        return made, error
    value = row.get(id_field)
    if value is None or value == "":
        what = "missing" if id_field not in row else "empty"
        return made, f"{unit} {line}: {what} id field {id_field!r}"
    return f"{value}{suffix}", None


# --- opening -----------------------------------------------------------------


def open_dataset(cfg: DatasetConfig, path: Path) -> Dataset:
    """Check the dataset can be read and return a lazy view of it.

    Everything that can be checked without reading the rows is checked here,
    so a wrong path or split fails at startup, not after services are up.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    fmt = _detect_format(path) if cfg.format == "auto" else cfg.format
    if fmt == "hf":
        files = _hf_data_files(path, cfg.split)
        return Dataset(cfg, path, fmt, functools.partial(_arrow_rows, tuple(files)))
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, but format {fmt!r} reads a single file")
    if fmt == "parquet":
        _check_parquet(path)
        return Dataset(cfg, path, fmt, functools.partial(_parquet_rows, path))
    if fmt == "csv":
        _csv_header(path)
        return Dataset(cfg, path, fmt, functools.partial(_csv_rows, path))
    _check_jsonl(path)
    return Dataset(cfg, path, fmt, functools.partial(_jsonl_rows, path))


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "hf"
        raise DatasetError(
            f"{path}: a directory that is not a saved Hugging Face dataset "
            "(no dataset_dict.json or state.json); point dataset.path at a file"
        )
    suffix = _base_suffix(path)
    fmt = _SUFFIX_FORMATS.get(suffix)
    if fmt is None or (fmt == "parquet" and suffix != path.suffix.lower()):
        raise DatasetError(
            f"{path}: cannot tell the format from the file name; set dataset.format "
            f"to one of {', '.join(_FORMATS)} (jsonl and csv may be .gz or .zst compressed)"
        )
    return fmt


def _base_suffix(path: Path) -> str:
    """The suffix naming the format, looking through a compression suffix: a.jsonl.gz -> .jsonl."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _open_binary(path: Path) -> IO[bytes]:
    """Open a file for streaming, decompressing .gz / .zst on the fly.

    A truncated or corrupt compressed file raises one of `_STREAM_ERRORS` where
    the damage is met, never silently ends early.
    """
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if suffix in (".zst", ".zstd"):
        return io.BufferedReader(_ZstdReader(path), buffer_size=1 << 20)
    return open(path, "rb", buffering=1 << 20)


class _ZstdReader(io.RawIOBase):
    """A .zst stream (one or more frames) that raises EOFError when the file ends mid-frame.

    `zstandard.open` returns a short read instead, which would make a truncated
    input look complete.
    """

    _CHUNK = 1 << 16  # compressed bytes per read: bounds the decompressed burst

    def __init__(self, path: Path) -> None:
        import zstandard

        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            chunk = self._file.read(self._CHUNK)
            if not chunk:
                if self._in_frame:
                    raise EOFError("the zstd stream ended in the middle of a frame")
                return 0
            self._out = memoryview(self._decompress(chunk))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        parts = []
        while data:
            parts.append(self._obj.decompress(data))
            self._in_frame = True
            if not self._obj.eof:
                break
            data = self._obj.unused_data  # the next frame starts here
            self._obj = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged compressed stream raises: gzip, zlib and zstd errors."""
    errors: list[type[BaseException]] = [EOFError, zlib.error, gzip.BadGzipFile]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


_STREAM_ERRORS = _stream_errors()


def _damaged(unit: str, n: int, exc: BaseException) -> str:
    """The error of the one record that stands for a damaged rest of the input."""
    return (
        f"{unit} {n}: the compressed input is truncated or corrupt after this point: "
        f"{_exc_text(exc)}"
    )


def _exc_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


_MAGIC = {
    ".gz": (b"\x1f\x8b", "gzip"),
    ".zst": (b"\x28\xb5\x2f\xfd", "zstd"),
    ".zstd": (b"\x28\xb5\x2f\xfd", "zstd"),
}


def _head(path: Path, size: int = 4096) -> bytes:
    """The first bytes, BOM stripped; also proves the file is readable and decompresses.

    Bounded, not a readline: a one-line multi-GB file must not be read at startup.
    A compressed file that starts well but is damaged further on is not an error
    here: its rows come out up to the damage, then one located error record.
    """
    magic = _MAGIC.get(path.suffix.lower())
    try:
        if magic is not None:
            with open(path, "rb") as raw:
                start = raw.read(len(magic[0]))
            if start and start != magic[0]:
                raise DatasetError(f"{path}: not a {magic[1]} file, although its name says so")
        with _open_binary(path) as f:
            head = b""
            with contextlib.suppress(*_STREAM_ERRORS):
                head = f.read(1)
                head += f.read(size - 1)
    except DatasetError:
        raise
    except Exception as exc:  # OSError, ...
        raise DatasetError(f"{path}: cannot read: {_exc_text(exc)}") from None
    return head.removeprefix(codecs.BOM_UTF8)


def _preview(raw: bytes | str, limit: int = _PREVIEW_CHARS) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.rstrip("\r\n")
    return text if len(text) <= limit else text[:limit] + "..."


# --- JSON lines --------------------------------------------------------------


def _check_jsonl(path: Path) -> None:
    """Catch the common mistake of a .json file holding one array instead of one object per line."""
    first = _head(path).lstrip()
    if first.startswith(b"[") and _base_suffix(path) == ".json":
        raise DatasetError(
            f"{path}: holds a JSON array, but peerflow reads JSON lines (one object per line); "
            f"convert it with: jq -c '.[]' {path.name} > {path.stem}.jsonl"
        )


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str | None, int]]:
    """Parse one line at a time; orjson on bytes keeps this at ~1 us per short row."""
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    lineno = 0
    with _open_binary(path) as f:
        try:
            first = f.readline().removeprefix(codecs.BOM_UTF8)
            if not first:
                return
            for lineno, line in enumerate(itertools.chain((first,), f), 1):
                if line.isspace():
                    continue
                try:
                    value = loads(line)
                except decode_error as exc:
                    yield _preview(line), f"line {lineno}: {_json_error(line, exc)}", lineno
                    continue
                if type(value) is dict:
                    yield value, None, lineno
                else:
                    what = _type_name(value)
                    yield value, f"line {lineno}: expected a JSON object, got {what}", lineno
        except _STREAM_ERRORS as exc:
            yield None, _damaged("line", lineno + 1, exc), lineno + 1


# orjson's wording for a few errors, said in plainer words.
_JSON_MESSAGES = {
    "unexpected end of data": "the line ends before the JSON value is complete",
    "no low surrogate in string": "a string holds an unpaired \\u surrogate escape",
    "Input is a zero-length, empty document": "empty JSON document",
}


def _json_error(line: bytes, exc: orjson.JSONDecodeError) -> str:
    """Say what is wrong with a line in words, with its place: bytes for encodings, columns
    for syntax."""
    if exc.msg.startswith("str is not valid UTF-8"):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return f"invalid UTF-8 at byte {bad.start + 1}"
    msg = _JSON_MESSAGES.get(exc.msg, exc.msg)
    if msg.startswith("lone leading surrogate"):
        msg = "a string holds an unpaired \\u surrogate escape"
    return f"invalid JSON: {msg} (column {exc.colno})"


def _jsonl_first_keys(path: Path) -> list[str] | None:
    """The keys of the first JSON line, if it fits in the first 64 KiB."""
    head = _head(path, 1 << 16)
    for line in head.splitlines(keepends=True):
        if line.isspace():
            continue
        if not line.endswith(b"\n") and len(head) == 1 << 16:
            return None  # the first line is cut off
        value = orjson.loads(line)
        return list(value) if isinstance(value, dict) else None
    return None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --- CSV ---------------------------------------------------------------------


def _csv_header(path: Path) -> list[str] | None:
    """Read and validate the header row: duplicate names would silently lose columns.

    None when a compressed file is damaged within its header: the rows then
    report that, located.
    """
    _head(path, 2)  # a compressed file is what its name says
    try:
        with _open_binary(path) as f:
            header = next(csv.reader(_decode_lines(f, [])), [])
    except _STREAM_ERRORS:
        return None
    except Exception as exc:  # OSError, csv.Error
        raise DatasetError(f"{path}: cannot read the CSV header: {_exc_text(exc)}") from None
    duplicates = sorted(name for name, n in Counter(header).items() if n > 1)
    if duplicates:
        raise DatasetError(f"{path}: duplicate column names in the CSV header: {duplicates}")
    return header


def _decode_lines(f: Iterable[bytes], bad_lines: list[tuple[int, int]]) -> Iterator[str]:
    """Decode line by line so one invalid UTF-8 line becomes one bad row, not a crashed run.

    `bad_lines` collects (line, 1-based byte offset in the line) of each undecodable line.
    """
    for lineno, raw in enumerate(f, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_lines.append((lineno, exc.start + 1))
            text = raw.decode("utf-8", "replace")
        yield text.removeprefix("\ufeff") if lineno == 1 else text


def _csv_rows(path: Path) -> Iterator[tuple[Any, str | None, int]]:
    # Long text cells are normal in LLM datasets; the default 128 KiB cap is not.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    bad_lines: list[tuple[int, int]] = []
    with _open_binary(path) as f:
        reader = csv.reader(_decode_lines(f, bad_lines))
        try:
            header = next(reader, None)
        except _STREAM_ERRORS as exc:
            yield None, _damaged("line", 1, exc), 1
            return
        if header is None:
            return
        width = len(header)
        while True:
            start = reader.line_num + 1  # a quoted cell may span lines: name the first one
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                bad_lines.clear()
                yield None, f"line {start}: invalid CSV: {exc}", start
                continue
            except _STREAM_ERRORS as exc:
                yield None, _damaged("line", start, exc), start
                return
            if bad_lines:
                line, byte = bad_lines[0]
                yield values, f"line {line}: invalid UTF-8 at byte {byte}", start
                bad_lines.clear()
            elif not values:
                continue  # blank line
            elif len(values) != width:
                yield values, f"line {start}: expected {width} fields, got {len(values)}", start
            else:
                yield dict(zip(header, values, strict=True)), None, start


# --- Parquet and Arrow ---------------------------------------------------------


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).close()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for bad files
        raise DatasetError(f"{path}: unreadable Parquet file: {exc}") from None


def _parquet_rows(path: Path) -> Iterator[tuple[Any, str | None, int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Buffered reads without pre-buffering or reader threads keep RSS flat (measured: ~50 MB
    # over the import baseline for 1M rows, against ~110 MB and creeping with the defaults);
    # rows are consumed one at a time in Python anyway, so decode threads buy nothing.
    n = 0
    with pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False) as pf:
        try:
            for batch in pf.iter_batches(batch_size=_BATCH_ROWS, use_threads=False):
                for row in batch.to_pylist():
                    n += 1
                    yield row, None, n
        except (OSError, pa.ArrowException) as exc:
            yield None, _unreadable("Parquet", n + 1, exc), n + 1


def _unreadable(kind: str, row: int, exc: BaseException) -> str:
    return f"row {row}: the {kind} data is unreadable from this row on: {_exc_text(exc)}"


def _hf_data_files(path: Path, split: str | None) -> list[Path]:
    """The Arrow files of a `save_to_disk` directory, read from its JSON metadata only."""
    if not path.is_dir():
        raise DatasetError(f"{path}: format 'hf' expects a directory written by save_to_disk")
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():
        splits = [str(s) for s in _read_json(dict_file).get("splits", [])]
        name = split or ("train" if "train" in splits else None)
        if name is None or name not in splits:
            asked = f"no split {name!r}" if name else "no 'train' split"
            raise DatasetError(
                f"{path}: {asked}; set dataset.split to one of: {', '.join(splits) or '(none)'}"
            )
        path = path / name
        split = None
    state_file = path / "state.json"
    if not state_file.is_file():
        raise DatasetError(f"{path}: not a saved Hugging Face dataset (no state.json)")
    state = _read_json(state_file)
    saved_split = state.get("_split")
    if split and saved_split and split != saved_split:
        raise DatasetError(f"{path}: holds split {saved_split!r}, not {split!r}")
    files = [path / str(entry["filename"]) for entry in state.get("_data_files") or []]
    if not files:
        raise DatasetError(f"{path}: state.json lists no Arrow data files")
    for file in files:
        _check_arrow(file)
    return files


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return data


def _check_arrow(file: Path) -> None:
    import pyarrow as pa

    if not file.is_file():
        raise DatasetError(f"{file}: Arrow data file listed in state.json is missing")
    try:
        with pa.OSFile(str(file), "rb") as f:
            _ipc_batches(f, schema_only=True)
    except Exception as exc:
        raise DatasetError(f"{file}: unreadable Arrow file: {exc}") from None


def _ipc_batches(f: Any, schema_only: bool = False) -> Iterator[Any]:
    """Record batches of an Arrow IPC stream (what save_to_disk writes) or IPC file."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        reader: Any = ipc.open_stream(f)
        batches: Iterator[Any] = iter(reader)
    except pa.ArrowInvalid:
        f.seek(0)
        reader = ipc.open_file(f)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    return iter(()) if schema_only else batches


def _arrow_rows(files: tuple[Path, ...]) -> Iterator[tuple[Any, str | None, int]]:
    """Rows of every Arrow file in turn; rows are numbered across the files, 1-based."""
    import pyarrow as pa

    n = 0
    for file in files:
        try:
            with pa.OSFile(str(file), "rb") as f:
                for batch in _ipc_batches(f):
                    for offset in range(0, batch.num_rows, _BATCH_ROWS):
                        for row in batch.slice(offset, _BATCH_ROWS).to_pylist():
                            n += 1
                            yield row, None, n
        except (OSError, pa.ArrowException) as exc:
            yield None, _unreadable("Arrow", n + 1, exc), n + 1
            return


def _arrow_columns(path: Path, split: str | None) -> list[str] | None:
    import pyarrow as pa

    files = _hf_data_files(path, split)
    with pa.OSFile(str(files[0]), "rb") as f:
        try:
            return list(pa.ipc.open_stream(f).schema.names)
        except pa.ArrowInvalid:
            f.seek(0)
            return list(pa.ipc.open_file(f).schema.names)


# --- field mapping -------------------------------------------------------------


class _WrongType(Exception):
    pass


_MISSING: Any = object()


def map_fields(row: dict[str, Any], fields: dict[str, str | FieldSpec]) -> dict[str, Any]:
    """The prompt variables of one row; raises RowError naming the variable that is wrong.

    Called once per task on the admission path, so the short form (`var: column`)
    is a plain dict lookup; only FieldSpec entries pay for type checks.
    """
    if not fields:
        return dict(row)
    out: dict[str, Any] = {}
    for var, spec in fields.items():
        if type(spec) is str:
            try:
                out[var] = row[spec]
            except KeyError:
                raise RowError(var, _missing_message(var, spec)) from None
        else:
            out[var] = _typed_value(row, var, spec)
    return out


def _missing_message(var: str, column: str) -> str:
    return f"missing field {column!r} (column for prompt variable {var!r})"


def _typed_value(row: dict[str, Any], var: str, spec: FieldSpec) -> Any:
    value = row.get(spec.column, _MISSING)
    if value is _MISSING or (not spec.required and _is_blank(value, spec.type)):
        if spec.required:
            raise RowError(var, _missing_message(var, spec.column))
        default = spec.default
        return copy.deepcopy(default) if isinstance(default, (list, dict)) else default
    if value is None and spec.type != "any":
        raise RowError(
            var, f"field {spec.column!r} (prompt variable {var!r}) is null, expected {spec.type}"
        )
    try:
        return _COERCE[spec.type](value)
    except _WrongType:
        raise RowError(
            var,
            f"field {spec.column!r} (prompt variable {var!r}): expected {spec.type}, "
            f"got {_type_name(value)} {_preview(repr(value), _VALUE_PREVIEW_CHARS)}",
        ) from None


def _is_blank(value: Any, type_: str) -> bool:
    """Null, or an empty CSV cell where a non-string is expected: both mean 'not given'."""
    return value is None or (value == "" and type_ not in ("str", "any"))


def _as_any(value: Any) -> Any:
    return value


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _WrongType


def _as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise _WrongType


def _as_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise _WrongType


_BOOL_STRINGS = {"true": True, "false": False}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        parsed = _BOOL_STRINGS.get(value.strip().lower())
        if parsed is not None:
            return parsed
    raise _WrongType


def _json_container(value: Any, kind: type, opener: str) -> Any:
    """Accept the container itself, or a string holding it as JSON (CSV cells)."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str) and value.lstrip().startswith(opener):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise _WrongType from None
        if isinstance(parsed, kind):
            return parsed
    raise _WrongType


_COERCE: dict[str, Callable[[Any], Any]] = {
    "any": _as_any,
    "str": _as_str,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "list": functools.partial(_json_container, kind=list, opener="["),
    "dict": functools.partial(_json_container, kind=dict, opener="{"),
}
