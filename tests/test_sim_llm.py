"""The simulated LLM service over real HTTP: labels, determinism, scripts, timing, faults."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from peerflow.services.sim_llm import SimLLMServer, SimOptions, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
QUESTION = (
    "Question: Which gas do plants absorb?\n\nOptions:\n"
    "A. Oxygen\nB. Carbon dioxide\nC. Helium\nD. Neon\n"
)
TEACHER = "You are a teacher discussing a multiple-choice question with a student."
STUDENT = "You are a student discussing a multiple-choice question with your teacher."
EXTRACTOR = "You are an answer extractor. Report the final option letter."
FINAL = re.compile(r"\n\nThe answer is \(([A-J])\)\.$")

Sim = Callable[..., AbstractAsyncContextManager[tuple[SimLLMServer, aiohttp.ClientSession]]]


def chat_body(content: str = "Tell me about rivers.", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


async def post(
    server: SimLLMServer,
    session: aiohttp.ClientSession,
    body: Any,
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{server.url}/chat/completions", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def reply(server: SimLLMServer, session: aiohttp.ClientSession, body: Any) -> dict[str, Any]:
    status, data = await post(server, session, body)
    assert status == 200, data
    return data


def text_of(data: dict[str, Any]) -> str:
    return data["choices"][0]["message"]["content"]


# ------------------------------------------------------------------- labels, API


async def test_labelled_as_simulator_everywhere(sim: Sim) -> None:
    async with sim() as (server, session):
        async with session.post(f"{server.url}/chat/completions", json=chat_body()) as resp:
            assert resp.status == 200
            assert resp.headers["X-Peerflow-Simulator"] == "1"
            data = await resp.json()
        assert data["model"] == "peerflow-simulator/m"
        assert data["system_fingerprint"] == "peerflow-simulator"
        assert data["object"] == "chat.completion"
        assert data["choices"][0]["message"]["role"] == "assistant"
        async with session.get(f"{server.url}/models") as resp:
            assert resp.headers["X-Peerflow-Simulator"] == "1"
            assert (await resp.json())["data"][0]["id"] == "peerflow-simulator"
        base = server.url.removesuffix("/v1")
        async with session.get(f"{base}/health") as resp:
            assert await resp.json() == {"status": "ok", "simulator": True}
        async with session.get(f"{base}/no-such-page") as resp:
            assert resp.status == 404
            assert resp.headers["X-Peerflow-Simulator"] == "1"
        async with session.get(f"{base}/stats") as resp:
            stats = await resp.json()
        assert stats["requests"] == stats["completed"] == 1
        assert stats["completion_tokens"] == data["usage"]["completion_tokens"]
        assert stats["running"] == stats["waiting"] == 0


async def test_identical_requests_identical_replies_under_concurrency(sim: Sim) -> None:
    body = chat_body(seed=7)
    async with sim() as (server, session):
        first = await reply(server, session, body)
        others = await asyncio.gather(
            *(reply(server, session, body) for _ in range(20)),
            *(reply(server, session, chat_body(f"q{i}")) for i in range(20)),
        )
    for data in others[:20]:
        assert text_of(data) == text_of(first)
        assert data["usage"] == first["usage"]
    async with sim() as (server, session):  # a fresh server process state changes nothing
        assert text_of(await reply(server, session, body)) == text_of(first)


async def test_seeds_change_the_reply(sim: Sim) -> None:
    async with sim(seed=1) as (server, session):
        base = text_of(await reply(server, session, chat_body(seed=1)))
        other_request_seed = text_of(await reply(server, session, chat_body(seed=2)))
        no_request_seed = text_of(await reply(server, session, chat_body()))
    async with sim(seed=2) as (server, session):
        other_server_seed = text_of(await reply(server, session, chat_body(seed=1)))
    assert len({base, other_request_seed, no_request_seed, other_server_seed}) == 4


async def test_usage_is_consistent(sim: Sim) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "x" * 1001},
        {"role": "assistant", "content": [{"type": "text", "text": "y" * 40}]},
        {"role": "user", "content": "and?"},
    ]
    async with sim() as (server, session):
        lengths = []
        for seed in range(30):
            data = await reply(server, session, {"messages": messages, "seed": seed})
            usage = data["usage"]
            chars = 9 + 1001 + 40 + 4
            assert usage["prompt_tokens"] == math.ceil(chars / 4) + 4 * len(messages)
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            tokens = usage["completion_tokens"]
            assert 0.6 < len(text_of(data)) / 4 / tokens < 1.6
            lengths.append(tokens)
    lengths.sort()
    assert 90 < lengths[len(lengths) // 2] < 360  # lognormal around the default median 180
    assert len(set(lengths)) > 20


async def test_max_tokens_caps_length(sim: Sim) -> None:
    async with sim(output_median=500, output_sigma=0.0) as (server, session):
        for key in ("max_tokens", "max_completion_tokens"):
            data = await reply(server, session, chat_body(**{key: 7}))
            assert data["usage"]["completion_tokens"] == 7
            assert data["choices"][0]["finish_reason"] == "length"
        data = await reply(server, session, chat_body(max_tokens=501))
        assert data["usage"]["completion_tokens"] == 500
        assert data["choices"][0]["finish_reason"] == "stop"
        data = await reply(server, session, chat_body())  # default cap is far above 500
        assert data["choices"][0]["finish_reason"] == "stop"


async def test_bad_requests_get_openai_style_400(sim: Sim) -> None:
    async with sim() as (server, session):
        url = f"{server.url}/chat/completions"
        bodies: list[bytes] = [
            b"{not json",
            b"[]",
            orjson.dumps({"model": "m"}),
            orjson.dumps({"messages": []}),
            orjson.dumps(chat_body(stream=True)),
            orjson.dumps(chat_body(max_tokens=0)),
        ]
        for raw in bodies:
            async with session.post(
                url, data=raw, headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400, raw
                assert resp.headers["X-Peerflow-Simulator"] == "1"
                error = (await resp.json())["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"]
        assert (await reply(server, session, chat_body()))["choices"]


# ------------------------------------------------------------------------ scripts


async def test_coral_extractor_takes_last_answer(sim: Sim) -> None:
    def extract(text: str) -> dict[str, Any]:
        return {
            "messages": [
                {"role": "system", "content": EXTRACTOR},
                {"role": "user", "content": text},
            ],
            "max_tokens": 32,
        }

    cases = {
        "I first thought the answer is (B). On reflection the answer is (D).": "(D)",
        "So the Answer is C, clearly.": "(C)",
        "answer is (J)": "(J)",
        "Hmm, the answer is (A) or maybe not... The answer is E": "(E)",
        "I cannot decide between B and C.": "not sure yet",
        "The answer is unclear.": "not sure yet",
    }
    async with sim(script="coral") as (server, session):
        for text, expected in cases.items():
            data = await reply(server, session, extract(text))
            assert text_of(data) == expected, text
            assert 1 <= data["usage"]["completion_tokens"] <= 5
            assert data["choices"][0]["finish_reason"] == "stop"


def add_user(chat: list[dict[str, str]], content: str) -> None:
    """Merge consecutive user messages, as peerflow's LLM agent does."""
    if chat[-1]["role"] == "user":
        chat[-1] = {"role": "user", "content": chat[-1]["content"] + "\n\n" + content}
    else:
        chat.append({"role": "user", "content": content})


