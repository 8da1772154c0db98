"""`peerflow calibrate` end to end: items sent to K solver configurations over real HTTP,
graded, fitted, and the known difficulties recovered.

The server is a scripted double whose solvers have known abilities (one per seed) and whose
items have known difficulties (written in the question): it answers correctly with the 1PL
probability. So the whole path (items from records, the solving run, grading, the fit, the
files) is checked against the truth, not against itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from fake_chat import FakeChat

from peerflow.config import RunConfig
from peerflow.export import ExportRequest, export
from peerflow.export.calibrate import calibrate, grade_boxed
from peerflow.sink import OutputRecord

ITEMS = 80
SEEDS = 8


def ability(seed: int) -> float:
    return (seed - (SEEDS - 1) / 2) / 1.2


def level(i: int) -> float:
    return -2.5 + 5.0 * ((i * 37) % ITEMS) / (ITEMS - 1)


def solver(body: dict[str, Any]) -> dict[str, Any]:
    m = re.search(r"Item (\d+) \(level ([-\d.]+)\)", body["messages"][-1]["content"])
    assert m, body
    i, b = int(m.group(1)), float(m.group(2))
    p = 1 / (1 + math.exp(-(ability(body["seed"]) - b)))
    digest = hashlib.sha256(f"{i}/{body['seed']}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return {"content": "Working... so \\boxed{42}" if u < p else "I think \\boxed{41}"}


@pytest.fixture
async def server() -> AsyncIterator[FakeChat]:
    s = FakeChat(solver)
    await s.start()
    yield s
    await s.close()


def setup(tmp: Path, url: str) -> tuple[Path, RunConfig]:
    out = tmp / "items.jsonl"
    with open(out, "wb") as f:
        for i in range(ITEMS):
            row = {"question": f"Item {i} (level {level(i):.3f}): what is 6 times 7?", "ref": 42}
            f.write(msgspec.json.encode(OutputRecord(id=f"q{i}", status="ok", row=row)) + b"\n")
        rejected = OutputRecord(id="bad", status="rejected", row={"question": "x", "ref": 1})
        f.write(msgspec.json.encode(rejected) + b"\n")
    (tmp / "rows.jsonl").write_text('{"id": "x"}\n')
    config = RunConfig.model_validate(
        {
            "dataset": {"path": str(tmp / "rows.jsonl")},
            "services": {"llm": {"kind": "openai", "model": "fake", "endpoints": [url]}},
            "roles": {"gen": {"service": "llm", "prompt": "hi"}},
            "workflow": {"kind": "sequence", "roles": ["gen"]},
            "runtime": {"kind": "local", "progress": False},
            "output": {"path": str(out)},
            "export": {
                "fields": {"question": "{{ row.question }}", "answer": "{{ row.ref }}"},
                "calibration": {"solvers": [{"service": "llm", "seeds": SEEDS, "seed": 0}]},
            },
        }
    )
    config.base_dir = tmp
    return out, config


async def test_calibration_recovers_known_difficulties(tmp_path: Path, server: FakeChat) -> None:
    out, config = setup(tmp_path, server.url)
    meta = await calibrate(out, config, progress=False)
    assert meta["items"] == ITEMS and meta["solvers"] == SEEDS  # the rejected item is not sent
    assert meta["solving_run"]["by_status"] == {"ok": ITEMS}
    # Every item went to every solver once: 8 requests per item, each with its seed.
    assert len(server.bodies) == ITEMS * SEEDS
    lines = [json.loads(x) for x in out.with_name(out.name + ".difficulty.jsonl").open()]
    assert len(lines) == ITEMS
    est = {d["id"]: d["difficulty"] for d in lines}
    truth = np.array([level(i) for i in range(ITEMS)])
    got = np.array([est[f"q{i}"] for i in range(ITEMS)])
    assert np.corrcoef(truth, got)[0, 1] > 0.8
    assert all(d["difficulty_se"] > 0 for d in lines)
    abilities = [meta["solver_ability"][f"solver0_s{k}"]["ability"] for k in range(SEEDS)]
    assert np.corrcoef(abilities, [ability(k) for k in range(SEEDS)])[0, 1] > 0.9
    # A re-run resumes the solving run: no request is sent again.
    await calibrate(out, config, progress=False)
    assert len(server.bodies) == ITEMS * SEEDS

    # The report shows the difficulty distribution; export can balance by it.
    from peerflow.report import build_report

    html = build_report(out).read_text()
    assert "Difficulty" in html and f"{ITEMS} items" in html
    report = export(
        ExportRequest(output=out, dest=tmp_path / "b.jsonl", shape="records", balance=4)
    )
    assert sum(b["rows"] for b in report["difficulty"]["bins"]) == report["written"]["train"]
    assert report["difficulty"]["model"] == "1pl"


def test_boxed_grading() -> None:
    assert grade_boxed("so \\boxed{42}", "42") == 1.0
    assert grade_boxed("\\boxed{42.0}", "42") == 1.0
    assert grade_boxed("\\boxed{1,000}", "1000") == 1.0
    assert grade_boxed("The answer is: Paris.", "paris") == 1.0
    assert grade_boxed("\\boxed{\\text{Paris}}", "Paris") == 1.0
    assert grade_boxed("\\boxed{41}", "42") == 0.0
    assert grade_boxed("", "42") == 0.0


def test_a_solver_that_never_answered_is_left_out_of_the_fit(tmp_path: Path) -> None:
    """Refitting (`--fit-only`) answers already collected, one solver having failed every
    call: it is named and left out, and the others still give every item a difficulty."""
    from peerflow.export.calibrate import calibration_output, fit_and_write
    from peerflow.message import Step

    out, config = setup(tmp_path, "http://127.0.0.1:9/v1")
    names = [f"solver0_s{k}" for k in range(SEEDS)]
    with open(calibration_output(out), "wb") as f:
        for i in range(ITEMS):
            steps = [Step(role=names[0], ok=False, error="ConnectionError")]
            for k, name in enumerate(names[1:], 1):
                right = ability(k) > level(i)
                steps.append(Step(role=name, content="\\boxed{42}" if right else "\\boxed{7}"))
            rec = OutputRecord(id=f"q{i}", status="error", row={"answer": "42"}, history=steps)
            f.write(msgspec.json.encode(rec) + b"\n")
    meta = fit_and_write(out, config)
    assert meta["solvers_without_answers"] == ["solver0_s0"]
    assert meta["solvers"] == SEEDS - 1 and meta["items"] == ITEMS
    lines = [json.loads(x) for x in out.with_name(out.name + ".difficulty.jsonl").open()]
    got = np.array([d["difficulty"] for d in sorted(lines, key=lambda d: int(d["id"][1:]))])
    assert np.corrcoef([level(i) for i in range(ITEMS)], got)[0, 1] > 0.8
