"""Output files: shards and their manifest, reading what a run left, one record per id.

Layout. Records are only ever appended, so writing stays one `os.write` per flush. A
re-attempted row (its newest record was a transient failure) is appended like any other
row; for a while its id then has two records, the failed one and the new one. The newest
record wins: the one with the larger `finished` time, and on a tie the one read later.
`compact` removes every older record, so the files hold exactly one record per id again;
the sink calls it when it opens (a crash may have left two). At the end of a run,
`drop_superseded` removes just the old records of the rows re-attempted in it: the sink
when it closes, and the Ray driver over every shard, since a retried row can land in
another shard than its old record. Compaction streams a file into a temporary file beside
it, fsyncs it and renames it over the original: a crash at any point leaves either the
old or the new file, and the newest record of every id is in both.

Sharding. Many sink processes writing one file would need a lock or a single writer, and
a single writer caps a large cluster's output rate. So a sharded run gives every sink its
own shard (`out.shard-003.jsonl`) and keeps a manifest beside the output
(`out.jsonl.manifest.json`) listing every shard ever written. Shards of different runs
(say, a re-run with more sinks) all stay listed, so resuming still finds every record.
`merge_shards` turns the lot into the single file that training pipelines expect.

Memory. Reading an output keeps 9 bytes per record while it reads (a 64-bit hash of the
id and a status code in flat arrays, never the id strings) and ends with four sorted hash
arrays: ids whose newest record is ok, rejected, a permanent failure, or a transient one.

Side files. With `output.success_only`, failed records go to `<stem>.errors.jsonl` and
rejected ones to `<stem>.rejected.jsonl` beside the output (and beside each shard); every
reader here takes them with the output, so resume and merge see every row's record.

This module does not import Ray: merging and reading must work on any machine that holds
the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zstandard

from peerflow.idset import IdSet, id_hash

_SUFFIXES = (".jsonl.zst", ".jsonl")

# What the newest record of an id says about re-running it.
OK_CODE = 0  # an ok record: done
PERMANENT_CODE = 1  # a permanent failure: done, unless the run retries every failure
TRANSIENT_CODE = 2  # a transient failure (or one written before errors had a kind): retried
REJECTED_CODE = 3  # rejected by the workflow: done, never re-attempted

# Compacted zstd files are written as independent frames of about this much text, like
# the sink's own flushes, so a torn tail can be cut at a frame boundary.
_FRAME_BYTES = 1 << 20


# --- paths -------------------------------------------------------------------------------


def _split_suffix(name: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def errors_path(path: Path) -> Path:
    """Where failed records go when `output.success_only` is set."""
    stem, suffix = _split_suffix(path.name)
    return path.with_name(f"{stem}.errors{suffix}")


def rejected_path(path: Path) -> Path:
    """Where rejected records go when `output.success_only` is set."""
    stem, suffix = _split_suffix(path.name)
    return path.with_name(f"{stem}.rejected{suffix}")


def side_paths(path: Path) -> tuple[Path, Path]:
    return errors_path(path), rejected_path(path)


def with_side_files(paths: Sequence[Path]) -> list[Path]:
    """`paths` and each one's errors and rejected files, when they exist (a run may have
    had `success_only` on, and the next one off)."""
    out: list[Path] = []
    for path in paths:
        for p in (path, *side_paths(path)):
            if p not in out and (p == path or p.exists()):
                out.append(p)
    return out


def shard_path(output: Path, index: int, count: int) -> Path:
    """Shard `index` of `count`; a single shard is the output file itself."""
    if count == 1:
        return output
    stem, suffix = _split_suffix(output.name)
    return output.with_name(f"{stem}.shard-{index:03d}{suffix}")


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def read_manifest(output: Path) -> list[Path]:
    """Shards listed for `output` (absolute paths); empty when there is no manifest."""
    path = manifest_path(output)
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [output.parent / name for name in data.get("shards", [])]


def write_manifest(output: Path, shards: list[Path], *, replace: bool = False) -> Path:
    """Record `shards` (merged with the listed ones unless `replace`); atomic on POSIX."""
    names = [] if replace else [p.name for p in read_manifest(output)]
    for shard in shards:
        if shard.name not in names:
            names.append(shard.name)
    path = manifest_path(output)
    tmp = path.with_name(path.name + ".tmp")
    data = {"output": output.name, "shards": names, "updated": time.time()}
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


# --- reading -----------------------------------------------------------------------------


class Lines:
    """The complete record lines of one output file; `good` is then the intact prefix.

    A record is complete when its line ends in a newline (JSONL) or its zstd frame is
    whole (`.zst`, one frame per flush): whatever follows is a tail torn by a crash.
    Streams the file, so reading a very large output stays small in memory.
    """

    def __init__(self, path: Path, chunk: int = 1 << 20):
        self.path = path
        self.chunk = chunk
        self.good = 0

    def __iter__(self) -> Iterator[bytes]:
        if not self.path.name.endswith(".zst"):
            with open(self.path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        return
                    self.good += len(line)
                    if line.strip():
                        yield line
            return
        dctx = zstandard.ZstdDecompressor()
        offset = 0
        frame = dctx.decompressobj()
        parts: list[bytes] = []
        with open(self.path, "rb") as f:
            while block := f.read(self.chunk):
                data = block
                while data:
                    try:
                        parts.append(frame.decompress(data))
                    except zstandard.ZstdError:
                        return
                    if not frame.eof:
                        offset += len(data)
                        break
                    offset += len(data) - len(frame.unused_data)
                    self.good = offset
                    text = b"".join(parts)
                    parts = []
                    for line in text.split(b"\n"):
                        if line.strip():
                            yield line + b"\n"
                    data = frame.unused_data
                    frame = dctx.decompressobj()


class _Kind(msgspec.Struct):
    kind: Any = None


class _Head(msgspec.Struct):
    """The fields of a record that decide resume; the rest of the line is skipped."""

    id: str
    status: str = ""
    finished: float = 0.0
    error: _Kind | None = None


_heads = msgspec.json.Decoder(_Head)


def _code(head: _Head) -> int:
    if head.status == "ok":
        return OK_CODE
    if head.status == "rejected":
        return REJECTED_CODE
    # Records written before errors had a kind count as transient: one more attempt.
    if head.error is not None and head.error.kind == "permanent":
        return PERMANENT_CODE
    return TRANSIENT_CODE


def _heads_of(path: Path) -> Iterator[tuple[bytes, _Head | None]]:
    """Each complete line with its decoded head (None for a line that is not a record)."""
    for line in Lines(path):
        try:
            yield line, _heads.decode(line)
        except msgspec.DecodeError:
            yield line, None  # kept as it is, but finishes nothing


def _truncate(path: Path, good: int) -> int:
    cut = path.stat().st_size - good
    if cut > 0:
        with open(path, "r+b") as f:
            f.truncate(good)
            os.fsync(f.fileno())
    return max(cut, 0)


# --- the state of an output --------------------------------------------------------------

_EMPTY = np.empty(0, dtype=np.uint64)


@dataclass
class Recovered:
    """What a list of output files holds: the newest record of every id, by kind.

    The arrays are sorted, unique 64-bit id hashes (`peerflow.idset.id_hash`).
    """

    paths: list[Path]
    ok: np.ndarray = field(default_factory=lambda: _EMPTY)
    rejected: np.ndarray = field(default_factory=lambda: _EMPTY)
    permanent: np.ndarray = field(default_factory=lambda: _EMPTY)
    transient: np.ndarray = field(default_factory=lambda: _EMPTY)
    # Ids with a record finished at or after `since` (records of the current run).
    recent: np.ndarray = field(default_factory=lambda: _EMPTY)
    records: int = 0  # complete records read
    superseded: int = 0  # older records removed, each id keeping its newest
    cut_bytes: int = 0  # torn tails cut
    failed_in: list[Path] = field(default_factory=list)  # files holding a failed record

    @property
    def ids(self) -> int:
        return int(self.ok.size + self.rejected.size + self.permanent.size + self.transient.size)

    def by_status(self) -> dict[str, int]:
        counts = {
            "ok": int(self.ok.size),
            "rejected": int(self.rejected.size),
            "error": int(self.permanent.size + self.transient.size),
        }
        return {k: v for k, v in counts.items() if v}


def compact(paths: Sequence[Path], *, since: float | None = None) -> Recovered:
    """Read `paths` as one output, keep only the newest record of each id, say what is left.

    Torn tails are cut first. Ids are compared as 64-bit hashes while reading; the ids
    that seem to repeat are then read again as strings, so two different ids that share a
    hash never lose a record. Only files that hold an older record are rewritten.
    """
    # Each file once: a file read twice would look like every id repeated.
    paths = list({Path(p).resolve(): Path(p) for p in paths}.values())
    hashes = array("Q")
    codes = array("B")
    recent = array("Q")
    bounds = [0]
    cut = 0
    failed_in: list[Path] = []
    for path in paths:
        if path.exists():
            _remove_stale_temps(path)
            lines = Lines(path)
            failed = 0
            for line in lines:
                try:
                    head = _heads.decode(line)
                except msgspec.DecodeError:
                    continue
                h = id_hash(head.id)
                code = _code(head)
                hashes.append(h)
                codes.append(code)
                failed += code in (PERMANENT_CODE, TRANSIENT_CODE)
                if since is not None and head.finished >= since:
                    recent.append(h)
            cut += _truncate(path, lines.good)
            if failed:
                failed_in.append(path)
        bounds.append(len(hashes))
    hs = np.frombuffer(hashes, dtype=np.uint64) if len(hashes) else _EMPTY
    cs = np.frombuffer(codes, dtype=np.uint8) if len(codes) else np.empty(0, dtype=np.uint8)
    keep: np.ndarray | None = None
    superseded = 0
    repeated = _repeated(hs)
    if repeated.size:
        drop = _older_records(paths, bounds, hs, repeated)
        superseded = int(drop.size)
        if superseded:
            for i, path in enumerate(paths):
                lo, hi = bounds[i], bounds[i + 1]
                mine = drop[(drop >= lo) & (drop < hi)] - lo
                if mine.size:
                    _rewrite_dropping_seq(path, mine)
            keep = np.ones(hs.size, dtype=bool)
            keep[drop] = False

    def pick(code: int) -> np.ndarray:
        mask = cs == code
        if keep is not None:
            mask &= keep
        out = hs[mask]
        out.sort()
        if repeated.size:  # two ids sharing a hash: the arrays hold each hash once
            out = np.unique(out)
        return out

    return Recovered(
        paths=paths,
        ok=pick(OK_CODE),
        rejected=pick(REJECTED_CODE),
        permanent=pick(PERMANENT_CODE),
        transient=pick(TRANSIENT_CODE),
        recent=np.unique(np.frombuffer(recent, dtype=np.uint64)) if len(recent) else _EMPTY,
        records=int(hs.size),
        superseded=superseded,
        cut_bytes=cut,
        failed_in=failed_in,
    )


def _repeated(hs: np.ndarray) -> np.ndarray:
    """Hashes that occur more than once."""
    if hs.size < 2:
        return _EMPTY
    s = np.sort(hs)
    same = s[1:] == s[:-1]
    if not same.any():
        return _EMPTY
    return np.unique(s[1:][same])


def _older_records(
    paths: list[Path], bounds: list[int], hs: np.ndarray, repeated: np.ndarray
) -> np.ndarray:
    """Sequence numbers of the records that a newer record of the same id supersedes."""
    wanted = np.flatnonzero(np.isin(hs, repeated)).tolist()  # sorted record numbers
    groups: dict[str, list[tuple[float, int]]] = {}
    j = 0
    for i, path in enumerate(paths):
        if j >= len(wanted) or wanted[j] >= bounds[i + 1]:
            continue  # no repeated id in this file
        seq = bounds[i]
        for _line, head in _heads_of(path):
            if head is None:
                continue
            if seq == wanted[j]:
                groups.setdefault(head.id, []).append((head.finished, seq))
                j += 1
                if j == len(wanted) or wanted[j] >= bounds[i + 1]:
                    break
            seq += 1
    drop = [seq for recs in groups.values() if len(recs) > 1 for _, seq in sorted(recs)[:-1]]
    return np.array(sorted(drop), dtype=np.int64)


def drop_superseded(paths: Sequence[Path], ids: IdSet, before: float) -> int:
    """Remove the records of `ids` finished before `before`; returns how many.

    For the end of a run: `ids` are the re-attempted ids that got a new record in this
    run (started at `before`), so each older record of theirs is superseded. Only the
    files that hold one are rewritten.
    """
    if not len(ids):
        return 0
    total = 0

    def stale(head: _Head) -> bool:
        return head.finished < before and ids.contains_hash(id_hash(head.id))

    for path in paths:
        path = Path(path)
        if not path.exists():
            continue
        # One pass cuts a torn tail and finds whether the file holds a stale record.
        lines = Lines(path)
        has_stale = False
        for line in lines:
            if not has_stale:
                with contextlib.suppress(msgspec.DecodeError):
                    has_stale = stale(_heads.decode(line))
        _truncate(path, lines.good)
        if has_stale:
            total += _rewrite(path, stale)
    return total


# --- rewriting ---------------------------------------------------------------------------


def _temp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.compact-{os.getpid()}.tmp")


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of a compaction that crashed (the caller holds the output's lock)."""
    for tmp in path.parent.glob(f".{path.name}.compact-*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _rewrite_dropping_seq(path: Path, drop: np.ndarray) -> int:
    wanted = set(int(x) for x in drop)
    seq = -1

    def stale(head: _Head) -> bool:
        nonlocal seq
        seq += 1
        return seq in wanted

    return _rewrite(path, stale)


def _rewrite(path: Path, stale: Callable[[_Head], bool]) -> int:
    """Stream `path` into a temporary file without the records `stale` names, then swap.

    `stale` is called once per record, in file order. Lines that are not records are
    kept as they are. The new file is fsynced before it replaces the old one, and the
    directory after, so a crash leaves one complete version.
    """
    tmp = _temp_for(path)
    dropped = 0
    with _Writer(tmp, zst=path.name.endswith(".zst")) as out:
        for line, head in _heads_of(path):
            if head is not None and stale(head):
                dropped += 1
                continue
            out.write(line)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return dropped


class _Writer:
    """Whole lines into a new file: plain, or zstd frames of about `_FRAME_BYTES` each."""

    def __init__(self, path: Path, *, zst: bool):
        self.path = path
        self.zst = zst
        self.buf: list[bytes] = []
        self.size = 0
        self.f: Any = None
        self.cctx = zstandard.ZstdCompressor(level=3)

    def __enter__(self) -> _Writer:
        self.f = open(self.path, "wb")
        return self

    def write(self, line: bytes) -> None:
        self.buf.append(line)
        self.size += len(line)
        if self.size >= _FRAME_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            data = b"".join(self.buf)
            self.f.write(self.cctx.compress(data) if self.zst else data)
            self.buf.clear()
            self.size = 0

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self._flush()
                self.f.flush()
                os.fsync(self.f.fileno())
        finally:
            self.f.close()
            if exc_type is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- merging -----------------------------------------------------------------------------


@dataclass
class MergeResult:
    output: Path
    records: int
    duplicates: int  # older records of an id dropped (the newest is kept)
    inputs: list[Path]
    removed: list[Path]


def merge_shards(output: str | Path, *, keep_shards: bool = False) -> MergeResult:
    """Merge every shard listed for `output` (and `output` itself) into `output`.

    First `compact` over all of them keeps the newest record of each id; then the shards
    are appended into `output` (failed and rejected records of `success_only` runs into
    its errors and rejected files), through a temporary file and a rename, so a crash
    mid-merge leaves the shards untouched. The manifest then lists only `output`; shards
    are deleted unless `keep_shards`. Takes the output's lock: a merge never runs beside a run.
    """
    from peerflow.sink import OutputLock

    output = Path(output)
    with OutputLock(output):
        shards = [p for p in read_manifest(output) if p != output]
        inputs = ([output] if output.exists() else []) + [p for p in shards if p.exists()]
        sides = {
            side(output): [side(p) for p in [output, *shards] if side(p).exists()]
            for side in (errors_path, rejected_path)
        }
        state = compact([*inputs, *(p for found in sides.values() for p in found)])
        _concatenate(output, inputs)
        for dest, found in sides.items():
            if found:
                _concatenate(dest, found)
        write_manifest(output, [output], replace=True)
        removed: list[Path] = []
        if not keep_shards:
            for shard in shards:
                for path in (shard, *side_paths(shard)):
                    if path.exists():
                        path.unlink()
                        removed.append(path)
    return MergeResult(
        output=output,
        records=state.ids,
        duplicates=state.superseded,
        inputs=inputs,
        removed=removed,
    )


def _concatenate(dest: Path, inputs: list[Path]) -> None:
    if inputs == [dest] or not inputs:
        return
    tmp = _temp_for(dest)
    with _Writer(tmp, zst=dest.name.endswith(".zst")) as out:
        for path in inputs:
            for line in Lines(path):
                out.write(line)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
