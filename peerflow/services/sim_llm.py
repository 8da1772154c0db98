"""A SIMULATED OpenAI-compatible LLM server: realistic engine timing, filler text, no model.

Benchmarks of a multi-agent runtime need an LLM endpoint whose latency behaves like a real
inference engine under load (continuous batching: throughput grows with concurrency, a full
batch makes new requests queue) without needing a GPU. This server is that measuring
instrument. Its replies are deterministic filler text, never model output, and it says so
everywhere: the `model` field is prefixed with ``peerflow-simulator/``, `system_fingerprint`
is ``peerflow-simulator`` and every HTTP response carries ``X-Peerflow-Simulator: 1``.

Timing model: one engine task runs steps. At most `max_num_seqs` sequences decode together
and the KV budget must hold every running sequence's prompt plus target length; the rest wait
FIFO. A step costs ``step_base_ms + step_per_seq_ms * batch`` plus a prefill charge for the
prompts admitted just before it, and gives every running sequence one token. Because nothing
changes between arrivals and completions, the engine jumps straight to the next completion
(sleeping for the sum of those steps) and only wakes early when an arrival could be admitted,
so its CPU cost is per request, not per token. For benchmarks it also integrates, per event,
``busy_seconds`` (time with at least one sequence running) and ``seq_seconds`` (the running
count over time), served by ``GET /stats`` with ``measured_at``: two polls give a replica's
idle fraction ``1 - d(busy_seconds) / d(measured_at)`` and mean occupancy
``d(seq_seconds) / d(measured_at)`` over that window.

Scripts make workflows terminate as they would with a model: ``coral`` plays the teacher and
student debate (converging on one letter after ``agree_after`` turns) and the answer extractor;
``lorem`` (the default) answers filler text; a YAML/JSON rules file is a test double for any
workflow.

Rules file. A list of rules (or a mapping ``{rules: [...], default: <reply>}``); the first rule
whose every selector matches gives the reply, else ``default``, else filler text (or, when the
request asks for a JSON schema, a JSON value of it)::

    - when:
        role: judge              # the caller's name: regex, full match; a list = any of them
        system: "(?i)judge"      # regex searched in the system (and developer) messages
        last: "(?i)verdict"      # regex searched in the last message, whatever its role
        last_role: tool          # role of the last message (or a list of roles)
        user: "compute (?P<expr>[-+*/0-9 ]+)"   # regex in the last user message
        assistant: "..."         # ... in the last assistant message; `tool:` the last tool one
        turn: 0                  # assistant messages in the request: int, [0, 2], {min: 1, max: 3}
        tools: [calculator]      # these tools are offered (true: any tool, false: none)
      reply: "The verdict is A."   # text; {filler}, {turn}, {role} and named groups filled in
    - when: {tools: [calculator, lookup], last_role: user}
      reply:
        text: "Let me check."    # optional content beside the calls
        tool_calls:              # one or several calls; ids are deterministic per request
          - {name: calculator, arguments: {expression: "{expr}"}}
          - {name: lookup, arguments: {key: "capital"}}
    - when: {role: scorer}
      reply: {json: {score: 3, reason: "fine"}}   # content is this value as JSON text
    - when: {system: "(?i)structured"}
      reply: {json: schema}      # a value of the schema the request asks for

The older form ``- {match: <regex on the last user message>, reply: <text>}`` still works.
A rule whose reply calls tools only matches when the request offers those tools (a model
calls only tools it is given), so a tool loop ends by itself once tools are not offered.
The caller's name comes from standard request fields only, the first found: the ``user``
field, ``metadata.role``, a ``name`` on a system message, or the word after "You are
(a|an|the)" in the system prompt (``You are the judge.`` -> ``judge``); a rule's
``role`` matches it regardless of case.

Tokens. Prompts and scripted replies are both counted as one token per 4 characters (rounded
up); the reply's count sets its decode time and its ``usage``. Scripted text longer than
``max_tokens`` is cut there (``finish_reason: length``); tool calls give ``tool_calls``.

Structured outputs. A request asks for a JSON schema in any of the ways servers take one:
``response_format`` ``{"type": "json_schema", "json_schema": {"name", "schema"}}`` (OpenAI,
vLLM, SGLang, llama.cpp), ``{"type": "json_object", "schema": ...}`` (llama-cpp-python; no
``schema``: any object), ``structured_outputs: {"json": ...}`` (vLLM >= 0.12), ``guided_json``
(older vLLM) or a top-level ``json_schema`` (llama-server). The reply is then a value of the
schema (`json_instance`) whose free strings are filler sized so that its JSON text counts the
sampled length; longer than ``max_tokens`` it is cut (``finish_reason: length``), invalid JSON
as from a real server. ``--invalid-json-rate`` makes that share of structured replies fail
the schema (not JSON, a required property missing, or a wrong type), decided per request.

Strict validation (``--strict``, on by default): requests a strict OpenAI server rejects get
HTTP 400 with an OpenAI-style ``{"error": {"message", "type": "invalid_request_error",
"param"}}`` body: unknown message roles, missing content (assistant content may be absent only
with ``tool_calls``), malformed ``tool_calls`` (arguments must be a JSON string), a ``tool``
message that answers no call of the assistant message just before it, a call left unanswered
before the next other message, a malformed ``tools`` list (``type: function``, a
``function.name``, ``parameters`` an object schema), and a malformed structured-output field
(``guided_json`` not a schema object, ``structured_outputs`` without an object ``json``...).
``--strict false`` turns this off.

Rate limit. ``--rate-limit-rps R`` puts a provider's quota in front of the engine: a token
bucket of ``--rate-limit-burst B`` requests (default: one second's, ``R``), refilled at ``R``
a second in real time (``time_scale`` does not apply). A request that finds it empty gets HTTP
429 ``rate_limit_error`` at once, before the engine sees it, with ``Retry-After`` the
(fractional) seconds until a token is back, and counts in ``rate_limited`` (``GET /stats``).
Unlike ``--rate-limit-rate`` (a random 429 per request, whatever the load) it answers to the
load: what a client that adapts its concurrency (``benchmarks/bench_rate_limit.py``) must
find and stay under.

Run it with ``python -m peerflow.services.sim_llm --port 8000 --script coral`` or in-process
via `SimLLMServer`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import importlib.util
import json
import logging
import math
import random
import re
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "Reply",
    "RequestError",
    "SimLLMServer",
    "SimOptions",
    "SimServiceOptions",
    "build_parser",
    "count_tokens",
    "json_instance",
    "main",
    "validate_request",
]

SIM_NAME = "peerflow-simulator"
SIM_HEADER = "X-Peerflow-Simulator"
LETTERS = "ABCDEFGHIJ"
_EXTRACTION_TOKENS = {"found": 3, "none": 4}
_ANSWER_LINE_TOKENS = 5  # "The answer is (X)." is 18 characters
# A timer firing late must not make the simulated engine slower, so the engine keeps its own
# clock; but it may only run this far behind the wall clock, so that a stalled process does not
# later "catch up" with an unrealistic burst.
_MAX_LAG_S = 0.02

# Short Latin-looking words: obviously not language-model output, ~5 characters each so that
# four characters per token holds roughly, as for English text.
_WORDS = """
    lorem ipsum dolor sit amet consec adipi elit sed do eiusmod tempor incidi ut labore et
    dolore magna aliqua enim ad minim veniam quis nostrud exerci ullamco laboris nisi aliquip
    ex ea commodo consequat duis aute irure in repre volup velit esse cillum fugiat nulla
    pariatur excep sint occae cupid non proident sunt culpa qui officia deser mollit anim id
    est laborum curab vitae porta nunc morbi lacus arcu felis proin nibh risus augue metus
    justo massa nulla fusce vivam donec quam orci dapib urna tellus mauris varius etiam
    ligula semper lectus neque nisl odio purus sapien ante primis fauci luctus ultri posue
    cubil curae integer auctor sagit rutrum eros vel mattis diam tortor turpis egest mi
    ornare lacin congue aenean nec pede vesti tinci cras dictum tempus phare libero erat
    volut nam quia conva pulvi blandit magnis dis partu monte nasce ridic mus feugi sodal
    ipsam fames acid netus malesu habit tristi senec sollic facil accum aliquet iaculis
    gravida hendr imper lobor maece matti moles natoque pelle place plate retin rhonc
    scele suscip tincid torto ultric vehic venen viver vulpu fring lucem eleif finib
    efficit condim commod digni elemen euismod faucib ferme gravi interd lacus
    nullam quod iste
