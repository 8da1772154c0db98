from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from peerflow.merge import errors_path, merge_shards, shard_path, write_manifest
from peerflow.message import new_message
from peerflow.sink import OutputBusy, OutputLock, Sink


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


def test_merge_keeps_the_newest_record_of_a_retried_row_wherever_it_is(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    shards = [shard_path(out, i, 2) for i in range(2)]
    lines = {
        shards[0]: [
            {"id": "a", "status": "error", "error": {"kind": "transient"}, "finished": 1.0},
            {"id": "b", "status": "ok", "finished": 1.0},
        ],
        shards[1]: [{"id": "a", "status": "ok", "finished": 2.0}],  # the retry, elsewhere
        errors_path(shards[1]): [
            {"id": "c", "status": "error", "error": {"kind": "permanent"}, "finished": 1.0}
        ],
    }
    for path, records in lines.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_manifest(out, shards)
    with OutputLock(out), pytest.raises(OutputBusy, match="in use by another peerflow run"):
        merge_shards(out)  # never beside a run
    result = merge_shards(out)
    assert result.records == 3 and result.duplicates == 1
    assert [(r["id"], r["status"]) for r in map(json.loads, out.read_text().splitlines())] == [
        ("b", "ok"),
        ("a", "ok"),
    ]
    assert [json.loads(x)["id"] for x in errors_path(out).read_text().splitlines()] == ["c"]
    assert not any(p.exists() for p in [*shards, *map(errors_path, shards)])
