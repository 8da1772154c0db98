"""Structured outputs: a role's reply shaped by a JSON Schema, asked for and checked.

A role declares the shape (`structured.schema`: a pydantic model or a JSON Schema), and the
request asks the server to keep to it in the way that server understands, chosen per
service (`services.<name>.structured_output`):

- `response_format`: OpenAI's `{"type": "json_schema", ...}`; OpenAI, vLLM, SGLang and
  llama.cpp's llama-server accept it;
- `json_object`: `{"type": "json_object", "schema": ...}`, llama-cpp-python's server (the
  embedded model) turns it into a grammar;
- `vllm`: vLLM's `structured_outputs: {"json": ...}` (0.12 and later);
- `guided_json`: vLLM's older `guided_json` field;
- `llama_cpp`: llama-server's own `json_schema` field;
- `prompt`: nothing server-side; the schema is spelled out in the prompt.

Whatever the server promised, the reply is checked: a server may not support the
constraint, a reply may be cut at `max_tokens`, and a JSON Schema says more than a grammar
enforces. An invalid reply is answered with the validation error and the model asked
again, at most `retries` times; then the row is rejected with `reject_reason`, and the
invalid replies are kept in the step.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from peerflow.loading import load_object
from peerflow.services.base import ChatResult


class StructuredOptions(BaseModel):
    """`roles.<name>.structured` of an LLM role."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | dict[str, Any] = Field(
        alias="schema",
        description="`module:Name` naming a pydantic model (or a dict holding a JSON Schema), "
        "or a JSON Schema written inline.",
    )
    name: str | None = Field(
        default=None, description="Schema name sent to the server (default: the model's name)."
    )
    retries: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Re-asks, with the validation error, after an invalid reply.",
    )
    reject_reason: str | None = Field(
        default=None,
        description="Rejection reason once every attempt was invalid (default: "
        "`invalid_<role>_output`).",
    )
    strict: bool = Field(
        default=False,
        description="Send `strict: true` with a `response_format` json_schema (OpenAI then "
        "requires every property listed in `required` and `additionalProperties: false`).",
    )


class StructuredReply(ChatResult):
    """A chat result whose text was checked against the role's schema.

    `usage` adds up every attempt; `data` is the parsed object (None when every attempt
    was invalid); `invalid` lists the invalid attempts' replies and errors, in order.
    """

    data: dict[str, Any] | None = None
    error: str | None = None
    invalid: list[dict[str, Any]] | None = None


_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


class OutputSchema:
    """A role's reply schema: what to send, and how to check a reply against it."""

    def __init__(self, options: StructuredOptions, role: str):
        where = f"roles.{role}.structured.schema"
        spec = options.schema_
        self.model: type[BaseModel] | None = None
        if isinstance(spec, str):
            obj = load_object(spec, what=where)
            if isinstance(obj, type) and issubclass(obj, BaseModel):
                self.model = obj
                spec = obj.model_json_schema()
            elif isinstance(obj, dict):
                spec = obj
            else:
                raise ValueError(
                    f"{where}: {options.schema_!r} is a {type(obj).__name__}; expected a "
                    "pydantic model class or a dict holding a JSON Schema"
                )
        try:
            jsonschema.validators.validator_for(spec).check_schema(spec)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"{where}: not a valid JSON Schema: {exc.message}") from None
        self.schema: dict[str, Any] = spec
        self.validator = jsonschema.validators.validator_for(spec)(spec)
        self.adapter = TypeAdapter(self.model) if self.model is not None else None
        default = self.model.__name__ if self.model is not None else spec.get("title") or role
        self.name = _NAME.sub("_", options.name or str(default))[:64] or "output"
        self.strict = options.strict
        self.retries = options.retries
        self.reject_reason = options.reject_reason or f"invalid_{role}_output"

    def request(self, mode: str) -> dict[str, Any]:
        """The request fields that ask a server of this `mode` for the schema."""
        if mode == "response_format":
            spec: dict[str, Any] = {"name": self.name, "schema": self.schema}
            if self.strict:
                spec["strict"] = True
            return {"response_format": {"type": "json_schema", "json_schema": spec}}
        if mode == "json_object":
            return {"response_format": {"type": "json_object", "schema": self.schema}}
        if mode == "vllm":
            return {"structured_outputs": {"json": self.schema}}
        if mode == "guided_json":
            return {"guided_json": self.schema}
        if mode == "llama_cpp":
            return {"json_schema": self.schema}
        return {}

    def instruction(self) -> str:
        """The prompt text that states the schema (mode `prompt`, and every re-ask)."""
        return (
            "Reply with only a JSON value that follows this JSON Schema, with no other text:\n"
            + json.dumps(self.schema, ensure_ascii=False)
        )

    def check(self, text: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """(parsed object, None) for a valid reply; (None, why) for an invalid one.

        A reply wrapped in a Markdown code fence, or with prose around one JSON object, is
        read for the JSON inside (models without constrained decoding often do that).
        """
        if not text or not text.strip():
            return None, "the reply is empty"
        value, error = _loads(text)
        if error is not None:
            return None, error
        if self.adapter is not None:
            try:
                parsed = self.adapter.validate_python(value)
            except ValidationError as exc:
                return None, _pydantic_errors(exc)
            data = parsed.model_dump(mode="json")
        else:
            errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.path))
            if errors:
                return None, "; ".join(_schema_error(e) for e in errors[:3])
            data = value
        return (data if isinstance(data, dict) else {"value": data}), None


def _loads(text: str) -> tuple[Any, str | None]:
    candidates = [text.strip()]
    fenced = _FENCE.match(text)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    first: str | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate), None
        except json.JSONDecodeError as exc:
            first = first or f"the reply is not valid JSON ({exc.msg} at character {exc.pos})"
    return None, first


def _pydantic_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "the value"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _schema_error(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "the value"
    return f"{where}: {err.message}"


def reask(error: str, schema: OutputSchema) -> str:
    """The user message that answers an invalid reply."""
    return f"That reply is not valid: {error}.\n{schema.instruction()}"


def merge_usage(total: dict[str, int] | None, more: dict[str, int] | None) -> dict[str, int] | None:
    if not more:
        return total
    out = dict(total or {})
    for key, n in more.items():
        if isinstance(n, int):
            out[key] = out.get(key, 0) + n
    return out
