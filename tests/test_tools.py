"""Tool calls as the OpenAI API defines them: parallel calls, results, errors, caps.

Runs go through the real pipeline and local runtime against a small OpenAI-like
server (tests/fake_chat.py) that rejects, with a 400, every request a strict
OpenAI server would reject; so a framework bug shows as a failed task here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pytest
from fake_chat import call
from pydantic import Field

from peerflow.agents.tools import ToolDecl, ToolsAgent, ToolsOptions, tool_from_function
from peerflow.config import ConfigError, RunConfig
from peerflow.message import Message, Step, new_message
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.testing import strict_chat_errors

ASSISTANT = "You are the assistant."
CRITIC = "You are the critic."


def config(tmp: Path, url: str, *, rows: int = 3, **over: Any) -> RunConfig:
    data: dict[str, Any] = {
        "name": "tools",
        "dataset": {"path": str(tmp / "rows.jsonl"), "id_field": "id"},
        "task": {"message": "question {{ n }}"},
        "services": {"llm": {"kind": "openai", "model": "fake", "endpoints": [url]}},
        "roles": {
            "assistant": {
                "service": "llm",
                "system": ASSISTANT,
                "tools": "tools",
                "sampling": {"max_tokens": 16},
            },
            "tools": {
                "agent": "tools",
                "functions": ["peerflow.testing:add", "peerflow.testing:slow"],
                "timeout": 5,
            },
        },
        "workflow": {"kind": "sequence", "roles": ["assistant"], "tool_role": "tools"},
        "runtime": {"kind": "local", "max_in_flight": 4, "progress": False},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with open(tmp / "rows.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "n": i}) + "\n")
    return RunConfig.model_validate(data)


async def run(cfg: RunConfig) -> list[dict[str, Any]]:
    await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    lines = Path(cfg.output.path).read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["id"])


def last_is_tool(body: dict[str, Any]) -> bool:
    return body["messages"][-1]["role"] == "tool"


def two_adds(body: dict[str, Any]) -> dict[str, Any]:
    """Asks for two additions at once, then reports the tool outputs it was shown."""
    if last_is_tool(body):
        outs = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        return {"content": "sums " + " ".join(outs)}
    return {
        "tool_calls": [
            call("c1", "add", '{"a": 2, "b": 3}'),
            call("c2", "add", '{"a": 10, "b": 20}'),
        ]
    }


# --- declaring tools -----------------------------------------------------------------


def lookup(key: Annotated[str, Field(description="the key to look up")], default: int = 0) -> str:
    """Look a key up in the table."""
    return f"{key}={default}"


def test_schema_is_generated_from_hints_and_docstring() -> None:
    from peerflow.testing import add

    tool = tool_from_function(add, source="peerflow.testing:add")
    assert tool.schema == {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "description": "the first addend"},
                    "b": {"type": "integer", "description": "the second addend"},
                },
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    }
    params = tool_from_function(lookup, source="x:lookup").parameters
    assert params["properties"]["key"]["description"] == "the key to look up"
    assert params["properties"]["default"]["default"] == 0
    assert params["required"] == ["key"]
    assert strict_chat_errors({"messages": [], "tools": [tool.schema]}) == []


def test_yaml_schema_paired_with_an_implementation() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    opts = ToolsOptions(
        functions=[
            ToolDecl(
                function="peerflow.testing:add", name="plus", description="Sum.", parameters=schema
            )
        ]
    )
    agent = ToolsAgent("tools", opts, {})
    assert agent.schemas == [
        {
            "type": "function",
            "function": {"name": "plus", "description": "Sum.", "parameters": schema},
        }
    ]


def test_bad_tool_declarations_are_config_errors(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "http://127.0.0.1:9/v1",
        roles={
            "assistant": {"service": "llm", "tools": ["add", "nosuch"]},
            "tools": {"agent": "tools", "functions": ["peerflow.testing:add"]},
        },
    )
    with pytest.raises(ConfigError, match=r"roles.assistant.tools.1.*'nosuch' is neither"):
        Pipeline(cfg)
    cfg = config(
        tmp_path,
        "http://127.0.0.1:9/v1",
        roles={
            "assistant": {"service": "llm"},
            "tools": {"agent": "tools", "functions": ["peerflow.testing:nope"]},
        },
    )
    with pytest.raises(ConfigError, match=r"roles.tools.functions.*has no 'nope'"):
        Pipeline(cfg)


# --- executing calls ------------------------------------------------------------------


def asked(*calls: dict[str, Any]) -> Message:
    msg = new_message("t", {}, {})
    msg.history.append(Step(role="assistant", tool_calls=list(calls)))
    return msg


async def test_every_failure_is_an_error_result_never_a_crash() -> None:
    opts = ToolsOptions(
        functions=["peerflow.testing:add", "peerflow.testing:slow", "peerflow.testing:fail"],
        timeout=0.05,
    )
    agent = ToolsAgent("tools", opts, {})
    msg = asked(
        call("ok", "add", '{"a": 1, "b": 2}'),
        call("badarg", "add", '{"a": "x", "b": 2}'),
        call("missing", "add", '{"a": 1}'),
        call("extra", "add", '{"a": 1, "b": 2, "c": 3}'),
        call("nojson", "add", '{"a": 1,'),
        call("unknown", "mul", "{}"),
        call("raises", "fail", '{"reason": "boom"}'),
        call("timeout", "slow", '{"seconds": 5}'),
    )
    step = await agent.run(msg)
    assert step.ok
    res = {r["tool_call_id"]: r for r in step.tool_results}
    assert [r["tool_call_id"] for r in step.tool_results] == [
        c["id"] for c in msg.history[0].tool_calls
    ]
    assert res["ok"] == {"tool_call_id": "ok", "name": "add", "content": "3", "is_error": False}
    assert all(r["is_error"] for k, r in res.items() if k != "ok")
    assert "invalid arguments: a:" in res["badarg"]["content"]
    assert "b: Field required" in res["missing"]["content"]
    assert "c: Extra inputs are not permitted" in res["extra"]["content"]
    assert "not valid JSON" in res["nojson"]["content"]
    assert "unknown tool 'mul'" in res["unknown"]["content"] and "add" in res["unknown"]["content"]
    assert res["raises"]["content"] == "RuntimeError: boom"
    assert "timed out after 0.05 s" in res["timeout"]["content"]
    assert step.data == {"tool_errors": 7}


# --- whole runs against a strict server ------------------------------------------------


async def test_two_parallel_calls_give_two_tool_messages_in_the_next_request(
    tmp_path: Path, fake: Any
) -> None:
    server = await fake(two_adds)
    records = await run(config(tmp_path, server.url))
    assert server.rejected == []
    assert [r["status"] for r in records] == ["ok"] * 3
    second = [b for b in server.bodies if last_is_tool(b)]
    assert len(second) == 3
    tail = second[0]["messages"][-3:]
    assert tail[0]["role"] == "assistant"
    assert [c["id"] for c in tail[0]["tool_calls"]] == ["c1", "c2"]
    assert tail[1] == {"role": "tool", "tool_call_id": "c1", "content": "5"}
    assert tail[2] == {"role": "tool", "tool_call_id": "c2", "content": "30"}
    assert [t["function"]["name"] for t in server.bodies[0]["tools"]] == ["add", "slow"]
    # The record holds the full exchange: calls, every result, the final answer.
    history = records[0]["history"]
    assert [s["role"] for s in history] == ["task", "assistant", "tools", "assistant"]
    assert [c["id"] for c in history[1]["tool_calls"]] == ["c1", "c2"]
    assert history[2]["tool_results"] == [
        {"tool_call_id": "c1", "name": "add", "content": "5", "is_error": False},
        {"tool_call_id": "c2", "name": "add", "content": "30", "is_error": False},
    ]
    assert history[3]["content"] == "sums 5 30"


def assistant_then_critic(body: dict[str, Any]) -> dict[str, Any]:
    system = body["messages"][0]["content"]
    if system == CRITIC:
        assert all(m["role"] != "tool" for m in body["messages"])
        return {"content": "critique"}
    if last_is_tool(body):
        return {"content": "answer " + body["messages"][-1]["content"]}
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
    return {
        "tool_calls": [
            call(f"t{turn}a", "add", '{"a": 1, "b": 1}'),
            call(f"t{turn}b", "add", '{"a": 2, "b": 2}'),
        ]
    }


async def test_strict_validator_passes_every_request_of_a_multi_turn_tool_dialogue(
    tmp_path: Path, fake: Any
) -> None:
    server = await fake(assistant_then_critic)
    roles = {
        "assistant": {
            "service": "llm",
            "system": ASSISTANT,
            "tools": ["add"],
            "conversation": ["assistant", "critic"],
        },
        "critic": {
            "service": "llm",
            "system": CRITIC,
            "view": {"include": ["assistant", "critic"], "tools": "summary"},
        },
        "tools": {"agent": "tools", "functions": ["peerflow.testing:add"]},
    }
    workflow = {
        "kind": "loop",
        "roles": ["assistant", "critic"],
        "max_turns": 3,
        "tool_role": "tools",
    }
    records = await run(config(tmp_path, server.url, roles=roles, workflow=workflow))
    assert server.rejected == []
    assert all(r["status"] == "ok" for r in records)
    for body in server.bodies:
        assert strict_chat_errors(body) == []
    # The assistant's third turn sees its two earlier exchanges, each fully answered.
    last = server.by_system(ASSISTANT)[-1]["messages"]
    assert sum(1 for m in last if m["role"] == "tool") == 6
    # The critic sees the assistant's calls as a labelled summary, never as tool messages.
    critic = server.by_system(CRITIC)[0]["messages"]
    assert any("[called add(" in m["content"] and "-> 2]" in m["content"] for m in critic)
    roles_seen = [s["role"] for s in records[0]["history"]]
    assert roles_seen == ["task", *(["assistant", "tools", "assistant", "critic"] * 3)]


def bad_then_good(body: dict[str, Any]) -> dict[str, Any]:
    tools = [m for m in body["messages"] if m["role"] == "tool"]
    if not tools:
        return {"tool_calls": [call("x1", "add", '{"a": "two", "b": 3}')]}
    if len(tools) == 1:
        assert tools[0]["content"].startswith("ERROR: invalid arguments")
        return {"tool_calls": [call("x2", "add", '{"a": 2, "b": 3}')]}
    return {"content": "fixed: " + tools[-1]["content"]}


async def test_bad_arguments_reach_the_model_as_an_error_and_the_task_goes_on(
    tmp_path: Path, fake: Any
) -> None:
    server = await fake(bad_then_good)
    records = await run(config(tmp_path, server.url, rows=1))
    assert server.rejected == []
    (rec,) = records
    assert rec["status"] == "ok", rec.get("error")
    assert rec["history"][-1]["content"] == "fixed: 5"
    results = [s["tool_results"][0] for s in rec["history"] if s.get("tool_results")]
    assert [r["is_error"] for r in results] == [True, False]
    assert rec["history"][2]["data"] == {"tool_errors": 1}


def always_bad(body: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [call("b1", "add", "{}"), call("b2", "nosuch", "{}")]}


async def test_tool_error_cap_ends_the_task_with_its_reason(tmp_path: Path, fake: Any) -> None:
    server = await fake(always_bad)
    workflow = {
        "kind": "sequence",
        "roles": ["assistant"],
        "tool_role": "tools",
        "max_tool_errors": 3,
    }
    (rec,) = await run(config(tmp_path, server.url, rows=1, workflow=workflow))
    assert rec["status"] == "error"
    assert rec["reason"] == "max_tool_errors"
    assert rec["error"]["stage"] == "workflow" and rec["error"]["tool_errors"] == 4
    assert "max_tool_errors (3) reached" in rec["error"]["message"]
    assert [s["role"] for s in rec["history"]] == [
        "task",
        "assistant",
        "tools",
        "assistant",
        "tools",
    ]


async def test_timeout_is_an_error_result(tmp_path: Path, fake: Any) -> None:
    def sleepy(body: dict[str, Any]) -> dict[str, Any]:
        if last_is_tool(body):
            return {"content": body["messages"][-1]["content"]}
        return {"tool_calls": [call("s1", "slow", '{"seconds": 30}')]}

    server = await fake(sleepy)
    roles = config(tmp_path, server.url).roles
    cfg = config(
        tmp_path,
        server.url,
        rows=1,
        roles={
            "assistant": roles["assistant"].model_dump(),
            "tools": {"agent": "tools", "functions": ["peerflow.testing:slow"], "timeout": 0.1},
        },
    )
    (rec,) = await run(cfg)
    assert rec["status"] == "ok"
    assert rec["history"][-1]["content"] == "ERROR: tool 'slow' timed out after 0.1 s"


async def test_step_cap_still_ends_an_endless_tool_loop(tmp_path: Path, fake: Any) -> None:
    server = await fake(lambda body: {"tool_calls": [call("c", "add", '{"a": 1, "b": 1}')]})
    workflow = {"kind": "sequence", "roles": ["assistant"], "tool_role": "tools", "max_steps": 6}
    (rec,) = await run(config(tmp_path, server.url, rows=1, workflow=workflow))
    assert rec["status"] == "error" and rec["reason"] == "max_steps"
    assert server.rejected == []
