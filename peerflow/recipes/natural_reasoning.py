"""NaturalReasoning-style curation: the schemas and rejection rules of the example workflow.

The paper's second case study turns raw web pages into exam questions with reference
answers through a funnel: a language filter (no LLM), a small model's Yes/No "is this
reasoning-rich?", a big model's quality scores (all must be above zero), and the big
model's question with an answer extracted from the page and an independent step-by-step
answer ending in `\\boxed{}`. Most pages leave early, which is why the work is scheduled
per row, not per batch. `examples/natural_reasoning/` wires these pieces in YAML.

Every rejection has its own reason, as data, so the funnel shows where rows went:
`filter_by_en`, `filter_by_classifier`, `filter_by_score`, `filter_by_score_wo_json`,
`filter_by_no_question`, `filter_by_no_answer`, `filter_by_no_boxed_answer`,
`filter_by_question_wo_json` (and, with grading, `filter_by_inconsistent`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from peerflow.message import Message


class Scores(BaseModel):
    """The big model's quality verdict on a document, each criterion from 0 to 4."""

    completeness: int = Field(
        ge=0, le=4, description="Is there a complete problem or argument to build on?"
    )
    complexity: int = Field(
        ge=0, le=4, description="How much technical depth and how many steps does it need?"
    )
    correctness: int = Field(ge=0, le=4, description="Is its content technically correct?")
    reasoning: int = Field(
        ge=0, le=4, description="Does it show reasoning: derivations, calculations, arguments?"
    )


class Question(BaseModel):
    """An exam question drawn from a document, with two answers to compare."""

    exam_question: str = Field(description="A self-contained exam question.")
    question_category: str = Field(description="Subject, e.g. physics, economics, logic.")
    extracted_answer: str = Field(
        description="The reference answer as the document states it; empty if it has none."
    )
    independent_answer: list[str] = Field(
        description="Your own solution, step by step; the last step holds \\boxed{answer}."
    )


class Grade(BaseModel):
    """Whether the extracted and the independent answer agree."""

    consistent: bool
    explanation: str


_WORD = re.compile(r"[A-Za-z]+")
_BOXED = re.compile(r"\\boxed\{.+\}", re.DOTALL)


def verdict(message: Message, text: str) -> dict[str, Any]:
    """The classifier's reply as `{"answer": "Yes" | "No" | <other>}` (first word only)."""
    words = _WORD.findall(text)
    return {"answer": words[0].capitalize() if words else ""}


def not_yes(message: Message) -> bool:
    """Reject unless the classifier said exactly Yes (anything else: No, or a ramble)."""
    return (message.last().data or {}).get("answer") != "Yes"


def any_zero_score(message: Message) -> bool:
    data = message.last().data or {}
    return any(data.get(name) == 0 for name in Scores.model_fields)


def no_question(message: Message) -> bool:
    return not str((message.last().data or {}).get("exam_question", "")).strip()


def no_answer(message: Message) -> bool:
    data = message.last().data or {}
    steps = [s for s in data.get("independent_answer") or () if str(s).strip()]
    return not steps


def no_boxed_answer(message: Message) -> bool:
    """The independent answer's last step must hold `\\boxed{...}`."""
    steps = (message.last().data or {}).get("independent_answer") or [""]
    return not _BOXED.search(str(steps[-1]))


def boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` in `text` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed{")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            if depth == 0:
                return text[i:j].strip()
            depth -= 1
    return None


def metrics(message: Message) -> dict[str, float]:
    """Per record, averaged in the summary: accepted, and the question's answer agreement."""
    out: dict[str, float] = {"accepted": float(message.status == "ok")}
    question = message.last("question")
    if question is not None and question.data and message.status == "ok":
        steps = question.data.get("independent_answer") or [""]
        mine = boxed(str(steps[-1])) or ""
        theirs = str(question.data.get("extracted_answer") or "").strip()
        if theirs:
            out["answers_match"] = float(_norm(mine) == _norm(theirs))
    return out


def _norm(text: str) -> str:
    return re.sub(r"[\s$\\{}]|\\text", "", text).lower().rstrip(".")
