"""The dual-control conversation: a user simulator and an assistant, acting through tools.

The route: the environment role acquires the task's environment; the assistant opens
(its `opening` greeting); then user and assistant alternate. A turn with tool calls goes
to the environment role (`tool_role`) and its results come back to the caller, who
speaks again. The conversation ends, with `route.termination` and the record's `reason`
saying how, on:

- `user_stop`, `transfer`, `out_of_scope`: the user's text holds a stop token
  (`###STOP###`, `###TRANSFER###`, `###OUT-OF-SCOPE###`);
- `agent_stop`: the assistant's text holds `###STOP###`, or it called one of
  `agent_stop_tools` (e.g. `transfer_to_human_agents`);
- `max_steps`: `max_llm_calls` LLM turns (both sides, tool-calling turns included);
- `too_many_errors`: `max_tool_errors` failed tool calls.

A message has text or tool calls, never both: a reply with both keeps its calls, and its
text moves to the step's `data.text_with_tool_calls`.

Every ending goes to the reward role, which scores it (0 for the last two) and releases
the environment; the task then ends `ok` with its termination as `reason`. A failed step
(an LLM server that stays down, a lost environment) fails the task as in any workflow.
"""

from __future__ import annotations

from typing import Any

from peerflow.message import OK, RUNNING, Message
from peerflow.workflow import Workflow, fail_with_step

__all__ = ["DualControl"]

USER_TOKENS = {
    "###STOP###": "user_stop",
    "###TRANSFER###": "transfer",
    "###OUT-OF-SCOPE###": "out_of_scope",
}
AGENT_TOKEN = "###STOP###"


class DualControl(Workflow):
    """See the module docstring; name it as `workflow: {kind: custom, path:
    peerflow.envs:DualControl, tool_role: <environment role>, options: {...}}`."""

    def __init__(
        self,
        *,
        assistant: str = "assistant",
        user: str = "user",
        reward: str = "reward",
        max_llm_calls: int = 200,
        agent_stop_tools: list[str] | None = None,
        tool_role: str | None = None,
        max_steps: int = 200,
        max_tool_errors: int = 10,
    ):
        if tool_role is None:
            raise ValueError("workflow.tool_role: name the environment role (`agent: environment`)")
        # The hop cap is a safety net above the LLM-call cap (each call may add a tool hop).
        super().__init__(
            tool_role=tool_role,
            max_steps=max(max_steps, 3 * max_llm_calls + 10),
            max_tool_errors=max_tool_errors,
        )
        self.assistant, self.user, self.reward = assistant, user, reward
        self.environment = tool_role
        self.max_llm_calls = max_llm_calls
        self.agent_stop_tools = set(agent_stop_tools or ())

    def roles(self) -> set[str]:
        return {self.assistant, self.user, self.reward, self.environment}

    def first(self, message: Message) -> str | None:
        message.route["llm_calls"] = 0
        return self.environment

    def after(self, message: Message) -> str | None:  # advance is overridden
        raise NotImplementedError

    def advance(self, message: Message) -> str | None:
        message.hops += 1
        last = message.history[-1]
        route = message.route
        if not last.ok:
            fail_with_step(message, last)
            return None
        nxt: str | None
        if last.role == self.reward:
            nxt = None
        elif last.role == self.environment:
            if not last.tool_results:  # the environment was just acquired
                nxt = self.assistant
            else:
                failed = sum(1 for r in last.tool_results if r.get("is_error"))
                route["tool_errors"] = route.get("tool_errors", 0) + failed
                caller = route.get("return", [self.assistant]).pop()
                if route["tool_errors"] >= self.max_tool_errors:
                    nxt = self._end(message, "too_many_errors")
                elif route.pop("stop_after_tools", None):
                    nxt = self._end(message, "agent_stop")
                else:
                    nxt = caller
        elif last.role in (self.assistant, self.user):
            if last.tool_calls and last.content:
                # A message has text or tool calls, not both: the calls act, and the text
                # (which the other side would never see) is kept aside in the step's data.
                last.data = {**(last.data or {}), "text_with_tool_calls": last.content}
                last.content = None
            if not (last.data and last.data.get("opening")):
                route["llm_calls"] = route.get("llm_calls", 0) + 1
            nxt = self._after_turn(message, last)
        else:
            nxt = self.assistant
        if nxt is not None and message.hops >= self.max_steps:
            nxt = self._end(message, "max_steps") if last.role != self.reward else None
        message.next_role = nxt
        if nxt is None and message.status == RUNNING:
            message.status = OK
            message.reason = str(route.get("termination") or "done")
        return nxt

    def _after_turn(self, message: Message, last: Any) -> str | None:
        route = message.route
        text = last.content or ""
        if last.tool_calls:
            names = {
                (c.get("function") or {}).get("name")
                for c in last.tool_calls
                if isinstance(c, dict)
            }
            if last.role == self.assistant and names & self.agent_stop_tools:
                route["stop_after_tools"] = True
            if route["llm_calls"] >= self.max_llm_calls:
                return self._end(message, "max_steps")
            route.setdefault("return", []).append(last.role)
            return self.environment
        if last.role == self.user:
            for token, reason in USER_TOKENS.items():
                if token in text:
                    return self._end(message, reason)
        elif AGENT_TOKEN in text:
            return self._end(message, "agent_stop")
        if route["llm_calls"] >= self.max_llm_calls:
            return self._end(message, "max_steps")
        return self.user if last.role == self.assistant else self.assistant

    def _end(self, message: Message, termination: str) -> str:
        message.route["termination"] = termination
        return self.reward
