from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from peerflow.message import Message, Step, new_message
from peerflow.sink import Sink, errors_path


def msg(i: int, status: str = "ok") -> Message:
    m = new_message(f"id{i}", {"n": i}, {"n": i})
    m.history.append(
        Step(role="a", content="x" * 50, usage={"prompt_tokens": 3, "completion_tokens": 4})
    )
    m.status = status
    return m


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_whole_lines_with_history_and_tokens(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "o.jsonl")
    sink.open()
    for i in range(3):
        assert sink.write(msg(i))
    sink.close()
    records = read_jsonl(tmp_path / "o.jsonl")
    assert [r["id"] for r in records] == ["id0", "id1", "id2"]
    assert records[0]["history"][0]["role"] == "a"
    assert records[0]["tokens"] == {"prompt": 3, "completion": 4}


def test_duplicate_ids_are_dropped(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "o.jsonl")
    sink.open()
    assert sink.write(msg(1))
    assert not sink.write(msg(1))
    sink.close()
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 1
    assert sink.duplicates == 1


def test_reopen_cuts_torn_tail_and_knows_finished_ids(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    sink = Sink(path)
    sink.open()
    sink.write(msg(1))
    sink.write(msg(2))
    sink.close()
    with open(path, "ab") as f:
        f.write(b'{"id": "id3", "status": "ok", "hist')  # a write cut by SIGKILL
    again = Sink(path)
    again.open()
    assert again.finished == {"id1", "id2"}
    assert again.cut_bytes > 0
    assert again.write(msg(3))
    assert not again.write(msg(2))
    again.close()
    assert [r["id"] for r in read_jsonl(path)] == ["id1", "id2", "id3"]


def test_zstd_output_is_frames_and_survives_a_torn_frame(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl.zst"
    sink = Sink(path, flush_bytes=1)  # one frame per record
    sink.open()
    for i in range(4):
        sink.write(msg(i))
    sink.close()
    data = path.read_bytes()
    path.write_bytes(data + zstandard.ZstdCompressor().compress(b'{"id": "id9"}\n')[:-5])
    again = Sink(path)
    again.open()
    assert again.finished == {"id0", "id1", "id2", "id3"}
    again.write(msg(5))
    again.close()
    text = (
        zstandard.ZstdDecompressor()
        .stream_reader(path.read_bytes(), read_across_frames=True)
        .read()
    )
    assert [json.loads(line)["id"] for line in text.splitlines()] == [
        "id0",
        "id1",
        "id2",
        "id3",
        "id5",
    ]


def test_success_only_sends_errors_to_a_sidecar_that_also_counts_as_finished(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.jsonl"
    sink = Sink(path, success_only=True)
    sink.open()
    sink.write(msg(1))
    sink.write(msg(2, status="error"))
    sink.close()
    assert [r["id"] for r in read_jsonl(path)] == ["id1"]
    assert [r["id"] for r in read_jsonl(errors_path(path))] == ["id2"]
    again = Sink(path, success_only=True)
    again.open()
    assert again.finished == {"id1", "id2"}
    again.close()


@pytest.mark.parametrize(
    "name,expected", [("a.jsonl", "a.errors.jsonl"), ("a.jsonl.zst", "a.errors.jsonl.zst")]
)
def test_errors_path(name: str, expected: str) -> None:
    assert errors_path(Path(name)).name == expected
