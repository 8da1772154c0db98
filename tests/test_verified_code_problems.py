"""The verified-code example's problem set and its simulated coder (examples/verified_code/).

The problem set is checked by running trusted code only (references, their bug mutations and
the simulated model's tests) in subprocesses; hostile replies are checked as text and never
run here: containing them is the sandbox's job, tested with the sandbox.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from peerflow.services.sim_llm import SimLLMServer, SimOptions

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "verified_code"
SEEDS = range(20)


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checker = _load("verified_code_check_problems", EXAMPLE / "check_problems.py")
coder = checker.load_sim_coder()
PROBLEMS, LOAD_ERRORS = checker.load_problems()
BY_ID = {p["id"]: p for p in PROBLEMS}


def request(pid: str, seed: int | None = 0, sandbox: str | None = None) -> dict[str, Any]:
    """A chat request with the markers the workflow's prompts use."""
    p = BY_ID[pid]
    text = f"Problem {pid}: {p['title']}\n\n{p['statement']}\n\n{p['signature']}"
    if sandbox is not None:
        text += f"\n\nYour solution failed. The sandbox reported:\n{sandbox}"
    body: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a careful Python programmer."},
            {"role": "user", "content": text},
        ],
    }
    if seed is not None:
        body["seed"] = seed
    return body


def find(kind: str, repair: bool = False, first: str | None = None) -> tuple[str, int]:
    """Some (problem id, seed) whose outcome is `kind` (and whose first attempt is `first`)."""
    for seed in range(500):
        for pid in sorted(BY_ID):
            if coder.outcome(pid, seed, repair) != kind:
                continue
            if first is None or coder.outcome(pid, seed) == first:
                return pid, seed
    raise AssertionError(f"no seed gives {kind}")


def python_blocks(text: str) -> list[str]:
    blocks = checker.extract_blocks(text)
    assert [lang for lang, _ in blocks] == ["python", "python"], text
    assert text.count("```") == 4, text
    return [code for _, code in blocks]


# ------------------------------------------------------------------------------ the problem set
def test_problem_set_passes_every_check() -> None:
    report = checker.check()
    assert report.errors == [], report.summary()
    assert len(report.problems) >= 55
    counts = report.difficulties
    assert counts["easy"] >= 15 and counts["medium"] >= 20 and counts["hard"] >= 8, counts
    assert report.subprocesses == len(report.problems)
    # reference + correct reply + both wrong-test cases + at least two bugs per problem
    assert report.cases_run >= 6 * len(report.problems)


def test_problem_file_holds_statements_only() -> None:
    assert LOAD_ERRORS == []
    text = (EXAMPLE / "data" / "problems.jsonl").read_text()
    assert sorted(BY_ID) == sorted(coder.REFERENCES)
    for pid, ref in coder.REFERENCES.items():
        body = ref.code.split(BY_ID[pid]["signature"], 1)[1].strip()
        assert body not in text, f"{pid}'s reference leaks into problems.jsonl"
    assert len({p["title"] for p in PROBLEMS}) == len(PROBLEMS)
    assert len({p["entry_point"] for p in PROBLEMS}) == len(PROBLEMS)


def test_checker_reports_a_wrong_test_a_harmless_bug_and_a_bad_row(tmp_path: Path) -> None:
    """The checks can fail: a test expecting a wrong value, a "bug" that changes nothing."""
    rows = [dict(BY_ID["vc001"]), dict(BY_ID["vc002"])]
    rows[0]["tests"] = [*rows[0]["tests"][:-1], "assert rotate_left([1, 2], 1) == [1, 2]"]
    problems = tmp_path / "problems.jsonl"
    lines = [json.dumps(r) for r in rows] + ['{"id": "vc999", "title": "x"}']
    problems.write_text("\n".join(lines) + "\n")
    source = (EXAMPLE / "sim_coder.py").read_text()
    # vc002's first bug becomes a rewrite that behaves exactly like the reference.
    bug = '("sorted(set(nums), reverse=True)", "sorted(nums, reverse=True)")'
    assert source.count(bug) == 1
    source = source.replace(bug, '("sorted(set(nums), reverse=True)", "sorted(set(nums))[::-1]")')
    (tmp_path / "sim_coder.py").write_text(source)
    report = checker.check(problems, tmp_path / "sim_coder.py")
    text = "\n".join(report.errors)
    assert "vc001: reference should pass: failed: assert rotate_left([1, 2], 1)" in text
    assert [e for e in report.errors if e.startswith("vc002")] == [
        "vc002: bug 0 should fail: it passed"
    ]
    assert "missing fields" in text and "vc999" in text
    assert "vc003: a reference in sim_coder.py with no problem" in text


