"""Rejection: a final outcome distinct from failure, counted in the funnel, kept apart by
`success_only`, never re-attempted, merged like any record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peerflow import merge
from peerflow.config import RunConfig
from peerflow.merge import errors_path, rejected_path
from peerflow.message import Message
from peerflow.pipeline import Pipeline
from peerflow.run import run_async

# --- the workflow's functions (named in the configs below) --------------------------------


def measure(message: Message) -> dict[str, Any]:
    """Rejects odd rows itself; reports the row's size for the next role's rule."""
    n = message.row["n"]
    if n % 2:
        return {"reject": "odd"}
    return {"size": n, "big": n >= 6}


def score(message: Message) -> dict[str, Any]:
    n = message.row["n"]
    if n == 4:
        raise RuntimeError("cannot score four")
    return {"score": n % 3}


def zero_score(message: Message) -> bool:
    return message.last().data["score"] == 0


def calls(message: Message) -> dict[str, Any]:
    with Path(message.row["log"]).open("a") as f:
        f.write(f"{message.id}\n")
    return {"seen": True}


def broken_rule(message: Message) -> bool:
    raise ValueError("rule bug")


# --- helpers -----------------------------------------------------------------------------


def config(tmp: Path, rows: int = 10, **output: Any) -> RunConfig:
    log = tmp / "calls.log"
    data = tmp / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"r{i}", "n": i, "log": str(log)}) + "\n" for i in range(rows))
    )
    return RunConfig.model_validate(
        {
            "name": "reject",
            "dataset": {"path": str(data), "id_field": "id"},
            "roles": {
                "log": {"agent": "function", "function": "test_rejection:calls"},
                "measure": {
                    "agent": "function",
                    "function": "test_rejection:measure",
                    "reject": [{"when": {"big": True}, "reason": "too_big"}],
                },
                "score": {
                    "agent": "function",
                    "function": "test_rejection:score",
                    "reject": [{"when": "test_rejection:zero_score", "reason": "zero_score"}],
                },
            },
            "workflow": {"kind": "sequence", "roles": ["log", "measure", "score"]},
            "runtime": {"max_in_flight": 4, "progress": False},
            "output": {"path": str(tmp / "out.jsonl"), **output},
        }
    )


async def run(cfg: RunConfig, **kw: Any) -> dict[str, Any]:
    return await run_async(cfg, pipeline=Pipeline(cfg), progress=False, **kw)


def read(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


# Rows 0..9: odd -> "odd" at measure; 6, 8 -> "too_big" at measure; 0 -> score 0 ->
# "zero_score"; 4 -> fails at score; 2 -> score 2: accepted.
EXPECTED = {
    **{f"r{i}": ("rejected", "odd", "measure") for i in (1, 3, 5, 7, 9)},
    "r6": ("rejected", "too_big", "measure"),
    "r8": ("rejected", "too_big", "measure"),
    "r0": ("rejected", "zero_score", "score"),
    "r4": ("error", "agent", None),
    "r2": ("ok", "done", None),
}


# --- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("success_only", [False, True])
async def test_rejected_rows_are_final_counted_and_kept_apart(
    tmp_path: Path, success_only: bool
) -> None:
    cfg = config(tmp_path, success_only=success_only)
    summary = await run(cfg)
    out = tmp_path / "out.jsonl"
    records = {**read(out), **read(errors_path(out)), **read(rejected_path(out))}
    assert len(records) == 10
    for rid, (status, reason, role) in EXPECTED.items():
        rec = records[rid]
        assert (rec["status"], rec["reason"]) == (status, reason), rec
        if status == "rejected":
            assert rec["rejection"]["role"] == role
            assert rec["rejection"]["reason"] == reason
            # the step that rejected is the last one, and it is kept
            assert rec["history"][rec["rejection"]["step"]]["role"] == role
            assert rec["rejection"]["step"] == len(rec["history"]) - 1
    if success_only:
        assert set(read(out)) == {"r2"}
        assert set(read(errors_path(out))) == {"r4"}
        assert set(read(rejected_path(out))) == {f"r{i}" for i in (0, 1, 3, 5, 6, 7, 8, 9)}
    else:
        assert not errors_path(out).exists() and not rejected_path(out).exists()

    assert summary["by_status"] == {"ok": 1, "rejected": 8, "error": 1}
    assert summary["output_by_status"] == {"ok": 1, "rejected": 8, "error": 1}
    assert summary["exit_code"] == 1  # for the failed row, not the rejected ones
    funnel = summary["funnel"]
    assert funnel["rows"] == 10 and funnel["accepted"] == 1
    steps = {s["role"]: s for s in funnel["steps"]}
    assert [s["role"] for s in funnel["steps"]][1:] == ["measure", "score"]
    assert steps["measure"]["reached"] == 10
    assert steps["measure"]["reasons"]["odd"] == {"rows": 5, "share": 0.5, "of_reached": 0.5}
    assert steps["measure"]["reasons"]["too_big"]["rows"] == 2
    assert steps["score"]["reached"] == 3
    assert steps["score"]["rejected"] == 1 and steps["score"]["failed"] == 1
    assert steps["score"]["passed"] == 1

    # Resume: rejected rows are final, even with --retry-failed (only r4 runs again).
    (tmp_path / "calls.log").unlink()
    again = await run(cfg, retry_failed=True)
    assert (tmp_path / "calls.log").read_text().split() == ["r4"]
    assert again["output_by_status"] == {"ok": 1, "rejected": 8, "error": 1}


async def test_all_rejected_exits_zero(tmp_path: Path) -> None:
    cfg = config(tmp_path, rows=10)
    cfg.roles["measure"].reject[0].when = {"size": 0}  # row 0 only; the rest as before
    data = tmp_path / "rows.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows if r["n"] % 2))
    summary = await run(cfg)
    assert summary["by_status"] == {"rejected": 5}
    assert summary["exit_code"] == 0


async def test_a_rule_that_raises_fails_only_its_task(tmp_path: Path) -> None:
    cfg = config(tmp_path, rows=4)
    cfg.roles["score"].reject[0].when = "test_rejection:broken_rule"
    summary = await run(cfg)
    records = read(tmp_path / "out.jsonl")
    assert records["r2"]["status"] == "error"
    assert "reject rule: ValueError: rule bug" in records["r2"]["error"]["message"]
    assert summary["by_status"]["rejected"] == 2  # r1, r3 (odd) still rejected


def test_a_rule_naming_a_missing_function_is_a_config_error(tmp_path: Path) -> None:
    from peerflow.config import ConfigError

    cfg = config(tmp_path, rows=2)
    cfg.roles["score"].reject[0].when = "test_rejection:no_such_rule"
    with pytest.raises(ConfigError, match=r"roles\.score\.reject\.0\.when"):
        Pipeline(cfg)


def test_merge_keeps_rejected_side_files(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    shards = [merge.shard_path(out, i, 2) for i in range(2)]
    for i, shard in enumerate(shards):
        shard.write_text(json.dumps({"id": f"ok{i}", "status": "ok"}) + "\n")
        rejected_path(shard).write_text(
            json.dumps({"id": f"rej{i}", "status": "rejected", "reason": "odd"}) + "\n"
        )
    merge.write_manifest(out, shards)
    state = merge.compact(merge.with_side_files(shards))
    assert state.by_status() == {"ok": 2, "rejected": 2}
    result = merge.merge_shards(out)
    assert result.records == 4
    assert set(read(out)) == {"ok0", "ok1"}
    assert set(read(rejected_path(out))) == {"rej0", "rej1"}
    assert not any(p.exists() for s in shards for p in (s, rejected_path(s)))
