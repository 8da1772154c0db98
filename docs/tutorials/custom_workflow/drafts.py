"""A custom workflow: a writer drafts, an editor reviews, for a few rounds or until approved."""

from __future__ import annotations

from typing import Any

from peerflow.message import Message, Step
from peerflow.workflow import Workflow


class Rounds(Workflow):
    """writer -> editor -> writer -> editor ... until the editor approves or `rounds` are done.

    The position (the current round) lives in `message.route`, never on `self`: one
    workflow object routes every task, in any process.
    """

    def __init__(self, *, writer: str, editor: str, rounds: int = 3, **kw: Any):
        super().__init__(**kw)  # tool_role, max_steps, ... from the config
        self.writer = writer
        self.editor = editor
        self.rounds = rounds

    def roles(self) -> set[str]:
        """Every role this workflow may route to: checked against `roles:` before the run."""
        return {self.writer, self.editor}

    def first(self, message: Message) -> str | None:
        message.route["round"] = 1
        return self.writer

    def after(self, message: Message) -> str | None:
        last = message.history[-1]
        if last.role == self.writer:
            return self.editor
        # The editor spoke: done, or another round.
        if last.data and last.data.get("approved"):
            message.reason = "approved"
            return None
        if message.route["round"] >= self.rounds:
            message.reason = "rounds"
            return None
        message.route["round"] += 1
        return self.writer


def review(message: Message, max_tokens: int) -> Step:
    """The editor (a function agent): approve a short enough draft, else ask for a shorter one."""
    draft = message.last("writer")
    tokens = (draft.usage or {}).get("completion_tokens", 0)
    if tokens <= max_tokens:
        return Step(role="editor", content="Approved.", data={"approved": True, "tokens": tokens})
    return Step(
        role="editor",
        content=f"Too long ({tokens} tokens). Rewrite it in under {max_tokens} tokens.",
        data={"approved": False, "tokens": tokens},
    )


def metrics(message: Message) -> dict[str, float]:
    return {
        "rounds": message.route.get("round", 0),
        "approved": float(message.reason == "approved"),
    }
