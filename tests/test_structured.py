"""Structured outputs: the schema is asked for per service, the reply checked, an invalid
one re-asked with its error, and the row rejected (raw replies kept) when it stays invalid."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_chat import FakeChat
from pydantic import BaseModel, Field

from peerflow.agents.llm import LLMAgent, LLMOptions
from peerflow.agents.structured import OutputSchema, StructuredOptions
from peerflow.config import ConfigError, RunConfig
from peerflow.message import new_message
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.services.openai_client import OpenAIService


class Scores(BaseModel):
    """A quality verdict (used by name from the configs below)."""

    clarity: int = Field(ge=0, le=5)
    depth: int = Field(ge=0, le=5)
    notes: list[str] = []


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
}


@pytest.fixture
async def chat() -> AsyncIterator[FakeChat]:
    replies: list[str] = []

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        return {"content": replies.pop(0) if replies else '{"clarity": 1, "depth": 2}'}

    server = FakeChat(reply)
    server.replies = replies  # type: ignore[attr-defined]
    await server.start()
    yield server
    await server.close()


async def agent(chat: FakeChat, mode: str = "response_format", **options: Any) -> LLMAgent:
    service = OpenAIService("llm", model="m", endpoints=[chat.url], structured_output=mode)
    await service.start()
    opts = LLMOptions(service="llm", prompt="Rate: {{ text }}", **options)
    return LLMAgent("judge", opts, {"llm": service})


@pytest.mark.parametrize(
    ("mode", "field"),
    [
        ("response_format", "response_format"),
        ("json_object", "response_format"),
        ("vllm", "structured_outputs"),
        ("guided_json", "guided_json"),
        ("llama_cpp", "json_schema"),
    ],
)
async def test_each_mode_asks_for_the_schema_its_way(chat: FakeChat, mode: str, field: str) -> None:
    a = await agent(chat, mode, structured={"schema": "test_structured:Scores"})
    step = await a.run(new_message("t1", {}, {"text": "x"}))
    assert step.ok and step.data == {"clarity": 1, "depth": 2, "notes": []}
    body = chat.bodies[-1]
    sent = body[field]
    schema = Scores.model_json_schema()
    if mode == "response_format":
        assert sent == {
            "type": "json_schema",
            "json_schema": {"name": "Scores", "schema": schema},
        }
    elif mode == "json_object":
        assert sent == {"type": "json_object", "schema": schema}
    elif mode == "vllm":
        assert sent == {"json": schema}
    else:
        assert sent == schema
    # The schema is not repeated in every record's sampling, but the template hash covers it.
    assert field not in (step.sampling or {})
    assert step.template is not None


async def test_prompt_mode_states_the_schema_in_the_chat(chat: FakeChat) -> None:
    a = await agent(chat, "prompt", structured={"schema": SCHEMA})
    chat.replies.append('Sure! ```json\n{"answer": "4", "confidence": 0.9}\n```')  # type: ignore[attr-defined]
    step = await a.run(new_message("t1", {}, {"text": "x"}))
    assert step.data == {"answer": "4", "confidence": 0.9}
    last = chat.bodies[-1]["messages"][-1]
    assert last["role"] == "user" and '"required": ["answer", "confidence"]' in last["content"]
    assert not {"response_format", "guided_json"} & set(chat.bodies[-1])


async def test_an_invalid_reply_is_reasked_with_its_error(chat: FakeChat) -> None:
    a = await agent(chat, structured={"schema": "test_structured:Scores", "retries": 2})
    chat.replies.extend(['{"clarity": 9, "depth": 1}', '{"clarity": 3}'])  # type: ignore[attr-defined]
    step = await a.run(new_message("t1", {}, {"text": "x"}))
    assert step.ok and step.data is not None
    assert step.data["clarity"] == 1 and step.data["depth"] == 2  # the third reply
    assert [r["content"] for r in step.data["invalid_replies"]] == [
        '{"clarity": 9, "depth": 1}',
        '{"clarity": 3}',
    ]
    assert (
        "clarity: Input should be less than or equal to 5"
        in step.data["invalid_replies"][0]["error"]
    )
    assert "depth: Field required" in step.data["invalid_replies"][1]["error"]
    assert len(chat.bodies) == 3
    reask = chat.bodies[1]["messages"][-2:]
    assert reask[0] == {"role": "assistant", "content": '{"clarity": 9, "depth": 1}'}
    assert "less than or equal to 5" in reask[1]["content"]
    assert step.usage == {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}


async def test_still_invalid_after_the_reasks_rejects_and_keeps_the_replies(
    chat: FakeChat,
) -> None:
    a = await agent(chat, structured={"schema": SCHEMA, "retries": 1, "reject_reason": "no_json"})
    chat.replies.extend(["I think 4.", '{"answer": 4}'])  # type: ignore[attr-defined]
    step = await a.run(new_message("t1", {}, {"text": "x"}))
    assert step.ok  # the service answered: the workflow rejects, nothing failed
    assert step.content == '{"answer": 4}'
    assert step.data is not None
    assert step.data["reject"]["reason"] == "no_json"
    assert "answer: 4 is not of type 'string'" in step.data["reject"]["error"]
    assert [r["content"] for r in step.data["invalid_replies"]] == ["I think 4.", '{"answer": 4}']
    assert "not valid JSON" in step.data["invalid_replies"][0]["error"]
    assert len(chat.bodies) == 2


def test_bad_schemas_are_config_errors() -> None:
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        OutputSchema(StructuredOptions(schema={"type": "objekt"}), "judge")
    with pytest.raises(ValueError, match="expected a pydantic model class or a dict"):
        OutputSchema(StructuredOptions(schema="json:dumps"), "judge")


def _config(tmp: Path, url: str, **role: Any) -> RunConfig:
    data = tmp / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"doc {i}"}) + "\n" for i in range(6))
    )
    return RunConfig.model_validate(
        {
            "dataset": {"path": str(data), "id_field": "id"},
            "services": {"llm": {"kind": "openai", "model": "m", "endpoints": [url]}},
            "roles": {
                "judge": {
                    "service": "llm",
                    "prompt": "Rate: {{ text }}",
                    "structured": {"schema": "test_structured:Scores", "retries": 0},
                    "reject": [{"when": {"clarity": 0}, "reason": "unclear"}],
                    **role,
                }
            },
            "workflow": {"kind": "sequence", "roles": ["judge"]},
            "runtime": {"progress": False},
            "output": {"path": str(tmp / "out.jsonl"), "success_only": True},
        }
    )


async def test_a_run_rejects_invalid_and_unwanted_replies(tmp_path: Path) -> None:
    def reply(body: dict[str, Any]) -> dict[str, Any]:
        n = int(body["messages"][-1]["content"].split()[-1])
        return {
            "content": ["not json", '{"clarity": 0, "depth": 1}', '{"clarity": 4, "depth": 5}'][
                n % 3
            ]
        }

    server = FakeChat(reply)
    await server.start()
    try:
        cfg = _config(tmp_path, server.url)
        summary = await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    finally:
        await server.close()
    assert summary["by_status"] == {"rejected": 4, "ok": 2}
    reasons = summary["funnel"]["steps"][0]["reasons"]
    assert reasons["invalid_judge_output"]["rows"] == 2 and reasons["unclear"]["rows"] == 2
    accepted = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {r["id"] for r in accepted} == {"r2", "r5"}
    assert accepted[0]["history"][-1]["data"] == {"clarity": 4, "depth": 5, "notes": []}
    rejected = (tmp_path / "out.rejected.jsonl").read_text().splitlines()
    raw = [json.loads(line) for line in rejected]
    invalid = [r for r in raw if r["reason"] == "invalid_judge_output"]
    assert [r["history"][-1]["content"] for r in invalid] == ["not json", "not json"]
    assert invalid[0]["rejection"]["detail"]["error"].startswith("the reply is not valid JSON")


def test_check_reports_a_bad_schema_with_its_key(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "http://127.0.0.1:9/v1", structured={"schema": "test_structured:nope"})
    with pytest.raises(ConfigError, match=r"roles\.judge\.structured\.schema"):
        Pipeline(cfg)
