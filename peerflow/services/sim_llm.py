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
so its CPU cost is per request, not per token.

Scripts make workflows terminate as they would with a model: ``coral`` plays the teacher and
student debate (converging on one letter after ``agree_after`` turns) and the answer extractor;
a YAML/JSON rules file maps regexes on the last user message to canned replies.

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
import json
import math
import random
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["SimLLMServer", "SimOptions", "SimServiceOptions", "build_parser", "main"]

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


class _Chat:
    """The parts of a chat request that scripts and the timing model look at."""

    __slots__ = ("max_tokens", "messages", "model", "prompt_tokens", "rng")

    def __init__(self, body: Any, options: SimOptions):
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        if body.get("stream"):
            raise ValueError("stream=true is not supported by the simulator")
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise ValueError("'messages' must be a non-empty list")
        messages: list[tuple[str, str]] = []
        for m in raw:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ValueError("each message must be an object with a string 'role'")
            messages.append((m["role"], _content_text(m.get("content"))))
        max_tokens = body.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        if max_tokens is None:
            max_tokens = options.default_max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError("'max_tokens' must be a positive integer")
        seed = body.get("seed")
        model = body.get("model")
        self.model = model if isinstance(model, str) and model else "default"
        self.messages = messages
        self.max_tokens = max_tokens
        chars = sum(len(text) for _, text in messages)
        self.prompt_tokens = math.ceil(chars / 4) + 4 * len(messages)
        self.rng = random.Random(_digest(options.seed, seed, *(x for m in messages for x in m)))

    def first(self, role: str) -> str | None:
        return next((text for r, text in self.messages if r == role), None)

    def last(self, role: str) -> str | None:
        return next((text for r, text in reversed(self.messages) if r == role), None)


# A script turns a chat and its sampled length into (reply text, completion tokens).
Script = Callable[[_Chat, int, bool], tuple[str, int]]


def _lorem(chat: _Chat, target: int, truncated: bool) -> tuple[str, int]:
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


def _rules(path: Path) -> Script:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a rules file holds a list of {{match, reply}} objects")
    rules: list[tuple[re.Pattern[str], str]] = []
    for i, rule in enumerate(data):
        if not isinstance(rule, dict) or not {"match", "reply"} <= rule.keys():
            raise ValueError(f"{path}: rule {i} needs 'match' and 'reply'")
        rules.append((re.compile(str(rule["match"])), str(rule["reply"])))

    def script(chat: _Chat, target: int, truncated: bool) -> tuple[str, int]:
        last = chat.last("user") or ""
        for pattern, reply in rules:
            if pattern.search(last):
                if "{filler}" in reply:
                    reply = reply.replace("{filler}", filler(chat.rng, target))
                return reply, target
        return filler(chat.rng, target), target

    return script


def load_script(options: SimOptions) -> Script:
    """Resolve `--script` once at startup, so a bad rules file fails before serving."""
    if options.script == "lorem":
        return _lorem
    if options.script == "coral":
        return _coral(options.agree_after, options.seed)
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
            prefill_s = self.o.prefill_ms_per_1k * self._admit() / 1e6
            if not self.running:
                continue
            batch = len(self.running)
            step_s = (self.o.step_base_ms + self.o.step_per_seq_ms * batch) / 1e3
            steps = self.running[0][0] - self.step
            if scale > 0:
                start = self.clock
                end = start + (prefill_s + steps * step_s) * scale
                interrupted = await self._sleep_until(end, interruptible=True)
                if interrupted and step_s > 0:
                    # An arrival can join: finish the step in progress, then admit it.
                    elapsed = loop.time() - start - prefill_s * scale
                    steps = min(steps, max(1, int(elapsed / (step_s * scale)) + 1))
                    end = start + (prefill_s + steps * step_s) * scale
                    await self._sleep_until(end, interruptible=False)
                self.clock = end
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

    def start(self) -> None:
        self.clock = asyncio.get_running_loop().time()
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


# ---------------------------------------------------------------------------- server


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> web.Response:
    return _json(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status, headers
    )


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
        return {
            **self.counters,
            "running": len(e.running),
            "waiting": len(e.waiting),
            "engine_steps": e.steps_run,
            "engine_iterations": e.iterations,
            "avg_batch_size": e.seq_steps / e.steps_run if e.steps_run else 0.0,
            "busy_s": e.model_busy_s * self.options.time_scale,
            "model_busy_s": e.model_busy_s,
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

    async def _chat(self, request: web.Request) -> web.Response:
        self.counters["requests"] += 1
        number = self.counters["requests"]
        try:
            chat = _Chat(orjson.loads(await request.read()), self.options)
        except (orjson.JSONDecodeError, ValueError) as exc:
            self.counters["bad_requests"] += 1
            return _error(400, f"peerflow-simulator: {exc}", "invalid_request_error")
        fault = self._fault()
        if fault is not None and fault.status != 200:
            return fault
        o = self.options
        sampled = chat.rng.lognormvariate(math.log(o.output_median), o.output_sigma)
        target = max(1, min(chat.max_tokens, round(sampled)))
        text, tokens = self.script(chat, target, target == chat.max_tokens)
        await self.engine.submit(chat.prompt_tokens, tokens)
        if fault is not None:
            return fault
        self.counters["completed"] += 1
        self.counters["prompt_tokens"] += chat.prompt_tokens
        self.counters["completion_tokens"] += tokens
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
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if tokens == chat.max_tokens else "stop",
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
        help="lorem, coral, or a YAML/JSON file of {match, reply} rules",
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
