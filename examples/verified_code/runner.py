"""Runs inside the sandbox: imports solution.py, runs both test suites, prints one report line.

The last line starting with PEERFLOW-TEST-REPORT is the report: {"import_error"} when the
solution does not import, else {"reference": suite, "model": suite}, each suite
{"passed", "failed", "failures": [{"test", "error"}], "error"}.
"""

import importlib
import json
import sys

MARK = "PEERFLOW-TEST-REPORT "


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def suite(name: str) -> dict:
    try:
        module = importlib.import_module(name)
    except BaseException as exc:  # a broken test file is a failed suite, not a crash
        return {"passed": 0, "failed": 0, "failures": [], "error": describe(exc)}
    passed, failures = 0, []
    for test, fn in sorted(vars(module).items()):
        if not (test.startswith("test_") and callable(fn)):
            continue
        try:
            fn()
            passed += 1
        except BaseException as exc:
            failures.append({"test": test, "error": describe(exc)})
    return {"passed": passed, "failed": len(failures), "failures": failures, "error": None}


def main() -> None:
    sys.path.insert(0, ".")
    report: dict = {}
    try:
        importlib.import_module("solution")
    except BaseException as exc:
        report["import_error"] = describe(exc)
    else:
        report["reference"] = suite("test_reference")
        report["model"] = suite("test_model")
    sys.stdout.flush()
    print("\n" + MARK + json.dumps(report), flush=True)


main()
