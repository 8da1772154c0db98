"""Simulator rules scripts, true token counts and strict OpenAI validation, over real HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from peerflow.services.sim_llm import SimLLMServer, SimOptions, build_parser, count_tokens

Sim = Callable[..., AbstractAsyncContextManager[tuple[SimLLMServer, aiohttp.ClientSession]]]


def tool(name: str, **props: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"the {name} tool",
            "parameters": {"type": "object", "properties": props},
        },
    }


CALC = tool("calculator", expression={"type": "string"})
LOOKUP = tool("lookup", key={"type": "string"})

RULES: list[dict[str, Any]] = [
    {"when": {"role": "judge", "turn": 1}, "reply": "judge again"},
    {"when": {"role": "judge"}, "reply": "I am the judge of turn {turn}"},
    {"when": {"system": "(?i)pirate"}, "reply": "Arr"},
    {"when": {"last_role": "tool", "tool": r"(?P<value>\d+)"}, "reply": "The result is {value}."},
    {
        "when": {"tools": ["calculator", "lookup"], "user": "both"},
        "reply": {
            "text": "Checking.",
            "tool_calls": [
                {"name": "calculator", "arguments": {"expression": "6*7"}},
                {"name": "lookup", "arguments": '{"key": "capital"}'},
            ],
        },
    },
    {
        "when": {"user": r"compute (?P<expr>[0-9+*/ -]+)"},
        "reply": {"tool_calls": [{"name": "calculator", "arguments": {"expression": "{expr}"}}]},
    },
    {"when": {"last": "(?i)^score this"}, "reply": {"json": {"score": 3, "why": "turn {turn}"}}},
    {"when": {"user": "structured"}, "reply": {"json": "schema"}},
    {"when": {"turn": {"min": 2}}, "reply": "AGREE"},
    {"when": {"tools": True}, "reply": "tools offered but unused"},
    {"match": "^ping$", "reply": "pong"},
]


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    @asynccontextmanager
    async def start(
        rules: Any = RULES, suffix: str = ".yaml", **overrides: Any
    ) -> AsyncIterator[tuple[SimLLMServer, aiohttp.ClientSession]]:
        path = tmp_path / f"rules{suffix}"
        path.write_text(json.dumps(rules) if suffix == ".json" else yaml.safe_dump(rules))
        opts = {"port": 0, "time_scale": 0.0, "script": str(path), **overrides}
        server = SimLLMServer(SimOptions(**opts))
        await server.start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                yield server, session
        finally:
            await server.stop()

    return start


async def post(
    server: SimLLMServer, session: aiohttp.ClientSession, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{server.url}/chat/completions", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def ok(server: SimLLMServer, session: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    status, data = await post(server, session, {"model": "m", **body})
    assert status == 200, data
    return data


def msg(data: dict[str, Any]) -> dict[str, Any]:
    return data["choices"][0]["message"]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def system(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "system", "content": text, **extra}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


# ------------------------------------------------------------------------- selectors


async def test_role_selector_reads_standard_fields_only(sim: Sim) -> None:
    async with sim() as (server, session):
        by_prompt = await ok(server, session, messages=[system("You are the judge."), user("go")])
        assert msg(by_prompt)["content"] == "I am the judge of turn 0"
        by_user_field = await ok(server, session, messages=[user("go")], user="judge")
        assert msg(by_user_field)["content"] == "I am the judge of turn 0"
        by_metadata = await ok(server, session, messages=[user("go")], metadata={"role": "judge"})
        assert msg(by_metadata)["content"].startswith("I am the judge")
        by_name = await ok(server, session, messages=[system("Decide.", name="judge"), user("x")])
        assert msg(by_name)["content"].startswith("I am the judge")
        other = await ok(server, session, messages=[system("You are a debater."), user("go")])
        assert "judge" not in (msg(other)["content"] or "")
        # turn: the assistant messages in the request
        again = await ok(
            server,
            session,
            messages=[system("You are the judge."), user("go"), assistant("x"), user("more")],
        )
        assert msg(again)["content"] == "judge again"


async def test_system_last_turn_and_tools_selectors(sim: Sim) -> None:
    async with sim() as (server, session):
        pirate = await ok(server, session, messages=[system("Talk like a PIRATE."), user("hi")])
        assert msg(pirate)["content"] == "Arr"
        score = await ok(server, session, messages=[user("Score this essay")])
        assert json.loads(msg(score)["content"]) == {"score": 3, "why": "turn 0"}
        agree = await ok(
            server,
            session,
            messages=[user("q"), assistant("a"), user("b"), assistant("c"), user("d")],
        )
        assert msg(agree)["content"] == "AGREE"
        offered = await ok(server, session, messages=[user("hello")], tools=[LOOKUP])
        assert msg(offered)["content"] == "tools offered but unused"
        none = await ok(server, session, messages=[user("hello")])
        assert msg(none)["content"] != "tools offered but unused"  # filler
        assert (await ok(server, session, messages=[user("ping")]))["choices"][0]["message"][
            "content"
        ] == "pong"


async def test_json_rules_file_and_default(sim: Sim) -> None:
    rules = {"rules": [{"when": {"user": "x"}, "reply": "matched x"}], "default": "nothing"}
    async with sim(rules, suffix=".json") as (server, session):
        assert msg(await ok(server, session, messages=[user("xyz")]))["content"] == "matched x"
        assert msg(await ok(server, session, messages=[user("abc")]))["content"] == "nothing"


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ([{"when": {"speaker": "x"}, "reply": "y"}], "unknown selectors speaker"),
        ([{"when": {"user": "("}, "reply": "y"}], "bad regex"),
        ([{"when": {"turn": "two"}, "reply": "y"}], "turn"),
        ([{"reply": {"tool_calls": [{"name": "f", "args": {}}]}}], "tool_calls"),
        ([{"reply": {"json": {}, "text": "x"}}], "json replaces the text"),
        ([{"when": {}}], "'reply'"),
    ],
)
def test_bad_rules_fail_at_startup(tmp_path: Path, rules: Any, error: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    with pytest.raises(ValueError, match=re.escape(error)):
        SimLLMServer(SimOptions(script=str(path)))


# --------------------------------------------------------------------------- replies

CALL_ID = re.compile(r"call_[0-9a-f]{16}")


async def test_one_tool_call_then_answer_from_its_result(sim: Sim) -> None:
    async with sim() as (server, session):
        ask = [user("compute 6 * 7")]
        data = await ok(server, session, messages=ask, tools=[CALC])
        m = msg(data)
        assert data["choices"][0]["finish_reason"] == "tool_calls"
        assert m["content"] is None and len(m["tool_calls"]) == 1
        call = m["tool_calls"][0]
        assert CALL_ID.fullmatch(call["id"]) and call["type"] == "function"
        assert call["function"]["name"] == "calculator"
        assert json.loads(call["function"]["arguments"]) == {"expression": "6 * 7"}
        assert data["usage"]["completion_tokens"] == count_tokens(
            "calculator" + call["function"]["arguments"]
        )
        same = await ok(server, session, messages=ask, tools=[CALC])
        assert msg(same)["tool_calls"] == m["tool_calls"]  # deterministic ids
        answer = await ok(
            server,
            session,
            messages=[
                *ask,
                {"role": "assistant", "content": None, "tool_calls": m["tool_calls"]},
                {"role": "tool", "tool_call_id": call["id"], "content": "42"},
            ],
            tools=[CALC],
        )
        assert msg(answer)["content"] == "The result is 42."
        # Without the tool offered, the calling rule does not match.
        plain = await ok(server, session, messages=ask)
        assert "tool_calls" not in msg(plain)


async def test_two_tool_calls_in_one_reply(sim: Sim) -> None:
    async with sim() as (server, session):
        data = await ok(server, session, messages=[user("both please")], tools=[CALC, LOOKUP])
        m = msg(data)
        assert m["content"] == "Checking."
        calls = m["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["calculator", "lookup"]
        assert all(CALL_ID.fullmatch(c["id"]) for c in calls)
        assert calls[0]["id"] != calls[1]["id"]
        assert json.loads(calls[1]["function"]["arguments"]) == {"key": "capital"}
        # Both answered: a strict server accepts the exchange.
        follow = await ok(
            server,
            session,
            messages=[
                user("both please"),
                {"role": "assistant", "content": "Checking.", "tool_calls": calls},
                {"role": "tool", "tool_call_id": calls[1]["id"], "content": "Paris"},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "42"},
            ],
            tools=[CALC, LOOKUP],
        )
        assert msg(follow)["content"] == "The result is 42."


SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["A", "B"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "rounds": {"type": "integer", "minimum": 1, "maximum": 3},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 5}]},
    },
    "required": ["verdict", "confidence", "rounds", "ok", "tags", "note"],
    "$defs": {"tag": {"type": "object", "properties": {"name": {"type": "string"}}}},
}


def check_schema(value: Any) -> None:
    assert set(value) == set(SCHEMA["required"])
    assert value["verdict"] in ("A", "B")
    assert 0 <= value["confidence"] <= 1 and isinstance(value["confidence"], float)
    assert value["rounds"] in (1, 2, 3)
    assert isinstance(value["ok"], bool)
    assert len(value["tags"]) >= 2 and all(isinstance(t["name"], str) for t in value["tags"])
    assert isinstance(value["note"], str) and len(value["note"]) >= 5


async def test_json_reply_from_the_request_schema(sim: Sim) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}
    async with sim() as (server, session):
        data = await ok(server, session, messages=[user("structured")], response_format=fmt)
        value = json.loads(msg(data)["content"])
        check_schema(value)
        assert data["usage"]["completion_tokens"] == count_tokens(msg(data)["content"])
        again = await ok(server, session, messages=[user("structured")], response_format=fmt)
        assert json.loads(msg(again)["content"]) == value
        # No rule matched, but structured output was asked for: still valid JSON.
        unmatched = await ok(server, session, messages=[user("zzz")], response_format=fmt)
        check_schema(json.loads(msg(unmatched)["content"]))
    async with sim(script="lorem") as (server, session):
        data = await ok(server, session, messages=[user("zzz")], response_format=fmt)
        check_schema(json.loads(msg(data)["content"]))


# ---------------------------------------------------------------------------- tokens


async def test_scripted_text_reports_its_true_token_count(sim: Sim) -> None:
    async with sim(output_median=300, output_sigma=0.0) as (server, session):
        data = await ok(server, session, messages=[user("ping")], max_tokens=64)
        assert msg(data)["content"] == "pong"
        assert data["usage"]["completion_tokens"] == 1
        assert data["choices"][0]["finish_reason"] == "stop"
        agree = await ok(
            server,
            session,
            messages=[user("q"), assistant("a"), user("b"), assistant("c"), user("d")],
            max_tokens=512,
        )
        assert msg(agree)["content"] == "AGREE" and agree["usage"]["completion_tokens"] == 2
    long = [{"when": {}, "reply": "x" * 400}]
    async with sim(long) as (server, session):
        cut = await ok(server, session, messages=[user("go")], max_tokens=10)
        assert msg(cut)["content"] == "x" * 40
        assert cut["usage"]["completion_tokens"] == 10
        assert cut["choices"][0]["finish_reason"] == "length"
        whole = await ok(server, session, messages=[user("go")])
        assert whole["usage"]["completion_tokens"] == 100


async def test_decode_time_follows_the_counted_tokens(sim: Sim) -> None:
    """The engine runs as many steps as the reply's counted tokens, not its max_tokens."""
    async with sim(output_median=900, output_sigma=0.0) as (server, session):
        await ok(server, session, messages=[user("ping")], max_tokens=1000)
        assert server.engine.steps_run == 1


