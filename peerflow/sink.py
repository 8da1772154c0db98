"""The sink: exactly one output record per task, appended in whole lines, resumable.

Why it is safe to SIGKILL a run at any moment:
- records are buffered and written with `os.write` in chunks that end on a
  line boundary (for `.zst`, one complete zstd frame per chunk), so the file
  only ever ends mid-record if the process died inside a write;
- on open, a torn tail (a last line without newline, or a truncated frame)
  is cut off, and the ids of the complete records are the finished set;
- admission skips finished ids, so re-running the same command does only
  the rest, with no new LLM calls for finished rows;
- a record whose id is already finished is dropped, which turns at-least-once
  delivery (a retried hop on Ray) into exactly one record per id.

With `success_only`, failed tasks go to `<name>.errors.jsonl[.zst]` beside the
output instead, so every row still has exactly one record somewhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from peerflow.message import SCHEMA_VERSION, Message, Step


class OutputRecord(msgspec.Struct, omit_defaults=True):
    id: str
    status: str
    row: Any = None
    history: list[Step] = msgspec.field(default_factory=list)
    error: dict[str, Any] | None = None
    trial: int = 0
    seed: int = 0
    created: float = 0.0
    finished: float = 0.0
    tokens: dict[str, int] | None = None
    metrics: dict[str, Any] | None = None
    v: int = SCHEMA_VERSION


class _IdOnly(msgspec.Struct):
    id: str


_id_decoder = msgspec.json.Decoder(_IdOnly)
_encoder = msgspec.json.Encoder()


def to_record(message: Message, metrics: dict[str, Any] | None = None) -> OutputRecord:
    prompt, completion = message.tokens()
    return OutputRecord(
        id=message.id,
        status=message.status,
        row=message.row,
        history=message.history,
        error=message.error,
        trial=message.trial,
        seed=message.seed,
        created=message.created,
        finished=message.finished,
        tokens={"prompt": prompt, "completion": completion} if prompt or completion else None,
        metrics=metrics,
    )


def errors_path(path: Path) -> Path:
    name = path.name
    for suffix in (".jsonl.zst", ".jsonl"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".errors" + suffix)
    return path.with_name(name + ".errors")


class _File:
    """One append-only output file (JSONL or JSONL in independent zstd frames)."""

    def __init__(self, path: Path):
        self.path = path
        self.zst = path.name.endswith(".zst")
        self.fd: int | None = None
        self.buf: list[bytes] = []
        self.size = 0

    def recover(self, ids: set[str]) -> int:
        """Cut a torn tail, collect the finished ids; returns how many bytes were cut.

        Streams the file, so resuming a run with a very large output stays small in memory.
        """
        if not self.path.exists():
            return 0

        def collect(line: bytes) -> None:
            # A line that is not one of our records is kept, but finishes nothing.
            with contextlib.suppress(msgspec.DecodeError):
                ids.add(_id_decoder.decode(line).id)

        good = scan_records(self.path, collect)
        cut = self.path.stat().st_size - good
        if cut:
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return cut

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


def scan_records(path: Path, on_line: Callable[[bytes], None], chunk: int = 1 << 20) -> int:
    """Call `on_line` for every complete record line; return the length of the intact prefix.

    A record is complete when its line ends in a newline (JSONL) or its zstd frame is whole
    (`.zst`, one frame per flush): whatever follows is a tail torn by a crash.
    """
    if not path.name.endswith(".zst"):
        good = 0
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                good += len(line)
                if line.strip():
                    on_line(line)
        return good
    dctx = zstandard.ZstdDecompressor()
    good = offset = 0
    frame = dctx.decompressobj()
    text = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            data = block
            while data:
                try:
                    text += frame.decompress(data)
                except zstandard.ZstdError:
                    return good
                if not frame.eof:
                    offset += len(data)
                    break
                offset += len(data) - len(frame.unused_data)
                good = offset
                for line in text.splitlines():
                    if line.strip():
                        on_line(line)
                text = b""
                data = frame.unused_data
                frame = dctx.decompressobj()
    return good


class Sink:
    """Writes finished tasks; knows which ids are done."""

    def __init__(self, path: Path, *, success_only: bool = False, flush_bytes: int = 1 << 20):
        self.path = path
        self.success_only = success_only
        self.flush_bytes = flush_bytes
        self.main = _File(path)
        self.errors = _File(errors_path(path)) if success_only else self.main
        self.finished: set[str] = set()
        self.written = 0
        self.duplicates = 0
        self.cut_bytes = 0

    def open(self) -> None:
        files = {id(f): f for f in (self.main, self.errors)}.values()
        for f in files:
            self.cut_bytes += f.recover(self.finished)
            f.open()

    def write(self, message: Message, metrics: dict[str, Any] | None = None) -> bool:
        """Append one record; False (and nothing written) if this id already has one."""
        if message.id in self.finished:
            self.duplicates += 1
            return False
        self.finished.add(message.id)
        target = self.main if message.status == "ok" or not self.success_only else self.errors
        target.add(_encoder.encode(to_record(message, metrics)) + b"\n")
        self.written += 1
        if target.size >= self.flush_bytes:
            target.flush()
        return True

    def flush(self) -> None:
        self.main.flush()
        if self.errors is not self.main:
            self.errors.flush()

    def close(self) -> None:
        self.main.close()
        if self.errors is not self.main:
            self.errors.close()