"""
_VOCAB = tuple(dict.fromkeys(_WORDS.split()))
_AVG_WORD_CHARS = sum(len(w) + 1 for w in _VOCAB) / len(_VOCAB)
_SENTENCE_WORDS = 11

_ANSWER_IS = re.compile(r"(?i:answer\s+is):?\s*\(?([A-J])(?![A-Za-z0-9])")
_ANSWER_LINE = re.compile(r"The answer is \([A-J]\)\.")
_OPTION_LINE = re.compile(r"^[ \t]*(?:\(([A-J])\)|([A-J])[.)])(?=\s|$)", re.MULTILINE)


@dataclasses.dataclass
class SimOptions:
    """Every knob of the simulator; the CLI flags are these names with dashes."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_num_seqs: int = 256
    kv_capacity: int = 262144
    prefill_ms_per_1k: float = 2.0
    step_base_ms: float = 6.0
    step_per_seq_ms: float = 0.04
    time_scale: float = 1.0
    output_median: float = 180.0
    output_sigma: float = 0.8
    default_max_tokens: int = 1024
    seed: int = 0
    script: str = "lorem"
    agree_after: int = 2
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    garbage_rate: float = 0.0
    invalid_json_rate: float = 0.0
    strict: bool = True
    rate_limit_rps: float = 0.0
    rate_limit_burst: float = 0.0

    def __post_init__(self) -> None:
        # Fail at startup: a bad value would otherwise surface as a hang or a crashed engine.
        if self.max_num_seqs < 1 or self.kv_capacity < 1 or self.default_max_tokens < 1:
            raise ValueError("max_num_seqs, kv_capacity and default_max_tokens must be >= 1")
        costs = (
            self.prefill_ms_per_1k,
            self.step_base_ms,
            self.step_per_seq_ms,
            self.time_scale,
            self.output_sigma,
            self.retry_after,
        )
        if min(costs) < 0 or self.output_median <= 0:
            raise ValueError(
                "costs, time_scale, output_sigma and retry_after must be >= 0 and output_median > 0"
            )
        rates = (self.error_rate, self.rate_limit_rate, self.garbage_rate)
        if min(rates) < 0 or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        # Not a transport fault (the reply is a normal 200), so it does not share their budget.
        if not 0 <= self.invalid_json_rate <= 1:
            raise ValueError("invalid_json_rate must be between 0 and 1")
        if self.rate_limit_rps < 0 or self.rate_limit_burst < 0:
            raise ValueError("rate_limit_rps and rate_limit_burst must be >= 0")


class SimServiceOptions(BaseModel):
    """`services.<name>.options` of a `kind: sim` service, checked before the run.

    The names are exactly `SimOptions`' fields (and the CLI flags with dashes),
    minus `host` and `port`, which the service picks itself. Unknown names are
    errors: as CLI flags they would crash the server at start, or be taken for
    another flag they are a prefix of.
    """

    model_config = ConfigDict(extra="forbid")

    max_num_seqs: int = Field(default=256, ge=1)
    kv_capacity: int = Field(default=262144, ge=1)
    prefill_ms_per_1k: float = Field(default=2.0, ge=0)
    step_base_ms: float = Field(default=6.0, ge=0)
    step_per_seq_ms: float = Field(default=0.04, ge=0)
    time_scale: float = Field(default=1.0, ge=0)
    output_median: float = Field(default=180.0, gt=0)
    output_sigma: float = Field(default=0.8, ge=0)
    default_max_tokens: int = Field(default=1024, ge=1)
    seed: int = 0
    script: str = "lorem"
    agree_after: int = Field(default=2, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after: float = Field(default=1.0, ge=0)
    garbage_rate: float = Field(default=0.0, ge=0, le=1)
    invalid_json_rate: float = Field(default=0.0, ge=0, le=1)
    strict: bool = True
    rate_limit_rps: float = Field(default=0.0, ge=0)
    rate_limit_burst: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _whole(self) -> SimServiceOptions:
        """The checks `SimOptions` and the script loader make when the server starts."""
        try:
            load_script(SimOptions(**self.model_dump()))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise PydanticCustomError("sim_options", "{msg}", {"msg": str(exc)}) from None
        return self


# ------------------------------------------------------------------------------ text


def _digest(*parts: object) -> int:
    """A process-independent hash: replies must not change between runs (unlike `hash()`)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "big")


def filler(rng: random.Random, tokens: int) -> str:
    """About `4 * tokens` characters of capitalised nonsense sentences on one line."""
    n = max(1, round(4 * tokens / _AVG_WORD_CHARS))
    words = rng.choices(_VOCAB, k=n)
    sentences = [" ".join(words[i : i + _SENTENCE_WORDS]) for i in range(0, n, _SENTENCE_WORDS)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def _content_text(content: Any) -> str:
    """Text of an OpenAI message content: a string, a list of parts, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text") or ""
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text", ""), str)
        )
    raise ValueError("message content must be a string, a list of parts or null")


class RequestError(ValueError):
    """A request a strict OpenAI server rejects with HTTP 400; `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


_ROLES = ("system", "developer", "user", "assistant", "tool")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_YOU_ARE = re.compile(r"\bYou are (?:the |a |an )?([A-Za-z0-9_][\w-]*)", re.IGNORECASE)


def count_tokens(text: str) -> int:
    """The simulator's tokenizer, for prompts and scripted replies alike: 4 characters a token."""
    return math.ceil(len(text) / 4)