# ------------------------------------------------------------------------ validation

CALL = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"messages": [user("hi"), {"role": "tool", "tool_call_id": "call_1", "content": "4"}]},
            "must be a response to a preceding message with 'tool_calls'",
        ),
        (
            {
                "messages": [
                    user("hi"),
                    {"role": "assistant", "content": None, "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "call_9", "content": "4"},
                ]
            },
            "no open tool call has id 'call_9'",
        ),
        (
            {
                "messages": [
                    user("hi"),
                    {"role": "assistant", "content": None, "tool_calls": [CALL]},
                    user("next"),
                ]
            },
            "has no response for call_1 before messages[2]",
        ),
        (
            {"messages": [user("hi"), {"role": "assistant", "content": "", "tool_calls": [CALL]}]},
            "has no response for call_1",
        ),
        (
            {
                "messages": [
                    user("hi"),
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}],
                    },
                ]
            },
            "arguments must be a string",
        ),
        ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'"),
        ({"messages": [{"role": "user"}]}, "messages[0].content is required"),
        ({"messages": [user("x"), {"role": "assistant"}]}, "messages[1].content is required"),
        (
            {"messages": [user("x")], "tools": [{"function": {"name": "f"}}]},
            "tools[0].type must be 'function'",
        ),
        (
            {"messages": [user("x")], "tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name is required",
        ),
        (
            {"messages": [user("x")], "tools": [{"type": "function"}]},
            "tools[0].function is required",
        ),
        (
            {
                "messages": [user("x")],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}],
            },
            "parameters must be a JSON schema of type 'object'",
        ),
        (
            {
                "messages": [user("x")],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ],
            },
            "parameters must be a JSON schema of type 'object'",
        ),
    ],
)
async def test_strict_validation_rejects_like_openai(
    sim: Sim, body: dict[str, Any], needle: str
) -> None:
    async with sim(script="lorem") as (server, session):
        status, data = await post(server, session, {"model": "m", **body})
        assert status == 400, data
        error = data["error"]
        assert error["type"] == "invalid_request_error"
        assert needle in error["message"]
        assert error["param"]
        assert server.counters["bad_requests"] == 1
    async with sim(script="lorem", strict=False) as (server, session):  # --strict false
        status, data = await post(server, session, {"model": "m", **body})
        assert status == 200, data


