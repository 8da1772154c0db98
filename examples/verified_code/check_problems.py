"""Validate the verified-code problem set and the simulated coder, without the sandbox.

The workload trusts three things that nothing else checks: that each problem's tests accept
a correct solution, that the simulator's "wrong" code really is wrong, and that its replies
have the format the workflow parses. This script checks them:

- every line of ``data/problems.jsonl`` parses and has exactly the expected fields; ids are
  unique; each problem has 6-10 plain ``assert`` lines that use only the entry point and
  builtins, and a signature that compiles;
- every problem has a reference in ``sim_coder.py`` (and the reverse), which contains the
  signature line verbatim and passes all of the problem's tests;
- every bug variant fails at least one of the problem's tests;
- the reply for a correct outcome passes both the problem's tests and the model's own tests,
  and the wrong-test reply's own tests fail;
- every syntax-error variant fails to compile; every hostile variant compiles and defines the
  entry point (checked as text only: hostile code is never run here);
- every outcome's reply has two ``python`` blocks, except the format failure, which has none.

Code runs in plain subprocesses (one per problem, in a temporary directory, with a timeout),
and only trusted code is run: references, their mutations and the simulated model's tests.
Run it with ``python examples/verified_code/check_problems.py``; it exits 1 on any error.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
PROBLEMS = HERE / "data" / "problems.jsonl"
SIM_CODER = HERE / "sim_coder.py"
FIELDS = ("id", "title", "statement", "entry_point", "signature", "tests", "difficulty")
DIFFICULTIES = ("easy", "medium", "hard")
MIN_TESTS, MAX_TESTS = 6, 10
FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)

# Runs a problem's cases: each loads a solution as module `solution`, then runs the
# problem's assert lines (namespace: the entry point and builtins only) and/or the model's
# test module. A per-case alarm turns a hang into a failure. Results go to a file, so that
# whatever the code prints cannot corrupt them.
HARNESS = r"""
import builtins, json, signal, sys, time, types

class CaseTimeout(Exception):
    pass

def expire(signum, frame):
    raise CaseTimeout("the case ran too long")

signal.signal(signal.SIGALRM, expire)
job = json.load(sys.stdin)
entry = job["entry_point"]
results = []
for case in job["cases"]:
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    failure = None
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, job["case_timeout"])
    try:
        exec(compile(case["solution"], "solution.py", "exec"), module.__dict__)
        namespace = {"__builtins__": builtins, entry: getattr(module, entry)}
        for line in case.get("asserts", []):
            try:
                exec(compile(line, "<problem test>", "exec"), namespace)
            except AssertionError:
                failure = "failed: " + line
                break
        if failure is None and case.get("test_module"):
            tests = {"__name__": "test_solution"}
            exec(compile(case["test_module"], "test_solution.py", "exec"), tests)
            for name, fn in list(tests.items()):
                if name.startswith("test_") and callable(fn):
                    try:
                        fn()
                    except AssertionError:
                        failure = "failed: " + name
                        break
    except BaseException as exc:
        failure = type(exc).__name__ + ": " + str(exc)[:200]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - started
    results.append({"name": case["name"], "ok": failure is None, "detail": failure or "",
                    "seconds": seconds})
with open("results.json", "w") as out:
    json.dump(results, out)
"""


@dataclass
class Report:
    """What `check` found: `errors` is empty when the set and the simulator are sound."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cases_run: int = 0
    subprocesses: int = 0
    replies_checked: int = 0
    slowest_reference: tuple[str, float] = ("", 0.0)

    @property
    def difficulties(self) -> Counter[str]:
        return Counter(p.get("difficulty", "?") for p in self.problems)

    def summary(self) -> str:
        counts = ", ".join(f"{d} {self.difficulties[d]}" for d in DIFFICULTIES)
        slow_id, slow_s = self.slowest_reference
        lines = [
            f"problems: {len(self.problems)} ({counts})",
            f"cases run: {self.cases_run} in {self.subprocesses} subprocesses; "
            f"slowest reference test run: {slow_id} {slow_s * 1000:.1f} ms",
            f"replies checked as text: {self.replies_checked}",
            f"errors: {len(self.errors)}",
        ]
        return "\n".join(lines + [f"  - {e}" for e in self.errors])


