"""An OpenAI-compatible server that decodes many chat requests of one GGUF model at once.

`python -m llama_cpp.server` answers one request at a time. This server keeps `slots`
sequences in one llama.cpp context and runs continuous batching: every step is a single
`llama_decode` holding the next token of each generating request plus prompt chunks of the
requests being prefilled (up to `n_batch` tokens). On 2 cores with SmolLM2-135M a step costs
~12 ms with one sequence and ~40 ms with eight, so eight requests in flight get ~2.5x the
tokens per second of one. Requests join at the next step and leave the moment they finish;
requests beyond `slots` wait in a FIFO queue; a client that goes away frees its slot.

On a CPU the prompt is the expensive part (prefill runs at a few hundred tokens/s here), so
each slot keeps the tokens its KV cache holds: a request goes to the slot whose cache its
prompt continues (the next turn of the same conversation) and prefills only the rest, and a
prefix another slot holds (the same system prompt) is copied rather than recomputed. Two
more measures keep batches fast: Q4_1/Q5_x weights are re-encoded once as Q8_0 (cached),
which llama.cpp multiplies with tiled kernels, and decoding falls back to one thread while
other processes take the cores (see `ThreadGovernor`).

It needs nothing beyond llama-cpp-python's ctypes bindings (no extra native build):

    python -m peerflow.services.llama_batch --model PATH --port 8080 --n-ctx 2048 --slots 16

Endpoints: `POST /v1/chat/completions` (non-streaming, n=1), `GET /v1/models`, `GET /health`,
`GET /stats` (batching and prefix-cache counters).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import ctypes
import hashlib
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as lc
import numpy as np
import orjson
from aiohttp import web
from llama_cpp import llama_chat_format, llama_grammar

__all__ = [
    "BatchEngine",
    "GenerationParams",
    "LoadedModel",
    "RequestError",
    "Sampler",
    "ThreadGovernor",
    "build_app",
    "main",
]

log = logging.getLogger("peerflow.llama_batch")

# Sampling defaults of `llama_cpp.server`, so switching servers does not change replies.
_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}
_PENALTY_LAST_N = 64  # llama_cpp.server's last_n_tokens_size
_MAX_STOPS = 16
_COPY_MIN_TOKENS = 8  # shortest prefix worth copying from another slot's cache
_GRAMMAR_SHORTLIST = 256  # likeliest tokens a grammar is checked against before all of them
_ROLES = ("system", "user", "assistant")
_CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------- the model

# Legacy 4/5-bit types that llama.cpp's CPU backend multiplies one dot product at a time:
# as Q8_0 (same 32-weight blocks, 8-bit) they get its tiled matrix kernels, 1.6x faster
# prompts and batched steps on 2 AVX2 cores; the 8-bit copy of a 4-bit weight is all but
# exact (SmolLM2 perplexity 26.77 vs 26.74 on this repo's docs).
_UPCAST_FTYPES = {
    lc.LLAMA_FTYPE_MOSTLY_Q4_1,
    lc.LLAMA_FTYPE_MOSTLY_Q5_0,
    lc.LLAMA_FTYPE_MOSTLY_Q5_1,
}


def _load(path: str) -> Any:
    model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
    if not model:
        raise RuntimeError(f"could not load the model {path} (not a valid GGUF file?)")
    return model


def _q8_copy(path: str, n_threads: int) -> str:
    """A Q8_0 copy of the GGUF at `path`, made once and cached under ~/.cache/peerflow."""
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "peerflow"
    out = cache / "gguf" / f"{Path(path).stem}.{key.hexdigest()[:16]}.q8_0.gguf"
    if out.is_file():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    params = lc.llama_model_quantize_default_params()
    params.ftype = lc.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = n_threads
    log.info("re-encoding %s as Q8_0 once, for faster batches (cached at %s)", path, out)
    try:
        if lc.llama_model_quantize(str(path).encode(), str(tmp).encode(), ctypes.byref(params)):
            raise RuntimeError(f"llama.cpp could not re-encode {path} as Q8_0")
        os.replace(tmp, out)  # atomic: replicas starting together may race here
    finally:
        tmp.unlink(missing_ok=True)
    return str(out)


class LoadedModel:
    """One GGUF model with a context of `slots` sequences of `n_ctx` tokens each.

    The KV cache is not unified: each sequence gets its own stream of `n_ctx` cells, so a
    token attends only to its own sequence (a unified cache would make every token scan the
    cells of all slots).
    """

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int,
        slots: int,
        n_threads: int,
        n_batch: int = 512,
        adaptive_threads: bool = True,
        keep_weights: bool = False,
    ) -> None:
        lc.llama_backend_init()
        self.model = _load(path)
        self.weights = path
        if not keep_weights and lc.llama_model_ftype(self.model) in _UPCAST_FTYPES:
            try:
                self.weights = _q8_copy(path, n_threads)
            except (OSError, RuntimeError) as exc:
                log.warning("serving the weights as they are: %s", exc)
            else:
                lc.llama_model_free(self.model)
                self.model = _load(self.weights)
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx * slots
        cparams.n_seq_max = slots
        cparams.kv_unified = False
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise RuntimeError(f"could not create a llama.cpp context for {path}")
        self.memory = lc.llama_get_memory(self.ctx)
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.path = path
        self.n_ctx = n_ctx  # the per-slot limit we enforce (llama.cpp may round it up)
        self.n_ctx_seq = lc.llama_n_ctx_seq(self.ctx)
        self.slots = slots
        self.n_threads = n_threads
        self.adaptive_threads = adaptive_threads
        self.n_batch = n_batch
        self.n_ctx_train = lc.llama_model_n_ctx_train(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self._pieces: dict[int, bytes] = {}
        self._formatter = self._chat_formatter()
        # Candidate arrays for samplers applied by hand (structured replies only).
        self._candidates = (lc.llama_token_data * self.n_vocab)()
        self._cand_view = np.ctypeslib.as_array(self._candidates)
        self._token_ids = np.arange(self.n_vocab, dtype=np.int32)
        self._one = (lc.llama_token_data * 1)()
        self._shortlist = (lc.llama_token_data * _GRAMMAR_SHORTLIST)()
        self._short_view = np.ctypeslib.as_array(self._shortlist)

    def close(self) -> None:
        if self.ctx:
            lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None

    # -------------------------------------------------------------- text <-> tokens

    def token_text(self, token: int) -> str:
        """The vocabulary entry of `token` as written in templates (`<|im_end|>`)."""
        raw = lc.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (lc.llama_token * size)()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        if n < 0:  # cannot happen with one slot per byte, but the API allows it
            size = -n
            buf = (lc.llama_token * size)()
            n = lc.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a generated token adds to the reply (control tokens add none)."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = lc.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lc.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            cached = buf.raw[:n]
            self._pieces[token] = cached
        return cached

    def is_end(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    def pick(self, chain: Any, ctx: Any, index: int, grammar: Any) -> int:
        """Apply `grammar` (if any) then `chain` to the logits at `index`; accept nothing.

        With a grammar, the likeliest `_GRAMMAR_SHORTLIST` tokens are tried first: checking
        them costs a fraction of a pass over the vocabulary, and the sampler keeps at most
        top-k of them anyway. Only when the grammar allows none of them is every token seen.
        """
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        if grammar is not None:
            top = np.argpartition(logits, -_GRAMMAR_SHORTLIST)[-_GRAMMAR_SHORTLIST:]
            short = self._short_view
            short["id"] = top
            short["logit"] = logits[top]
            short["p"] = 0.0
            array = lc.llama_token_data_array(self._shortlist, _GRAMMAR_SHORTLIST, -1, False)
            lc.llama_sampler_apply(grammar, ctypes.byref(array))
            if np.isfinite(short["logit"]).any():
                lc.llama_sampler_apply(chain, ctypes.byref(array))
                return int(array.data[array.selected].id)
        view = self._cand_view
        view["id"] = self._token_ids
        view["logit"] = logits
        view["p"] = 0.0
        array = lc.llama_token_data_array(self._candidates, self.n_vocab, -1, False)
        if grammar is not None:
            lc.llama_sampler_apply(grammar, ctypes.byref(array))
        lc.llama_sampler_apply(chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def allows(self, grammar: Any, token: int) -> bool:
        """Whether `grammar`, in its current state, lets `token` come next."""
        one = self._one
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
        array = lc.llama_token_data_array(one, 1, -1, False)
        lc.llama_sampler_apply(grammar, ctypes.byref(array))
        return bool(np.isfinite(one[0].logit))

    # -------------------------------------------------------------- chat template

    def _chat_formatter(self) -> llama_chat_format.Jinja2ChatFormatter:
        """The model's own chat template (GGUF `tokenizer.chat_template`), or ChatML."""
        raw = lc.llama_model_chat_template(self.model, None)
        template = raw.decode("utf-8", "replace") if raw else None
        if not template:
            log.warning("the model has no chat template; using ChatML")
            template = _CHATML
        bos = lc.llama_vocab_bos(self.vocab)
        eos = lc.llama_vocab_eos(self.vocab)
        return llama_chat_format.Jinja2ChatFormatter(
            template,
            eos_token=self.token_text(eos) if eos >= 0 else "",
            bos_token=self.token_text(bos) if bos >= 0 else "",
        )

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt tokens of a conversation, ending with the assistant's header."""
        text = self._formatter(messages=messages).prompt
        tokens = self.tokenize(text)
        bos = lc.llama_vocab_bos(self.vocab)
        if lc.llama_vocab_get_add_bos(self.vocab) and bos >= 0 and tokens[:1] != [bos]:
            tokens.insert(0, bos)
        return tokens

    # -------------------------------------------------------------- samplers

    def sampler(self, params: GenerationParams) -> Sampler:
        """A fresh sampler for one request; raises RequestError when the grammar is bad."""
        grammar = None
        if params.grammar is not None:
            grammar = lc.llama_sampler_init_grammar(
                self.vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                raise RequestError(
                    "the JSON schema could not be turned into a grammar", "response_format"
                )
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lc.llama_sampler_chain_add(chain, sampler)

        # Top-k first, so the penalties scan 40 candidates rather than the vocabulary.
        if params.top_k > 0:
            add(lc.llama_sampler_init_top_k(params.top_k))
        penalties = (params.repeat_penalty, params.frequency_penalty, params.presence_penalty)
        if penalties != (1.0, 0.0, 0.0):
            add(lc.llama_sampler_init_penalties(self.n_vocab, _PENALTY_LAST_N, *penalties))
        if params.temperature <= 0.0:
            add(lc.llama_sampler_init_greedy())
        else:
            add(lc.llama_sampler_init_top_p(params.top_p, 1))
            add(lc.llama_sampler_init_min_p(params.min_p, 1))
            add(lc.llama_sampler_init_temp(params.temperature))
            add(lc.llama_sampler_init_dist(params.seed))
        return Sampler(self, chain, grammar)


class Sampler:
    """One request's sampling: a llama.cpp chain, and for structured replies a grammar.

    A grammar pass over the whole vocabulary costs milliseconds per token (and the decode
    loop samples every slot in turn), so the grammar is consulted lazily, as llama.cpp's own
    server does: pick a token without it, keep it if the grammar accepts it, and only
    otherwise pick again from candidates the grammar has filtered. Both picks come from the
    same distribution restricted to what the grammar allows.
    """

    def __init__(self, model: LoadedModel, chain: Any, grammar: Any = None):
        self.model = model
        self.chain = chain
        self.grammar = grammar

    def sample(self, ctx: Any, index: int) -> int:
        """The next token from the logits at batch `index`, accepted into the state."""
        if self.grammar is None:
            return lc.llama_sampler_sample(self.chain, ctx, index)
        model = self.model
        token = model.pick(self.chain, ctx, index, None)
        if not model.allows(self.grammar, token):
            token = model.pick(self.chain, ctx, index, self.grammar)
        lc.llama_sampler_accept(self.grammar, token)
        lc.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        for sampler in (self.chain, self.grammar):
            if sampler:
                lc.llama_sampler_free(sampler)
        self.chain = self.grammar = None


# ----------------------------------------------------------------------------- requests


class RequestError(Exception):
    """A request the server cannot serve as asked: answered with HTTP 400."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass
class GenerationParams:
    """What to generate for one request, already validated."""

    max_tokens: int | None = None
    temperature: float = _DEFAULTS["temperature"]
    top_p: float = _DEFAULTS["top_p"]
    top_k: int = int(_DEFAULTS["top_k"])
    min_p: float = _DEFAULTS["min_p"]
    repeat_penalty: float = _DEFAULTS["repeat_penalty"]
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None


class _Job:
    """One request between its handler (event loop) and the decode thread."""

    def __init__(
        self,
        prompt: list[int],
        params: GenerationParams,
        sampler: Sampler,
        loop: asyncio.AbstractEventLoop,
    ):
        self.prompt = prompt
        self.params = params
        self.sampler: Sampler = sampler
        self.loop = loop
        self.future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.cancelled = False
        self.completion: list[int] = []
        self.text = ""
        self.finish_reason = "length"
        self.reused = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def add_piece(self, piece: bytes) -> bool:
        """Append a token's bytes to the reply; True when a stop string was reached."""
        if not piece:
            return False
        new = self._decoder.decode(piece)
        if not new:
            return False
        start = len(self.text)
        self.text += new
        cut = -1
        for stop in self.params.stop:
            at = self.text.find(stop, max(0, start - len(stop) + 1))
            if at >= 0 and (cut < 0 or at < cut):
                cut = at
        if cut >= 0:
            self.text = self.text[:cut]
            return True
        return False

    def result(self) -> dict[str, Any]:
        if self.finish_reason != "stop":
            self.text += self._decoder.decode(b"", final=True)
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": len(self.prompt),
            "completion_tokens": len(self.completion),
            "reused_tokens": self.reused,
        }


