"""The task message: the whole state of one task, carried from agent to agent.

A message is plain data so that it can cross process and machine boundaries
(pickle for Ray, JSON for the output file). Agents and the runtime never keep
per-task state anywhere else: whoever holds the message holds the task.

`msgspec.Struct` is used rather than dataclasses because a message is created,
appended to and encoded on every hop; Structs are several times cheaper to
build and encode, and omit default fields so hops stay small.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

SCHEMA_VERSION = 1

RUNNING = "running"
OK = "ok"
ERROR = "error"
# A task the workflow decided not to keep (a filter said no, a reply never matched its
# schema): a final outcome like OK, never re-attempted, and not a failure.
REJECTED = "rejected"

# Error kinds: a transient failure (transport error, timeout, 408/429/5xx, a service
# that would not start) is re-attempted by the next run of the same command; a
# permanent one (other 4xx, a parse error, a workflow error) only with --retry-failed.
TRANSIENT = "transient"
PERMANENT = "permanent"


class Step(msgspec.Struct, omit_defaults=True):
    """One agent's contribution to a task.

    `content` is what the agent said (LLM text, tool output); `data` holds what
    it parsed or computed (an extracted answer, a verdict) so that routing and
    metrics never re-parse text.
    """

    role: str
    content: str | None = None
    data: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    # A tool role's step answering the previous step's `tool_calls`: one entry per call, in
    # call order, each {"tool_call_id", "name", "content", "is_error"}. `tool_call_id` (with
    # `content`) is the single-call form, kept for agents that answer one call.
    tool_results: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    started: float = 0.0
    latency: float = 0.0
    ok: bool = True
    error: str | None = None
    attempts: int = 0
    # A failed step: was the failure transient, and the HTTP status if a server answered.
    transient: bool = False
    http_status: int | None = None
    # Provenance of an LLM step: which endpoint (index into the service's list), the
    # sampling parameters sent, why generation stopped, the hash of the prompt
    # templates, and the seed sent.
    endpoint: int | None = None
    sampling: dict[str, Any] | None = None
    finish_reason: str | None = None
    template: str | None = None
    seed: int | None = None
    # The reply came from the response cache (`cache:` in the config): no request was sent.
    cached: bool = False
    # What the reply cost in US dollars, when its service has a price (`peerflow.cost`).
    cost_usd: float | None = None


class Message(msgspec.Struct, omit_defaults=True):
    """A task in flight.

    `route` is the workflow's own state (position, turn count, return stack);
    `next_role` is where the message goes next. Both travel with the message,
    so no central component is consulted on a hop.
    """

    id: str
    row: dict[str, Any]
    vars: dict[str, Any] = msgspec.field(default_factory=dict)
    history: list[Step] = msgspec.field(default_factory=list)
    route: dict[str, Any] = msgspec.field(default_factory=dict)
    next_role: str | None = None
    status: str = RUNNING
    error: dict[str, Any] | None = None
    trial: int = 0
    seed: int = 0
    created: float = 0.0
    finished: float = 0.0
    hops: int = 0
    # Why the task ended: "done" (the workflow finished), "until" (a loop's condition
    # held), "stop" (a step set data.stop), "max_turns", "max_steps", "max_tool_errors",
    # the stage that failed ("agent", "workflow", "input", ...), or a rejection's reason.
    reason: str | None = None
    # A rejected task: {"role", "reason", "step" (history index), "detail" (optional)}.
    rejection: dict[str, Any] | None = None
    v: int = SCHEMA_VERSION

    def last(self, *roles: str) -> Step | None:
        """The latest step, or the latest step by one of `roles`."""
        history = self.history
        if not roles:
            return history[-1] if history else None
        for step in reversed(history):
            if step.role in roles:
                return step
        return None

    def fail(
        self,
        stage: str,
        error: str,
        *,
        transient: bool = False,
        status: int | None = None,
        attempts: int = 0,
        **where: Any,
    ) -> Message:
        """Mark the task failed; the record carries what a retry needs, not just a log line.

        `transient` says whether re-running the same command should re-attempt the row;
        `status` is the HTTP status when a server answered; `attempts` counts requests.
        """
        self.status = ERROR
        self.error = {
            "stage": stage,
            "message": error,
            "kind": TRANSIENT if transient else PERMANENT,
            "status": status,
            "attempts": attempts,
            **where,
        }
        self.next_role = None
        self.reason = stage
        return self

    def reject(self, role: str, reason: str, detail: Any = None) -> Message:
        """End the task as rejected by `role`'s latest step, for `reason` (a short label such
        as ``filter_by_en``: the funnel counts rows per label)."""
        self.status = REJECTED
        self.rejection = {"role": role, "reason": reason, "step": len(self.history) - 1}
        if detail is not None:
            self.rejection["detail"] = detail
        self.next_role = None
        self.reason = reason
        return self

    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens spent on this task so far."""
        prompt = completion = 0
        for step in self.history:
            usage = step.usage
            if usage:
                prompt += usage.get("prompt_tokens", 0)
                completion += usage.get("completion_tokens", 0)
        return prompt, completion


def new_message(
    task_id: str, row: dict[str, Any], vars: dict[str, Any], *, trial: int = 0, seed: int = 0
) -> Message:
    return Message(id=task_id, row=row, vars=vars, trial=trial, seed=seed, created=time.time())


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)
_mp_encoder = msgspec.msgpack.Encoder()
_mp_decoder = msgspec.msgpack.Decoder(Message)


def to_json(message: Message) -> bytes:
    return _encoder.encode(message)


def from_json(data: bytes | str) -> Message:
    message = _decoder.decode(data)
    if message.v > SCHEMA_VERSION:
        raise ValueError(
            f"message schema v{message.v} is newer than this peerflow (v{SCHEMA_VERSION})"
        )
    return message


def to_bytes(message: Message) -> bytes:
    """Compact binary form for hops between processes."""
    return _mp_encoder.encode(message)


def from_bytes(data: bytes) -> Message:
    return _mp_decoder.decode(data)
