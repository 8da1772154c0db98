"""Resume: failed rows are re-attempted, and the output keeps one record per row, the newest.

The sink-level tests write records by hand (a run that failed, a crash that left two
records); the run-level ones resume real runs on the local and the Ray runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from peerflow import merge
from peerflow.config import RunConfig
from peerflow.merge import compact, errors_path, shard_path, write_manifest
from peerflow.message import Message, Step, new_message
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.sink import Sink
from peerflow.testing import killing_actors

ECHO = "peerflow.testing:Echo"


# --- helpers -----------------------------------------------------------------------------


def msg(
    task_id: str, status: str = "ok", kind: str | None = None, finished: float = 0.0
) -> Message:
    m = new_message(task_id, {"id": task_id}, {})
    m.history.append(Step(role="a", content=f"{status} {kind}"))
    m.status = status
    if status != "ok":
        m.fail("agent", "boom", transient=kind == "transient")
        if kind is None:  # a record written before errors had a kind
            assert m.error is not None
            del m.error["kind"]
    m.finished = finished
    return m


def record(
    task_id: str, status: str = "ok", kind: str | None = None, finished: float = 1.0
) -> dict[str, Any]:
    r: dict[str, Any] = {"id": task_id, "status": status, "finished": finished}
    if status != "ok":
        r["error"] = {"stage": "agent", "message": "boom"}
        if kind is not None:
            r["error"]["kind"] = kind
    return r


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    with open(path, "ab") as f:
        f.write(data)


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def by_id(*paths: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        for r in read(path):
            out.setdefault(r["id"], []).append(r)
    return out


def failed_run(path: Path, *, success_only: bool = False) -> None:
    """The first run: ok, a permanent failure, a transient one, and a pre-kind failure."""
    sink = Sink(path, success_only=success_only)
    sink.open()
    sink.write(msg("ok1"))
    sink.write(msg("perm", "error", "permanent"))
    sink.write(msg("trans", "error", "transient"))
    sink.write(msg("legacy", "error", None))
    sink.close()


# --- the sink ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.zst"])
def test_rerun_retries_transient_failures_and_not_permanent_ones(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    failed_run(path)
    sink = Sink(path)
    sink.open()
    assert "ok1" in sink.finished and "perm" in sink.finished
    assert "trans" not in sink.finished and "legacy" not in sink.finished
    assert sink.to_retry == 2 and sink.records_before == 4
    assert sink.write(msg("trans"))  # the re-attempt succeeds
    assert sink.write(msg("legacy", "error", "transient"))  # and this one fails again
    assert not sink.write(msg("trans"))  # a second record in this run is dropped
    assert not sink.write(msg("perm"))  # a done row gets no new record
    sink.close()
    records = by_id(path)
    assert {k: [r["status"] for r in v] for k, v in records.items()} == {
        "ok1": ["ok"],
        "perm": ["error"],
        "trans": ["ok"],
        "legacy": ["error"],
    }
    assert records["legacy"][0]["error"]["kind"] == "transient"
    assert sink.superseded == 2 and sink.counts() == {"ok": 2, "error": 2}


def test_retry_failed_re_attempts_every_failed_row(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    failed_run(path)
    sink = Sink(path, retry_failed=True)
    sink.open()
    assert len(sink.finished) == 1 and "ok1" in sink.finished and sink.to_retry == 3
    for task_id in ("perm", "trans", "legacy"):
        assert sink.write(msg(task_id))
    sink.close()
    assert {k: [r["status"] for r in v] for k, v in by_id(path).items()} == {
        k: ["ok"] for k in ("ok1", "perm", "trans", "legacy")
    }


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.zst"])
def test_success_only_retry_moves_the_row_from_the_errors_file_to_the_output(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    failed_run(path, success_only=True)
    assert [r["id"] for r in read(path)] == ["ok1"]
    sink = Sink(path, success_only=True)
    sink.open()
    assert sink.to_retry == 2
    sink.write(msg("trans"))
    sink.write(msg("legacy", "error", "transient"))
    sink.close()
    assert sorted(r["id"] for r in read(path)) == ["ok1", "trans"]
    assert sorted(r["id"] for r in read(errors_path(path))) == ["legacy", "perm"]
    assert all(len(v) == 1 for v in by_id(path, errors_path(path)).values())


def test_a_run_without_success_only_still_reads_an_earlier_errors_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    failed_run(path, success_only=True)
    sink = Sink(path)  # success_only switched off
    sink.open()
    assert "perm" in sink.finished and "trans" not in sink.finished
    sink.write(msg("trans"))
    sink.close()
    records = by_id(path, errors_path(path))
    assert [r["status"] for r in records["trans"]] == ["ok"]
    assert all(len(v) == 1 for v in records.values())


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.zst"])
def test_a_crash_that_left_two_records_is_compacted_on_open_keeping_the_newest(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    write_records(
        path,
        [
            record("a", "error", "transient", finished=10),
            record("b", "ok", finished=30),  # newer, although read first
            record("c", "ok", finished=5),
            record("a", "ok", finished=20),  # the retry's record; the crash came before close
            record("b", "error", "transient", finished=25),
            record("c", "error", "permanent", finished=5),  # a tie: the later one wins
        ],
    )
    with open(path, "ab") as f:  # and a torn tail
        f.write(b'{"id": "d", "sta')
    sink = Sink(path)
    sink.open()
    assert sink.superseded == 3 and sink.cut_bytes > 0
    assert "a" in sink.finished and "b" in sink.finished and "c" in sink.finished
    assert sink.counts() == {"ok": 2, "error": 1}
    sink.close()
    records = by_id(path)
    assert {k: (v[0]["status"], v[0]["finished"]) for k, v in records.items()} == {
        "a": ("ok", 20),
        "b": ("ok", 30),
        "c": ("error", 5),
    }
    assert all(len(v) == 1 for v in records.values())


def test_a_crash_during_compaction_loses_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    write_records(path, [record("a", "error", "transient", 1), record("b"), record("a", "ok", 2)])
    before = path.read_bytes()

    def crash(*args: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(merge.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        Sink(path).open()
    assert path.read_bytes() == before  # the original is untouched until the rename
    monkeypatch.undo()
    (tmp_path / f".{path.name}.compact-1.tmp").write_bytes(b"half a file")  # a crashed one
    sink = Sink(path)
    sink.open()  # the lock was released by the failed open
    sink.close()
    assert [(r["id"], r["status"]) for r in read(path)] == [("b", "ok"), ("a", "ok")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.jsonl.lock"]


def test_ids_sharing_a_hash_are_never_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    write_records(path, [record("a", finished=1), record("b", finished=2), record("a", finished=3)])
    monkeypatch.setattr(merge, "id_hash", lambda task_id: 7)  # every id collides
    state = compact([path])
    assert state.superseded == 1
    assert [(r["id"], r["finished"]) for r in read(path)] == [("b", 2), ("a", 3)]


def test_recovery_reads_one_million_records_in_little_memory(tmp_path: Path) -> None:
    """The temporary state is flat arrays: 9 B per record, never the id strings."""
    path = tmp_path / "out.jsonl"
    with open(path, "w") as f:
        for i in range(200_000):
            status = "ok" if i % 10 else "error"
            f.write(json.dumps(record(f"row-{i}", status, "transient")) + "\n")
    sink = Sink(path)
    sink.open()
    assert len(sink.finished) == 180_000 and sink.to_retry == 20_000
    assert "row-1" in sink.finished and "row-10" not in sink.finished
    assert sink.finished.nbytes() / len(sink.finished) <= 8.5
    sink.close()


# --- runs --------------------------------------------------------------------------------


def write_rows(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "n": i}) + "\n")
    return path


def config(
    tmp: Path,
    *,
    rows: int = 10,
    runtime: dict[str, Any] | None = None,
    roles: dict[str, Any] | None = None,
    message: str = "task {{ n }}",
    **output: Any,
) -> RunConfig:
    calls = str(tmp / "calls.log")
    return RunConfig.model_validate(
        {
            "name": "resume",
            "dataset": {"path": str(write_rows(tmp / "rows.jsonl", rows)), "id_field": "id"},
            "task": {"message": message},
            "roles": roles or {"a": {"agent": ECHO, "calls_log": calls}},
            "workflow": {"kind": "sequence", "roles": sorted(roles or ["a"])},
            "runtime": {"max_in_flight": 8, "progress": False, **(runtime or {})},
            "output": {"path": str(tmp / "out.jsonl"), **output},
        }
    )


async def run(cfg: RunConfig, **kw: Any) -> dict[str, Any]:
    return await run_async(cfg, pipeline=Pipeline(cfg), progress=False, **kw)


def attempted(tmp: Path) -> list[str]:
    calls = tmp / "calls.log"
    ids = (
        sorted(line.split()[1] for line in calls.read_text().splitlines()) if calls.exists() else []
    )
    calls.unlink(missing_ok=True)
    return ids


PRIOR = [
    record("r0"),
    record("r1"),
    record("r2", "error", "transient"),
    record("r3", "error", "permanent"),
    record("r4", "error"),  # written before errors had a kind
]


def one_each(*paths: Path) -> dict[str, str]:
    records = by_id(*paths)
    assert all(len(v) == 1 for v in records.values()), {k: len(v) for k, v in records.items()}
    return {k: v[0]["status"] for k, v in records.items()}


@pytest.mark.parametrize("success_only", [False, True])
async def test_local_rerun_retries_failed_rows_and_keeps_one_record_each(
    tmp_path: Path, success_only: bool
) -> None:
    cfg = config(tmp_path, rows=6, success_only=success_only)
    out = tmp_path / "out.jsonl"
    ok, failed = (
        [r for r in PRIOR if r["status"] == "ok"],
        [r for r in PRIOR if r["status"] != "ok"],
    )
    write_records(out, PRIOR if not success_only else ok)
    if success_only:
        write_records(errors_path(out), failed)
    summary = await run(cfg)
    assert attempted(tmp_path) == ["r2", "r4", "r5"]
    files = (out, errors_path(out))
    assert one_each(*files) == {f"r{i}": "error" if i == 3 else "ok" for i in range(6)}
    assert summary["records_written"] == 3
    assert summary["total_records_in_output"] == 6

    again = await run(cfg)  # nothing left but the permanent failure
    assert again["records_written"] == 0 and attempted(tmp_path) == []
    forced = await run(cfg, retry_failed=True)
    assert forced["records_written"] == 1 and attempted(tmp_path) == ["r3"]
    assert one_each(*files) == {f"r{i}": "ok" for i in range(6)}


# --- Ray ---------------------------------------------------------------------------------


def ray_config(tmp: Path, rows: int, runtime: dict[str, Any], **kw: Any) -> RunConfig:
    return config(tmp, rows=rows, runtime={"kind": "ray", **runtime}, **kw)


@pytest.mark.parametrize("success_only", [False, True])
async def test_ray_rerun_retries_failed_rows_across_shards(
    ray_cluster: None, tmp_path: Path, success_only: bool
) -> None:
    out = tmp_path / "out.jsonl"
    # An earlier run with two shards left failures in both, and crashed after a retried
    # row (r5) got its new record in another shard than its old one.
    old = [shard_path(out, i, 2) for i in range(2)]
    prior = [*PRIOR, record("r5", "error", "transient", finished=1.0)]
    for i, r in enumerate(prior):
        target = old[i % 2]
        if success_only and r["status"] != "ok":
            target = errors_path(target)
        write_records(target, [r])
    write_records(old[0], [record("r5", "ok", finished=2.0)])
    write_manifest(out, old)
    cfg = ray_config(tmp_path, 8, {"partitions": 1, "sinks": 3}, success_only=success_only)
    summary = await run(cfg)
    shards = [shard_path(out, i, 3) for i in range(3)]
    files = merge.with_side_files(shards)
    assert attempted(tmp_path) == ["r2", "r4", "r6", "r7"]
    expected = {f"r{i}": "error" if i == 3 else "ok" for i in range(8)}
    assert one_each(*files) == expected
    assert summary["records_written"] == 4 and summary["by_status"] == {"ok": 4}
    assert summary["total_records_in_output"] == 8
    assert summary["output_by_status"] == {"ok": 7, "error": 1}

    forced = await run(cfg, retry_failed=True)
    assert attempted(tmp_path) == ["r3"] and forced["records_written"] == 1
    assert one_each(*merge.with_side_files(shards)) == {f"r{i}": "ok" for i in range(8)}
    assert forced["output_by_status"] == {"ok": 8}


async def test_ray_summary_counts_equal_file_counts_when_sinks_die(
    ray_cluster: None, tmp_path: Path
) -> None:

    long = "x" * 2000  # above the offload threshold: payloads travel in the object store
    echo = {"agent": ECHO, "delay": 0.01}
    runtime = {"max_in_flight": 32, "sinks": 2, "offload_threshold": 512}
    cfg = ray_config(
        tmp_path, 400, runtime, roles={"a": echo, "b": echo}, message=long + " {{ n }}"
    )
    async with killing_actors(["-s:"], every=0.6, seed=5) as killed:
        summary = await run(cfg)
    kills = len(killed)
    assert kills >= 2
    out = tmp_path / "out.jsonl"
    records = by_id(*[shard_path(out, i, 2) for i in range(2)])
    assert len(records) == 400 and all(len(v) == 1 for v in records.values())
    assert summary["records_written"] == 400 == summary["by_status"]["ok"]
    assert summary["roles"]["b"]["steps"] == 400
