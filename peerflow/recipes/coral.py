"""Collaborative reasoning (Coral): speakers debate a multiple-choice question.

Roles: two or more speakers (LLM; in the paper a teacher and a student) take
turns; after each turn an extractor (LLM) pulls the speaker's final answer
letter and a matcher (plain function) compares every speaker's latest answer.
The task stops on agreement or after `max_turns` matcher turns. Success is
*agreement correctness*: all agree and the agreed letter is the gold answer.

No role name is hard-coded: the speaker of a turn is the latest step before the
extractor that said something and is neither the task, a tool result, an
extractor's nor a matcher's step; the extractor records it (`data.speaker`), and
the matcher and the metrics read the speakers from those records.

The dummy agents at the bottom replace the LLM roles with canned text of the
paper's size (1,024 characters +-20%) so that benchmarks measure the
runtime, not a model.
"""

from __future__ import annotations

import random
import re
from typing import Any

from peerflow.agents.base import Agent, AgentOptions
from peerflow.message import OK, Message, Step

LETTERS = "ABCDEFGHIJ"
_PAREN = re.compile(r"\(([A-J])\)")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-J])\b")


def format_options(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def _is_speaker(step: Step) -> bool:
    """A debate turn: not the task, a tool result, an extractor's or a matcher's step."""
    data = step.data or {}
    return (
        step.role != "task"
        and not step.tool_results
        and step.tool_call_id is None
        and bool(step.content)
        and "speaker" not in data
        and "agree" not in data
    )


def extract_answer(message: Message, text: str) -> dict[str, Any]:
    """Parse the extractor's reply: "(C)" -> C; "not sure yet" or junk -> None."""
    speaker = next((s for s in reversed(message.history) if _is_speaker(s)), None)
    found = _PAREN.search(text) or _ANSWER_IS.search(text)
    if not found:
        stripped = text.strip().strip(".").upper()
        answer = stripped if len(stripped) == 1 and stripped in LETTERS else None
    else:
        answer = found.group(1)
    return {"answer": answer, "speaker": speaker.role if speaker else None}


def speakers(message: Message) -> list[str]:
    """The speakers whose turns an extractor has read so far, in order of first turn."""
    seen: dict[str, None] = {}
    for step in message.history:
        data = step.data
        if data and "answer" in data and data.get("speaker"):
            seen.setdefault(data["speaker"], None)
    return list(seen)


def latest_answers(message: Message) -> dict[str, str | None]:
    """Each speaker's latest extracted answer; an unclear later turn keeps the earlier one."""
    answers: dict[str, str | None] = dict.fromkeys(speakers(message))
    for step in message.history:
        data = step.data
        if data and data.get("speaker") and data.get("answer"):
            answers[data["speaker"]] = data["answer"]
    return answers


def match(message: Message, min_speakers: int = 2) -> dict[str, Any]:
    """Agreement: at least `min_speakers` speakers have spoken and all give the same letter.

    The verdict lists each speaker's latest answer under its role name.
    """
    answers = latest_answers(message)
    given = set(answers.values())
    agree = len(answers) >= min_speakers and len(given) == 1 and None not in given
    gold = message.vars.get("answer")
    return {
        **answers,
        "agree": agree,
        "correct": bool(agree and next(iter(given)) == gold),
    }


def finished(message: Message) -> bool:
    return bool(message.history[-1].data and message.history[-1].data.get("agree"))


def metrics(message: Message) -> dict[str, Any]:
    verdicts = [s.data for s in message.history if s.data and "agree" in s.data]
    last = verdicts[-1] if verdicts else {}
    lengths = {
        role: [
            s.usage.get("completion_tokens", 0)
            for s in message.history
            if s.role == role and s.usage
        ]
        for role in speakers(message)
    }
    out: dict[str, Any] = {
        "conv_ok": message.status == OK,
        "agreement": bool(last.get("agree")),
        "agreement_correctness": bool(last.get("correct")),
        "turns": len(verdicts),
    }
    _, completion = message.tokens()
    out["completion_tokens"] = completion
    for role, values in lengths.items():
        if values:
            out[f"{role}_completion_tokens"] = sum(values) / len(values)
    return out


# --- dummy agents for benchmarks -------------------------------------------------

_rng = random.Random(1234)
_TEXT = "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz     ") for _ in range(1 << 16))


class DummySpeakerOptions(AgentOptions):
    length: int = 1024
    jitter: float = 0.2
    expected_turns: int = 3
    p_agree_before: float = 0.1
    p_agree_after: float = 0.9


class DummySpeaker(Agent):
    """Canned text of the paper's dummy size; mostly agrees after `expected_turns` turns."""

    Options = DummySpeakerOptions
    options: DummySpeakerOptions

    def process(self, message: Message, request: Any) -> Step:  # type: ignore[override]
        # Draws come from a hash of (task seed, hop), not a shared RNG, so a task's dialogue
        # is the same whichever process or runtime runs it.
        o = self.options
        h = _mix(message.seed, message.hops)
        n = int(o.length * (1 + o.jitter * (2 * (h & 0xFFFF) / 0xFFFF - 1)))
        start = (h >> 16) % (len(_TEXT) - n)
        turn = message.route.get("turns", 0)
        p = o.p_agree_after if turn + 1 >= o.expected_turns else o.p_agree_before
        draw = _mix(h, 1)
        letter = "A" if (draw & 0xFFFF) / 0x10000 < p else LETTERS[1 + (draw >> 16) % 9]
        return Step(role=self.role, content=f"{_TEXT[start : start + n]} The answer is ({letter})")


def _mix(a: int, b: int) -> int:
    """A cheap 64-bit integer hash (splitmix-style finaliser)."""
    x = (a * 0x9E3779B97F4A7C15 + b * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 29)


class DummyExtractor(Agent):
    """Reads the letter the dummy speaker put at the end of its text."""

    def process(self, message: Message, request: Any) -> Step:  # type: ignore[override]
        speaker = message.history[-1]
        content = speaker.content or ""
        return Step(
            role=self.role,
            content=content[-3:],
            data={"answer": content[-2], "speaker": speaker.role},
        )