def _settle(future: asyncio.Future[dict[str, Any]], value: Any) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


# ----------------------------------------------------------------------------- the engine


class _Slot:
    """One sequence of the context: the tokens its KV cache holds and the job it serves."""

    def __init__(self, seq_id: int):
        self.seq_id = seq_id
        self.tokens: list[int] = []  # tokens whose KV entries are in the cache, in order
        self.job: _Job | None = None
        self.pending: list[int] = []  # prompt tokens still to prefill
        self.next_token: int | None = None  # sampled, to be decoded next step
        self.fed: list[int] = []  # tokens put into the current batch
        self.logit_index = -1  # batch index whose logits this slot samples from
        self.last_used = 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # Compare in blocks first: conversations share long prefixes.
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ThreadGovernor:
    """Decodes with every thread while the process gets the cores, with one while it does not.

    llama.cpp's CPU threads meet at a barrier after each of the ~1000 operations of a
    decode step. When other processes compete for the cores, one thread is often descheduled
    and the others wait for it, and a step takes many times longer than it would on a
    single thread (measured here: 280 ms instead of 23 ms per token with a busy neighbour).
    The sign is the CPU time the process gets per second of decoding: about `n_max` when it
    has the cores, well below under contention. So after every window of steps with
    `n_max` threads the governor checks that share, falls back to one thread when it is
    under 80% of `n_max`, and tries `n_max` again after a pause that doubles (4 s up to
    64 s) while the contention lasts.
    """

    WINDOW = 6  # steps per measurement
    PAUSE = (4.0, 64.0)

    def __init__(
        self,
        set_threads: Callable[[int], None],
        n_max: int,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ):
        self.set_threads = set_threads
        self.clock = clock
        self.enabled = enabled
        self.n_max = n_max
        self.current = n_max
        self.switches = 0
        self._cpu = self._wall = 0.0
        self._steps = 0
        self._pause = self.PAUSE[0]
        self._retry_at = 0.0

    def observe(self, wall: float, cpu: float) -> None:
        """Account one decode step that took `wall` seconds and `cpu` process CPU seconds."""
        if self.n_max == 1 or not self.enabled:
            return
        now = self.clock()
        if self.current == 1:
            if now >= self._retry_at:
                self._set(self.n_max)
            return
        self._cpu += cpu
        self._wall += wall
        self._steps += 1
        if self._steps < self.WINDOW:
            return
        share = self._cpu / max(self._wall, 1e-9)
        self._cpu = self._wall = 0.0
        self._steps = 0
        if share >= 0.8 * self.n_max:
            self._pause = self.PAUSE[0]
            return
        log.debug(
            "decoding with 1 thread for %.0fs: the process got %.1f of %d cores",
            self._pause, share, self.n_max,
        )  # fmt: skip
        self._set(1)
        self._retry_at = now + self._pause
        self._pause = min(self.PAUSE[1], 2 * self._pause)

    def _set(self, n: int) -> None:
        self.set_threads(n)
        self.current = n
        self.switches += 1


