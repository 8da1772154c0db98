"""The sink: exactly one output record per task, appended in whole lines, resumable.

Why it is safe to SIGKILL a run at any moment:
- records are buffered and written with `os.write` in chunks that end on a
  line boundary (for `.zst`, one complete zstd frame per chunk), so the file
  only ever ends mid-record if the process died inside a write;
- on open, a torn tail (a last line without newline, or a truncated frame)
  is cut off, and the newest record of every id says whether it is done: an
  ok or rejected record or a permanent failure is (admission skips it), a transient
  failure is not (the row is attempted again, and its new record supersedes
  the old one; see `peerflow.merge` for how the old one goes away);
- a record whose id already has one from this run is dropped, which turns
  at-least-once delivery (a retried hop on Ray) into exactly one record per id.

With `success_only`, failed tasks go to `<name>.errors.jsonl[.zst]` and rejected ones to
`<name>.rejected.jsonl[.zst]` beside the output instead, so every row still has exactly
one record somewhere.

One run at a time: `open` takes an exclusive lock on `<output>.lock`, and a
second run on the same output stops with `OutputBusy` instead of interleaving.
`check_fingerprint` keeps `<output>.meta.json`, so that a resume with a config
that shapes the data differently is refused unless forced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from peerflow.cost import record_cost
from peerflow.idset import IdSet, id_hash
from peerflow.merge import (
    Recovered,
    _heads_of,
    compact,
    drop_superseded,
    errors_path,
    read_manifest,
    rejected_path,
    with_side_files,
)
from peerflow.message import SCHEMA_VERSION, Message, Step

__all__ = [
    "FingerprintMismatch",
    "OutputBusy",
    "OutputLock",
    "OutputRecord",
    "Sink",
    "check_fingerprint",
    "errors_path",
    "rejected_path",
    "to_record",
]


class OutputRecord(msgspec.Struct, omit_defaults=True):
    id: str
    status: str
    row: Any = None
    history: list[Step] = msgspec.field(default_factory=list)
    error: dict[str, Any] | None = None
    reason: str | None = None
    rejection: dict[str, Any] | None = None
    trial: int = 0
    seed: int = 0
    created: float = 0.0
    finished: float = 0.0
    tokens: dict[str, int] | None = None
    cost_usd: float | None = None  # the sum of its steps' costs, when priced (peerflow.cost)
    metrics: dict[str, Any] | None = None
    peerflow: str | None = None  # version that wrote the record
    fingerprint: str | None = None  # of the config that shaped it
    v: int = SCHEMA_VERSION


_encoder = msgspec.json.Encoder()
_records = msgspec.json.Decoder(OutputRecord)


def to_record(
    message: Message,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> OutputRecord:
    prompt, completion = message.tokens()
    return OutputRecord(
        id=message.id,
        status=message.status,
        row=message.row,
        history=message.history,
        error=message.error,
        reason=message.reason,
        rejection=message.rejection,
        trial=message.trial,
        seed=message.seed,
        created=message.created,
        finished=message.finished,
        tokens={"prompt": prompt, "completion": completion} if prompt or completion else None,
        cost_usd=record_cost(message),
        metrics=metrics,
        peerflow=provenance.get("peerflow") if provenance else None,
        fingerprint=provenance.get("fingerprint") if provenance else None,
    )


def record_message(record: OutputRecord) -> Message:
    """A finished message rebuilt from its record, to count it again (a restarted Ray sink)."""
    row = record.row if isinstance(record.row, dict) else {"raw": record.row}
    return Message(
        id=record.id,
        row=row,
        history=record.history,
        status=record.status,
        error=record.error,
        reason=record.reason,
        rejection=record.rejection,
        trial=record.trial,
        seed=record.seed,
        created=record.created,
        finished=record.finished,
        hops=sum(1 for step in record.history if step.role != "task"),
    )


def records_since(paths: list[Path], since: float) -> Iterator[OutputRecord]:
    """The records in `paths` finished at or after `since` (decoded in full)."""
    for path in paths:
        if not path.exists():
            continue
        for line, head in _heads_of(path):
            if head is not None and head.finished >= since:
                with contextlib.suppress(msgspec.DecodeError):
                    yield _records.decode(line)


# --- one run per output ------------------------------------------------------------------


class OutputBusy(Exception):
    """Another process holds the output's lock (another run, or a merge)."""


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


