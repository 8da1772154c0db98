"""`agent: dedup`, the workflow stage: near-duplicates rejected as they come, on both
runtimes (on Ray the seen set is one actor shared by the role's actors), and a resumed run
remembers what the output already accepted."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from peerflow.config import RunConfig
from peerflow.pipeline import Pipeline
from peerflow.run import run_async

BASES = [
    "A farmer has 17 sheep and all but 9 run away. How many sheep does the farmer have left?",
    "Explain why ice floats on water even though both are made of the same molecules.",
    "Write a function that returns the longest palindromic substring of a given string.",
    "My phone shows no signal since this morning although I paid my bill, what can I do?",
    "Which gas do plants take in from the air during photosynthesis, and what do they release?",
]


def variant(text: str, k: int) -> str:
    """The same question again: as is, re-cased, re-punctuated, or with a word added."""
    return [
        text,
        text.upper(),
        text.replace(",", "").replace("?", " ?"),
        text.replace(" the ", " the  very ", 1) if " the " in text else text + " Thanks.",
    ][k % 4]


def config(tmp: Path, runtime: str, rows: int) -> RunConfig:
    with open(tmp / "rows.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "q": variant(BASES[i % 5], i // 5)}) + "\n")
    rt: dict[str, Any] = {"kind": runtime, "progress": False}
    return RunConfig.model_validate(
        {
            "dataset": {"path": str(tmp / "rows.jsonl"), "id_field": "id"},
            "roles": {
                "unique": {"agent": "dedup", "text": "{{ q }}", "num_instances": 2},
            },
            "workflow": {"kind": "sequence", "roles": ["unique"]},
            "runtime": rt,
            "output": {"path": str(tmp / "out.jsonl"), "report": False},
        }
    )


def records(tmp: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(tmp.glob("out*.jsonl")):
        found += [json.loads(line) for line in path.read_text().splitlines()]
    return found


async def test_one_row_per_question_is_kept_and_resume_remembers(
    tmp_path: Path, runtime: str
) -> None:
    cfg = config(tmp_path, runtime, rows=10)
    await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    first = records(tmp_path)
    assert Counter(r["status"] for r in first) == {"ok": 5, "rejected": 5}
    # The full input: 40 rows, 8 versions of each question; the 5 kept are still the only
    # ones kept, because the resumed run's seen set starts from the output's accepted rows.
    cfg = config(tmp_path, runtime, rows=40)
    await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    found = records(tmp_path)
    assert len(found) == 40 and len({r["id"] for r in found}) == 40
    kept = {r["id"] for r in found if r["status"] == "ok"}
    assert len(kept) == 5
    by_id = {r["id"]: r for r in found}
    base_of = {f"r{i}": i % 5 for i in range(40)}
    assert sorted(base_of[k] for k in kept) == [0, 1, 2, 3, 4]
    for r in found:
        if r["status"] == "rejected":
            detail = r["rejection"]["detail"]
            assert r["reason"] == "duplicate"
            assert detail["of"] in kept and base_of[detail["of"]] == base_of[r["id"]]
            assert detail["kind"] in ("exact", "near")
            assert by_id[detail["of"]]["status"] == "ok"
