"""The agent contract: a stateless, async step of one role.

An agent turns a message into one `Step`: `preprocess` builds the request
(a prompt), `process` calls a service, `postprocess` parses the reply. The
runtime appends the step and routes the message; an agent never forwards
messages itself, which is what lets the same agent run on any runtime.

Agents are shared by every message of their role in a process, so they must
keep no per-task state: everything about a task is in the message.

`run` never raises: any exception becomes a failed step that says whether the
failure was transient (a re-run re-attempts the row) or permanent, the HTTP
status and the attempts made. When the service answered but parsing failed,
the failed step still holds the reply, so its text and tokens are not lost.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from peerflow.cost import price_step
from peerflow.loading import user_frame
from peerflow.message import Message, Step
from peerflow.services.base import ChatResult, Service, error_kind

# Request keys that are the conversation, not how it is sampled.
_NOT_SAMPLING = frozenset(("messages", "tools", "seed"))


class AgentOptions(BaseModel):
    """Base for an agent's own YAML options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ParseError(Exception):
    """The service answered, but its reply could not be turned into step data (permanent)."""


class Agent:
    Options: ClassVar[type[AgentOptions]] = AgentOptions
    # Hash of the prompt templates, recorded on every LLM step (set by LLM agents).
    template: str | None = None
    # Request keys left out of a step's recorded `sampling` (a structured role adds its
    # schema's fields: the config's fingerprint covers them, records need not repeat them).
    not_sampling: frozenset[str] = _NOT_SAMPLING

    def __init__(self, role: str, options: AgentOptions, services: Mapping[str, Service]):
        self.role = role
        self.options = options
        self.services = services

    async def setup(self) -> None:
        """Called once per process before the first message (open files, warm caches)."""

    async def preprocess(self, message: Message) -> Any:
        return None

    async def process(self, message: Message, request: Any) -> Any:
        """The step itself. Async when it waits on a service; a plain `def` is fine for
        CPU-light rules (it then runs inline, with no task switch)."""
        raise NotImplementedError(f"{type(self).__name__}.process")

    async def postprocess(self, message: Message, result: Any) -> Step:
        return to_step(self.role, result)

    # True when neither preprocess nor postprocess is overridden: `run` then skips them,
    # which saves two coroutines on every step of function and rule agents.
    _plain: ClassVar[bool] = True

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._plain = cls.preprocess is Agent.preprocess and cls.postprocess is Agent.postprocess

    @property
    def inline(self) -> bool:
        """True when a step needs no await: `process` is a plain function and nothing
        wraps it. The runtime then calls `run_inline`, saving two coroutines a step."""
        return self._plain and not inspect.iscoroutinefunction(self.process)

    def run_inline(self, message: Message) -> Step:
        """`run` for an `inline` agent; never raises either."""
        started = time.time()
        try:
            step = to_step(self.role, self.process(message, None))
        except Exception as exc:
            step = failed_step(self.role, exc)
        step.started = started
        step.latency = time.time() - started
        return step

    async def run(self, message: Message) -> Step:
        """One step; never raises, so an agent bug fails one task, not the run."""
        started = time.time()
        request: Any = None
        result: Any = None
        try:
            if self._plain:
                result = self.process(message, None)
                if inspect.isawaitable(result):
                    result = await result
                step = to_step(self.role, result)
            else:
                request = await self.preprocess(message)
                result = await self.process(message, request)
                step = await self.postprocess(message, result)
        except Exception as exc:
            step = failed_step(self.role, exc, result)
        if request.__class__ is dict and "messages" in request:
            self.provenance(step, request, result)
        step.started = started
        step.latency = time.time() - started
        return step

    def provenance(self, step: Step, request: dict[str, Any], result: Any) -> None:
        """Record how an LLM step was produced: sampling sent, seed, templates, endpoint.

        Called for every step whose request was a chat (it has `messages`), failed or not,
        so a record can always be traced to the prompts and parameters that made it.
        """
        sampling = {k: v for k, v in request.items() if k not in self.not_sampling}
        extra = getattr(getattr(self, "service", None), "extra_body", None)
        if extra:
            # The service's defaults were sent too, under the request's own values.
            sampling = {**extra, **sampling}
        step.sampling = sampling or None
        seed = request.get("seed")
        if seed is not None:
            step.seed = seed
        if self.template is not None:
            step.template = self.template
        if isinstance(result, ChatResult):
            if step.model is None:
                step.model = result.model
            if step.endpoint is None:
                step.endpoint = result.endpoint_index
            if step.finish_reason is None:
                step.finish_reason = result.finish_reason
        # What the reply cost, if its service has a price (a failed step's reply was paid too).
        price_step(step, getattr(self, "service", None))


def failed_step(role: str, exc: BaseException, result: Any = None) -> Step:
    """The failed step for `exc`; keeps the service's reply if there was one.

    `result` is what the service returned before parsing or postprocessing failed: its
    text, tool calls and token usage stay in the record (and in the token totals).
    """
    transient, status, attempts = error_kind(exc)
    if isinstance(result, ChatResult):
        step = to_step(role, result)
        attempts = attempts or result.attempts
    else:
        step = Step(role=role)
    step.ok = False
    step.error = describe_error(role, exc)
    step.transient = transient
    step.http_status = status
    step.attempts = attempts
    return step


_NAMED = re.compile(r"roles\.[\w.-]+(?: \([^)]*\))?")


def describe_error(role: str, exc: BaseException) -> str:
    """`Type: message`, blamed on the innermost line of user code when user code raised.

    A parse function or custom agent raising gives e.g. ``roles.judge (mymod:parse) at
    mymod.py:12: ValueError: ...``; a message that already names its key (``roles.judge.parse
    (mymod:parse) failed ...``) gets ``at mymod.py:12`` after that name.
    """
    text = f"{type(exc).__name__}: {exc}"
    where = user_frame(exc)
    if where is None:
        return text
    path, line, module, function = where
    named = _NAMED.match(str(exc))
    if named:
        cut = len(type(exc).__name__) + 2 + named.end()
        return f"{text[:cut]} at {path}:{line}{text[cut:]}"
    return f"roles.{role} ({module}:{function}) at {path}:{line}: {text}"


def to_step(role: str, result: Any) -> Step:
    """Accept what agent code naturally returns: a Step, text, a dict of data, or a chat result."""
    if isinstance(result, Step):
        result.role = role
        return result
    if isinstance(result, ChatResult):
        return Step(
            role=role,
            content=result.content,
            tool_calls=result.tool_calls,
            usage=result.usage,
            model=result.model,
            attempts=result.attempts,
            endpoint=result.endpoint_index,
            finish_reason=result.finish_reason,
            cached=result.cached,
        )
    if isinstance(result, str):
        return Step(role=role, content=result)
    if isinstance(result, dict):
        return Step(role=role, data=result)
    if result is None:
        return Step(role=role)
    raise TypeError(
        f"agent for role {role!r} returned {type(result).__name__}; "
        "expected Step, str, dict or None"
    )