async def debate(
    server: SimLLMServer, session: aiohttp.ClientSession, question: str, rounds: int
) -> list[tuple[str, str]]:
    """Teacher and student alternate; returns (speaker, final letter) per turn."""
    turns: list[tuple[str, str]] = []
    for _ in range(rounds):
        for speaker, system in (("teacher", TEACHER), ("student", STUDENT)):
            chat = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            for who, content in turns:
                if who == speaker:
                    chat.append({"role": "assistant", "content": content})
                else:
                    add_user(chat, content)
            # A reply cut off by max_tokens has no final answer, as with a real model.
            body = {"messages": chat, "seed": 3, "max_tokens": 100_000}
            content = text_of(await reply(server, session, body))
            turns.append((speaker, content))
    letters = []
    for speaker, content in turns:
        found = FINAL.search(content)
        assert found, content[-80:]
        letters.append((speaker, found.group(1)))
    return letters


async def test_coral_debate_converges_after_agree_after(sim: Sim) -> None:
    async with sim(script="coral", agree_after=2) as (server, session):
        early_disagreements = 0
        consensus = set()
        for i in range(12):
            question = QUESTION.replace("plants", f"plants in garden {i}")
            letters = await debate(server, session, question, rounds=3)
            assert all(letter in "ABCD" for _, letter in letters)  # four options detected
            assert letters[4][1] == letters[5][1]  # teacher and student at t=2 agree
            consensus.add(letters[4][1])
            early_disagreements += letters[0][1] != letters[1][1]
        assert early_disagreements > 0  # before agree_after the speakers answer independently
        assert len(consensus) > 1  # the consensus letter depends on the question
        again = await debate(
            server, session, QUESTION.replace("plants", "plants in garden 0"), rounds=3
        )
        assert again[5][1] in consensus