def _check_content(content: Any, where: str, required: bool) -> None:
    if content is None:
        if required:
            raise RequestError(f"{where}.content is required", f"{where}.content")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(
            f"{where}.content must be a string or an array of content parts",
            f"{where}.content",
        )
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise RequestError(
                f"{where}.content[{j}] must be an object with a string 'type'",
                f"{where}.content[{j}]",
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise RequestError(
                f"{where}.content[{j}].text must be a string", f"{where}.content[{j}].text"
            )


def _check_tools(tools: Any) -> set[str]:
    """The names of well-formed `tools`; raises on what OpenAI's schema check rejects."""
    if not isinstance(tools, list):
        raise RequestError("'tools' must be an array", "tools")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise RequestError(f"{p} must be an object", p)
        if tool.get("type") != "function":
            raise RequestError(
                f"{p}.type must be 'function' (got {tool.get('type')!r})", f"{p}.type"
            )
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise RequestError(f"{p}.function is required and must be an object", f"{p}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise RequestError(
                f"{p}.function.name is required: 1 to 64 letters, digits, '_' or '-' "
                f"(got {name!r})",
                f"{p}.function.name",
            )
        if name in names:
            raise RequestError(f"{p}.function.name: duplicate tool name {name!r}", f"{p}.function")
        names.add(name)
        if "description" in fn and not isinstance(fn["description"], str):
            raise RequestError(
                f"{p}.function.description must be a string", f"{p}.function.description"
            )
        params = fn.get("parameters")
        if params is not None:
            if not isinstance(params, dict) or params.get("type") != "object":
                raise RequestError(
                    f"{p}.function.parameters must be a JSON schema of type 'object'",
                    f"{p}.function.parameters",
                )
            props = params.get("properties")
            if props is not None and not (
                isinstance(props, dict) and all(isinstance(s, dict) for s in props.values())
            ):
                raise RequestError(
                    f"{p}.function.parameters.properties must map names to schemas",
                    f"{p}.function.parameters.properties",
                )
    return names


def _check_tool_calls(calls: Any, where: str) -> list[str]:
    if not isinstance(calls, list) or not calls:
        raise RequestError(f"{where}.tool_calls must be a non-empty array", f"{where}.tool_calls")
    ids: list[str] = []
    for j, call in enumerate(calls):
        p = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            raise RequestError(f"{p} must be an object", p)
        cid = call.get("id")
        if not isinstance(cid, str) or not cid:
            raise RequestError(f"{p}.id is required and must be a string", f"{p}.id")
        if cid in ids:
            raise RequestError(f"{p}.id: duplicate tool call id {cid!r}", f"{p}.id")
        if call.get("type") != "function":
            raise RequestError(f"{p}.type must be 'function'", f"{p}.type")
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RequestError(f"{p}.function.name is required", f"{p}.function")
        if not isinstance(fn.get("arguments"), str):
            raise RequestError(
                f"{p}.function.arguments must be a string (JSON text), "
                f"not {type(fn.get('arguments')).__name__}",
                f"{p}.function.arguments",
            )
        ids.append(cid)
    return ids


def _schema_value(value: Any) -> dict[str, Any] | None:
    """A schema given as an object or (as vLLM also accepts) as JSON text of one; else None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _check_structured(body: dict[str, Any]) -> None:
    """The five ways a request asks for a JSON schema (see `_Chat.schema`), each well-formed."""
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise RequestError(
                "response_format.type must be text, json_object or json_schema",
                "response_format",
            )
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not (
                isinstance(spec, dict)
                and isinstance(spec.get("name"), str)
                and isinstance(spec.get("schema", {}), dict)
            ):
                raise RequestError(
                    "response_format.json_schema needs a string 'name' and an object 'schema'",
                    "response_format.json_schema",
                )
        if kind == "json_object" and not isinstance(fmt.get("schema", {}), dict):
            raise RequestError(
                "response_format.schema must be an object (a JSON schema) when given",
                "response_format.schema",
            )
    guided = body.get("guided_json")
    if guided is not None and _schema_value(guided) is None:
        raise RequestError(
            f"'guided_json' must be a JSON schema object (or its JSON text), "
            f"not {type(guided).__name__}",
            "guided_json",
        )
    outputs = body.get("structured_outputs")
    if outputs is not None and not (
        isinstance(outputs, dict) and _schema_value(outputs.get("json")) is not None
    ):
        raise RequestError(
            "'structured_outputs' must be an object with 'json': a JSON schema object "
            "(the simulator supports no other structured output kind)",
            "structured_outputs",
        )
    schema = body.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise RequestError(
            f"'json_schema' must be a JSON schema object, not {type(schema).__name__}",
            "json_schema",
        )


def validate_request(body: dict[str, Any]) -> None:
    """Raise `RequestError` for what a strict OpenAI-compatible server rejects.

    Checked: message roles; content where it is required; every assistant `tool_calls`
    entry (id, type, function name, arguments as a string); that each `tool` message
    answers a call of the assistant message just before it (tool messages in between),
    and that every call is answered before the next other message (or the end); the
    `tools` schema; `tool_choice`; `response_format` and the other structured-output
    fields (`guided_json`, `structured_outputs`, `json_schema`).
    """
    names = _check_tools(body["tools"]) if body.get("tools") is not None else set()
    choice = body.get("tool_choice")
    if choice is not None:
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise RequestError(f"tool_choice {choice!r} is not none, auto or required")
            if choice == "required" and not names:
                raise RequestError("tool_choice 'required' needs 'tools'", "tool_choice")
        else:
            fn = choice.get("function") if isinstance(choice, dict) else None
            name = fn.get("name") if isinstance(fn, dict) else None
            if name not in names:
                raise RequestError(
                    f"tool_choice names function {name!r}, which is not in 'tools'",
                    "tool_choice",
                )
    _check_structured(body)
    pending: list[str] = []  # calls of the open assistant message not yet answered
    opened = -1
    for i, m in enumerate(body["messages"]):
        p = f"messages[{i}]"
        role = m["role"]
        if role not in _ROLES:
            raise RequestError(
                f"{p}.role: unknown role {role!r}; expected one of {', '.join(_ROLES)}",
                f"{p}.role",
            )
        if "name" in m and not isinstance(m["name"], str):
            raise RequestError(f"{p}.name must be a string", f"{p}.name")
        if role != "tool" and pending:
            raise RequestError(
                f"an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; messages[{opened}] has no response for "
                f"{', '.join(pending)} before {p} (role {role!r})",
                f"messages[{opened}].tool_calls",
            )
        content = m.get("content")
        if role == "tool":
            cid = m.get("tool_call_id")
            if not isinstance(cid, str) or not cid:
                raise RequestError(f"{p}.tool_call_id is required", f"{p}.tool_call_id")
            if cid not in pending:
                raise RequestError(
                    f"{p}: messages with role 'tool' must be a response to a preceding "
                    f"message with 'tool_calls'; no open tool call has id {cid!r}",
                    f"{p}.tool_call_id",
                )
            pending.remove(cid)
            _check_content(content, p, required=True)
        elif role == "assistant" and m.get("tool_calls") is not None:
            pending = _check_tool_calls(m["tool_calls"], p)
            opened = i
            _check_content(content, p, required=False)
        else:
            _check_content(content, p, required=True)
    if pending:
        raise RequestError(
            f"an assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'; messages[{opened}] has no response for "
            f"{', '.join(pending)}",
            f"messages[{opened}].tool_calls",
        )


class _Chat:
    """The parts of a chat request that scripts and the timing model look at."""

    __slots__ = (
        "body",
        "key",
        "max_tokens",
        "messages",
        "model",
        "prompt_tokens",
        "raw",
        "rng",
        "sampled",
        "structured",
        "tools",
    )

    def __init__(self, body: Any, options: SimOptions):
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if body.get("stream"):
            raise RequestError("stream=true is not supported by the simulator", "stream")
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise RequestError("'messages' must be a non-empty list", "messages")
        messages: list[tuple[str, str]] = []
        extra = 0  # characters of tool calls, which the prompt holds besides contents
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise RequestError(
                    "each message must be an object with a string 'role'", f"messages[{i}]"
                )
            try:
                messages.append((m["role"], _content_text(m.get("content"))))
            except ValueError as exc:
                raise RequestError(f"messages[{i}]: {exc}", f"messages[{i}].content") from None
            calls = m.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        extra += sum(len(v) for v in fn.values() if isinstance(v, str))
        if options.strict:
            validate_request(body)
        max_tokens = body.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        if max_tokens is None:
            max_tokens = options.default_max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("'max_tokens' must be a positive integer", "max_tokens")
        seed = body.get("seed")
        model = body.get("model")
        self.body = body
        self.raw = raw
        self.model = model if isinstance(model, str) and model else "default"
        self.messages = messages
        self.max_tokens = max_tokens
        tools = body.get("tools")
        self.tools = [
            t["function"]["name"]
            for t in (tools if isinstance(tools, list) else ())
            if isinstance(t, dict)
            and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str)
        ]
        chars = sum(len(text) for _, text in messages) + extra
        self.prompt_tokens = math.ceil(chars / 4) + 4 * len(messages)
        self.key = _digest(options.seed, seed, *(x for m in messages for x in m))
        self.rng = random.Random(self.key)
        self.structured = self._structured(body)
        self.sampled = 0  # the sampled reply length before max_tokens; the server sets it

    def first(self, role: str) -> str | None:
        return next((text for r, text in self.messages if r == role), None)

    def last(self, role: str) -> str | None:
        return next((text for r, text in reversed(self.messages) if r == role), None)

    @property
    def turn(self) -> int:
        """The caller's earlier turns: the assistant messages in the request."""
        return sum(1 for role, _ in self.messages if role == "assistant")

    @property
    def system(self) -> str:
        """Every system (and developer) message, joined."""
        return "\n\n".join(text for r, text in self.messages if r in ("system", "developer"))

    @property
    def speaker(self) -> str:
        """The caller's name, from standard fields only (see the module docstring)."""
        user = self.body.get("user")
        if isinstance(user, str) and user:
            return user
        meta = self.body.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("role"), str):
            return meta["role"]
        for m in self.raw:
            if m.get("role") in ("system", "developer") and isinstance(m.get("name"), str):
                return m["name"]
        found = _YOU_ARE.search(self.system)
        return found.group(1) if found else ""

    def schema(self) -> dict[str, Any] | None:
        """The JSON schema the request asks the reply to follow; None for free text."""
        return self.structured

    @staticmethod
    def _structured(body: dict[str, Any]) -> dict[str, Any] | None:
        """The schema from the first structured-output field the request gives.

        ``response_format`` json_schema (OpenAI, vLLM, SGLang, llama.cpp) or json_object
        (any object, or its ``schema`` as llama-cpp-python's server takes it), vLLM's
        ``structured_outputs.json`` (>= 0.12) and ``guided_json`` (older), llama-server's
        top-level ``json_schema``. Malformed fields are ignored here (strict mode rejects them).
        """
        fmt = body.get("response_format")
        if isinstance(fmt, dict):
            if fmt.get("type") == "json_object":
                schema = fmt.get("schema")
                return schema if isinstance(schema, dict) else {"type": "object"}
            if fmt.get("type") == "json_schema":
                spec = fmt.get("json_schema")
                schema = spec.get("schema") if isinstance(spec, dict) else None
                return schema if isinstance(schema, dict) else {"type": "object"}
        outputs = body.get("structured_outputs")
        if isinstance(outputs, dict) and outputs.get("json") is not None:
            schema = _schema_value(outputs["json"])
            if schema is not None:
                return schema
        guided = _schema_value(body.get("guided_json"))
        if guided is not None:
            return guided
        schema = body.get("json_schema")  # llama-server takes an object only
        return schema if isinstance(schema, dict) else None


