"""The user code of the Ray tutorial: a rule that scores each summary by its length."""

from __future__ import annotations

from typing import Any

from peerflow.message import Message


def score(message: Message, target_words: int) -> dict[str, Any]:
    """1.0 for a summary of `target_words` words, less the further it is from that."""
    words = len((message.last("summarizer").content or "").split())
    return {"words": words, "score": max(0.0, 1 - abs(words - target_words) / target_words)}


def metrics(message: Message) -> dict[str, float]:
    data = message.last("scorer").data or {}
    return {"score": data.get("score", 0.0)}
