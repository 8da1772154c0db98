"""A strict check of the OpenAI chat format, for every example an export writes.

Trainers read `messages` with little checking of their own: a tool result whose call is
missing, or arguments that are not JSON, become a silently wrong chat template. Each
example is checked before it is written, and one that fails is not written but counted
with its reason (a record that cannot make a valid example is a finding, not a crash).

What a strict server would refuse in a request (tool calls and results pairing, names,
tool schemas) is `peerflow.testing.strict_chat_errors`, the check the test servers apply
to every request peerflow sends; a training example must pass it and more.
"""

from __future__ import annotations

import json
from typing import Any

from peerflow.testing import strict_chat_errors

__all__ = ["chat_errors"]

_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
}


def _call_errors(call: Any, where: str) -> list[str]:
    if not isinstance(call, dict):
        return [f"{where}: a tool call is not an object"]
    errors = []
    if call.get("type") != "function":
        errors.append(f"{where}: a tool call's type is {call.get('type')!r}, not 'function'")
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        return [*errors, f"{where}: a tool call has no function name"]
    args = fn.get("arguments")
    if not isinstance(args, str):
        errors.append(f"{where}: {fn['name']}'s arguments are not a JSON string")
        return errors
    try:
        parsed = json.loads(args)
    except ValueError:
        errors.append(f"{where}: {fn['name']}'s arguments are not valid JSON")
    else:
        if not isinstance(parsed, dict):
            errors.append(f"{where}: {fn['name']}'s arguments are not a JSON object")
    return errors


def chat_errors(messages: Any, tools: Any = None, *, final_assistant: bool = True) -> list[str]:
    """What is wrong with `messages` (and the `tools` offered) as a training chat; [] if
    nothing is.

    Beyond `strict_chat_errors`: the four chat roles only, each with its own keys; string
    content (empty only for an assistant turn that makes tool calls); a system message
    only first; every tool call of type function with arguments a JSON object; at least
    one user message; and, with `final_assistant`, the chat ending with the assistant.
    A key holding null counts as absent: rows read back through Arrow (`datasets`) carry
    every key of the message struct, with nulls.
    """
    if not isinstance(messages, list) or not messages:
        return ["messages is empty or not a list"]
    if not all(isinstance(m, dict) for m in messages):
        return ["messages holds something that is not an object"]
    messages = [{k: v for k, v in m.items() if v is not None or k == "content"} for m in messages]
    errors = strict_chat_errors({"messages": messages, "tools": tools or []})
    if tools is not None and not isinstance(tools, list):
        errors.append("tools is not a list")
    users = 0
    for n, msg in enumerate(messages):
        where = f"messages[{n}]"
        role = msg.get("role")
        if role not in _KEYS:
            errors.append(f"{where}: role {role!r} is not one of {sorted(_KEYS)}")
            continue
        extra = set(msg) - _KEYS[role]
        if extra:
            errors.append(f"{where}: unexpected key(s) {sorted(extra)} for a {role} message")
        content = msg.get("content")
        if not isinstance(content, str):
            errors.append(f"{where}: content is {type(content).__name__}, not a string")
            content = ""
        if role == "system" and n != 0:
            errors.append(f"{where}: a system message after the start")
        elif role == "user":
            users += 1
            if not content.strip():
                errors.append(f"{where}: empty user message")
        elif role == "assistant":
            calls = msg.get("tool_calls")
            if calls is not None and (not isinstance(calls, list) or not calls):
                errors.append(f"{where}: tool_calls is empty or not a list")
            elif calls:
                for call in calls:
                    errors += _call_errors(call, where)
            elif not content.strip():
                errors.append(f"{where}: empty assistant message without tool calls")
    if users == 0:
        errors.append("no user message")
    if final_assistant and messages[-1].get("role") != "assistant":
        errors.append("the chat does not end with an assistant message")
    return errors
