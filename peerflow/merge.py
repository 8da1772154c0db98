"""Sharded output: where shards live, the manifest that lists them, and merging them into one file.

Many sink processes writing one file would need a lock or a single writer, and a single
writer caps a large cluster's output rate. So a sharded run gives every sink its own shard
(`out.shard-003.jsonl`) and keeps a manifest beside the output (`out.jsonl.manifest.json`)
listing every shard ever written. Shards of different runs (say, a re-run with more sinks)
all stay listed, so resuming still finds every finished id. `merge_shards` turns the lot
into the single file that training pipelines expect, keeping exactly one record per id.

This module does not import Ray: merging and reading ids must work on any machine that
holds the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from peerflow.sink import _File, errors_path, scan_records

_SUFFIXES = (".jsonl.zst", ".jsonl")


class _IdOnly(msgspec.Struct):
    id: str


_ids = msgspec.json.Decoder(_IdOnly)


def _split_suffix(name: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


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


def read_ids(path: Path) -> set[str]:
    """Finished ids in one output file (a torn tail is cut off, as a sink would on open)."""
    ids: set[str] = set()
    _File(path).recover(ids)
    return ids


@dataclass
class MergeResult:
    output: Path
    records: int
    duplicates: int
    inputs: list[Path]
    removed: list[Path]


def _merge_files(dest: Path, inputs: list[Path]) -> tuple[int, int]:
    """Stream every complete record of `inputs` into `dest`, first record per id wins."""
    seen: set[str] = set()
    kept = duplicates = 0
    tmp = dest.with_name(dest.name + ".merging")
    with open(tmp, "wb") as raw:
        with contextlib.ExitStack() as stack:
            out: Any = raw
            if dest.name.endswith(".zst"):
                cctx = zstandard.ZstdCompressor(level=3)
                out = stack.enter_context(cctx.stream_writer(raw, closefd=False))

            def keep(line: bytes) -> None:
                nonlocal kept, duplicates
                try:
                    rid = _ids.decode(line).id
                except msgspec.DecodeError:
                    return
                if rid in seen:
                    duplicates += 1
                    return
                seen.add(rid)
                out.write(line.rstrip(b"\n") + b"\n")
                kept += 1

            for path in inputs:
                scan_records(path, keep)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, dest)
    return kept, duplicates


def merge_shards(output: str | Path, *, keep_shards: bool = False) -> MergeResult:
    """Merge every shard listed for `output` (and `output` itself) into `output`.

    The first record of an id wins, so at-least-once duplicates across shards vanish. The
    manifest then lists only `output`; shards are deleted unless `keep_shards`. Written to
    a temporary file and renamed, so a crash mid-merge leaves the shards untouched.
    """
    output = Path(output)
    shards = [p for p in read_manifest(output) if p != output]
    inputs = ([output] if output.exists() else []) + [p for p in shards if p.exists()]
    records, duplicates = _merge_files(output, inputs)
    # Failed records of `success_only` runs live beside each shard; merge them the same way.
    error_inputs = [errors_path(p) for p in inputs + ([output] if output not in inputs else [])]
    error_inputs = list(dict.fromkeys(p for p in error_inputs if p.exists()))
    if error_inputs:
        r, d = _merge_files(errors_path(output), error_inputs)
        records += r
        duplicates += d
    removed: list[Path] = []
    write_manifest(output, [output], replace=True)
    if not keep_shards:
        for shard in shards:
            for path in (shard, errors_path(shard)):
                if path.exists():
                    path.unlink()
                    removed.append(path)
    return MergeResult(
        output=output, records=records, duplicates=duplicates, inputs=inputs, removed=removed
    )