class OutputLock:
    """An exclusive, non-blocking `flock` on `<output>.lock`, holding the owner's pid.

    The kernel releases it when the process dies, so a SIGKILLed run never leaves a stale
    lock behind. `wait` retries for that many seconds first (a restarting process whose
    predecessor is still exiting). Usable as a context manager.
    """

    def __init__(self, output: Path, *, wait: float = 0.0):
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.wait = wait
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputBusy(
                    f"output {self.output} is in use by another peerflow run (pid {pid}); "
                    "wait for it to finish or choose another output.path"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *_: Any) -> None:
        self.release()


# --- provenance --------------------------------------------------------------------------


class FingerprintMismatch(Exception):
    """The output holds records made with a config that shapes the data differently."""


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def _has_records(output: Path) -> bool:
    mains = [output, *read_manifest(output)]
    return any(p.exists() and p.stat().st_size > 0 for p in with_side_files(mains))


def check_fingerprint(output: Path, fingerprint: str, version: str, *, force: bool) -> None:
    """Refuse to add records made with another config fingerprint to an output.

    `<output>.meta.json` records the fingerprint the output's records were made with. A
    new or empty output takes the given one; an output with records made with another
    one raises `FingerprintMismatch`, unless `force`, which records the new fingerprint
    (the old ones stay listed under "previous"). An output from before fingerprints were
    kept takes the given one.
    """
    output = Path(output)
    path = meta_path(output)
    meta: dict[str, Any] | None = None
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text())
        meta = loaded if isinstance(loaded, dict) else None
    old = meta.get("fingerprint") if meta else None
    if old == fingerprint:
        return
    has = _has_records(output)
    if old and has and not force:
        raise FingerprintMismatch(
            f"output {output} was made with config fingerprint {str(old)[:12]}, and this "
            f"config's fingerprint is {fingerprint[:12]} (prompts, sampling, models, "
            "workflow or dataset differ); re-run with --force to mix, or choose another "
            "output.path"
        )
    now = time.time()
    data: dict[str, Any] = {"peerflow": version, "fingerprint": fingerprint, "created": now}
    if old and has:  # forced: the output now mixes both
        data["created"] = meta.get("created", now) if meta else now
        data["previous"] = [*(meta.get("previous", []) if meta else []), old]
        data["updated"] = now
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# --- writing -----------------------------------------------------------------------------