@dataclasses.dataclass
class Reply:
    """A scripted reply; its tokens are counted from its text unless `tokens` is given."""

    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    tokens: int | None = None


# A script turns a chat and its sampled length into (reply text, completion tokens) or a Reply.
log = logging.getLogger(__name__)

Script = Callable[[_Chat, int, bool], "tuple[str, int] | Reply"]


def _settle(out: tuple[str, int] | Reply, max_tokens: int) -> tuple[Reply, int, str]:
    """The reply as sent, its completion tokens and its finish_reason.

    Scripted text is counted with `count_tokens` and cut at `max_tokens` like a real
    server would; tool calls are never cut (a half call is no call).
    """
    if isinstance(out, tuple):
        text, tokens = out
        return Reply(text), tokens, "length" if tokens == max_tokens else "stop"
    if out.tokens is not None:
        return out, out.tokens, "length" if out.tokens == max_tokens else "stop"
    content = out.content or ""
    if out.tool_calls:
        parts = [content] + [
            c["function"]["name"] + c["function"]["arguments"] for c in out.tool_calls
        ]
        return out, max(1, count_tokens("".join(parts))), "tool_calls"
    tokens = max(1, count_tokens(content))
    if tokens > max_tokens:
        return Reply(content[: 4 * max_tokens]), max_tokens, "length"
    return out, tokens, "stop"


def _structured_reply(chat: _Chat, schema: dict[str, Any], target: int) -> Reply:
    """JSON of the schema, as long as the sampled generation.

    A generation longer than `max_tokens` is made whole and then cut by `_settle`, as a
    real server stops mid-value: invalid JSON with ``finish_reason: length``.
    """
    size = target
    if target == chat.max_tokens and chat.sampled > target:
        size = min(chat.sampled, 2 * chat.max_tokens)  # enough to be cut somewhere inside
    value = json_instance(schema, chat.rng, tokens=size)
    return Reply(json.dumps(value, ensure_ascii=False))


def _lorem(chat: _Chat, target: int, truncated: bool) -> tuple[str, int] | Reply:
    schema = chat.schema()
    if schema is not None:  # a structured-output request gets JSON, as from a real server
        return _structured_reply(chat, schema, target)
    return filler(chat.rng, target), target


def _question(text: str) -> tuple[str, int]:
    """The question and its option count from a debate's first user message.

    Dialogue agents merge consecutive user messages, so the student's first user message is
    the question followed by the teacher's reply. Both speakers must derive the same question
    (or they never converge), so it is cut after the option list, or, without one, before the
    first simulated reply (a filler paragraph followed by "The answer is (X).").
    """
    expected, end = 0, len(text)
    for m in _OPTION_LINE.finditer(text):
        if ord(m.group(1) or m.group(2)) - ord("A") != expected:
            if expected:
                break
            continue
        expected += 1
        newline = text.find("\n", m.end())
        end = newline if newline >= 0 else len(text)
    if expected >= 2:
        return text[:end], expected
    paragraphs = text.split("\n\n")
    for i, para in enumerate(paragraphs):
        if i >= 2 and _ANSWER_LINE.fullmatch(para.strip()):
            return "\n\n".join(paragraphs[: i - 1]), len(LETTERS)
    return text, len(LETTERS)


def _coral(agree_after: int, seed: int) -> Script:
    def script(chat: _Chat, target: int, truncated: bool) -> tuple[str, int]:
        system = chat.first("system") or ""
        if "answer extractor" in system.lower():
            found = _ANSWER_IS.findall(chat.last("user") or "")
            if found:
                return f"({found[-1]})", min(_EXTRACTION_TOKENS["found"], chat.max_tokens)
            return "not sure yet", min(_EXTRACTION_TOKENS["none"], chat.max_tokens)
        question, n = _question(chat.first("user") or "")
        turn = sum(1 for role, _ in chat.messages if role == "assistant")
        if turn >= agree_after:
            letter = LETTERS[_digest(seed, question) % n]
        else:
            letter = LETTERS[_digest(seed, question, turn, system) % n]
        if truncated:  # a reply cut off by max_tokens never reaches its final answer
            return filler(chat.rng, target), target
        text = filler(chat.rng, max(1, target - _ANSWER_LINE_TOKENS))
        return f"{text}\n\nThe answer is ({letter}).", target

    return script


# ------------------------------------------------------------------------- JSON


_FIXED_STRING_KEYS = ("enum", "const", "format", "pattern", "maxLength")
_MIN_FREE_CHARS = 5  # a free string field holds at least a word


class _Free:
    """A string the schema leaves free (no enum, const, format, pattern, maxLength).

    Its text can grow: that is where a structured reply's length goes, as a model's long
    answer goes into its free-text fields.
    """

    __slots__ = ("low", "text")

    def __init__(self, text: str, low: int):
        self.text = text
        self.low = low


def json_instance(
    schema: Any,
    rng: random.Random,
    root: Any = None,
    depth: int = 0,
    *,
    tokens: int | None = None,
) -> Any:
    """A deterministic value that satisfies common JSON schemas (structured-output replies).

    Handles $ref (local), const, enum, anyOf/oneOf (first non-null), allOf (merged),
    objects (every property), arrays (prefixItems, minItems, at least one item), strings
    (formats, lengths), integers and numbers (bounds), booleans and null. Not `pattern`.

    With `tokens`, the free strings (see `_Free`) get filler text sized so that the value's
    JSON text, ``json.dumps(value, ensure_ascii=False)``, counts `tokens` tokens: a reply as
    long as a real generation of that length. When the schema's fixed part alone is longer
    (or it has no free string), the value is as short as the schema allows. An object schema
    without properties (json_object mode) then gets one free string, ``answer``.
    """
    free: list[_Free] = []
    root = schema if root is None else root
    top = _deref(schema, root)
    if (
        tokens is not None
        and isinstance(top, dict)
        and top.get("type") == "object"
        and not top.get("properties")
        and top.get("additionalProperties", True) is not False
    ):
        # Any object (json_object mode): a model still writes something of the usual length.
        schema = {**top, "properties": {"answer": {"type": "string"}}}
    value = _instance(schema, rng, root, depth, free)
    if not free:
        return value
    if tokens is not None:
        _size(value, free, rng, tokens)
    return _plain(value)


def _size(value: Any, free: list[_Free], rng: random.Random, tokens: int) -> None:
    """Give the free strings lengths that make the whole JSON text `4 * tokens` characters."""
    fixed = len(json.dumps(value, ensure_ascii=False, default=lambda _: ""))
    budget = 4 * tokens - fixed
    share, extra = divmod(max(0, budget), len(free))
    for i, slot in enumerate(free):
        slot.text = _text(rng, max(slot.low, _MIN_FREE_CHARS, share + (i < extra)))