async def test_coral_without_option_list_defaults_to_ten_letters(sim: Sim) -> None:
    async with sim(script="coral", agree_after=1) as (server, session):
        letters = await debate(
            server, session, "Question: pick any letter, no options given.", rounds=2
        )
    assert letters[2][1] == letters[3][1]
    assert all(letter in "ABCDEFGHIJ" for _, letter in letters)


async def test_rules_file_script(sim: Sim, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        '- match: "(?i)weather"\n  reply: "Sunny. {filler}"\n- match: "^ping$"\n  reply: "pong"\n'
    )
    async with sim(script=str(rules), output_median=20, output_sigma=0.0) as (server, session):
        assert text_of(await reply(server, session, chat_body("ping"))) == "pong"
        weather = text_of(await reply(server, session, chat_body("What WEATHER today?")))
        assert weather.startswith("Sunny. ") and len(weather) > 40
        assert "{filler}" not in weather
        other = await reply(server, session, chat_body("ping pong"))
        assert text_of(other) not in ("pong", "") and other["usage"]["completion_tokens"] == 20
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps([{"match": "x", "reply": "matched x"}]))
    async with sim(script=str(as_json)) as (server, session):
        assert text_of(await reply(server, session, chat_body("xyz"))) == "matched x"
    with pytest.raises(ValueError, match="neither"):
        SimLLMServer(SimOptions(script=str(tmp_path / "missing.yaml")))


# ------------------------------------------------------------------------- timing


async def timed_batch(server: SimLLMServer, session: aiohttp.ClientSession, n: int) -> float:
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(reply(server, session, chat_body(f"request {i}")) for i in range(n))
    )
    assert all(r["usage"]["completion_tokens"] == 40 for r in results)
    return time.perf_counter() - t0


TIMED = {
    "time_scale": 1.0,
    "step_base_ms": 2.0,
    "step_per_seq_ms": 0.01,
    "prefill_ms_per_1k": 1.0,
    "output_median": 40,
    "output_sigma": 0.0,
}


async def test_continuous_batching_overlaps_requests(sim: Sim) -> None:
    async with sim(**TIMED) as (server, session):
        single = await timed_batch(server, session, 1)
        assert single >= 40 * 0.002 * 0.95  # 40 steps of 2 ms each, no faster
        total = await timed_batch(server, session, 64)
        stats = server.stats()
    assert total < 0.3 * 64 * single
    assert stats["avg_batch_size"] > 8
    assert stats["completed"] == 65


async def test_arrival_joins_a_running_batch(sim: Sim) -> None:
    # The engine sleeps towards the long request's completion; a new arrival must wake it
    # and join the batch at the next step instead of waiting for that completion.
    async with sim(**{**TIMED, "output_median": 200}) as (server, session):
        t0 = time.perf_counter()
        long = asyncio.create_task(reply(server, session, chat_body("long")))
        await asyncio.sleep(0.05)
        t1 = time.perf_counter()
        short = await reply(server, session, chat_body("short", max_tokens=10))
        short_latency = time.perf_counter() - t1
        await long
        long_latency = time.perf_counter() - t0
    assert short["usage"]["completion_tokens"] == 10
    assert short_latency < 0.15
    assert long_latency >= 200 * 0.002 * 0.95


async def test_max_num_seqs_serialises(sim: Sim) -> None:
    async with sim(max_num_seqs=1, **TIMED) as (server, session):
        total = await timed_batch(server, session, 4)
        assert server.stats()["avg_batch_size"] == 1.0
    assert total >= 4 * 40 * 0.002 * 0.95


