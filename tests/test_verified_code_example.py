"""The verified-code example end to end: SIMULATED coder, real bubblewrap sandbox, and the
recipe's verdict rules on their own."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from peerflow.config import load_config
from peerflow.message import Message, Step
from peerflow.pipeline import Pipeline
from peerflow.recipes import verified_code as vc
from peerflow.run import run

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "verified_code"


def test_the_reply_s_two_blocks_are_the_solution_and_its_tests() -> None:
    text = (
        "Here:\n```python\ndef f():\n    return 1\n```\n"
        "and\n```python\ndef test_f():\n    assert f() == 1\n```"
    )
    assert vc.parse_solution(None, text) == {  # type: ignore[arg-type]
        "solution": "def f():\n    return 1\n",
        "tests": "def test_f():\n    assert f() == 1\n",
    }
    assert "format_error" in vc.parse_solution(None, "no code here")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "report", "kind"),
    [
        ({"status": "timeout"}, None, "timeout"),
        ({"status": "memory"}, None, "memory"),
        ({"status": "output_limit"}, None, "output_limit"),
        ({"status": "refused"}, None, "sandbox_error"),
        ({"status": "error"}, None, "import_error"),  # died before the report
        ({"status": "ok"}, {"import_error": "SyntaxError: x"}, "import_error"),
        (
            {"status": "ok"},
            {"reference": {"passed": 3, "failed": 1}, "model": {"passed": 2, "failed": 0}},
            "reference_tests_failed",
        ),
        (
            {"status": "ok"},
            {"reference": {"passed": 4, "failed": 0}, "model": {"passed": 1, "failed": 1}},
            "own_tests_failed",
        ),
        (
            {"status": "ok"},
            {"reference": {"passed": 4, "failed": 0}, "model": {"passed": 0, "failed": 0}},
            "no_tests",
        ),
        (
            {"status": "ok"},
            {"reference": {"passed": 4, "failed": 0}, "model": {"passed": 2, "failed": 0}},
            None,
        ),
    ],
)
def test_each_kind_of_failure_is_named(result: dict, report: dict | None, kind: str | None) -> None:
    assert vc.failure_of({"solution": "x"}, result, report) == kind
    assert vc.failure_of({"format_error": "none"}, result, report) == "format_error"


def test_a_failure_gets_one_repair_then_a_rejection() -> None:
    failed = Step(role="run", data={"passed": False, "failure": "timeout"})
    msg = Message(id="p", row={}, history=[Step(role="coder"), failed])
    assert vc.verdict(msg) == {"passed": False, "repair": True, "failure": "timeout"}
    msg.history += [Step(role="repair"), failed]
    assert vc.verdict(msg)["reject"] == {"reason": "timeout", "attempts": 2}
    assert vc.verdict(msg, repairs=0)["reject"]["attempts"] == 2
    msg.history.append(Step(role="run", data={"passed": True}))
    assert vc.verdict(msg) == {"passed": True}


def test_the_example_keeps_only_passing_samples_and_records_every_execution(
    tmp_path: Path,
) -> None:
    before = set(glob.glob("/tmp/pwned*"))
    config = load_config(
        EXAMPLE / "verified_code_sim.yaml",
        [f"output.path={tmp_path / 'out.jsonl'}", "runtime.progress=false"],
    )
    summary = run(config, pipeline=Pipeline(config))
    rows = [json.loads(line) for line in (EXAMPLE / "data" / "problems.jsonl").open()]
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").open()]
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)
    assert summary["by_status"].get("error", 0) == 0
    statuses: set[str] = set()
    failures: set[str] = set()
    for record in records:
        runs = [s for s in record["history"] if s["role"] == "run"]
        assert runs, record["id"]
        for step in runs:  # every execution is recorded, rejected rows' too
            result = step["data"]["result"]
            assert result["isolation"] == "bwrap"
            statuses.add(result["status"])
            failures.add(step["data"]["failure"] or "passed")
        last = runs[-1]["data"]
        if record["status"] == "ok":
            assert last["passed"] is True
            reference = last["report"]["reference"]
            expected = len(next(r for r in rows if r["id"] == record["id"])["tests"])
            assert reference == {"passed": expected, "failed": 0, "failures": [], "error": None}
        else:
            assert record["status"] == "rejected"
            assert record["rejection"]["reason"] == last["failure"] in vc.FAILURES
            assert len(runs) == 2  # it had its repair
    # the simulated coder's mix reaches the paths: passing, failing tests, broken code,
    # and code the sandbox had to stop
    assert {"passed", "reference_tests_failed", "import_error"} <= failures
    assert statuses - {"ok"}, statuses
    assert 0 < summary["by_status"]["ok"] < len(rows)
    account = summary["environments"]["sandbox"]
    assert account["isolation"] == "bwrap" and account["runs"] == sum(
        1 for r in records for s in r["history"] if s["role"] == "run"
    )
    assert set(glob.glob("/tmp/pwned*")) == before  # nothing written on the host
    assert not list(EXAMPLE.parent.glob("escape_*")) and not list(tmp_path.glob("escape_*"))
