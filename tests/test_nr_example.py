"""The NaturalReasoning example end to end against the simulator, locally and on Ray.

The simulator's rules are a test double (regular expressions over the document), so
these tests check the pipeline (every row ends once, each rejection at its step with its
reason, accepted rows complete), not the quality of a model's judgement.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "natural_reasoning"
DOCS = [json.loads(line) for line in (EXAMPLE / "data" / "docs.jsonl").read_text().splitlines()]

ORDER = ["language", "classifier", "score", "question"]
REASONS = {
    "language": {"filter_by_en"},
    "classifier": {"filter_by_classifier"},
    "score": {"filter_by_score", "filter_by_score_wo_json"},
    "question": {
        "filter_by_no_question",
        "filter_by_no_answer",
        "filter_by_no_boxed_answer",
        "filter_by_question_wo_json",
    },
}


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return [json.loads(line) for line in data.decode().splitlines()]


def run(tmp: Path, *overrides: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp / "nr.jsonl.zst"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerflow.cli",
            "run",
            str(EXAMPLE / "nr_sim.yaml"),
            f"output.path={out}",
            "--no-progress",
            *overrides,
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, out


def check_output(out: Path, docs: list[dict[str, Any]]) -> dict[str, Any]:
    accepted = read(out)
    rejected = read(out.with_name("nr.rejected.jsonl.zst"))
    failed = read(out.with_name("nr.errors.jsonl.zst"))
    ids = [r["id"] for r in accepted + rejected + failed]
    assert sorted(ids) == sorted(d["id"] for d in docs)  # every row once, nothing else
    assert not failed
    by_id = {d["id"]: d for d in docs}
    for r in rejected:
        role = r["rejection"]["role"]
        assert r["reason"] in REASONS[role], r["reason"]
        # the rejecting step is the last, and the steps before it are the funnel's order
        assert [s["role"] for s in r["history"]] == ORDER[: ORDER.index(role) + 1]
        assert r["row"] == by_id[r["id"]]  # the document and its labels, untouched
    non_english = {d["id"] for d in docs if d["kind"] == "non_english"}
    assert non_english <= {r["id"] for r in rejected if r["reason"] == "filter_by_en"}
    for r in accepted:
        assert [s["role"] for s in r["history"]] == ORDER
        question = r["history"][-1]["data"]
        assert question["exam_question"] and question["question_category"]
        assert re.search(r"\\boxed\{.+\}", question["independent_answer"][-1])
        scores = r["history"][2]["data"]
        assert all(1 <= scores[k] <= 4 for k in ("completeness", "complexity", "correctness"))
        assert r["row"] == by_id[r["id"]]
    return {"accepted": accepted, "rejected": rejected}


@pytest.mark.slow
def test_the_example_funnel_on_the_simulator(tmp_path: Path) -> None:
    proc, out = run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = check_output(out, DOCS)
    assert found["accepted"], "no document made it through the funnel"
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    funnel = summary["funnel"]
    assert [s["role"] for s in funnel["steps"]] == ORDER
    assert funnel["rows"] == len(DOCS) and funnel["accepted"] == len(found["accepted"])
    # The printed funnel names every reason that occurred, with its count.
    for step in funnel["steps"]:
        for reason, seen in step["reasons"].items():
            assert re.search(rf"- {reason}\s+{seen['rows']}\s", proc.stdout), reason
    # Tokens per step: none for the language filter, some for every LLM step.
    tokens = {s["role"]: s["tokens"] for s in funnel["steps"]}
    assert tokens["language"] == 0 and all(tokens[r] > 0 for r in ORDER[1:])
    # A re-run skips every row: rejected rows are final.
    again, _ = run(tmp_path)
    assert again.returncode == 0 and "records written this run: 0" in again.stdout


@pytest.mark.slow
def test_the_example_on_ray_offloads_the_document(tmp_path: Path) -> None:
    proc, out = run(tmp_path, "runtime.kind=ray", "dataset.limit=80")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_output(out, DOCS[:80])
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["ray"]["offloaded_fields"] > 0