# --------------------------------------------------------------------------------- the outcomes
def test_first_attempt_mix_is_near_the_stated_rates() -> None:
    counts = Counter(coder.outcome(pid, seed, False) for pid in BY_ID for seed in SEEDS)
    total = sum(counts.values())
    assert set(counts) == set(coder.OUTCOMES)
    for kind, rate in coder.RATES.items():
        assert abs(counts[kind] / total - rate) <= 0.03, (kind, counts[kind] / total)
    assert sum(coder.RATES.values()) == pytest.approx(1.0)


def test_repairs_mostly_succeed_and_otherwise_fail_the_same_way() -> None:
    fixed = failed = 0
    for pid in BY_ID:
        for seed in SEEDS:
            first = coder.outcome(pid, seed)
            again = coder.outcome(pid, seed, repair=True)
            if first == "correct":
                assert again == "correct"
            elif again == "correct":
                fixed += 1
            else:
                assert again == first
                failed += 1
    assert abs(fixed / (fixed + failed) - coder.REPAIR_SUCCESS) <= 0.07


def test_hostile_replies_cycle_through_every_kind() -> None:
    kinds = Counter(
        coder.hostile_kind(pid, seed)
        for pid in BY_ID
        for seed in SEEDS
        if coder.outcome(pid, seed) == "hostile"
    )
    assert set(kinds) == set(coder.HOSTILE_KINDS), kinds


# ------------------------------------------------------------------------------ reply format
@pytest.mark.parametrize("kind", ["correct", "wrong_solution", "wrong_test", "syntax_error"])
def test_reply_has_a_solution_block_then_a_tests_block(kind: str) -> None:
    pid, seed = find(kind)
    ref = coder.REFERENCES[pid]
    solution, tests = python_blocks(coder.reply(request(pid, seed)))
    assert f"from solution import {ref.entry_point}" in tests
    test_functions = [n for n in ast.parse(tests).body if isinstance(n, ast.FunctionDef)]
    assert len(test_functions) == 3
    assert all(f.name.startswith("test_") for f in test_functions)
    if kind in ("correct", "wrong_test"):
        assert solution.strip() == ref.code.strip()
    elif kind == "wrong_solution":
        assert solution.strip() in {coder.wrong_solution(pid, i).strip() for i in range(2)}
        assert solution.strip() != ref.code.strip()
    else:
        with pytest.raises(SyntaxError):
            compile(solution, "solution.py", "exec")
    if kind == "wrong_test":
        assert tests != coder.model_tests(pid)


def test_format_failure_has_no_code_block() -> None:
    seen = set()
    for pid in sorted(BY_ID):
        for seed in SEEDS:
            if coder.outcome(pid, seed) == "no_code":
                text = coder.reply(request(pid, seed))
                assert "```" not in text and checker.extract_blocks(text) == []
                seen.add("def " in text)
    assert seen == {True, False}  # both prose and code pasted without fences occur


def test_hostile_replies_define_the_entry_point_and_carry_their_payload() -> None:
    """Text only: the code is parsed, never run."""
    marks = {
        "fork_bomb": "os.fork()",
        "memory": "10**6",
        "infinite_loop": "while True:",
        "print_flood": "sys.stdout.write(block)",
        "network": '("1.1.1.1", 53), ("127.0.0.1", 22)',
        "read_secrets": "/etc/shadow",
        "write_outside": "../escape_",
        "background_process": 'Popen(["sleep", "600"], start_new_session=True)',
        "ptrace": "PTRACE_ATTACH",
        "setrlimit": "resource.setrlimit",
    }
    seen: set[str] = set()
    for pid in sorted(BY_ID):
        for seed in SEEDS:
            if coder.outcome(pid, seed) != "hostile":
                continue
            kind = coder.hostile_kind(pid, seed)
            solution, tests = python_blocks(coder.reply(request(pid, seed)))
            tree = ast.parse(solution)
            entry = coder.REFERENCES[pid].entry_point
            assert entry in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert marks[kind] in solution and "_setup()" in solution
            if kind == "write_outside":
                assert f"/tmp/pwned_{pid}" in solution and f"../escape_{pid}" in solution
            assert f"from solution import {entry}" in tests
            seen.add(kind)
    assert seen == set(marks)


