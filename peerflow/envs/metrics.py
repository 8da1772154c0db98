"""Per-conversation metrics for a dual-control run: name it as the config's `metrics`.

The run summary averages them over records: the reward, each reward component, and the
conversation's size (LLM calls, tool calls and their errors, tokens).
"""

from __future__ import annotations

from typing import Any

from peerflow.message import Message

__all__ = ["conversation"]


def conversation(message: Message) -> dict[str, float]:
    """`reward`, `reward_<component>`, `steps`, `llm_calls`, `tool_calls`, `tool_errors`,
    tokens."""
    out: dict[str, float] = {}
    llm = tools = errors = prompt = completion = 0
    scored: dict[str, Any] | None = None
    for step in message.history:
        data = step.data or {}
        if "reward" in data and "components" in data:
            scored = data
        if step.usage:
            llm += 1
            prompt += step.usage.get("prompt_tokens", 0)
            completion += step.usage.get("completion_tokens", 0)
        for result in step.tool_results or ():
            tools += 1
            errors += bool(result.get("is_error"))
    if scored is not None:
        out["reward"] = float(scored["reward"])
        for name, value in (scored.get("components") or {}).items():
            out[f"reward_{name.lower()}"] = float(value)
    out.update(
        steps=sum(1 for step in message.history if step.role != "task"),
        llm_calls=llm,
        tool_calls=tools,
        tool_errors=errors,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )
    return out
