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

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zstandard

from peerflow.sink import _File, errors_path

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


def _records(path: Path) -> list[bytes]:
    f = _File(path)
    f.recover(set())  # cut a torn tail first: a half record is not a record
    if not path.exists():
        return []
    data = path.read_bytes()
    if f.zst and data:
        data = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    return [line for line in data.splitlines() if line.strip()]


@dataclass
class MergeResult:
    output: Path
    records: int
    duplicates: int
    inputs: list[Path]
    removed: list[Path]


def _merge_files(dest: Path, inputs: list[Path]) -> tuple[int, int]:
    seen: set[str] = set()
    kept: list[bytes] = []
    duplicates = 0
    for path in inputs:
        for line in _records(path):
            try:
                rid = _ids.decode(line).id
            except msgspec.DecodeError:
                continue
            if rid in seen:
                duplicates += 1
                continue
            seen.add(rid)
            kept.append(line)
    data = b"".join(line + b"\n" for line in kept)
    if dest.name.endswith(".zst"):
        data = zstandard.ZstdCompressor(level=3).compress(data)
    tmp = dest.with_name(dest.name + ".merging")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    return len(kept), duplicates


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