async def test_valid_tool_exchange_is_accepted(sim: Sim) -> None:
    async with sim(script="lorem") as (server, session):
        await ok(
            server,
            session,
            tools=[CALC],
            tool_choice="auto",
            messages=[
                system("sys"),
                user("hi"),
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "4"},
                {"role": "assistant", "content": "It is 4."},
                {"role": "user", "name": "judge", "content": [{"type": "text", "text": "ok"}]},
            ],
        )


def test_strict_flag_parses_as_the_service_passes_it() -> None:
    assert build_parser().parse_args(["--strict", "false"]).strict is False
    assert build_parser().parse_args([]).strict is True
    assert "tool_calls" in build_parser().format_help()


# --------------------------------------------------------------------- run summaries


async def test_summary_says_simulated_for_a_simulator_behind_kind_openai(
    sim: Sim, tmp_path: Path
) -> None:
    from peerflow.config import load_config
    from peerflow.run import run_async

    (tmp_path / "data.jsonl").write_text('{"id": "a", "q": "ping"}\n{"id": "b", "q": "ping"}\n')
    async with sim() as (server, _session):
        config_path = tmp_path / "flow.yaml"
        config_path.write_text(
            yaml.safe_dump(
                {
                    "dataset": {"path": "data.jsonl", "id_field": "id"},
                    "task": {"message": "{{ q }}"},
                    "services": {
                        "llm": {"kind": "openai", "model": "m", "endpoints": [server.url]}
                    },
                    "roles": {"solver": {"agent": "llm", "service": "llm"}},
                    "workflow": {"kind": "sequence", "roles": ["solver"]},
                    "output": {"path": "out.jsonl"},
                }
            )
        )
        summary = await run_async(load_config(config_path), progress=False)
    assert summary["exit_code"] == 0, summary
    label = summary["services"]["llm"]
    assert label.startswith("SIMULATED") and server.url in label
    recs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["history"][-1]["content"] for r in recs] == ["pong", "pong"]
    assert all(r["history"][-1]["usage"]["completion_tokens"] == 1 for r in recs)