def _text(rng: random.Random, chars: int) -> str:
    """Exactly `chars` characters of filler sentences (ASCII: JSON needs no escapes)."""
    text = ""
    while len(text) < chars:
        more = filler(rng, (chars - len(text)) // 4 + 8)
        text = f"{text} {more}" if text else more
    text = text[:chars]
    return text[:-1] + "." if text.endswith(" ") else text


def _plain(value: Any) -> Any:
    """The value with every `_Free` replaced by its text."""
    if isinstance(value, _Free):
        return value.text
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _deref(schema: Any, root: Any) -> Any:
    """Follow local `$ref`s (``#/$defs/Name``) to the schema they point at."""
    for _ in range(32):  # a ref cycle without content must not loop forever
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not (isinstance(ref, str) and ref.startswith("#")):
            return schema
        target: Any = root
        for part in ref[1:].split("/"):
            if part and isinstance(target, dict):
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        schema = target
    return {}


def _instance(schema: Any, rng: random.Random, root: Any, depth: int, free: list[_Free]) -> Any:
    schema = _deref(schema, root)
    if not isinstance(schema, dict) or depth > 16:
        return None
    deep = depth > 6  # deep down (a recursive model): optional parts empty, so it ends
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            if deep and len(usable) < len(options):
                return None
            return _instance((usable or options)[0], rng, root, depth + 1, free)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _deref(part, root)
            if isinstance(part, dict):
                merged = {
                    **merged,
                    **part,
                    "properties": {**merged.get("properties", {}), **part.get("properties", {})},
                }
        return _instance(merged, rng, root, depth + 1, free)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {name: _instance(sub, rng, root, depth + 1, free) for name, sub in props.items()}
    if kind == "array":
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        low = max(schema.get("minItems", 0 if deep else 1), len(prefix))
        high = schema.get("maxItems", max(low, 2))
        n = low if deep else max(low, min(high, 1 + rng.randrange(2)))
        items = [_instance(sub, rng, root, depth + 1, free) for sub in prefix[:n]]
        if isinstance(schema.get("items", {}), dict):
            more = schema.get("items", {})
            items += [_instance(more, rng, root, depth + 1, free) for _ in range(n - len(items))]
        return items
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 11) - 1)
        high = max(low, high)
        if kind == "integer":
            return rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
        return round(rng.uniform(low, high), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2024-01-01T00:00:00Z"
    if fmt == "date":
        return "2024-01-01"
    if fmt == "email":
        return "sim@example.com"
    if fmt in ("uri", "url"):
        return "https://example.com/sim"
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    text = " ".join(rng.choices(_VOCAB, k=3))
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    while len(text) < low:
        text += " " + rng.choice(_VOCAB)
    if isinstance(high, int):
        return text[:high]
    if any(key in schema for key in _FIXED_STRING_KEYS):
        return text
    slot = _Free(text, low if isinstance(low, int) else 0)
    free.append(slot)
    return slot


# -------------------------------------------------------------- invalid JSON replies

# The ways a structured reply goes wrong with a real model: `--invalid-json-rate`.
_INVALID_KINDS = ("not_json", "missing", "wrong_type")
# A value of each JSON type, to put where the schema wants another type.
_WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("string", "not available"),
    ("integer", 7),
    ("boolean", True),
    ("array", []),
    ("object", {}),
    ("null", None),
)
_NO_VALUE = object()


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _allowed_types(schema: Any, root: Any, depth: int = 0) -> set[str] | None:
    """The JSON types a schema allows; None when it does not restrict them (or is unclear)."""
    schema = _deref(schema, root)
    if not isinstance(schema, dict) or depth > 16:
        return None
    if "const" in schema:
        return {_json_type(schema["const"])}
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return {_json_type(v) for v in schema["enum"]}
    kind = schema.get("type")
    if isinstance(kind, str | list):
        return {kind} if isinstance(kind, str) else {str(k) for k in kind}
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            found: set[str] = set()
            for option in options:
                types = _allowed_types(option, root, depth + 1)
                if types is None:
                    return None
                found |= types
            return found
    if isinstance(schema.get("allOf"), list):
        known = [_allowed_types(part, root, depth + 1) for part in schema["allOf"]]
        sets = [types for types in known if types is not None]
        return set.intersection(*sets) if sets else None
    return None


def _wrong_value(schema: Any, root: Any) -> Any:
    """A value of a type the schema does not allow, or `_NO_VALUE`."""
    allowed = _allowed_types(schema, root)
    if allowed is None:
        return _NO_VALUE
    if "number" in allowed:
        allowed = allowed | {"integer"}
    return next((v for kind, v in _WRONG_VALUES if kind not in allowed), _NO_VALUE)


