from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from peerflow.merge import merge_shards, shard_path, write_manifest
from peerflow.message import new_message
from peerflow.sink import Sink


def write_shard(path: Path, ids: list[str]) -> None:
    sink = Sink(path, flush_bytes=1)
    sink.open()
    for i in ids:
        m = new_message(i, {"i": i}, {})
        m.status = "ok"
        sink.write(m)
    sink.close()


def read_ids(path: Path) -> list[str]:
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    return [json.loads(line)["id"] for line in data.splitlines()]


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.zst"])
def test_merge_keeps_one_record_per_id_and_skips_torn_tails(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    shards = [shard_path(out, i, 2) for i in range(2)]
    write_shard(shards[0], ["a", "b", "c"])
    write_shard(shards[1], ["c", "d"])  # "c" re-delivered: written twice across shards
    with open(shards[1], "ab") as f:
        f.write(b'{"id": "e", "sta')  # torn by a crash (a broken frame for .zst)
    write_manifest(out, shards)
    result = merge_shards(out)
    assert sorted(read_ids(out)) == ["a", "b", "c", "d"]
    assert result.records == 4 and result.duplicates == 1
    assert not any(p.exists() for p in shards)