def test_summary_label_of_a_real_server_is_unchanged(tmp_path: Path) -> None:
    from peerflow.config import load_config
    from peerflow.run import service_labels

    (tmp_path / "flow.yaml").write_text(
        yaml.safe_dump(
            {
                "dataset": {"path": "data.jsonl"},
                "services": {
                    "llm": {"kind": "openai", "model": "m", "endpoints": ["http://h:1/v1"]}
                },
                "roles": {"solver": {"agent": "llm", "service": "llm"}},
                "workflow": {"kind": "sequence", "roles": ["solver"]},
                "output": {"path": "out.jsonl"},
            }
        )
    )
    labels = service_labels(load_config(tmp_path / "flow.yaml"))
    assert labels == {"llm": "m at http://h:1/v1"}


PYTHON_SCRIPT = """
def reply(request):
    text = request["messages"][-1]["content"]
    if text == "boom":
        raise KeyError("no such thing")
    if text == "three":
        return 3
    if text.startswith("call"):
        call = {"name": "calculator", "arguments": {"expression": "1+1"}}
        return {"content": None, "tool_calls": [call]}
    return "seed " + str(request.get("seed")) + ": " + text.upper()
"""


async def test_a_python_script_answers_text_and_tool_calls_and_its_errors_say_so(
    sim: Sim, tmp_path: Path
) -> None:
    path = tmp_path / "double.py"
    path.write_text(PYTHON_SCRIPT)
    async with sim(script=f"{path}:reply") as (server, session):
        data = await ok(server, session, messages=[user("hello")], seed=7)
        assert msg(data)["content"] == "seed 7: HELLO"
        call = msg(await ok(server, session, messages=[user("call it")], tools=[CALC]))
        assert CALL_ID.fullmatch(call["tool_calls"][0]["id"])
        assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"expression": "1+1"}
        for text, error in (
            ("boom", "raised KeyError: 'no such thing'"),
            ("three", "returned int"),
        ):
            status, body = await post(server, session, {"model": "m", "messages": [user(text)]})
            assert status == 500 and error in body["error"]["message"], body
            assert f"{path}:reply" in body["error"]["message"]
        assert server.counters["script_errors"] == 2


def test_a_python_script_that_is_missing_fails_at_startup(tmp_path: Path) -> None:
    from peerflow.services.sim_llm import load_script

    with pytest.raises(ValueError, match="is not a file"):
        load_script(SimOptions(script=str(tmp_path / "nope.py") + ":reply"))
    (tmp_path / "s.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="has no function 'reply'"):
        load_script(SimOptions(script=str(tmp_path / "s.py") + ":reply"))