class _File:
    """One append-only output file (JSONL or JSONL in independent zstd frames)."""

    def __init__(self, path: Path):
        self.path = path
        self.zst = path.name.endswith(".zst")
        self.fd: int | None = None
        self.buf: list[bytes] = []
        self.size = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def add(self, line: bytes) -> None:
        self.buf.append(line)
        self.size += len(line)

    def flush(self, fsync: bool = False) -> None:
        if not self.buf or self.fd is None:
            return
        data = b"".join(self.buf)
        self.buf.clear()
        self.size = 0
        if self.zst:
            data = zstandard.ZstdCompressor(level=3).compress(data)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        if fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        self.flush(fsync=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Sink:
    """Writes finished tasks; knows which ids are done and which are to be re-attempted.

    After `open`:
    - `done` (alias `finished`, what admission skips): ids whose newest record is ok,
      rejected or a permanent failure (with `retry_failed`, only ok and rejected ones);
    - `retry`: ids whose newest record is a failure to re-attempt; a record for one is
      accepted, and the old record is removed when the sink closes;
    - `written_ids`: ids written by this run, whose second record is dropped. With
      `since` (a restarted Ray sink), records finished at or after it count as written
      by this run too.
    `counts()` gives the records per status of the whole output (one per id).

    `lock=False` is for a sink whose file is already locked by its run (the single
    shard of a Ray run, which is `output.path`); `compact_on_close=False` for one whose
    run compacts all shards together at the end; `track_done=False` for one whose run
    decides alone what is done (a Ray shard: the driver reads every shard), which saves
    the done set's 8 bytes per row.
    """

    def __init__(
        self,
        path: Path,
        *,
        success_only: bool = False,
        flush_bytes: int = 1 << 20,
        retry_failed: bool = False,
        lock: bool = True,
        lock_wait: float = 0.0,
        since: float | None = None,
        compact_on_close: bool = True,
        track_done: bool = True,
    ):
        self.path = Path(path)
        self.success_only = success_only
        self.flush_bytes = flush_bytes
        self.retry_failed = retry_failed
        self.since = since
        self.compact_on_close = compact_on_close
        self.track_done = track_done
        self.main = _File(self.path)
        self.errors = _File(errors_path(self.path)) if success_only else self.main
        self.rejected = _File(rejected_path(self.path)) if success_only else self.main
        self.done = IdSet()
        self.retry = IdSet()
        self.written_ids = IdSet()
        self.superseding = IdSet()  # re-attempted ids written by this run
        self.by_status: Counter[str] = Counter()
        self.provenance: dict[str, Any] | None = None
        self.recovered: Recovered | None = None
        self.written = 0
        self.duplicates = 0
        self.cut_bytes = 0
        self.superseded = 0  # older records removed (on open, and on close)
        self.records_before = 0  # ids with a record when the sink opened
        self.to_retry = 0  # of them, ids to re-attempt
        self.opened_at = 0.0
        self._lock = OutputLock(self.path, wait=lock_wait) if lock else None
        self._failed_in: list[Path] = []
        self._closed = False

    @property
    def finished(self) -> IdSet:
        """The ids admission skips (kept under this name for the runtimes)."""
        return self.done

    @property
    def holds_lock(self) -> bool:
        return self._lock is not None and self._lock.held

    @property
    def paths(self) -> list[Path]:
        """Every file of this output the sink reads: the output and its errors file."""
        return with_side_files([self.path])

    def open(self) -> None:
        self.opened_at = time.time()
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._recover(compact(self.paths, since=self.since))
            for file in self._files():
                file.open()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def _recover(self, rec: Recovered) -> None:
        self.recovered = rec
        if self.track_done:
            # The largest array first: it becomes the set's level as it is, without a copy.
            self.done.update_hashes(rec.ok, sorted_unique=True)
            self.done.update_hashes(rec.rejected, sorted_unique=True)
        if self.retry_failed:
            self.retry.update_hashes(rec.permanent, sorted_unique=True)
        elif self.track_done:
            self.done.update_hashes(rec.permanent, sorted_unique=True)
        self.retry.update_hashes(rec.transient, sorted_unique=True)
        self.written_ids.update_hashes(rec.recent, sorted_unique=True)
        self.by_status = Counter(rec.by_status())
        self.records_before = rec.ids
        self.to_retry = len(self.retry)
        self.superseded += rec.superseded
        self.cut_bytes += rec.cut_bytes
        self._failed_in = rec.failed_in

    def seen(self, task_id: str) -> bool:
        """True if a record for `task_id` would be dropped (done, or written by this run)."""
        h = id_hash(task_id)
        return self.written_ids.contains_hash(h) or self.done.contains_hash(h)

    def write(self, message: Message, metrics: dict[str, Any] | None = None) -> bool:
        """Append one record; False (and nothing written) if this id needs none."""
        h = id_hash(message.id)
        done = self.done
        if (len(done) and done.contains_hash(h)) or not self.written_ids.add_hash(h):
            self.duplicates += 1
            return False
        if len(self.retry) and self.retry.contains_hash(h):
            self.superseding.add_hash(h)
            if self.by_status["error"] > 0:
                self.by_status["error"] -= 1  # the old failure goes when the sink closes
        # A record this sink writes is newer than every record it found.
        if message.finished < self.opened_at:
            message.finished = time.time()
        self.by_status[message.status] += 1
        status = message.status
        target = (
            self.errors
            if status == "error"
            else self.rejected
            if status == "rejected"
            else self.main
        )
        target.add(_encoder.encode(to_record(message, metrics, self.provenance)) + b"\n")
        self.written += 1
        if target.size >= self.flush_bytes:
            target.flush()
        return True

    def counts(self) -> dict[str, int]:
        """Records per status in the whole output, one per id (after `close`, on disk)."""
        return {status: n for status, n in self.by_status.items() if n > 0}

    def _files(self) -> list[_File]:
        """The files this sink writes: the output, and with `success_only` its side files."""
        return [self.main] + ([self.errors, self.rejected] if self.success_only else [])

    def flush(self) -> None:
        for file in self._files():
            file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for file in self._files():
                file.close()
            if self.compact_on_close and len(self.superseding):
                self.superseded += drop_superseded(
                    self._failed_in, self.superseding, self.opened_at
                )
        finally:
            if self._lock is not None:
                self._lock.release()
