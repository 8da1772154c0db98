from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from peerflow.message import Message, Step, new_message
from peerflow.sink import (
    FingerprintMismatch,
    OutputBusy,
    OutputLock,
    Sink,
    check_fingerprint,
    errors_path,
    meta_path,
)


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
    assert "id1" in again.finished and "id2" in again.finished and len(again.finished) == 2
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
    assert len(again.finished) == 4 and all(f"id{i}" in again.finished for i in range(4))
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


def test_success_only_sends_errors_to_a_sidecar_that_also_counts(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    sink = Sink(path, success_only=True)
    sink.open()
    sink.write(msg(1))
    sink.write(msg(2, status="error").fail("agent", "bad request", status=400))
    sink.write(msg(3, status="error").fail("agent", "timeout", transient=True))
    sink.close()
    assert [r["id"] for r in read_jsonl(path)] == ["id1"]
    assert [r["id"] for r in read_jsonl(errors_path(path))] == ["id2", "id3"]
    again = Sink(path, success_only=True)
    again.open()
    # id2 failed for good; id3 failed transiently and is attempted again.
    assert "id1" in again.finished and "id2" in again.finished and "id3" not in again.finished
    assert again.counts() == {"ok": 1, "error": 2} and again.to_retry == 1
    again.close()


@pytest.mark.parametrize(
    "name,expected", [("a.jsonl", "a.errors.jsonl"), ("a.jsonl.zst", "a.errors.jsonl.zst")]
)
def test_errors_path(name: str, expected: str) -> None:
    assert errors_path(Path(name)).name == expected


def test_a_second_sink_on_the_same_output_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.jsonl"
    first = Sink(path)
    first.open()
    second = Sink(path)
    with pytest.raises(OutputBusy, match=rf"output {path} is in use .*pid {os.getpid()}"):
        second.open()
    first.close()
    second.open()  # released on close
    assert second.holds_lock
    second.close()


def test_the_lock_is_held_across_processes_and_dies_with_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from peerflow.sink import Sink\n"
        f"s = Sink(Path({str(path)!r})); s.open(); print('locked', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusy, match=rf"pid {proc.pid}\b.*choose another output.path"):
            Sink(path).open()
        with pytest.raises(OutputBusy), OutputLock(path):
            pass
    finally:
        proc.kill()
        proc.wait()
    with OutputLock(path) as lock:  # SIGKILL leaves no stale lock
        assert lock.held


def test_fingerprint_is_recorded_and_a_different_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    check_fingerprint(path, "a" * 64, "1.0", force=False)
    meta = json.loads(meta_path(path).read_text())
    assert meta["fingerprint"] == "a" * 64 and meta["peerflow"] == "1.0" and meta["created"]
    # No records yet: another config may take the output over.
    check_fingerprint(path, "b" * 64, "1.0", force=False)
    sink = Sink(path)
    sink.open()
    sink.write(msg(1))
    sink.close()
    check_fingerprint(path, "b" * 64, "1.1", force=False)  # same config: fine
    with pytest.raises(FingerprintMismatch) as info:
        check_fingerprint(path, "c" * 64, "1.1", force=False)
    text = str(info.value)
    assert str(path) in text and "b" * 12 in text and "c" * 12 in text
    assert "re-run with --force to mix, or choose another output.path" in text
    check_fingerprint(path, "c" * 64, "1.1", force=True)
    meta = json.loads(meta_path(path).read_text())
    assert meta["fingerprint"] == "c" * 64 and meta["previous"] == ["b" * 64]
    check_fingerprint(path, "c" * 64, "1.1", force=False)


def test_records_carry_provenance_and_the_reason_the_task_ended(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    sink = Sink(path)
    sink.provenance = {"peerflow": "9.9", "fingerprint": "f" * 64}
    sink.open()
    m = msg(1)
    m.reason = "done"
    sink.write(m)
    sink.close()
    (record,) = read_jsonl(path)
    assert record["peerflow"] == "9.9" and record["fingerprint"] == "f" * 64
    assert record["reason"] == "done"