def load_sim_coder(path: Path = SIM_CODER) -> ModuleType:
    """Import sim_coder.py from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("verified_code_sim_coder", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as the simulator does; classes look their module up
    spec.loader.exec_module(module)
    return module


def extract_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a markdown reply, as (language, code)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def load_problems(path: Path = PROBLEMS) -> tuple[list[dict[str, Any]], list[str]]:
    """The problems of a JSONL file and what is wrong with them (field by field)."""
    problems: list[dict[str, Any]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            errors.append(f"line {number}: not an object")
            continue
        where = f"line {number} ({row.get('id', '?')})"
        missing = [f for f in FIELDS if f not in row]
        extra = sorted(set(row) - set(FIELDS))
        if missing or extra:
            errors.append(f"{where}: missing fields {missing}, unexpected fields {extra}")
            continue
        errors += [f"{where}: {e}" for e in _problem_errors(row)]
        if row["id"] in seen:
            errors.append(f"{where}: duplicate id")
        seen.add(row["id"])
        problems.append(row)
    return problems, errors


def _problem_errors(row: dict[str, Any]) -> list[str]:
    errors = []
    texts = ("id", "title", "statement", "entry_point", "signature", "difficulty")
    if not all(isinstance(row[f], str) and row[f].strip() for f in texts):
        return ["every field but tests must be a non-empty string"]
    if not re.fullmatch(r"vc\d{3}", row["id"]):
        errors.append("id must look like vc001")
    if row["difficulty"] not in DIFFICULTIES:
        errors.append(f"difficulty must be one of {DIFFICULTIES}")
    entry = row["entry_point"]
    if not re.fullmatch(rf"def {re.escape(entry)}\(.*\)( -> .+)?:", row["signature"]):
        errors.append("signature must be `def <entry_point>(...) -> ...:` on one line")
    else:
        try:
            compile(row["signature"] + "\n    ...\n", "<signature>", "exec")
        except SyntaxError as exc:
            errors.append(f"signature does not compile: {exc}")
    tests = row["tests"]
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        return [*errors, "tests must be a list of strings"]
    if not MIN_TESTS <= len(tests) <= MAX_TESTS:
        errors.append(f"{len(tests)} tests; want {MIN_TESTS} to {MAX_TESTS}")
    allowed = {entry, *dir(builtins)}
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError as exc:
            errors.append(f"test does not parse: {test!r} ({exc})")
            continue
        if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
            errors.append(f"test is not one assert statement: {test!r}")
        unknown = _free_names(tree) - allowed
        if unknown or entry not in _free_names(tree):
            errors.append(f"test must use only {entry} and builtins: {test!r}")
    return errors


def _free_names(tree: ast.AST) -> set[str]:
    """Names read but not bound inside `tree` (lambda arguments, comprehension targets)."""
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound


def _static_errors(coder: ModuleType, problem: dict[str, Any]) -> tuple[list[str], int]:
    """Checks of the simulator's code as text: format, compile errors, hostile shape."""
    pid, entry = problem["id"], problem["entry_point"]
    ref = coder.REFERENCES[pid]
    errors = []
    if ref.entry_point != entry:
        errors.append(f"{pid}: reference defines {ref.entry_point}, problem says {entry}")
    if problem["signature"] not in ref.code.splitlines():
        errors.append(f"{pid}: reference does not contain the signature line verbatim")
    for old, _ in ref.bugs:
        if ref.code.count(old) != 1:
            errors.append(f"{pid}: bug text {old!r} is not found exactly once in the reference")
    for variant in range(coder.SYNTAX_VARIANTS):
        try:
            compile(coder.syntax_error(pid, variant), "solution.py", "exec")
            errors.append(f"{pid}: syntax-error variant {variant} compiles")
        except SyntaxError:
            pass
    for kind in coder.HOSTILE_KINDS:
        for at_import in (True, False):
            code = coder.hostile_solution(pid, kind, at_import)
            try:
                tree = ast.parse(code)
            except SyntaxError as exc:
                errors.append(f"{pid}: hostile {kind} does not compile: {exc}")
                continue
            defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            if entry not in defined or "_setup()" not in code:
                errors.append(f"{pid}: hostile {kind} lacks {entry} or the payload call")
    replies = 0
    for kind in coder.OUTCOMES:
        for seed in range(4):
            text = coder.compose(pid, kind, seed=seed, repair=seed % 2 == 1)
            blocks = extract_blocks(text)
            replies += 1
            if kind == "no_code":
                if "```" in text:
                    errors.append(f"{pid}: the no_code reply has a fence")
            elif [lang for lang, _ in blocks] != ["python", "python"]:
                errors.append(f"{pid}: {kind} reply has blocks {[b[0] for b in blocks]}")
            elif f"from solution import {entry}" not in blocks[1][1]:
                errors.append(f"{pid}: {kind} reply's tests do not import {entry}")
    return errors, replies


