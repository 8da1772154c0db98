"""The Coral sample questions: a broken row here would quietly skew every Coral accuracy number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peerflow.config import DatasetConfig
from peerflow.datasets import open_dataset

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "coral" / "data" / "mmlu_pro_sample.jsonl"
LETTERS = "ABCDEFGHIJ"
KEYS = {"question_id", "category", "question", "options", "answer", "answer_index", "src"}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    lines = DATA.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_enough_rows_with_unique_ids(rows: list[dict[str, Any]]) -> None:
    assert len(rows) >= 50
    ids = [row["question_id"] for row in rows]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("pf-") for i in ids)


def test_every_row_has_the_schema(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        qid = row.get("question_id")
        assert set(row) == KEYS, qid
        assert isinstance(row["question"], str) and row["question"].strip(), qid
        assert isinstance(row["category"], str) and row["category"], qid
        assert row["src"] == "peerflow-authored", qid
        options = row["options"]
        assert isinstance(options, list) and len(options) == 10, qid
        assert all(isinstance(o, str) and o.strip() for o in options), qid
        assert len({o.strip().lower() for o in options}) == 10, f"{qid}: options not distinct"


def test_answer_letter_matches_index(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        index = row["answer_index"]
        assert isinstance(index, int) and 0 <= index < 10, row["question_id"]
        assert row["answer"] == LETTERS[index], row["question_id"]


def test_questions_are_short_and_cover_many_categories(rows: list[dict[str, Any]]) -> None:
    # Short prompts keep the tiny local model's runs fast.
    assert max(len(row["question"]) for row in rows) < 300
    assert len({row["category"] for row in rows}) >= 10


def test_answers_are_spread_over_letters(rows: list[dict[str, Any]]) -> None:
    """A model that always answers one letter must not score well."""
    counts = {letter: 0 for letter in LETTERS}
    for row in rows:
        counts[row["answer"]] += 1
    assert max(counts.values()) <= 0.2 * len(rows)


def test_reads_cleanly_through_the_dataset_reader(rows: list[dict[str, Any]]) -> None:
    raw = list(open_dataset(DatasetConfig(path=str(DATA), id_field="question_id"), DATA))
    assert [r.error for r in raw] == [None] * len(rows)
    assert [r.id for r in raw] == [row["question_id"] for row in rows]
