"""Cost and tokens (peerflow.cost): prices, costs per step, record and run, reasoning and
cached tokens, and the budget that stops admission; real runs over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from fake_chat import serve

from peerflow.cli import _print_summary
from peerflow.config import ConfigError, load_config
from peerflow.cost import CostTally, Price, cost_lines, flat_usage, price_step, progress_text
from peerflow.message import Message, Step
from peerflow.run import run_async
from peerflow.services.openai_client import OpenAIService
from peerflow.services.sim_llm import SimLLMServer, SimOptions
from peerflow.stats import RunStats

# What the test server reports for every reply: 1,000 prompt tokens of which 400 were read
# from its prompt cache, 300 completion tokens of which 100 were reasoning.
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 300,
    "total_tokens": 1300,
    "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 100, "audio_tokens": 0},
}
# Model m: (600 x 2 + 400 x 0.5 + 300 x 8) / 1e6; model m2 (no cached price): 1,300 x 1 / 1e6.
COST_M = 0.0038
COST_M2 = 0.0013


class UsageServer:
    """An OpenAI-compatible server answering every chat with `USAGE`."""

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}}],
                "usage": USAGE,
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m"}]})

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.runner, url = await serve(app)
        return url

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def write_config(tmp: Path, rows: int, **sections: Any) -> Path:
    data_path = tmp / "rows.jsonl"
    data_path.write_text(
        "".join(json.dumps({"id": f"r{i:02d}", "q": f"question {i}"}) + "\n" for i in range(rows))
    )
    config = {
        "name": "cost",
        "dataset": {"path": str(data_path), "id_field": "id"},
        "output": {"path": str(tmp / "out.jsonl")},
        "runtime": {"progress": False},
        **sections,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- usage details -----------------------------------------------------------------------


async def test_the_client_keeps_cached_and_reasoning_tokens() -> None:
    async with UsageServer() as url:
        svc = OpenAIService("llm", model="m", endpoints=[url])
        await svc.start()
        result = await svc.call({"messages": [{"role": "user", "content": "hi"}]})
        await svc.stop()
    assert result.usage == {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "total_tokens": 1300,
        "cached_tokens": 400,
        "reasoning_tokens": 100,
    }
    # DeepSeek names its prompt-cache hits at the top level; zero details are left out.
    assert flat_usage({"prompt_tokens": 9, "prompt_cache_hit_tokens": 4})["cached_tokens"] == 4
    assert "reasoning_tokens" not in flat_usage(
        {"completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 0}}
    )


def test_price_arithmetic_and_what_is_not_priced() -> None:
    price = Price(input=2, output=8, cached_input=0.5)
    usage = flat_usage(USAGE)
    assert price.cost(usage) == pytest.approx(COST_M)
    assert Price(input=1, output=1).cost(usage) == pytest.approx(COST_M2)  # no cache discount

    class Priced:
        price = Price(input=2, output=8, cached_input=0.5)

    fresh, from_cache, free = (Step(role="a", usage=dict(usage)) for _ in range(3))
    from_cache.cached = True  # answered by peerflow's response cache: not paid for
    price_step(fresh, Priced())
    price_step(from_cache, Priced())
    price_step(free, object())  # a service without a price
    assert fresh.cost_usd == pytest.approx(COST_M)
    assert from_cache.cost_usd is None and free.cost_usd is None
    tally = CostTally()
    tally.observe(Message(id="x", row={}, history=[fresh, from_cache, free]))
    assert (tally.priced_steps, tally.unpriced_steps) == (1, 1)
    assert tally.reasoning_tokens == 300 and tally.cached_prompt_tokens == 1200


def test_prices_by_model_by_service_and_the_budget_check(tmp_path: Path) -> None:
    roles = {"ask": {"service": "a", "prompt": "{{ q }}"}}
    services = {
        "a": {"kind": "openai", "model": "m", "endpoints": ["http://127.0.0.1:1/v1"]},
        "b": {
            "kind": "openai",
            "model": "m",
            "endpoints": ["http://127.0.0.1:1/v1"],
            "price": {"input": 1, "output": 1},
        },
    }
    path = write_config(
        tmp_path,
        1,
        services=services,
        roles=roles,
        workflow={"kind": "sequence", "roles": ["ask"]},
        prices={"m": {"input": 2, "output": 8, "cached_input": 0.5}},
    )
    config = load_config(path)
    assert config.services["a"].price.cached_input == 0.5  # type: ignore[union-attr]
    assert config.services["b"].price.input == 1  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="budget_usd is set but no LLM service has a price"):
        load_config(path, ["prices={}", "services.b.price=null", "runtime.budget_usd=1"])
    with pytest.raises(ConfigError, match="cached_input"):
        load_config(path, ["prices.m.cached_input=-1"])


# --- a run: steps, records, summary, printout ---------------------------------------------


async def test_costs_in_steps_records_summary_and_printout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with UsageServer() as url:
        path = write_config(
            tmp_path,
            5,
            services={
                "main": {"kind": "openai", "model": "m", "endpoints": [url]},
                "cheap": {
                    "kind": "openai",
                    "model": "m2",
                    "endpoints": [url],
                    "price": {"input": 1, "output": 1},
                },
            },
            roles={
                "ask": {"service": "main", "prompt": "{{ q }}"},
                "check": {"service": "cheap", "prompt": "Check: {{ q }}"},
            },
            workflow={"kind": "sequence", "roles": ["ask", "check"]},
            prices={"m": {"input": 2, "output": 8, "cached_input": 0.5}},
        )
        summary = await run_async(load_config(path), progress=False)
    out = records(tmp_path / "out.jsonl")
    assert len(out) == 5
    for record in out:
        ask, check = (s for s in record["history"] if s["role"] in ("ask", "check"))
        assert ask["usage"]["cached_tokens"] == 400 and ask["usage"]["reasoning_tokens"] == 100
        assert ask["cost_usd"] == pytest.approx(COST_M)
        assert check["cost_usd"] == pytest.approx(COST_M2)
        assert record["cost_usd"] == pytest.approx(COST_M + COST_M2)
    cost = summary["cost"]
    assert cost["usd"] == pytest.approx(5 * (COST_M + COST_M2))
    assert cost["by_role"] == {
        "ask": pytest.approx(5 * COST_M),
        "check": pytest.approx(5 * COST_M2),
    }
    assert (cost["priced_steps"], cost["unpriced_steps"]) == (10, 0)
    assert summary["tokens"] == {
        "prompt": 10_000,
        "completion": 3_000,
        "reasoning": 1_000,
        "cached_prompt": 4_000,
    }
    _print_summary(summary)
    printed = capsys.readouterr().out
    assert "cost: $0.0255 (ask $0.0190, check $0.0065)" in printed
    assert "tokens also: reasoning 1000, cached_prompt 4000" in printed
    # The progress bar's field, from the run's live stats.
    stats = RunStats()
    for record in out:
        stats.observe(Message(id=record["id"], row={}, history=[
            Step(**{k: v for k, v in s.items()}) for s in record["history"]
        ]), None)  # fmt: skip
    assert progress_text(stats) == " cost=$0.0255"
    # Spend over time: the run's time series has it, and the report plots it.
    from peerflow.report import build_report
    from peerflow.timeseries import columns_of, read_timeseries

    spent = columns_of(read_timeseries(tmp_path / "out.jsonl")[-1])["cost_usd"]
    assert spent[-1] == pytest.approx(5 * (COST_M + COST_M2))
    assert spent == sorted(spent)
    assert "spend, US dollars (cumulative)" in build_report(tmp_path / "out.jsonl").read_text()


# --- the budget ------------------------------------------------------------------------


async def test_a_budget_stops_admission_and_a_rerun_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each row costs about $0.2 at these prices; a budget of $0.5 stops admission after a
    few: every admitted row gets its record (the simulator answered exactly as many
    requests), the rest none; the same command without the budget does the rest."""
    sim = SimLLMServer(SimOptions(port=0, time_scale=0.02))
    await sim.start()
    try:
        path = write_config(
            tmp_path,
            20,
            services={"llm": {"kind": "openai", "model": "sim", "endpoints": [sim.url]}},
            roles={"ask": {"service": "llm", "prompt": "{{ q }}"}},
            workflow={"kind": "sequence", "roles": ["ask"]},
            prices={"sim": {"input": 1000, "output": 1000}},
        )
        budget = ["runtime.budget_usd=0.5", "runtime.max_in_flight=2"]
        first = await run_async(load_config(path, budget), progress=False)
        written = records(tmp_path / "out.jsonl")
        assert first["outcome"] == "stopped" and first["exit_code"] == 3
        assert "budget reached" in first["reason"]
        assert first["budget"]["reached"] is True
        assert first["budget"]["spent_at_stop_usd"] >= 0.5
        assert 0 < len(written) < 20
        assert all(r["status"] == "ok" and r["cost_usd"] > 0 for r in written)
        assert len({r["id"] for r in written}) == len(written)
        # Tasks in flight finished: one reply per admitted row, each in a record.
        assert sim.counters["completed"] == len(written) == first["records_written"]
        assert first["cost"]["usd"] == pytest.approx(sum(r["cost_usd"] for r in written))
        _print_summary(first)
        assert "budget: $0.5 reached at $" in capsys.readouterr().out

        second = await run_async(load_config(path), progress=False)
    finally:
        await sim.stop()
    assert second["outcome"] == "complete"
    assert second["finished_before_this_run"] == len(written)
    assert "budget" not in second
    final = records(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in final) == [f"r{i:02d}" for i in range(20)]
    assert sim.counters["completed"] == 20
    assert cost_lines(second)[0].startswith("cost: $")
    combined = json.loads((tmp_path / "out.jsonl.summary.json").read_text())["combined"]
    assert combined["cost_usd"] == pytest.approx(first["cost"]["usd"] + second["cost"]["usd"])
