"""Input datasets: lazy row readers and the mapping from input columns to prompt variables.

Three promises shape this module:

- Every input row becomes exactly one `RawRow`: either a row or an error
  naming where the problem is. A bad line never stops the run and is never
  silently dropped, so `rows in == records out` holds for every run.
- Memory stays flat whatever the input size: files are streamed line by line
  or batch by batch and re-read for each `repeat` pass, never loaded whole.
- Problems with the dataset as a whole (missing file, unknown format, unknown
  split, ...) are found by `open_dataset`, before any service is started.

Row ids: with `id_field` the id is the string value of that column, otherwise
the positional `row-<n>`. With `repeat > 1` every id carries a `~<pass>`
suffix. The sink keys records on the id and keeps the first one, so two input
rows sharing an id produce one record (the second one is counted as a
duplicate). Duplicates are not detected here: doing so needs a set of every id
seen, i.e. memory growing with the input. Use a unique id column, or leave
`id_field` unset to get positional ids.
"""

from __future__ import annotations

import codecs
import copy
import csv
import functools
import gzip
import io
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from peerflow.config import DatasetConfig, FieldSpec

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

    index: int  # 0-based position across all repeat passes
    row: Any
    error: str | None
    id: str


# A source yields (row, error) pairs for one pass over the data; error is None for good rows.
Source = Callable[[], Iterator[tuple[Any, str | None]]]


class Dataset:
    """A re-iterable, lazy view of the input: each `iter()` re-reads the source from the start.

    It holds only paths and settings (no open files), so it can be pickled
    and shipped to another process.
    """

    def __init__(self, cfg: DatasetConfig, path: Path, fmt: str, source: Source) -> None:
        self.config = cfg
        self.path = path
        self.format = fmt
        self._source = source

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[RawRow]:
        limit = self.config.limit
        if limit == 0:
            return
        repeat = self.config.repeat
        id_field = self.config.id_field
        index = 0
        for k in range(repeat):
            suffix = f"~{k}" if repeat > 1 else ""
            for position, (row, error) in enumerate(self._source()):
                row_id = f"row-{position}{suffix}"
                if error is None and id_field is not None:
                    row_id, error = _field_id(row, id_field, position, row_id, suffix)
                yield RawRow(index, row, error, row_id)
                index += 1
                if index == limit:
                    return


def _field_id(row: dict[str, Any], id_field: str, position: int, positional: str,
              suffix: str) -> tuple[str, str | None]:
    """The row's id from its id column, or the positional id and an error if it has none."""
    value = row.get(id_field)
    if value is None or value == "":
        what = "missing" if id_field not in row else "empty"
        return positional, f"row {position}: {what} id field {id_field!r}"
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
    """Open a file for streaming, decompressing .gz / .zst on the fly."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if suffix in (".zst", ".zstd"):
        import zstandard

        # The zstd reader has no readline; a buffer on top gives fast line iteration.
        reader = zstandard.open(path, "rb")
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return open(path, "rb", buffering=1 << 20)


def _head(path: Path, size: int = 4096) -> bytes:
    """The first bytes, BOM stripped; also proves the file is readable and decompresses.

    Bounded, not a readline: a one-line multi-GB file must not be read at startup.
    """
    try:
        with _open_binary(path) as f:
            head = f.read(size)
    except Exception as exc:  # OSError, gzip.BadGzipFile, zstandard.ZstdError, ...
        raise DatasetError(f"{path}: cannot read: {exc}") from None
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


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str | None]]:
    """Parse one line at a time; orjson on bytes keeps this at ~1 us per short row."""
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    with _open_binary(path) as f:
        first = f.readline().removeprefix(codecs.BOM_UTF8)
        if not first:
            return
        for lineno, line in enumerate(itertools.chain((first,), f), 1):
            if line.isspace():
                continue
            try:
                value = loads(line)
            except decode_error as exc:
                yield _preview(line), f"line {lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
                continue
            if type(value) is dict:
                yield value, None
            else:
                yield value, f"line {lineno}: expected a JSON object, got {_type_name(value)}"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --- CSV ---------------------------------------------------------------------

def _csv_header(path: Path) -> list[str]:
    """Read and validate the header row: duplicate names would silently lose columns."""
    try:
        with _open_binary(path) as f:
            header = next(csv.reader(_decode_lines(f, [])), [])
    except Exception as exc:  # OSError, csv.Error, decompression errors
        raise DatasetError(f"{path}: cannot read the CSV header: {exc}") from None
    duplicates = sorted(name for name, n in Counter(header).items() if n > 1)
    if duplicates:
        raise DatasetError(f"{path}: duplicate column names in the CSV header: {duplicates}")
    return header


def _decode_lines(f: Iterable[bytes], bad_lines: list[int]) -> Iterator[str]:
    """Decode line by line so one invalid UTF-8 line becomes one bad row, not a crashed run."""
    for lineno, raw in enumerate(f, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.append(lineno)
            text = raw.decode("utf-8", "replace")
        yield text.removeprefix("\ufeff") if lineno == 1 else text


def _csv_rows(path: Path) -> Iterator[tuple[Any, str | None]]:
    # Long text cells are normal in LLM datasets; the default 128 KiB cap is not.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    bad_lines: list[int] = []
    with _open_binary(path) as f:
        reader = csv.reader(_decode_lines(f, bad_lines))
        header = next(reader, None)
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
                yield None, f"line {start}: invalid CSV: {exc}"
                continue
            if bad_lines:
                yield values, f"line {bad_lines[0]}: invalid UTF-8"
                bad_lines.clear()
            elif not values:
                continue  # blank line
            elif len(values) != width:
                yield values, f"line {start}: expected {width} fields, got {len(values)}"
            else:
                yield dict(zip(header, values, strict=True)), None


# --- Parquet and Arrow ---------------------------------------------------------

def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).close()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for bad files
        raise DatasetError(f"{path}: unreadable Parquet file: {exc}") from None


def _parquet_rows(path: Path) -> Iterator[tuple[Any, str | None]]:
    import pyarrow.parquet as pq

    # Buffered reads without pre-buffering or reader threads keep RSS flat (measured: ~50 MB
    # over the import baseline for 1M rows, against ~110 MB and creeping with the defaults);
    # rows are consumed one at a time in Python anyway, so decode threads buy nothing.
    with pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False) as pf:
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, use_threads=False):
            for row in batch.to_pylist():
                yield row, None


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


def _arrow_rows(files: tuple[Path, ...]) -> Iterator[tuple[Any, str | None]]:
    import pyarrow as pa

    for file in files:
        with pa.OSFile(str(file), "rb") as f:
            for batch in _ipc_batches(f):
                for offset in range(0, batch.num_rows, _BATCH_ROWS):
                    for row in batch.slice(offset, _BATCH_ROWS).to_pylist():
                        yield row, None


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