# ------------------------------------------------------------------------------ the requests
def test_a_repair_request_is_recognised() -> None:
    pid, seed = find("correct", repair=True, first="wrong_solution")
    ref = coder.REFERENCES[pid]
    first = coder.reply(request(pid, seed))
    assert python_blocks(first)[0].strip() != ref.code.strip()
    output = "AssertionError: failed: " + BY_ID[pid]["tests"][0]
    repaired = coder.reply(request(pid, seed, sandbox=output))
    assert python_blocks(repaired)[0].strip() == ref.code.strip()
    assert repaired.startswith("Thanks, the sandbox output")
    # The same repair as a conversation: the problem, the first answer, then the report.
    body = request(pid, seed)
    body["messages"] += [
        {"role": "assistant", "content": first},
        {"role": "user", "content": f"The sandbox reported:\n{output}\nPlease fix it."},
    ]
    assert coder.reply(body) == repaired
    # As a repair role that sees the task but not the coder's turn: the task, then a prompt.
    body = request(pid, seed)
    prompt = f"Your previous solution:\n\n```python\n{python_blocks(first)[0]}```\n\n"
    body["messages"].append({"role": "user", "content": f"{prompt}The sandbox reported:\n{output}"})
    assert coder.reply(body) == repaired


def test_a_failed_repair_repeats_the_failure_with_another_variant() -> None:
    pid, seed = find("wrong_solution", repair=True)
    first = python_blocks(coder.reply(request(pid, seed)))[0]
    again = python_blocks(coder.reply(request(pid, seed, sandbox="AssertionError")))[0]
    ref = coder.REFERENCES[pid]
    assert first != again and ref.code.strip() not in (first.strip(), again.strip())


def test_replies_are_deterministic_and_a_missing_seed_means_zero() -> None:
    for pid in list(BY_ID)[:10]:
        assert coder.reply(request(pid, None)) == coder.reply(request(pid, 0))
        assert coder.reply(request(pid, 3)) == coder.reply(request(pid, 3))
    replies = {coder.reply(request("vc001", seed)) for seed in SEEDS}
    assert len(replies) > 2


def test_unknown_problem_gets_a_failing_stub_and_no_marker_gets_no_code() -> None:
    body = {"messages": [{"role": "user", "content": "Problem zz1: New\n\ndef fresh(x: int):"}]}
    solution, tests = python_blocks(coder.reply(body))
    assert "def fresh(" in solution and "NotImplementedError" in solution
    assert "from solution import fresh" in tests
    body = {"messages": [{"role": "user", "content": "Write me a poem about sandboxes."}]}
    assert "```" not in coder.reply(body)


async def test_the_simulator_serves_the_coders_replies_over_http() -> None:
    pid, seed = find("correct")
    options = SimOptions(port=0, time_scale=0.0, script=f"{EXAMPLE / 'sim_coder.py'}:reply")
    server = SimLLMServer(options)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            body = request(pid, seed)
            async with session.post(f"{server.url}/chat/completions", json=body) as resp:
                assert resp.status == 200
                data = await resp.json()
    finally:
        await server.stop()
    content = data["choices"][0]["message"]["content"]
    assert content == coder.reply(body)
    assert data["choices"][0]["finish_reason"] == "stop"
    assert python_blocks(content)[0].strip() == coder.REFERENCES[pid].code.strip()


def test_check_script_runs_from_the_command_line(tmp_path: Path) -> None:
    """The README's command: a copy of the example directory checks clean and exits 0."""
    import subprocess

    copy = tmp_path / "verified_code"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "out"))
    done = subprocess.run(
        [sys.executable, str(copy / "check_problems.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "errors: 0" in done.stdout and "problems: " in done.stdout