class BatchEngine:
    """The decode loop: one thread that owns the llama.cpp context and every slot."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.slots = [_Slot(i) for i in range(model.slots)]
        self._waiting: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._batch = lc.llama_batch_init(model.n_batch, 0, 1)
        self._admitted: list[_Slot] = []  # slots being prefilled, in admission order
        self.threads = ThreadGovernor(
            lambda n: lc.llama_set_n_threads(model.ctx, n, n),
            model.n_threads,
            enabled=model.adaptive_threads,
        )
        self.counters = {
            "requests": 0,
            "requests_cancelled": 0,
            "requests_failed": 0,
            "prompt_tokens": 0,
            "prefill_tokens": 0,
            "prefix_tokens_reused": 0,
            "prefix_copies": 0,
            "completion_tokens": 0,
            "decode_calls": 0,
            "decode_seconds": 0.0,
            "sample_seconds": 0.0,
            "max_batch_sequences": 0,
            "max_batch_tokens": 0,
        }

    # ------------------------------------------------------------ called from the loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, job: _Job) -> None:
        with self._cond:
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: _Job) -> None:
        """Drop a job whose client went away; its slot is freed at the next step."""
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            out: dict[str, Any] = dict(self.counters)
            out["waiting"] = len(self._waiting)
        out["active"] = sum(1 for s in self.slots if s.job is not None)
        out["slots"] = self.model.slots
        out["n_ctx"] = self.model.n_ctx
        out["n_threads"] = self.model.n_threads
        out["n_threads_now"] = self.threads.current
        out["thread_switches"] = self.threads.switches
        out["decode_seconds"] = round(out["decode_seconds"], 3)
        out["sample_seconds"] = round(out["sample_seconds"], 3)
        return out

    # ------------------------------------------------------------ the decode thread

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stop and not self._waiting and not self._busy():
                        self._cond.wait()
                    if self._stop:
                        break
                    self._drop_cancelled()
                    self._admit()
                if self._busy():
                    self._step()
        except BaseException as exc:  # keep the server answering: fail what is in flight
            log.exception("decode loop crashed")
            self._fail_all(exc)
        finally:
            self._fail_all(RuntimeError("the server is shutting down"))
            lc.llama_batch_free(self._batch)

    def _busy(self) -> bool:
        return any(s.job is not None for s in self.slots)

    def _drop_cancelled(self) -> None:
        if any(j.cancelled for j in self._waiting):
            for job in [j for j in self._waiting if j.cancelled]:
                self._waiting.remove(job)
                job.sampler.free()
                self.counters["requests_cancelled"] += 1
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled:
                self.counters["requests_cancelled"] += 1
                self._release(slot)

    def _admit(self) -> None:
        """Give waiting jobs, oldest first, a free slot (see `_choose`) whose cache then keeps
        only the prefix it shares with the prompt."""
        memory = self.model.memory
        while self._waiting:
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            job = self._waiting.popleft()
            best, shared = self._choose(free, job.prompt)
            # Another slot, busy or not, may hold a longer prefix (the same system prompt,
            # the same question): copying its cache costs one memcpy of a slot's KV buffer,
            # far less than prefilling more than a few tokens on a CPU.
            donor = max(self.slots, key=lambda s: _common_prefix(s.tokens, job.prompt))
            donated = _common_prefix(donor.tokens, job.prompt)
            if donor is not best and donated >= shared + _COPY_MIN_TOKENS:
                lc.llama_memory_seq_cp(memory, donor.seq_id, best.seq_id, -1, -1)
                best.tokens = donor.tokens[:donated]
                shared = donated
                self.counters["prefix_copies"] += 1
            # Keep at least one prompt token to decode: its logits start the reply.
            reuse = min(shared, len(job.prompt) - 1)
            log.debug(
                "slot %d: %d prompt tokens, %d cached, %d reused",
                best.seq_id, len(job.prompt), len(best.tokens), reuse,
            )  # fmt: skip
            lc.llama_memory_seq_rm(memory, best.seq_id, reuse, -1)
            del best.tokens[reuse:]
            best.job = job
            best.pending = job.prompt[reuse:]
            best.next_token = None
            job.reused = reuse
            self.counters["prefix_tokens_reused"] += reuse
            self.counters["prompt_tokens"] += len(job.prompt)
            self._admitted.append(best)

    @staticmethod
    def _choose(free: list[_Slot], prompt: list[int]) -> tuple[_Slot, int]:
        """The free slot for `prompt`, and the prefix they share.

        A slot whose cache the prompt mostly continues (the next turn of its conversation,
        or the same system prompt and little else) is the natural choice, the longest match
        first. Otherwise the prompt takes an empty slot, or else the least recently used
        one: a slot holding another conversation keeps it, even when they share a few
        tokens of template, because that conversation's next turn will want it back.
        """
        shared = {id(s): _common_prefix(s.tokens, prompt) for s in free}
        continued = [s for s in free if s.tokens and 2 * shared[id(s)] >= len(s.tokens)]
        if continued:
            best = max(continued, key=lambda s: shared[id(s)])
        else:
            best = min(free, key=lambda s: (bool(s.tokens), s.last_used))
        return best, shared[id(best)]

    def _step(self) -> None:
        """One llama_decode over every active slot, then one sampled token per slot."""
        batch = self._batch
        n = 0
        outputs: list[_Slot] = []

        def add(slot: _Slot, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = len(slot.tokens) + len(slot.fed)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq_id
            batch.logits[n] = logits
            slot.fed.append(token)
            if logits:
                slot.logit_index = n
                outputs.append(slot)
            n += 1

        for slot in self.slots:
            if slot.job is not None and slot.next_token is not None:
                add(slot, slot.next_token, True)
        budget = self.model.n_batch - n
        # A slot freed and re-admitted within one step may be listed twice: keep it once.
        self._admitted = [
            s for s in dict.fromkeys(self._admitted) if s.job is not None and s.pending
        ]
        for slot in self._admitted:
            if budget <= 0:
                break
            chunk = slot.pending[:budget]
            last = len(chunk) == len(slot.pending)
            for i, token in enumerate(chunk):
                add(slot, token, last and i == len(chunk) - 1)
            slot.pending = slot.pending[len(chunk) :]
            budget -= len(chunk)
            self.counters["prefill_tokens"] += len(chunk)
        if n == 0:
            return
        batch.n_tokens = n
        fed = [s for s in self.slots if s.fed]
        t0, c0 = time.perf_counter(), time.process_time()
        rc = lc.llama_decode(self.model.ctx, batch)
        wall = time.perf_counter() - t0
        self.threads.observe(wall, time.process_time() - c0)
        self.counters["decode_seconds"] += wall
        self.counters["decode_calls"] += 1
        self.counters["max_batch_sequences"] = max(self.counters["max_batch_sequences"], len(fed))
        self.counters["max_batch_tokens"] = max(self.counters["max_batch_tokens"], n)
        if rc != 0:
            log.error("llama_decode returned %d for a batch of %d tokens", rc, n)
            for slot in fed:
                slot.fed = []
                lc.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
                slot.tokens = []
                self._finish(slot, error=RuntimeError(f"llama_decode failed (code {rc})"))
            return
        now = time.monotonic()
        for slot in fed:
            slot.tokens.extend(slot.fed)
            slot.fed = []
            slot.next_token = None
            slot.last_used = now
        t0 = time.perf_counter()
        for slot in outputs:
            self._sample(slot)
        self.counters["sample_seconds"] += time.perf_counter() - t0

    def _sample(self, slot: _Slot) -> None:
        job = slot.job
        assert job is not None
        model = self.model
        token = job.sampler.sample(model.ctx, slot.logit_index)
        if model.is_end(token):
            job.finish_reason = "stop"
            self._finish(slot)
            return
        job.completion.append(token)
        self.counters["completion_tokens"] += 1
        if job.add_piece(model.piece(token)):
            job.finish_reason = "stop"
            self._finish(slot)
        elif self._out_of_room(slot, job):
            self._finish(slot)
        else:
            slot.next_token = token

    def _out_of_room(self, slot: _Slot, job: _Job) -> bool:
        """max_tokens reached, or no cache cell left to decode the token just sampled."""
        limit = job.params.max_tokens
        return (limit is not None and len(job.completion) >= limit) or len(
            slot.tokens
        ) >= self.model.n_ctx

    def _finish(self, slot: _Slot, error: BaseException | None = None) -> None:
        """Free the slot, then answer: a client that asks /stats next sees it free."""
        job = slot.job
        assert job is not None
        self._release(slot)
        if error is not None:
            self.counters["requests_failed"] += 1
            job.loop.call_soon_threadsafe(_settle, job.future, error)
        else:
            self.counters["requests"] += 1
            job.loop.call_soon_threadsafe(_settle, job.future, job.result())

    def _release(self, slot: _Slot) -> None:
        """Free the slot for the next job; its cached tokens stay for prefix reuse."""
        job = slot.job
        if job is not None:
            job.sampler.free()
        slot.job = None
        slot.pending = []
        slot.next_token = None
        slot.last_used = time.monotonic()

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        for job in waiting:
            job.sampler.free()
            job.loop.call_soon_threadsafe(_settle, job.future, exc)
        for slot in self.slots:
            if slot.job is not None:
                self._finish(slot, error=exc)


# ----------------------------------------------------------------------------- validation


def _number(body: dict[str, Any], name: str, lo: float, hi: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise RequestError(f"{name}: expected a number from {lo:g} to {hi:g}, got {value!r}", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, lo: int, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise RequestError(f"{name}: expected an integer >= {lo}, got {value!r}", name)
    return value


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages: expected a non-empty list of messages", "messages")
    out = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where}: expected an object with role and content", where)
        role = msg.get("role")
        if role not in _ROLES:
            raise RequestError(
                f"{where}.role: expected one of {', '.join(_ROLES)}, got {role!r}", f"{where}.role"
            )
        content = msg.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise RequestError(
                        f"{where}.content: only text parts are supported", f"{where}.content"
                    )
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        elif not isinstance(content, str):
            raise RequestError(f"{where}.content: expected a string", f"{where}.content")
        out.append({"role": role, "content": content})
    return out


def _grammar(body: dict[str, Any]) -> str | None:
    """The GBNF grammar asked for by `response_format`, or None for free text."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise RequestError("response_format: expected an object", "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = fmt.get("schema")
        where = "response_format.schema"
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise RequestError(
                "response_format.json_schema: expected an object with a schema",
                "response_format.json_schema",
            )
        schema = spec.get("schema")
        where = "response_format.json_schema.schema"
    else:
        raise RequestError(
            f"response_format.type: expected text, json_object or json_schema, got {kind!r}",
            "response_format.type",
        )
    if schema is None:
        return llama_grammar.JSON_GBNF
    if not isinstance(schema, dict):
        raise RequestError(f"{where}: expected a JSON Schema object", where)
    try:
        return llama_grammar.json_schema_to_gbnf(orjson.dumps(schema).decode())
    except Exception as exc:  # the converter raises anything from KeyError to ValueError
        log.warning("%s: cannot convert the schema (%s); constraining to any JSON", where, exc)
        return llama_grammar.JSON_GBNF


