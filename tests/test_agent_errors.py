"""A failed step says what a retry needs; an LLM step says how it was made.

Real HTTP throughout: the LLM agent talks to a scripted OpenAI-compatible server on
127.0.0.1 (the fake of test_openai_client), so the classification is checked end to end,
from the HTTP status to the error record the workflow writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from test_openai_client import FakeOpenAI, closed_port_url, ok, status

from peerflow.agents.base import Agent, failed_step
from peerflow.agents.function import FunctionAgent, FunctionOptions
from peerflow.agents.llm import LLMAgent, LLMOptions
from peerflow.message import ERROR, PERMANENT, TRANSIENT, Message, new_message
from peerflow.services.base import ServiceError, error_kind
from peerflow.services.openai_client import OpenAIService
from peerflow.stats import RunStats
from peerflow.workflow import Sequence

SAMPLING = {"temperature": 0.3, "max_tokens": 8}


def broken_parse(message: Message, text: str) -> dict[str, Any]:
    raise ValueError(f"no verdict in {text!r}")


def answer_parse(message: Message, text: str) -> dict[str, Any]:
    return {"answer": text.upper()}


def disk_error(message: Message) -> str:
    raise OSError(28, "No space left on device")


def bug(message: Message) -> str:
    raise KeyError("oops")


@pytest.fixture
async def agent_for() -> AsyncIterator[Callable[..., Awaitable[LLMAgent]]]:
    servers: list[FakeOpenAI] = []
    services: list[OpenAIService] = []

    async def make(
        script: list[Any] | None = None,
        *,
        default: Any = None,
        url: str | None = None,
        max_retries: int = 1,
        **options: Any,
    ) -> LLMAgent:
        if url is None:
            srv = FakeOpenAI()
            await srv.start()
            servers.append(srv)
            srv.script = list(script or [])
            if default is not None:
                srv.default = default
            url = srv.url
        svc = OpenAIService(
            "llm",
            model="m",
            endpoints=[closed_port_url(), url] if options.pop("two", False) else [url],
            max_retries=max_retries,
            backoff=0.01,
            backoff_max=0.05,
            extra_body={"top_p": 0.9},
        )
        await svc.start()
        services.append(svc)
        opts = LLMOptions(
            service="llm",
            system=options.pop("system", "You are terse."),
            prompt=options.pop("prompt", "Answer {{ q }}"),
            sampling=options.pop("sampling", SAMPLING),
            **options,
        )
        return LLMAgent("solver", opts, {"llm": svc})

    yield make
    for svc in services:
        await svc.stop()
    for srv in servers:
        await srv.close()


def task(seed: int = 1234) -> Message:
    return new_message("row-1", {"q": "2+2"}, {"q": "2+2"}, seed=seed)


def record(step_agent_message: tuple[Agent, Message]) -> Message:
    """What the workflow makes of the last step: the error record of a failed task."""
    _, message = step_agent_message
    wf = Sequence(["solver"])
    wf.start(message)
    assert wf.advance(message) is None
    return message


@pytest.mark.parametrize(
    ("code", "transient", "attempts"),
    [
        (500, True, 2),
        (503, True, 2),
        (408, True, 2),
        (429, True, 2),
        (404, False, 1),
        (400, False, 1),
        (401, False, 1),
    ],
)
async def test_http_failure_kinds(agent_for, code: int, transient: bool, attempts: int) -> None:
    agent = await agent_for(default=status(code))
    message = task()
    step = await agent.run(message)
    assert not step.ok
    assert step.transient is transient
    assert step.http_status == code
    assert step.attempts == attempts
    assert f"HTTP {code}" in (step.error or "")
    message.history.append(step)
    rec = record((agent, message))
    assert rec.status == ERROR
    assert rec.error is not None
    assert rec.error["kind"] == (TRANSIENT if transient else PERMANENT)
    assert rec.error["status"] == code and rec.error["attempts"] == attempts
    assert rec.error["role"] == "solver"


async def test_connection_refused_is_transient(agent_for) -> None:
    agent = await agent_for(url=closed_port_url(), max_retries=2)
    message = task()
    step = await agent.run(message)
    assert not step.ok and step.transient
    assert step.http_status is None and step.attempts == 3
    message.history.append(step)
    rec = record((agent, message))
    assert rec.error is not None and rec.error["kind"] == TRANSIENT and rec.error["attempts"] == 3


async def test_parse_failure_keeps_the_reply_and_its_tokens(agent_for) -> None:
    agent = await agent_for([ok("The answer is four")], parse="test_agent_errors:broken_parse")
    message = task()
    step = await agent.run(message)
    assert not step.ok and step.transient is False
    assert "test_agent_errors:broken_parse" in (step.error or "")
    assert "no verdict" in (step.error or "")
    # The reply is kept: text, usage, model and provenance.
    assert step.content == "The answer is four"
    assert step.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert step.model == "served-model" and step.finish_reason == "stop"
    assert step.endpoint == 0 and step.attempts == 1
    assert step.seed == 1234 and step.template == agent.template
    assert step.sampling == {"top_p": 0.9, **SAMPLING}
    message.history.append(step)
    rec = record((agent, message))
    assert rec.error is not None and rec.error["kind"] == PERMANENT
    stats = RunStats()
    stats.observe(rec, None)
    assert (stats.prompt_tokens, stats.completion_tokens) == (5, 2)
    assert stats.roles["solver"].errors == 1


async def test_parse_returning_a_non_dict_is_a_permanent_failure(agent_for) -> None:
    agent = await agent_for([ok("x")])
    agent.parse = lambda message, text: "not a dict"  # type: ignore[method-assign]
    step = await agent.run(task())
    assert not step.ok and not step.transient and step.content == "x"
    assert "expected a dict" in (step.error or "")


async def test_provenance_of_an_llm_step(agent_for) -> None:
    agent = await agent_for([ok("four")], parse="test_agent_errors:answer_parse", two=True)
    message = task(seed=77)
    step = await agent.run(message)
    assert step.ok and step.data == {"answer": "FOUR"}
    assert step.model == "served-model"  # as returned, not as requested
    assert step.endpoint == 1  # the dead first endpoint was skipped
    assert step.finish_reason == "stop"
    assert step.sampling == {"top_p": 0.9, "temperature": 0.3, "max_tokens": 8}
    assert step.seed == 77
    assert isinstance(step.template, str) and len(step.template) == 12


async def test_template_hash_follows_the_prompts(agent_for) -> None:
    a = await agent_for(prompt="Answer {{ q }}")
    b = await agent_for(prompt="Answer {{ q }}")
    c = await agent_for(prompt="Solve {{ q }}")
    d = await agent_for(prompt="Answer {{ q }}", system="You are verbose.")
    assert a.template == b.template
    assert len({a.template, c.template, d.template}) == 3


async def test_explicit_seed_in_sampling_is_recorded(agent_for) -> None:
    agent = await agent_for([ok("x")], sampling={"seed": 5, "temperature": 0.0})
    step = await agent.run(task(seed=99))
    assert step.ok and step.seed == 5 and step.sampling == {"top_p": 0.9, "temperature": 0.0}


async def test_preprocess_error_is_permanent(agent_for) -> None:
    agent = await agent_for(prompt="Answer {{ missing_field }}")
    step = await agent.run(task())
    assert not step.ok and not step.transient
    assert step.http_status is None and step.attempts == 0
    assert "missing_field" in (step.error or "")


async def test_function_agent_errors() -> None:
    disk = FunctionAgent("f", FunctionOptions(function="test_agent_errors:disk_error"), {})
    step = await disk.run(task())
    assert not step.ok and step.transient and "No space left" in (step.error or "")
    assert step.sampling is None and step.template is None
    buggy = FunctionAgent("f", FunctionOptions(function="test_agent_errors:bug"), {})
    step = await buggy.run(task())
    assert not step.ok and not step.transient
    assert (step.error or "").startswith("roles.f (test_agent_errors:bug) at ")
    assert (step.error or "").endswith("test_agent_errors.py:41: KeyError: 'oops'")


def test_error_kind() -> None:
    import asyncio

    import aiohttp

    assert error_kind(ServiceError("x", retryable=True, status=503, attempts=4)) == (True, 503, 4)
    assert error_kind(ServiceError("x", status=404)) == (False, 404, 1)
    assert error_kind(asyncio.TimeoutError()) == (True, None, 1)
    assert error_kind(ConnectionRefusedError()) == (True, None, 1)
    assert error_kind(aiohttp.ServerDisconnectedError()) == (True, None, 1)
    assert error_kind(ValueError("bad")) == (False, None, 0)
    step = failed_step("r", ServiceError("boom", retryable=True, status=502, attempts=3))
    assert (step.ok, step.transient, step.http_status, step.attempts) == (False, True, 502, 3)