def _cases(coder: ModuleType, problem: dict[str, Any]) -> list[dict[str, Any]]:
    """What to run for one problem, each with the outcome it must have (`expect_ok`)."""
    pid, tests = problem["id"], problem["tests"]
    ref = coder.REFERENCES[pid]
    correct = extract_blocks(coder.compose(pid, "correct"))
    wrong_test = extract_blocks(coder.compose(pid, "wrong_test"))
    cases = [
        {"name": "reference", "solution": ref.code, "asserts": tests, "expect_ok": True},
        {
            "name": "correct reply",
            "solution": correct[0][1],
            "asserts": tests,
            "test_module": correct[1][1],
            "expect_ok": True,
        },
        {
            "name": "wrong-test reply, problem tests",
            "solution": wrong_test[0][1],
            "asserts": tests,
            "expect_ok": True,
        },
        {
            "name": "wrong-test reply, own tests",
            "solution": wrong_test[0][1],
            "test_module": wrong_test[1][1],
            "expect_ok": False,
        },
    ]
    for i in range(len(ref.bugs)):
        cases.append(
            {
                "name": f"bug {i}",
                "solution": coder.wrong_solution(pid, i),
                "asserts": tests,
                "expect_ok": False,
            }
        )
    return cases


def _run_cases(
    entry: str, cases: list[dict[str, Any]], timeout: float
) -> list[dict[str, Any]] | str:
    """Run one problem's cases in a fresh interpreter and directory: results, or why not."""
    job = {"entry_point": entry, "cases": cases, "case_timeout": 5.0}
    with tempfile.TemporaryDirectory(prefix="vc_check_") as tmp:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", HARNESS],
                input=json.dumps(job),
                capture_output=True,
                text=True,
                cwd=tmp,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout} s"
        results = Path(tmp) / "results.json"
        if proc.returncode != 0 or not results.exists():
            return f"harness exited {proc.returncode}: {proc.stderr[-500:]}"
        return json.loads(results.read_text())


def check(path: Path = PROBLEMS, coder_path: Path = SIM_CODER, timeout: float = 60.0) -> Report:
    """Run every check; see the module docstring."""
    report = Report()
    report.problems, report.errors = load_problems(path)
    coder = load_sim_coder(coder_path)
    ids = {p["id"] for p in report.problems}
    for pid in sorted(set(coder.REFERENCES) - ids):
        report.errors.append(f"{pid}: a reference in sim_coder.py with no problem")
    runnable = []
    for problem in report.problems:
        if problem["id"] not in coder.REFERENCES:
            report.errors.append(f"{problem['id']}: no reference in sim_coder.py")
            continue
        errors, replies = _static_errors(coder, problem)
        report.errors += errors
        report.replies_checked += replies
        runnable.append((problem, _cases(coder, problem)))

    def run(item: tuple[dict[str, Any], list[dict[str, Any]]]) -> list[str]:
        problem, cases = item
        results = _run_cases(problem["entry_point"], cases, timeout)
        if isinstance(results, str):
            return [f"{problem['id']}: {results}"]
        errors = []
        for case, result in zip(cases, results, strict=True):
            if result["ok"] != case["expect_ok"]:
                want = "pass" if case["expect_ok"] else "fail"
                detail = result["detail"] or "it passed"
                errors.append(f"{problem['id']}: {case['name']} should {want}: {detail}")
            if case["name"] == "reference" and result["seconds"] > report.slowest_reference[1]:
                report.slowest_reference = (problem["id"], result["seconds"])
        return errors

    with ThreadPoolExecutor(max_workers=2) as pool:
        for errors in pool.map(run, runnable):
            report.errors += errors
    report.cases_run = sum(len(cases) for _, cases in runnable)
    report.subprocesses = len(runnable)
    return report


def main() -> int:
    report = check()
    print(report.summary())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
