"""Structured outputs from the simulator over real HTTP: the five ways to ask for a schema,
replies sized like real generations, injected invalid replies, and pool-utilisation counters."""

from __future__ import annotations

import asyncio
import enum
import json
import statistics
from typing import Any, Literal

import aiohttp
import jsonschema
import pytest
from pydantic import BaseModel, Field
from test_sim_llm import Sim, post

from peerflow.services.sim_llm import (
    SimLLMServer,
    SimOptions,
    SimServiceOptions,
    build_parser,
    count_tokens,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "reasoning": {"type": "string"},
        "verdict": {"type": "string", "enum": ["yes", "no"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "sources": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["answer", "reasoning", "verdict", "score", "confidence", "sources"],
    "additionalProperties": False,
}


def ask(schema: dict[str, Any], form: str) -> dict[str, Any]:
    """The request fields that ask for `schema` in one of the five ways servers take it."""
    if form == "response_format":
        spec = {"name": "reply", "schema": schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": spec}}
    if form == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if form == "guided_json":
        return {"guided_json": schema}
    if form == "structured_outputs":
        return {"structured_outputs": {"json": schema}}
    assert form == "json_schema"
    return {"json_schema": schema}


FORMS = ["response_format", "json_object", "guided_json", "structured_outputs", "json_schema"]


def body(content: str = "Summarise the river report.", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


async def ok(server: SimLLMServer, session: aiohttp.ClientSession, payload: Any) -> dict[str, Any]:
    status, data = await post(server, session, payload)
    assert status == 200, data
    return data


async def stats(server: SimLLMServer, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(server.url.removesuffix("/v1") + "/stats") as resp:
        assert resp.status == 200
        return await resp.json()


def content(data: dict[str, Any]) -> str:
    return data["choices"][0]["message"]["content"]


def failure(text: str, schema: dict[str, Any]) -> str | None:
    """Why `text` is not a valid reply for `schema` (as an agent checks it), or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return "not_json"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    if error is None:
        return None
    return "missing" if error.validator == "required" else f"wrong:{error.validator}"


# ------------------------------------------------------------- the five request forms


@pytest.mark.parametrize("form", FORMS)
async def test_each_request_form_gets_schema_valid_json(sim: Sim, form: str) -> None:
    async with sim() as (server, session):
        replies = [
            await ok(server, session, body(f"Report {i}.", **ask(SCHEMA, form))) for i in range(5)
        ]
    for data in replies:
        text = content(data)
        jsonschema.validate(json.loads(text), SCHEMA)
        assert data["usage"]["completion_tokens"] == count_tokens(text)
        assert data["choices"][0]["finish_reason"] == "stop"
    assert len({content(d) for d in replies}) == 5


async def test_schema_as_json_text_and_bare_json_object(sim: Sim) -> None:
    async with sim() as (server, session):
        # vLLM takes a schema as JSON text too.
        text_schema = await ok(server, session, body(guided_json=json.dumps(SCHEMA)))
        jsonschema.validate(json.loads(content(text_schema)), SCHEMA)
        nested = await ok(server, session, body(structured_outputs={"json": json.dumps(SCHEMA)}))
        jsonschema.validate(json.loads(content(nested)), SCHEMA)
        # json_object without a schema: any JSON object, still as long as a generation.
        bare = await ok(server, session, body(response_format={"type": "json_object"}))
        value = json.loads(content(bare))
        assert isinstance(value, dict) and value
        assert bare["usage"]["completion_tokens"] > 20
        plain = await ok(server, session, body(response_format={"type": "text"}))
        with pytest.raises(ValueError):
            json.loads(content(plain))


class Colour(str, enum.Enum):
    red = "red"
    green = "green"


class Step(BaseModel):
    title: str
    detail: str | None = None
    weight: float = Field(ge=0, le=1)
    colour: Colour


class Node(BaseModel):
    name: str
    children: list[Node] = []


class Plan(BaseModel):
    goal: str
    kind: Literal["draft", "final"]
    steps: list[Step]
    tags: list[str]
    note: str | None = None
    code: str = Field(max_length=6)
    pair: tuple[int, str]
    tree: Node
    count: int = Field(ge=0)


async def test_pydantic_model_schema(sim: Sim) -> None:
    schema = Plan.model_json_schema()
    assert "$defs" in schema  # nested models, an enum, a recursive model
    async with sim() as (server, session):
        for form in FORMS:
            for i in range(4):
                data = await ok(server, session, body(f"Plan {i}.", **ask(schema, form)))
                text = content(data)
                jsonschema.validate(json.loads(text), schema)
                plan = Plan.model_validate_json(text)
                assert len(plan.code) <= 6 and plan.steps


# -------------------------------------------------------------------------- length


async def test_structured_replies_follow_the_sampled_length(sim: Sim) -> None:
    async def usage(server: SimLLMServer, session: aiohttp.ClientSession, p: Any) -> int:
        return (await ok(server, session, p))["usage"]["completion_tokens"]

    for median in (60, 400):
        async with sim(output_median=median) as (server, session):
            prompts = [f"Report {i}." for i in range(40)]
            tokens = [
                await usage(server, session, body(q, **ask(SCHEMA, "guided_json"))) for q in prompts
            ]
            # A free-text reply to the same prompt has the same sampled length.
            texts = [await usage(server, session, body(q)) for q in prompts]
        assert abs(statistics.median(tokens) - median) <= 0.25 * median, (median, tokens)
        assert len(set(tokens)) > 10  # sampled per request, not one fixed size
        for got, want in zip(tokens, texts, strict=True):
            if want >= 40:  # above the shortest reply the schema allows
                assert got == want, (tokens, texts)
            else:
                assert want <= got < 40


async def test_structured_reply_length_is_the_target(sim: Sim) -> None:
    # Without spread every target is the median: the reply's JSON text is that long.
    async with sim(output_median=250, output_sigma=0.0) as (server, session):
        for i in range(10):
            data = await ok(server, session, body(f"R{i}", **ask(SCHEMA, "response_format")))
            assert data["usage"]["completion_tokens"] == 250
            jsonschema.validate(json.loads(content(data)), SCHEMA)
        # A target below what the schema needs gives the shortest valid reply.
    async with sim(output_median=3, output_sigma=0.0) as (server, session):
        data = await ok(server, session, body(**ask(SCHEMA, "response_format")))
        jsonschema.validate(json.loads(content(data)), SCHEMA)
        assert data["usage"]["completion_tokens"] < 60


async def test_rules_json_schema_reply_is_sized_too(sim: Sim) -> None:
    rules = [{"when": {"user": "(?i)judge"}, "reply": {"json": "schema"}}]
    async with sim(rules=rules, output_median=300, output_sigma=0.0) as (server, session):
        data = await ok(server, session, body("Judge this.", **ask(SCHEMA, "json_schema")))
        assert data["usage"]["completion_tokens"] == 300
        jsonschema.validate(json.loads(content(data)), SCHEMA)
        fallback = await ok(server, session, body("other", **ask(SCHEMA, "json_schema")))
        assert fallback["usage"]["completion_tokens"] == 300


async def test_a_reply_longer_than_max_tokens_is_cut(sim: Sim) -> None:
    async with sim(output_median=400, output_sigma=0.0) as (server, session):
        data = await ok(server, session, body(max_tokens=50, **ask(SCHEMA, "response_format")))
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 50
    assert len(content(data)) == 200
    assert content(data).startswith("{")
    with pytest.raises(ValueError):
        json.loads(content(data))


async def test_same_request_same_reply(sim: Sim) -> None:
    payload = body("Same question.", seed=3, **ask(Plan.model_json_schema(), "guided_json"))
    async with sim() as (server, session):
        first = content(await ok(server, session, payload))
        again = content(await ok(server, session, payload))
        other = content(await ok(server, session, {**payload, "seed": 4}))
    async with sim() as (server, session):
        fresh = content(await ok(server, session, payload))
    assert first == again == fresh
    assert other != first


# --------------------------------------------------------------- invalid replies


async def test_invalid_json_rate(sim: Sim) -> None:
    n = 200
    async with sim(invalid_json_rate=0.3, output_median=80) as (server, session):
        payloads = [
            body(f"Question number {i}?", max_tokens=4096, **ask(SCHEMA, FORMS[i % 5]))
            for i in range(n)
        ]
        replies = await asyncio.gather(*(ok(server, session, p) for p in payloads))
        why = [failure(content(d), SCHEMA) for d in replies]
        counted = (await stats(server, session))["invalid_json_injected"]
        bad = [i for i, w in enumerate(why) if w is not None]
        assert 0.22 * n <= len(bad) <= 0.38 * n, len(bad)
        assert counted == len(bad)
        kinds = {w.split(":")[0] for w in why if w is not None}
        assert kinds == {"not_json", "missing", "wrong"}, why
        for d in replies:  # usage still counts what was sent
            assert d["usage"]["completion_tokens"] == count_tokens(content(d))

        # The same request gets the same decision and the same reply.
        for i in bad[:5] + [i for i in range(n) if i not in bad][:5]:
            again = await ok(server, session, payloads[i])
            assert content(again) == content(replies[i])

        # A re-ask carries the invalid reply and the error: a fresh decision.
        async def reask(i: int) -> str | None:
            messages = [
                *payloads[i]["messages"],
                {"role": "assistant", "content": content(replies[i])},
                {"role": "user", "content": f"Invalid reply ({why[i]}). Answer again."},
            ]
            data = await ok(server, session, {**payloads[i], "messages": messages})
            return failure(content(data), SCHEMA)

        second = await asyncio.gather(*(reask(i) for i in bad))
        still_bad = sum(w is not None for w in second)
        assert still_bad < len(bad) / 2, still_bad

        # Requests without a schema are unaffected.
        before = (await stats(server, session))["invalid_json_injected"]
        for i in range(20):
            data = await ok(server, session, body(f"Free text {i}."))
            assert content(data)[0].isupper() and data["choices"][0]["finish_reason"] == "stop"
        assert (await stats(server, session))["invalid_json_injected"] == before


async def test_invalid_json_off_by_default(sim: Sim) -> None:
    async with sim() as (server, session):
        checked = 0
        for i in range(30):
            data = await ok(server, session, body(f"q{i}", **ask(SCHEMA, FORMS[i % 5])))
            if data["choices"][0]["finish_reason"] == "length":
                continue  # a sampled length over max_tokens: cut, as a real server does
            assert failure(content(data), SCHEMA) is None
            checked += 1
        assert checked >= 25
        assert (await stats(server, session))["invalid_json_injected"] == 0


def test_invalid_json_rate_option() -> None:
    args = build_parser().parse_args(["--invalid-json-rate", "0.25"])
    assert SimOptions(**vars(args)).invalid_json_rate == 0.25
    assert SimServiceOptions(invalid_json_rate=0.4).invalid_json_rate == 0.4
    # Not a transport fault: it does not share their budget.
    SimOptions(error_rate=0.5, garbage_rate=0.5, invalid_json_rate=1.0)
    with pytest.raises(ValueError, match="invalid_json_rate"):
        SimOptions(invalid_json_rate=1.5)
    with pytest.raises(ValueError):
        SimServiceOptions(invalid_json_rate=-0.1)


# ------------------------------------------------------------------------ strict mode


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"guided_json": 42}, "guided_json", "JSON schema object"),
        ({"guided_json": "[1, 2]"}, "guided_json", "JSON schema object"),
        ({"guided_json": "not json"}, "guided_json", "JSON schema object"),
        ({"structured_outputs": {"regex": "a+"}}, "structured_outputs", "'json'"),
        ({"structured_outputs": {"json": 3}}, "structured_outputs", "'json'"),
        ({"structured_outputs": [SCHEMA]}, "structured_outputs", "'json'"),
        ({"json_schema": "x"}, "json_schema", "JSON schema object"),
        (
            {"response_format": {"type": "json_object", "schema": "x"}},
            "response_format.schema",
            "object",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
            "response_format.json_schema",
            "'name'",
        ),
    ],
)
async def test_strict_rejects_malformed_structured_fields(
    sim: Sim, extra: dict[str, Any], param: str, words: str
) -> None:
    async with sim() as (server, session):
        status, data = await post(server, session, body(**extra))
        assert status == 400, data
        assert data["error"]["type"] == "invalid_request_error"
        assert data["error"]["param"] == param
        assert words in data["error"]["message"]
        assert (await stats(server, session))["bad_requests"] == 1
    async with sim(strict=False) as (server, session):
        await ok(server, session, body(**extra))  # not checked: the field is ignored


# ------------------------------------------------------------------- utilisation


async def test_busy_and_seq_seconds(sim: Sim) -> None:
    # 5 ms per step after scaling; 150-token replies take 0.75 s of engine time each.
    opts = {"time_scale": 0.2, "step_base_ms": 25.0, "step_per_seq_ms": 0.0}
    async with sim(output_median=150, output_sigma=0.0, **opts) as (server, session):
        start = await stats(server, session)
        assert start["busy_seconds"] == start["seq_seconds"] == 0.0
        tasks = [asyncio.create_task(ok(server, session, body(f"q{i}"))) for i in range(4)]
        try:
            during = await stats(server, session)
            for _ in range(200):  # until the requests have reached the engine
                if during["running"]:
                    break
                await asyncio.sleep(0.01)
                during = await stats(server, session)
            assert during["running"] > 0
            await asyncio.sleep(0.1)
            later = await stats(server, session)
            # A poll in the middle of a batch sees the part already run.
            assert later["busy_seconds"] > during["busy_seconds"]
            assert later["seq_seconds"] > during["seq_seconds"]
            assert later["measured_at"] > during["measured_at"]
        finally:
            await asyncio.gather(*tasks)

        done = await stats(server, session)
        await asyncio.sleep(0.25)
        idle = await stats(server, session)
        assert idle["running"] == 0
        assert idle["busy_seconds"] == done["busy_seconds"]
        assert idle["seq_seconds"] == done["seq_seconds"]
        assert idle["measured_at"] - done["measured_at"] >= 0.2

    busy, seq = done["busy_seconds"], done["seq_seconds"]
    # The engine's own cost model bounds them from below: each request runs 150 steps.
    assert busy >= 0.75 * 0.999
    assert seq >= 4 * 0.75 * 0.999
    # Never more busy than the time that passed, never more than 4 sequences at once.
    assert busy <= done["measured_at"] - start["measured_at"] + 1e-6
    assert busy <= seq <= 4 * busy + 1e-6