def _invalid_json(text: str, schema: dict[str, Any], rng: random.Random) -> str:
    """Reply content that fails `schema`, from the valid reply `text`.

    One of `_INVALID_KINDS`, chosen by `rng`: not JSON (prose, or the JSON cut in the middle),
    a required property missing, or a property of the wrong type. A kind the schema or the
    reply leaves no room for (no required property, no typed property) gives the next one;
    not JSON always works.
    """
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    top = _deref(schema, schema)
    props = top.get("properties") if isinstance(top, dict) else None
    first = rng.randrange(len(_INVALID_KINDS))
    for kind in _INVALID_KINDS[first:] + _INVALID_KINDS[:first]:
        if kind == "missing" and isinstance(value, dict) and isinstance(top, dict):
            required = top.get("required")
            present = [k for k in required if k in value] if isinstance(required, list) else []
            if present:
                del value[present[rng.randrange(len(present))]]
                return json.dumps(value, ensure_ascii=False)
        elif kind == "wrong_type" and isinstance(value, dict) and isinstance(props, dict):
            wrong = {k: _wrong_value(props[k], schema) for k in value if k in props}
            names = [k for k, v in wrong.items() if v is not _NO_VALUE]
            if names:
                name = names[rng.randrange(len(names))]
                value[name] = wrong[name]
                return json.dumps(value, ensure_ascii=False)
        elif kind == "not_json":
            if value is not None and len(text) >= 8 and rng.random() < 0.5:
                cut = text[: rng.randint(len(text) // 4, len(text) * 3 // 4)]
                try:
                    json.loads(cut)
                except ValueError:
                    return cut
            return filler(rng, max(4, count_tokens(text)))
    raise AssertionError("unreachable: not_json always gives a reply")  # pragma: no cover


# ------------------------------------------------------------------------ rules

_SELECTORS = frozenset(
    ("role", "system", "last", "last_role", "user", "assistant", "tool", "turn", "tools")
)
_REGEX_SELECTORS = ("system", "last", "user", "assistant", "tool")
_REPLY_KEYS = frozenset(("text", "content", "tool_calls", "json"))
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _fill(value: Any, values: dict[str, str]) -> Any:
    """Replace {name} placeholders with known values in every string of `value`."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


class _Rule:
    """One compiled rule: every selector it gives must match; the first rule to match wins."""

    def __init__(self, raw: Any, where: str):
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: a rule is a mapping with 'when' (or 'match') and 'reply'")
        unknown = set(raw) - {"when", "match", "reply"}
        if unknown or "reply" not in raw:
            raise ValueError(
                f"{where}: a rule has 'when' (or the older 'match') and 'reply'"
                + (f"; unknown keys: {', '.join(sorted(map(str, unknown)))}" if unknown else "")
            )
        when = raw.get("when") or {}
        if not isinstance(when, dict):
            raise ValueError(f"{where}.when: expected a mapping of selectors")
        if "match" in raw:
            when = {**when, "user": raw["match"]}
        bad = set(when) - _SELECTORS
        if bad:
            raise ValueError(
                f"{where}.when: unknown selectors {', '.join(sorted(map(str, bad)))}; "
                f"known: {', '.join(sorted(_SELECTORS))}"
            )
        try:
            self.regexes = {k: re.compile(str(when[k])) for k in _REGEX_SELECTORS if k in when}
            roles = when.get("role")
            self.role = (
                None
                if roles is None
                else [
                    # Role names are matched regardless of case: "You are Alice" is `alice`.
                    re.compile(str(r), re.IGNORECASE)
                    for r in (roles if isinstance(roles, list) else [roles])
                ]
            )
        except re.error as exc:
            raise ValueError(f"{where}.when: bad regex: {exc}") from None
        last_role = when.get("last_role")
        self.last_role = (
            None
            if last_role is None
            else set(last_role if isinstance(last_role, list) else [last_role])
        )
        self.turn = self._turns(when.get("turn"), where)
        tools = when.get("tools")
        if tools is not None and not isinstance(tools, bool | list):
            raise ValueError(f"{where}.when.tools: expected a list of tool names, true or false")
        self.tools = tools
        self.reply = self._reply(raw["reply"], where)
        self.wants_filler = "{filler}" in str(self.reply)  # decided once, not per request

    @staticmethod
    def _turns(turn: Any, where: str) -> Callable[[int], bool] | None:
        if turn is None:
            return None
        if isinstance(turn, int) and not isinstance(turn, bool):
            return lambda t: t == turn
        if isinstance(turn, list) and all(isinstance(t, int) for t in turn):
            return lambda t: t in turn
        if isinstance(turn, dict) and set(turn) <= {"min", "max"}:
            low, high = turn.get("min", 0), turn.get("max", math.inf)
            return lambda t: low <= t <= high
        raise ValueError(f"{where}.when.turn: expected an int, a list of ints or {{min, max}}")

    @staticmethod
    def _reply(reply: Any, where: str) -> dict[str, Any]:
        if isinstance(reply, str):
            return {"text": reply}
        if not isinstance(reply, dict) or not reply or set(reply) - _REPLY_KEYS:
            raise ValueError(
                f"{where}.reply: a string, or a mapping of text, tool_calls and/or json"
            )
        reply = dict(reply)
        if "content" in reply:
            reply["text"] = reply.pop("content")
        if "json" in reply and ("text" in reply or "tool_calls" in reply):
            raise ValueError(f"{where}.reply: json replaces the text; give one or the other")
        calls = reply.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not calls:
                raise ValueError(
                    f"{where}.reply.tool_calls: a non-empty list of {{name, arguments}}"
                )
            for j, call in enumerate(calls):
                ok = (
                    isinstance(call, dict)
                    and isinstance(call.get("name"), str)
                    and set(call) <= {"name", "arguments"}
                    and isinstance(call.get("arguments", {}), dict | str)
                )
                if not ok:
                    raise ValueError(
                        f"{where}.reply.tool_calls[{j}]: expected {{name: str, "
                        "arguments: mapping or JSON string}"
                    )
        return reply

    def match(self, chat: _Chat) -> dict[str, str] | None:
        """The named groups of the rule's regexes when every selector matches, else None."""
        groups: dict[str, str] = {}
        if self.role is not None:
            speaker = chat.speaker
            found = next((m for r in self.role if (m := r.fullmatch(speaker))), None)
            if found is None:
                return None
            groups.update({k: v for k, v in found.groupdict().items() if v is not None})
        if self.turn is not None and not self.turn(chat.turn):
            return None
        if self.last_role is not None and chat.messages[-1][0] not in self.last_role:
            return None
        if self.tools is not None:
            if self.tools is True or self.tools is False:
                if bool(chat.tools) != self.tools:
                    return None
            elif not set(self.tools) <= set(chat.tools):
                return None
        calls = self.reply.get("tool_calls")
        if calls and not {c["name"] for c in calls} <= set(chat.tools):
            return None  # a model only calls tools it is offered
        for key, pattern in self.regexes.items():
            if key == "system":
                text: str | None = chat.system
            elif key == "last":
                text = chat.messages[-1][1]
            else:
                text = chat.last(key)
            found = pattern.search(text) if text is not None else None
            if found is None:
                return None
            groups.update({k: v for k, v in found.groupdict().items() if v is not None})
        return groups

    def build(self, chat: _Chat, target: int, groups: dict[str, str]) -> Reply:
        values = {"turn": str(chat.turn), "role": chat.speaker, **groups}
        reply = self.reply
        if self.wants_filler:
            values["filler"] = filler(chat.rng, target)
        if "json" in reply:
            data = reply["json"]
            if data == "schema":
                return _structured_reply(chat, chat.schema() or {"type": "object"}, target)
            return Reply(json.dumps(_fill(data, values), ensure_ascii=False))
        text = _fill(reply["text"], values) if "text" in reply else None
        filled = [
            {**call, "arguments": _fill(call.get("arguments", {}), values)}
            for call in reply.get("tool_calls") or ()
        ]
        return Reply(text, _tool_calls(chat, filled))


def rules_shape(data: Any) -> tuple[list[Any], Any] | None:
    """(rules, default) when `data` has a rules file's shape, else None.

    A rules file is a list of rules, or a mapping with `rules` (and `default`) only; a run
    config is neither, which lets `peerflow check` tell the two apart.
    """
    if isinstance(data, dict) and "rules" in data and set(data) <= {"rules", "default"}:
        return data["rules"], data.get("default")
    return (data, None) if isinstance(data, list) else None


def _rules(path: Path) -> Script:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ValueError(f"{path}: not valid {kind}: {exc}") from None
    shape = rules_shape(data)
    if shape is None or not isinstance(shape[0], list):
        raise ValueError(
            f"{path}: a rules file holds a list of {{when, reply}} rules "
            "(or a mapping with 'rules' and 'default')"
        )
    data, default = shape
    rules = [_Rule(rule, f"{path}: rule {i}") for i, rule in enumerate(data)]
    fallback = None if default is None else _Rule({"reply": default}, f"{path}: default")

    def script(chat: _Chat, target: int, truncated: bool) -> tuple[str, int] | Reply:
        for rule in rules:
            groups = rule.match(chat)
            if groups is not None:
                return rule.build(chat, target, groups)
        if fallback is not None and fallback.match(chat) is not None:
            return fallback.build(chat, target, {})
        return _lorem(chat, target, truncated)

    return script


def _tool_calls(chat: _Chat, calls: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """A script's `[{name, arguments}]` as OpenAI tool calls, with ids fixed per request."""
    out = []
    for j, call in enumerate(calls):
        args = call.get("arguments", {})
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        cid = f"call_{_digest('call', chat.key, chat.turn, j, call['name']):016x}"
        out.append(
            {"id": cid, "type": "function", "function": {"name": call["name"], "arguments": args}}
        )
    return out or None


class ScriptError(Exception):
    """A Python script raised: the request gets a 500 that says so (and the log, why)."""


def _python_script(spec: str) -> Script:
    """`path/file.py:function`: a Python test double, called with each request's body.

    For a workflow whose replies depend on more than a rules file can say (a support
    desk's scripted agent and customer). `function(request) -> str | dict` returns the
    reply text, or `{"content": ..., "tool_calls": [{"name", "arguments"}]}`. It must be
    deterministic for a given request (derive any randomness from its `seed` and
    messages); token counts, timing and faults stay the simulator's.
    """
    file, _, name = spec.rpartition(":")
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"--script: {file!r} is not a file")
    module_name = (
        "peerflow_sim_script_" + hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()
    )
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--script: {path} has no function {name!r}")

    def script(chat: _Chat, target: int, truncated: bool) -> Reply:
        try:
            out = fn(chat.body)
        except Exception as exc:
            log.exception("script %s failed on a request", spec)
            raise ScriptError(f"script {spec} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, str):
            return Reply(out)
        if not isinstance(out, dict):
            raise ScriptError(f"script {spec} returned {type(out).__name__}; expected str or dict")
        return Reply(out.get("content"), _tool_calls(chat, out.get("tool_calls") or []))

    return script


def load_script(options: SimOptions) -> Script:
    """Resolve `--script` once at startup, so a bad rules file fails before serving."""
    if options.script == "lorem":
        return _lorem
    if options.script == "coral":
        return _coral(options.agree_after, options.seed)
    if re.search(r"\.py:\w+$", options.script):
        return _python_script(options.script)
    path = Path(options.script).expanduser()
    if not path.is_file():
        raise ValueError(f"--script: {options.script!r} is neither lorem, coral nor a file")
    return _rules(path)


# ---------------------------------------------------------------------------- engine


class _Seq:
    __slots__ = ("done", "finish", "kv", "order", "prompt", "target")

    def __init__(self, prompt: int, target: int, order: int, done: asyncio.Future[None]):
        self.prompt = prompt
        self.target = target
        self.kv = prompt + target
        self.order = order
        self.done = done
        self.finish = 0


class _Engine:
    """Continuous batching in virtual steps; see the module docstring for the cost model."""

    def __init__(self, options: SimOptions):
        self.o = options
        self.waiting: deque[_Seq] = deque()
        self.running: list[tuple[int, int, _Seq]] = []  # heap by finishing step
        self.kv_used = 0
        self.step = 0
        self.order = 0
        self.wakeup: asyncio.Future[bool] | None = None
        self.clock = 0.0
        self.steps_run = 0
        self.iterations = 0  # loop turns; far fewer than steps thanks to skipping ahead
        self.seq_steps = 0  # sum of batch sizes over steps, for the average
        self.model_busy_s = 0.0
        # Pool utilisation, on the engine's clock (event-loop seconds, time_scale applied):
        # busy_s while at least one sequence runs, seq_s the integral of the running count.
        # Both advance per event (admission, completion); `usage()` adds the segment in
        # progress, so a poll in the middle of a long batch sees them grow.
        self.busy_s = 0.0
        self.seq_s = 0.0
        self.counted_to = 0.0  # the clock time busy_s and seq_s are accounted up to
        self.counted_n = 0  # sequences running since `counted_to`
        self.segment_end: float | None = None  # end of the batch being slept through
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None

    def submit(self, prompt: int, target: int) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.order += 1
        seq = _Seq(prompt, target, self.order, done)
        self.waiting.append(seq)
        # Wake a sleeping engine only if this arrival could join the batch right away;
        # otherwise it just waits for the completion the engine is already sleeping towards.
        if len(self.waiting) == 1 and self._fits(seq):
            self._wake(True)
        return done

    def _fits(self, seq: _Seq) -> bool:
        if not self.running:
            return True  # even an oversized request runs alone rather than block forever
        return (
            len(self.running) < self.o.max_num_seqs and self.kv_used + seq.kv <= self.o.kv_capacity
        )

    def _wake(self, value: bool) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(value)

    async def _sleep_until(self, deadline: float | None, interruptible: bool) -> bool:
        """Sleep to `deadline` (None = until woken); True if an arrival cut it short."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        handle = loop.call_at(deadline, self._timer, fut) if deadline is not None else None
        if interruptible:
            self.wakeup = fut
        try:
            return await fut
        finally:
            self.wakeup = None
            if handle is not None:
                handle.cancel()

    @staticmethod
    def _timer(fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            fut.set_result(False)

    def _count(self, now: float) -> None:
        """Account utilisation up to `now` at the old running count, then take the new one."""
        elapsed = now - self.counted_to
        if elapsed > 0:
            if self.counted_n:
                self.busy_s += elapsed
                self.seq_s += self.counted_n * elapsed
            self.counted_to = now
        self.counted_n = len(self.running)

    def now(self) -> float:
        """The event loop's clock, which the engine's clock follows."""
        return self.loop.time() if self.loop is not None else self.clock

    def usage(self) -> tuple[float, float, float]:
        """(busy_s, seq_s, now): accounted totals plus the batch in progress up to now.

        The batch in progress counts only up to its scheduled end, so the totals never go
        back when the engine later accounts that batch itself.
        """
        now = self.now()
        busy, seq = self.busy_s, self.seq_s
        if self.segment_end is not None and self.counted_n:
            elapsed = min(now, self.segment_end) - self.counted_to
            if elapsed > 0:
                busy += elapsed
                seq += self.counted_n * elapsed
        return busy, seq, now

    def _admit(self) -> int:
        prefill = 0
        while self.waiting and self._fits(self.waiting[0]):
            seq = self.waiting.popleft()
            seq.finish = self.step + seq.target
            heapq.heappush(self.running, (seq.finish, seq.order, seq))
            self.kv_used += seq.kv
            prefill += seq.prompt
        return prefill

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        scale = self.o.time_scale
        while True:
            if not self.running and not self.waiting:
                await self._sleep_until(None, interruptible=True)
                self.clock = loop.time()
            else:
                self.clock = max(self.clock, loop.time() - _MAX_LAG_S)
            self._count(self.clock)  # a stalled loop's gap counts at the old batch size
            prefill_s = self.o.prefill_ms_per_1k * self._admit() / 1e6
            self._count(self.clock)
            if not self.running:
                continue
            batch = len(self.running)
            step_s = (self.o.step_base_ms + self.o.step_per_seq_ms * batch) / 1e3
            steps = self.running[0][0] - self.step
            if scale > 0:
                start = self.clock
                end = self.segment_end = start + (prefill_s + steps * step_s) * scale
                interrupted = await self._sleep_until(end, interruptible=True)
                if interrupted and step_s > 0:
                    # An arrival can join: finish the step in progress, then admit it.
                    elapsed = loop.time() - start - prefill_s * scale
                    steps = min(steps, max(1, int(elapsed / (step_s * scale)) + 1))
                    end = self.segment_end = start + (prefill_s + steps * step_s) * scale
                    await self._sleep_until(end, interruptible=False)
                self.clock = end
                self.segment_end = None
            else:
                await asyncio.sleep(0)  # same semantics, no time; let the server run
            self.step += steps
            self.iterations += 1
            self.steps_run += steps
            self.seq_steps += steps * batch
            self.model_busy_s += prefill_s + steps * step_s
            while self.running and self.running[0][0] <= self.step:
                seq = heapq.heappop(self.running)[2]
                self.kv_used -= seq.kv
                if not seq.done.done():
                    seq.done.set_result(None)
            self._count(self.clock)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.clock = self.counted_to = self.loop.time()
        self.task = asyncio.create_task(self.run(), name="peerflow-sim-llm-engine")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        for seq in [*self.waiting, *(entry[2] for entry in self.running)]:
            seq.done.cancel()
        self.waiting.clear()
        self.running.clear()
        self.kv_used = 0
        self.segment_end = None
        self.counted_n = 0


# ---------------------------------------------------------------------------- server


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def _error(
    status: int,
    message: str,
    kind: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> web.Response:
    return _json(
        {"error": {"message": message, "type": kind, "param": param, "code": None}},
        status,
        headers,
    )


class _TokenBucket:
    """A provider's request rate limit: `rps` tokens a second, at most `burst` saved up.

    Real time, not simulated time (`time_scale` does not apply): it models an API's quota,
    not the engine. Starts full, as a quota does after an idle minute.
    """

    def __init__(self, rps: float, burst: float):
        self.rps = rps
        self.burst = max(1.0, burst or rps)
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self) -> float:
        """0.0 if a request may pass (its token is taken), else the seconds until one may."""
        now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rps)
        self.at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rps


class SimLLMServer:
    """The simulator as an in-process aiohttp server, for tests and benchmarks.

    `start()` binds (port 0 picks a free port) and sets `url` to the ``.../v1`` base URL that
    OpenAI clients expect; `stop()` releases everything. Also usable as ``async with``.
    """

    def __init__(self, options: SimOptions | None = None):
        self.options = options or SimOptions()
        self.script = load_script(self.options)
        self.engine = _Engine(self.options)
        self.faults = random.Random(_digest("faults", self.options.seed))
        o = self.options
        self.bucket = (
            _TokenBucket(o.rate_limit_rps, o.rate_limit_burst) if o.rate_limit_rps else None
        )
        self.url: str | None = None
        self.port: int | None = None
        self.started = time.time()
        self.counters = {
            "requests": 0,
            "completed": 0,
            "bad_requests": 0,
            "errors_injected": 0,
            "rate_limited_injected": 0,
            "garbage_injected": 0,
            "invalid_json_injected": 0,
            "rate_limited": 0,
            "script_errors": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        app.on_response_prepare.append(self._label)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port, backlog=4096)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.options.host}:{self.port}/v1"
        self.started = time.time()
        self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimLLMServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        e = self.engine
        busy, seq, now = e.usage()
        return {
            **self.counters,
            "running": len(e.running),
            "waiting": len(e.waiting),
            "engine_steps": e.steps_run,
            "engine_iterations": e.iterations,
            "avg_batch_size": e.seq_steps / e.steps_run if e.steps_run else 0.0,
            "busy_s": e.model_busy_s * self.options.time_scale,
            "model_busy_s": e.model_busy_s,
            "busy_seconds": busy,
            "seq_seconds": seq,
            "measured_at": now,
            "uptime_s": time.time() - self.started,
            "time_scale": self.options.time_scale,
            "simulator": True,
        }

    @staticmethod
    async def _label(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[SIM_HEADER] = "1"

    async def _models(self, request: web.Request) -> web.Response:
        return _json(
            {"object": "list", "data": [{"id": SIM_NAME, "object": "model", "owned_by": SIM_NAME}]}
        )

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "simulator": True})

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    def _fault(self) -> web.Response | None:
        o = self.options
        if not (o.error_rate or o.rate_limit_rate or o.garbage_rate):
            return None
        u = self.faults.random()
        if u < o.error_rate:
            self.counters["errors_injected"] += 1
            return _error(500, "peerflow-simulator: injected server error", "server_error")
        if u < o.error_rate + o.rate_limit_rate:
            self.counters["rate_limited_injected"] += 1
            after = f"{o.retry_after:g}"
            return _error(
                429,
                "peerflow-simulator: injected rate limit",
                "rate_limit_error",
                {"Retry-After": after},
            )
        if u < o.error_rate + o.rate_limit_rate + o.garbage_rate:
            self.counters["garbage_injected"] += 1
            return web.Response(
                body=b'{"id": "chatcmpl-sim", "choices": [{"index": 0, "mes',
                content_type="application/json",
            )
        return None

    def _invalid(self, chat: _Chat, out: tuple[str, int] | Reply) -> Reply | None:
        """With `invalid_json_rate`, a reply that fails the request's schema instead of `out`.

        Decided from the request alone (its messages, seed and schema), so a repeated request
        gets the same reply and a re-ask (more messages) a fresh chance; tool calls are kept.
        """
        schema = chat.schema()
        rate = self.options.invalid_json_rate
        if not rate or schema is None or (isinstance(out, Reply) and out.tool_calls):
            return None
        spec = json.dumps(schema, sort_keys=True, default=str)
        rng = random.Random(_digest("invalid-json", chat.key, spec))
        if rng.random() >= rate:
            return None
        text = out[0] if isinstance(out, tuple) else out.content or ""
        return Reply(_invalid_json(text, schema, rng))

    async def _chat(self, request: web.Request) -> web.Response:
        self.counters["requests"] += 1
        number = self.counters["requests"]
        if self.bucket is not None:
            await request.read()  # a client's whole request arrives before the verdict
            wait = self.bucket.take()
            if wait:
                self.counters["rate_limited"] += 1
                return _error(
                    429,
                    "peerflow-simulator: rate limit reached (rate_limit_rps)",
                    "rate_limit_error",
                    {"Retry-After": f"{math.ceil(wait * 1000) / 1000:g}"},
                )
        try:
            chat = _Chat(orjson.loads(await request.read()), self.options)
        except (orjson.JSONDecodeError, ValueError) as exc:
            self.counters["bad_requests"] += 1
            param = exc.param if isinstance(exc, RequestError) else None
            return _error(400, f"peerflow-simulator: {exc}", "invalid_request_error", param=param)
        fault = self._fault()
        if fault is not None and fault.status != 200:
            return fault
        o = self.options
        sampled = chat.rng.lognormvariate(math.log(o.output_median), o.output_sigma)
        chat.sampled = round(sampled)
        target = max(1, min(chat.max_tokens, chat.sampled))
        try:
            out = self.script(chat, target, target == chat.max_tokens)
        except ScriptError as exc:
            self.counters["script_errors"] += 1
            return _error(500, f"peerflow-simulator: {exc}", "server_error")
        invalid = self._invalid(chat, out)
        reply, tokens, finish = _settle(out if invalid is None else invalid, chat.max_tokens)
        await self.engine.submit(chat.prompt_tokens, tokens)
        if fault is not None:
            return fault
        self.counters["completed"] += 1
        if invalid is not None:
            self.counters["invalid_json_injected"] += 1
        self.counters["prompt_tokens"] += chat.prompt_tokens
        self.counters["completion_tokens"] += tokens
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return _json(
            {
                "id": f"chatcmpl-sim-{number:x}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{SIM_NAME}/{chat.model}",
                "system_fingerprint": SIM_NAME,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": chat.prompt_tokens,
                    "completion_tokens": tokens,
                    "total_tokens": chat.prompt_tokens + tokens,
                },
            }
        )


# ------------------------------------------------------------------------------- CLI


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Flags mirror `SimOptions` field by field, so configs can pass any option through."""
    d = SimOptions()
    p = argparse.ArgumentParser(
        prog="peerflow sim-llm",
        allow_abbrev=False,  # `--seed` must never be taken for another flag's prefix
        description="Serve a SIMULATED OpenAI-compatible LLM: continuous-batching timing with "
        "filler text. A measuring instrument for benchmarks and tests, not a model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = p.add_argument
    add("--host", default=d.host)
    add("--port", type=int, default=d.port, help="0 picks a free port (printed at startup)")
    g = p.add_argument_group("engine timing")
    g.add_argument(
        "--max-num-seqs",
        type=int,
        default=d.max_num_seqs,
        help="sequences decoded together; the rest wait FIFO",
    )
    g.add_argument(
        "--kv-capacity",
        type=int,
        default=d.kv_capacity,
        help="KV tokens: running prompt + target lengths must fit",
    )
    g.add_argument(
        "--prefill-ms-per-1k",
        type=float,
        default=d.prefill_ms_per_1k,
        help="added to the next step per 1,000 newly admitted prompt tokens",
    )
    g.add_argument("--step-base-ms", type=float, default=d.step_base_ms)
    g.add_argument("--step-per-seq-ms", type=float, default=d.step_per_seq_ms)
    g.add_argument(
        "--time-scale",
        type=float,
        default=d.time_scale,
        help="multiplies every cost; 0 = as fast as possible, same batching",
    )
    g = p.add_argument_group("replies")
    g.add_argument(
        "--output-median",
        type=float,
        default=d.output_median,
        help="median sampled reply length in tokens (lognormal)",
    )
    g.add_argument("--output-sigma", type=float, default=d.output_sigma)
    g.add_argument(
        "--default-max-tokens",
        type=int,
        default=d.default_max_tokens,
        help="cap when a request gives no max_tokens",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--script",
        default=d.script,
        help="lorem, coral, a Python test double `file.py:function` (called with each request "
        "body, returns the reply text or {content, tool_calls}), "
        "or a YAML/JSON rules file: a list of {when: {role, system, last, "
        "last_role, user, assistant, tool, turn, tools}, reply: text | {text, tool_calls: "
        "[{name, arguments}], json: object | schema}}; first match wins, else filler "
        "(see `python -m pydoc peerflow.services.sim_llm`)",
    )
    g.add_argument(
        "--strict",
        type=_flag,
        default=d.strict,
        help="reject (HTTP 400) what a strict OpenAI server rejects: orphan tool messages, "
        "unanswered tool calls, malformed tools, unknown roles, missing content (true/false)",
    )
    g.add_argument(
        "--agree-after",
        type=int,
        default=d.agree_after,
        help="coral: debate turns after which every speaker gives the consensus",
    )
    g = p.add_argument_group("fault injection (probabilities per request)")
    g.add_argument("--error-rate", type=float, default=d.error_rate, help="HTTP 500")
    g.add_argument("--rate-limit-rate", type=float, default=d.rate_limit_rate, help="HTTP 429")
    g.add_argument(
        "--retry-after",
        type=float,
        default=d.retry_after,
        help="Retry-After seconds sent with injected 429s",
    )
    g.add_argument(
        "--garbage-rate",
        type=float,
        default=d.garbage_rate,
        help="HTTP 200 with a body that is not JSON",
    )
    g.add_argument(
        "--invalid-json-rate",
        type=float,
        default=d.invalid_json_rate,
        help="structured-output requests only: a normal reply whose content fails the schema "
        "(not JSON, a required property missing, or a property of the wrong type)",
    )
    g = p.add_argument_group("rate limit (a provider's quota, in real time)")
    g.add_argument(
        "--rate-limit-rps",
        type=float,
        default=d.rate_limit_rps,
        help="token bucket: requests a second; beyond, HTTP 429 with Retry-After (0 = none)",
    )
    g.add_argument(
        "--rate-limit-burst",
        type=float,
        default=d.rate_limit_burst,
        help="token bucket size: requests allowed at once after a pause (0 = one second's)",
    )
    return p


async def _serve(options: SimOptions) -> None:
    server = SimLLMServer(options)
    await server.start()
    print(f"peerflow sim-llm (SIMULATOR, not a model) listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the simulator until SIGTERM/SIGINT; a parent parses the port from the first line."""
    args = build_parser().parse_args(argv)
    try:
        options = SimOptions(**vars(args))
        load_script(options)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"peerflow sim-llm: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(options))
    else:
        uvloop.run(_serve(options))


if __name__ == "__main__":
    main()
