"""The simulator's script for the mini desk: plays both the agent and the customer."""

import json
import re


def _agent(messages: list[dict]) -> dict | str:
    said = [m["content"] for m in messages if m["role"] == "user"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    called = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or ()]
    if "find_account" not in called:
        phone = re.search(r"\d{3}-\d{4}", " ".join(said))
        if phone is None:
            return "What is your phone number?"
        return {"tool_calls": [{"name": "find_account", "arguments": {"phone": phone[0]}}]}
    account = json.loads(results[0])
    if account["status"] == "suspended":
        if "pay" not in called:
            if "yes" in said[-1].lower():
                args = {"account_id": account["id"], "amount": account["owed"]}
                return {"tool_calls": [{"name": "pay", "arguments": args}]}
            return f"You owe ${account['owed']:.2f}. Shall I take the payment?"
        if "resume" not in called:
            return {"tool_calls": [{"name": "resume", "arguments": {"account_id": account["id"]}}]}
        return "Your line is resumed."
    return "Your account is fine: please switch airplane mode off on your phone."


def _customer(messages: list[dict]) -> dict | str:
    system = messages[0]["content"]
    heard = [m["content"] for m in messages if m["role"] == "user"]
    called = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or ()]
    if len(heard) == 1:
        reason = re.search(r"# Reason for your call\n(.*)", system)[1]
        known = re.search(r"# What you know\n(.*)", system)[1]
        return f"Hi, {reason}. {known}"
    last = heard[-1].lower()
    if "airplane" in last:
        if "toggle_airplane_mode" not in called:
            return {"tool_calls": [{"name": "toggle_airplane_mode", "arguments": {}}]}
        return "Done, it works now. ###STOP###"
    if "shall i" in last:
        return "Yes, please."
    if "resumed" in last:
        return "Thanks! ###STOP###"
    return "Sorry?"


def reply(request: dict) -> dict | str:
    names = {t["function"]["name"] for t in request.get("tools") or ()}
    messages = request["messages"]
    return _agent(messages) if "find_account" in names else _customer(messages)
