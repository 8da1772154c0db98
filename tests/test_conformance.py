"""Runtime conformance: workflow semantics, exactly-once, errors and resume, for every runtime.

Each test builds a config, runs it on the runtime under test and reads the
real output file. A new runtime joins by adding its name to RUNTIMES in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peerflow.config import RunConfig
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.testing import read_calls

ECHO = "peerflow.testing:Echo"

# The `runtime` fixture (every runtime in turn) is in conftest.py.


def write_rows(path: Path, n: int, extra: str = "") -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "n": i}) + "\n")
        f.write(extra)
    return path


def make_config(
    tmp: Path,
    kind: str,
    *,
    rows: int = 20,
    roles: dict[str, Any] | None = None,
    workflow: dict[str, Any] | None = None,
    **sections: Any,
) -> RunConfig:
    data = {
        "name": "conformance",
        "dataset": {
            "path": str(write_rows(tmp / "rows.jsonl", rows, sections.pop("extra", ""))),
            "id_field": "id",
        },
        "task": {"message": "task {{ n }}"},
        "roles": roles or {"a": {"agent": ECHO}, "b": {"agent": ECHO}},
        "workflow": workflow or {"kind": "sequence", "roles": ["a", "b"]},
        "runtime": {"kind": kind, "max_in_flight": 8, "progress": False},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RunConfig.model_validate(data)


async def run(config: RunConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = await run_async(config, pipeline=Pipeline(config), progress=False)
    out = Path(config.output.path)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, records


def roles_of(record: dict[str, Any]) -> list[str]:
    return [s["role"] for s in record["history"]]


async def test_sequence_visits_roles_in_order_once_per_row(tmp_path: Path, runtime: str) -> None:
    summary, records = await run(make_config(tmp_path, runtime, rows=30))
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(30))
    for r in records:
        assert r["status"] == "ok"
        assert roles_of(r) == ["task", "a", "b"]
        assert r["history"][0]["content"] == f"task {r['row']['n']}"
    assert summary["by_status"] == {"ok": 30}


async def test_loop_stops_on_condition_or_turn_cap(tmp_path: Path, runtime: str) -> None:
    loop = {
        "kind": "loop",
        "roles": ["a", "b"],
        "until": "peerflow.testing:stop_after_two",
        "check_after": "b",
        "max_turns": 5,
    }
    _, records = await run(make_config(tmp_path, runtime, workflow=loop))
    assert all(roles_of(r) == ["task", "a", "b", "a", "b"] for r in records)

    capped = {"kind": "loop", "roles": ["a", "b"], "max_turns": 3}
    other = tmp_path / "capped"
    other.mkdir()
    _, records = await run(make_config(other, runtime, workflow=capped))
    assert all(roles_of(r) == ["task"] + ["a", "b"] * 3 for r in records)


async def test_graph_follows_conditional_edges(tmp_path: Path, runtime: str) -> None:
    roles = {
        "a": {"agent": ECHO},
        "judge": {"agent": "function", "function": "peerflow.testing:parity"},
        "even": {"agent": ECHO},
        "odd": {"agent": ECHO},
    }
    graph = {
        "kind": "graph",
        "start": "a",
        "edges": {
            "a": "judge",
            "judge": [{"to": "even", "when": {"even": True}}, {"to": "odd"}],
            "even": "end",
            "odd": "end",
        },
    }
    _, records = await run(make_config(tmp_path, runtime, roles=roles, workflow=graph))
    assert len(records) == 20
    for r in records:
        branch = "even" if r["row"]["n"] % 2 == 0 else "odd"
        assert roles_of(r) == ["task", "a", "judge", branch]


async def test_custom_workflow_class_named_in_yaml(tmp_path: Path, runtime: str) -> None:
    workflow = {"kind": "custom", "path": "peerflow.testing:PingPong", "options": {"rounds": 3}}
    _, records = await run(make_config(tmp_path, runtime, workflow=workflow))
    assert len(records) == 20
    assert all(roles_of(r) == ["task", "a", "b", "a", "b", "a", "b"] for r in records)


async def test_tool_calls_detour_and_return_to_caller(tmp_path: Path, runtime: str) -> None:
    roles = {
        "assistant": {"agent": "peerflow.testing:ToolCaller"},
        "tools": {"agent": "peerflow.testing:Adder"},
        "b": {"agent": ECHO},
    }
    workflow = {"kind": "sequence", "roles": ["assistant", "b"], "tool_role": "tools"}
    _, records = await run(make_config(tmp_path, runtime, roles=roles, workflow=workflow))
    for r in records:
        assert roles_of(r) == ["task", "assistant", "tools", "assistant", "b"]
        assert r["history"][3]["content"] == "final:5"


async def test_exactly_once_under_back_pressure(tmp_path: Path, runtime: str) -> None:
    roles = {"a": {"agent": ECHO, "delay": 0.001}, "b": {"agent": ECHO}}
    config = make_config(tmp_path, runtime, rows=300, roles=roles, runtime={"max_in_flight": 3})
    summary, records = await run(config)
    ids = [r["id"] for r in records]
    assert len(ids) == 300 and len(set(ids)) == 300
    assert summary["total_records_in_output"] == 300


async def test_agent_exception_fails_only_its_row(tmp_path: Path, runtime: str) -> None:
    roles = {"a": {"agent": ECHO, "fail_when": {"n": 7}}, "b": {"agent": ECHO}}
    summary, records = await run(make_config(tmp_path, runtime, roles=roles))
    assert len(records) == 20
    bad = [r for r in records if r["status"] != "ok"]
    assert [r["id"] for r in bad] == ["r7"]
    assert bad[0]["error"]["stage"] == "agent"
    assert bad[0]["error"]["role"] == "a"
    assert "refuses row r7" in bad[0]["error"]["message"]
    assert roles_of(bad[0]) == ["task", "a"]  # the failed step is recorded, nothing after it
    assert summary["by_status"] == {"ok": 19, "error": 1}


async def test_bad_rows_become_error_records_and_the_run_goes_on(
    tmp_path: Path, runtime: str
) -> None:
    extra = '{"id": "broken", "n": \n[1, 2]\n{"id": "nofield"}\n'
    config = make_config(
        tmp_path,
        runtime,
        rows=5,
        extra=extra,
        dataset={"fields": {"n": {"column": "n", "type": "int"}}},
    )
    summary, records = await run(config)
    assert len(records) == 8
    errors = {r["id"]: r["error"] for r in records if r["status"] == "error"}
    assert len(errors) == 3
    messages = " | ".join(e["message"] for e in errors.values())
    assert "line 6" in messages and "invalid JSON" in messages
    assert "line 7" in messages and "object" in messages
    assert "missing field 'n'" in messages
    assert summary["by_status"] == {"ok": 5, "error": 3}


async def test_rerun_resumes_without_redoing_finished_rows(tmp_path: Path, runtime: str) -> None:
    log = str(tmp_path / "calls.log")
    roles = {"a": {"agent": ECHO, "calls_log": log}, "b": {"agent": ECHO}}
    first = make_config(tmp_path, runtime, rows=40, roles=roles, dataset={"limit": 15})
    await run(first)
    assert len(read_calls(log)) == 15
    full = make_config(tmp_path, runtime, rows=40, roles=roles)
    summary, records = await run(full)
    calls = read_calls(log)
    assert len(calls) == 40, "finished rows were processed again"
    assert len({c[1] for c in calls}) == 40
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(40))
    assert summary["finished_before_this_run"] == 15
    assert summary["records_written"] == 25


async def test_trials_give_distinct_ids_and_seeds(tmp_path: Path, runtime: str) -> None:
    config = make_config(tmp_path, runtime, rows=4, task={"message": "t", "trials": 3, "seed": 5})
    _, records = await run(config)
    assert sorted(r["id"] for r in records) == sorted(
        f"r{i}#{t}" for i in range(4) for t in range(3)
    )
    assert len({r["seed"] for r in records}) == 12


async def test_empty_dataset_finishes_cleanly_with_no_records(tmp_path: Path, runtime: str) -> None:
    summary, records = await run(make_config(tmp_path, runtime, rows=0))
    assert records == []
    assert summary["records_written"] == 0
    assert summary["success_rate"] is None


async def test_rejected_rows_are_final_and_kept_apart(tmp_path: Path, runtime: str) -> None:
    roles = {
        "a": {"agent": ECHO, "fail_when": {"n": 3}},
        "b": {"agent": ECHO, "reject": [{"when": {"n": 0}, "reason": "b_says_no"}]},
    }
    config = make_config(tmp_path, runtime, rows=20, roles=roles, output={"success_only": True})
    summary = await run_async(config, pipeline=Pipeline(config), progress=False)
    out = Path(config.output.path)
    rejected = [json.loads(x) for x in out.with_name("out.rejected.jsonl").read_text().splitlines()]
    errors = [json.loads(x) for x in out.with_name("out.errors.jsonl").read_text().splitlines()]
    assert out.read_text() == ""
    assert sorted(r["id"] for r in rejected) == sorted(f"r{i}" for i in range(20) if i != 3)
    assert [r["id"] for r in errors] == ["r3"]
    for r in rejected:
        assert r["status"] == "rejected" and r["reason"] == "b_says_no"
        assert r["rejection"] == {"role": "b", "reason": "b_says_no", "step": 2}
    assert summary["by_status"] == {"rejected": 19, "error": 1}
    assert summary["exit_code"] == 1
    steps = {s["role"]: s for s in summary["funnel"]["steps"]}
    assert steps["a"]["reached"] == 20 and steps["a"]["failed"] == 1
    assert steps["b"]["reasons"]["b_says_no"]["rows"] == 19
    again = await run_async(config, pipeline=Pipeline(config), progress=False)
    assert again["records_written"] == 0
    assert again["output_by_status"] == {"rejected": 19, "error": 1}
