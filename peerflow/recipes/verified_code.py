"""Verified code: a model writes a function and its tests, a sandbox runs them, a verdict keeps
only what passes (examples/verified_code/).

The pieces a config names:

- `parse_solution` (the coder's and the repairer's `parse`): the reply's two fenced Python
  blocks become `data.solution` and `data.tests`; a reply without them keeps going, with
  `data.format_error`, so the sandbox and the verdict report it like any other failure.
- the sandbox role runs `runner.py` over `solution.py`, the model's `test_model.py` and the
  problem's own hidden `test_reference.py`; the runner prints one JSON line that
  `read_report` turns into the step's data.
- `verdict` decides: both suites pass → accept; a failure → one repair (if the workflow
  allows it) → else reject with the failure's kind as the reason.
- `metrics`: passed or not, after how many attempts, sandbox seconds per sample.
"""

from __future__ import annotations

import json
import re
from typing import Any

from peerflow.message import Message

_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
REPORT_MARK = "PEERFLOW-TEST-REPORT "

# Failure kinds, in the order a verdict looks for them (also the rejection reasons).
FAILURES = (
    "format_error",  # the reply had no code block
    "timeout",
    "memory",
    "output_limit",
    "sandbox_error",  # the sandbox refused or broke, not the code
    "import_error",  # the solution does not import (syntax error, crash at import)
    "reference_tests_failed",
    "own_tests_failed",
    "no_tests",  # the model wrote no test functions
)


def parse_solution(message: Message, text: str) -> dict[str, Any]:
    """The reply's first fenced block is the solution, the second its tests."""
    blocks = [b.strip("\n") for b in _BLOCK.findall(text or "")]
    if not blocks:
        return {"format_error": "the reply has no fenced Python code block"}
    return {"solution": blocks[0] + "\n", "tests": (blocks[1] + "\n") if len(blocks) > 1 else ""}


def code(message: Message) -> dict[str, Any]:
    """The latest attempt's data (the repairer's if it ran, else the coder's)."""
    for step in reversed(message.history):
        if step.data and ("solution" in step.data or "format_error" in step.data):
            return step.data
    return {"format_error": "no attempt was made"}


def read_report(message: Message, result: dict[str, Any]) -> dict[str, Any]:
    """The runner's JSON report and the verdict on it, beside the sandbox's `result`."""
    data: dict[str, Any] = {}
    report = None
    for line in reversed((result.get("stdout") or "").splitlines()):
        if line.startswith(REPORT_MARK):
            try:
                report = json.loads(line[len(REPORT_MARK) :])
            except ValueError:
                report = None
            break
    data["report"] = report
    data["failure"] = failure_of(code(message), result, report)
    data["passed"] = data["failure"] is None
    if data["failure"] is not None:
        data["feedback"] = feedback(data["failure"], result, report)
    return data


def failure_of(
    attempt: dict[str, Any], result: dict[str, Any], report: dict[str, Any] | None
) -> str | None:
    """The kind of failure of one sandbox run, or None when everything passed."""
    if "format_error" in attempt:
        return "format_error"
    status = result.get("status")
    if status in ("timeout", "memory", "output_limit"):
        return status
    if status in ("refused", "killed") or report is None:
        return "import_error" if report is None and status in ("ok", "error") else "sandbox_error"
    if report.get("import_error"):
        return "import_error"
    ref, own = report.get("reference") or {}, report.get("model") or {}
    if ref.get("failed", 1) or ref.get("error"):
        return "reference_tests_failed"
    if own.get("error") or own.get("failed"):
        return "own_tests_failed"
    if not own.get("passed"):
        return "no_tests"
    return None


def feedback(kind: str, result: dict[str, Any], report: dict[str, Any] | None) -> str:
    """What a repairer is shown: the failure, failed tests' messages, stderr's tail."""
    lines = [f"failure: {kind} (sandbox status {result.get('status')})"]
    for suite in ("reference", "model"):
        part = (report or {}).get(suite) or {}
        if part.get("error"):
            lines.append(f"{suite} tests: {part['error']}")
        for failure in (part.get("failures") or [])[:5]:
            lines.append(f"{suite} test {failure.get('test')}: {failure.get('error')}")
    if (report or {}).get("import_error"):
        lines.append(f"importing solution.py: {report['import_error']}")  # type: ignore[index]
    stderr = (result.get("stderr") or "").strip()
    if stderr:
        lines.append("stderr (last lines):\n" + "\n".join(stderr.splitlines()[-15:]))
    return "\n".join(lines)[:4000]


def verdict(message: Message, repairs: int = 1) -> dict[str, Any]:
    """Accept a passing run; else ask for a repair while any is left; else reject."""
    run = message.last("run")
    data = (run.data if run is not None else None) or {}
    if data.get("passed"):
        return {"passed": True}
    kind = data.get("failure") or "sandbox_error"
    done = sum(1 for step in message.history if step.role == "repair")
    if done < repairs and kind != "sandbox_error":
        return {"passed": False, "repair": True, "failure": kind}
    return {"passed": False, "reject": {"reason": kind, "attempts": done + 1}}


def metrics(message: Message) -> dict[str, Any]:
    runs = [s for s in message.history if s.role == "run" and s.data]
    return {
        "passed": float(bool(runs and runs[-1].data.get("passed"))),  # type: ignore[union-attr]
        "attempts": len(runs),
        "repaired": float(
            len(runs) > 1 and bool(runs[-1].data.get("passed"))  # type: ignore[union-attr]
        ),
        "sandbox_seconds": sum(_wall(s.data) for s in runs),  # type: ignore[arg-type]
    }


def _wall(data: dict[str, Any]) -> float:
    result = data.get("result") if isinstance(data.get("result"), dict) else {}
    return float(result.get("wall_s") or 0.0)