def parse_request(body: Any) -> tuple[list[dict[str, str]], GenerationParams]:
    """Validate a chat-completion body; raise RequestError naming the first bad field."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if body.get("stream"):
        raise RequestError("stream: streaming is not supported by this server", "stream")
    if body.get("n", 1) != 1:
        raise RequestError(f"n: only n=1 is supported, got {body.get('n')!r}", "n")
    for name in ("tools", "functions"):
        if body.get(name):
            raise RequestError(f"{name}: tool calling is not supported by this server", name)
    if body.get("logprobs"):
        raise RequestError("logprobs: not supported by this server", "logprobs")
    messages = _messages(body)
    max_tokens = _integer(body, "max_tokens", 1, None)
    max_tokens = _integer(body, "max_completion_tokens", 1, max_tokens)
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop] if stop else []
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = [s for s in stop if s]
    else:
        raise RequestError("stop: expected a string or a list of strings", "stop")
    if len(stops) > _MAX_STOPS:
        raise RequestError(f"stop: at most {_MAX_STOPS} stop strings", "stop")
    seed = _integer(body, "seed", -(2**63), None)
    params = GenerationParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 5.0, _DEFAULTS["temperature"]),
        top_p=_number(body, "top_p", 0.0, 1.0, _DEFAULTS["top_p"]),
        top_k=int(_integer(body, "top_k", 0, int(_DEFAULTS["top_k"])) or 0),
        min_p=_number(body, "min_p", 0.0, 1.0, _DEFAULTS["min_p"]),
        repeat_penalty=_number(body, "repeat_penalty", 0.0, 10.0, _DEFAULTS["repeat_penalty"]),
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0, 0.0),
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0, 0.0),
        seed=(seed if seed is not None else random.getrandbits(32)) & 0xFFFFFFFF,
        stop=stops,
        grammar=_grammar(body),
    )
    if params.seed == lc.LLAMA_DEFAULT_SEED:  # llama.cpp reads this value as "random"
        params.seed = 0
    return messages, params


# ----------------------------------------------------------------------------- HTTP


def _error(status: int, message: str, param: str | None = None, code: str | None = None):
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Whatever goes wrong in a handler becomes a JSON error; the server keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason)
    except RequestError as exc:
        return _error(400, str(exc), exc.param, exc.code)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:
        log.exception("request failed")
        return _error(500, f"internal error: {exc}")


def build_app(model: LoadedModel, engine: BatchEngine, alias: str) -> web.Application:
    """The aiohttp application serving `model` through `engine` under the name `alias`."""
    created = int(time.time())

    async def chat(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"the request body is not valid JSON: {exc}") from None
        messages, params = parse_request(body)
        try:
            prompt = model.chat_prompt(messages)
        except Exception as exc:  # the template may raise_exception() on odd turn orders
            raise RequestError(
                f"messages: the chat template rejected them: {exc}", "messages"
            ) from None
        if len(prompt) >= model.n_ctx:
            raise RequestError(
                f"This model's context is {model.n_ctx} tokens per request, but the messages "
                f"take {len(prompt)} tokens (at least 1 more is needed for the reply); "
                "shorten the messages",
                "messages",
                "context_length_exceeded",
            )
        sampler = model.sampler(params)
        job = _Job(prompt, params, sampler, asyncio.get_running_loop())
        engine.submit(job)
        try:
            result = await job.future
        except asyncio.CancelledError:
            engine.cancel(job)  # the client went away: free its slot
            raise
        return _json(
            {
                "id": "chatcmpl-" + uuid.uuid4().hex[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": alias,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result["text"]},
                        "logprobs": None,
                        "finish_reason": result["finish_reason"],
                    }
                ],
                "usage": {
                    "prompt_tokens": result["prompt_tokens"],
                    "completion_tokens": result["completion_tokens"],
                    "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
                },
            }
        )

    async def models(request: web.Request) -> web.Response:
        entry = {"id": alias, "object": "model", "created": created, "owned_by": "peerflow"}
        return _json({"object": "list", "data": [entry]})

    async def health(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def stats(request: web.Request) -> web.Response:
        return _json(engine.stats())

    app = web.Application(middlewares=[_errors_middleware], client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    return app


# ----------------------------------------------------------------------------- main


# ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line.
_LOG_LEVELS = (3, 4)


def _quiet_llama_logs(verbose: bool) -> Any:
    """Route llama.cpp's log to stderr keeping warnings and errors only (unless verbose)."""
    state = {"show": False}

    @lc.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        if level != 5:
            state["show"] = verbose or level in _LOG_LEVELS
        if state["show"] and text:
            sys.stderr.write(text.decode("utf-8", "replace"))

    lc.llama_log_set(callback, ctypes.c_void_p(0))
    return callback  # the caller keeps it alive: C holds only a raw pointer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peerflow.services.llama_batch",
        description="OpenAI-compatible server for a GGUF model, with continuous batching.",
    )
    parser.add_argument("--model", required=True, help="path to the GGUF file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--n-ctx", type=int, default=2048, help="context tokens per slot")
    parser.add_argument(
        "--slots", type=int, default=None, help="requests decoded together (default: 16, "
        "fewer when --n-ctx is over 2048)",
    )  # fmt: skip
    parser.add_argument("--n-threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--n-batch", type=int, default=512, help="tokens per decode step")
    parser.add_argument(
        "--keep-weights",
        action="store_true",
        help="serve Q4_1/Q5_0/Q5_1 weights as they are (by default they are re-encoded once "
        "as Q8_0, cached under ~/.cache/peerflow, for llama.cpp's faster batch kernels)",
    )
    parser.add_argument(
        "--fixed-threads",
        action="store_true",
        help="always decode with --n-threads, even when other processes take the cores "
        "(by default it falls back to 1 thread then)",
    )
    parser.add_argument("--model-alias", default=None, help="model name in replies")
    parser.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if args.slots is None:
        from peerflow.services.managed import LocalModelService

        args.slots = LocalModelService.default_slots(args.n_ctx)
    for name, value, lo in (("--n-ctx", args.n_ctx, 16), ("--slots", args.slots, 1)):
        if value < lo:
            parser.error(f"{name} must be >= {lo}")
    threads = args.n_threads or os.cpu_count() or 1
    n_batch = max(args.n_batch, args.slots)
    alias = args.model_alias or os.path.splitext(os.path.basename(args.model))[0]
    keep = _quiet_llama_logs(args.verbose)
    if not os.path.isfile(args.model):
        print(f"error: model file {args.model} does not exist", file=sys.stderr, flush=True)
        return 1
    try:
        model = LoadedModel(
            args.model,
            n_ctx=args.n_ctx,
            slots=args.slots,
            n_threads=threads,
            n_batch=n_batch,
            adaptive_threads=not args.fixed_threads,
            keep_weights=args.keep_weights,
        )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    if args.n_ctx > model.n_ctx_train > 0:
        log.warning(
            "n_ctx %d exceeds the %d tokens the model was trained on", args.n_ctx, model.n_ctx_train
        )
    engine = BatchEngine(model)
    engine.start()
    log.info(
        "serving %s as %r on http://%s:%d: %d slots, n_ctx %d per slot (KV %d tokens), "
        "%d threads (%s), n_batch %d, weights %s",
        args.model, alias, args.host, args.port, model.slots, model.n_ctx,
        model.n_ctx_seq * model.slots, threads,
        "fixed" if args.fixed_threads else "1 while other processes take the cores",
        n_batch, "as they are" if model.weights == args.model else model.weights,
    )  # fmt: skip
    app = build_app(model, engine, alias)

    async def shutdown(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    app.on_shutdown.append(shutdown)
    try:
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            print=None,
            access_log=None,
            handler_cancellation=True,
        )
    finally:
        engine.stop()
        with contextlib.suppress(Exception):
            model.close()
        del keep
    return 0


if __name__ == "__main__":
    sys.exit(main())
