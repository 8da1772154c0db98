"""The review extractor's reply schema, and a metric over accepted rows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from peerflow.message import Message


class Review(BaseModel):
    """What the extractor must return for every text."""

    is_review: bool = Field(description="Is the text a review of a product?")
    sentiment: Literal["positive", "negative", "mixed", "none"]
    rating: int = Field(ge=1, le=5, description="Stars the reviewer would give.")


def metrics(message: Message) -> dict[str, float]:
    extracted = message.last("extractor")
    if message.status != "ok" or extracted is None or extracted.data is None:
        return {}
    return {
        "rating": extracted.data["rating"],
        "reasked": float("invalid_replies" in extracted.data),
    }
