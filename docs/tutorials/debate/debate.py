"""The debate's Python side: read the judge's verdict, and count rounds."""

from __future__ import annotations

import re
from typing import Any

from peerflow.message import Message

DEBATERS = ("alice", "bob", "carol")
_VERDICT = re.compile(r"WINNER:\s*(alice|bob|carol)", re.IGNORECASE)


def parse_verdict(message: Message, text: str) -> dict[str, Any]:
    """The judge's reply -> step data: the winner if it named one, and the round number."""
    found = _VERDICT.search(text)
    rounds = sum(1 for step in message.history if step.role == "judge") + 1
    return {"winner": found.group(1).lower() if found else None, "round": rounds}


def out_of_rounds(message: Message) -> bool:
    """A graph condition: the judge has heard three rounds."""
    return message.history[-1].data["round"] >= 3


def decided(message: Message) -> bool:
    return message.history[-1].data.get("winner") is not None


def metrics(message: Message) -> dict[str, float]:
    verdict = message.last("judge").data or {}
    return {"rounds": verdict.get("round", 0), "decided": float(bool(verdict.get("winner")))}