async def test_kv_capacity_serialises(sim: Sim) -> None:
    # Each request needs ~10 prompt + 40 completion tokens; only one fits at a time.
    async with sim(kv_capacity=60, **TIMED) as (server, session):
        total = await timed_batch(server, session, 4)
        assert server.stats()["avg_batch_size"] == 1.0
    assert total >= 4 * 40 * 0.002 * 0.95


async def test_time_scale_zero_keeps_up_with_many_clients(sim: Sim) -> None:
    async with sim(output_sigma=0.0, max_num_seqs=64) as (server, session):
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(reply(server, session, chat_body(f"r{i}")) for i in range(300))
        )
        elapsed = time.perf_counter() - t0
        stats = server.stats()
    assert len(results) == stats["completed"] == 300
    assert stats["running"] == stats["waiting"] == 0
    assert stats["busy_s"] == 0.0 and stats["model_busy_s"] > 0
    # Skip-ahead: far fewer engine iterations than tokens would need one by one.
    assert stats["engine_steps"] >= 300 * 180 / 64
    assert stats["engine_iterations"] < stats["engine_steps"] / 4
    assert elapsed < 5.0


# ------------------------------------------------------------------------- faults


async def test_injected_server_error(sim: Sim) -> None:
    async with sim(error_rate=1.0) as (server, session):
        status, data = await post(server, session, chat_body())
    assert status == 500
    assert "injected" in data["error"]["message"]


async def test_injected_rate_limit_with_retry_after(sim: Sim) -> None:
    async with (
        sim(rate_limit_rate=1.0, retry_after=2) as (server, session),
        session.post(f"{server.url}/chat/completions", json=chat_body()) as resp,
    ):
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        assert resp.headers["X-Peerflow-Simulator"] == "1"


async def test_injected_garbage_body(sim: Sim) -> None:
    async with (
        sim(garbage_rate=1.0) as (server, session),
        session.post(f"{server.url}/chat/completions", json=chat_body()) as resp,
    ):
        assert resp.status == 200
        raw = await resp.read()
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


async def test_fault_rates_are_reproducible(sim: Sim) -> None:
    async def statuses() -> list[int]:
        async with sim(error_rate=0.3, rate_limit_rate=0.2, seed=5) as (server, session):
            return [(await post(server, session, chat_body()))[0] for _ in range(40)]

    first = await statuses()
    assert first == await statuses()
    assert {200, 429, 500} == set(first)


# ---------------------------------------------------------------------------- CLI


def test_parser_matches_options() -> None:
    args = build_parser().parse_args([])
    assert SimOptions(**vars(args)) == SimOptions()
    args = build_parser().parse_args(
        ["--max-num-seqs", "8", "--time-scale", "0", "--script", "coral", "--retry-after", "3"]
    )
    opts = SimOptions(**vars(args))
    assert (opts.max_num_seqs, opts.time_scale, opts.script, opts.retry_after) == (8, 0, "coral", 3)


def test_service_options_mirror_sim_options() -> None:
    # `SimServiceOptions` restates `SimOptions` (minus host and port) for config checks.
    from peerflow.services.sim_llm import SimServiceOptions

    fields = {f.name for f in dataclasses.fields(SimOptions)} - {"host", "port"}
    assert set(SimServiceOptions.model_fields) == fields
    assert SimOptions(**SimServiceOptions().model_dump()) == SimOptions()


def test_main_rejects_missing_script(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--script", "/nonexistent/rules.yaml"])
    assert exc.value.code == 2
    assert "neither" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--error-rate", "0.7", "--garbage-rate", "0.7"])
    assert "fault rates" in capsys.readouterr().err
    with pytest.raises(ValueError, match=">= 1"):
        SimOptions(max_num_seqs=0)


async def test_command_line_server_prints_port() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerflow.services.sim_llm", "--port", "0", "--time-scale", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        found = re.fullmatch(
            r"peerflow sim-llm \(SIMULATOR, not a model\) listening on "
            r"(http://127\.0\.0\.1:\d+/v1)\n",
            line,
        )
        assert found, line
        async with (
            aiohttp.ClientSession() as session,
            session.post(found.group(1) + "/chat/completions", json=chat_body()) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["model"] == "peerflow-simulator/m"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
