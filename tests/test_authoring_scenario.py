"""The issue-7 scenario as a newcomer would write it from the docs, on every runtime.

Two debaters (one uses a calculator and a lookup tool, both called in one step), a
judge, a custom stop condition, user code in the config's own folder, and the simulator
in strict mode (it answers 400 to any request a strict OpenAI server would reject).
Every record must hold the whole exchange, and every request must pass the strict check.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from peerflow.config import load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run_async

MODULE = '''
from peerflow.message import Message


def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


def fact(topic: str) -> str:
    """Look a fact up.

    Args:
        topic: what to look up.
    """
    facts = {"tea": "tea is older than coffee", "coffee": "coffee came to Europe in 1600"}
    if topic not in facts:
        raise KeyError(f"no fact about {topic!r}")
    return facts[topic]


def decided(message: Message) -> bool:
    """Stop when the judge names a winner."""
    last = message.history[-1]
    return last.role == "judge" and "WINNER" in (last.content or "")
'''

RULES = """
- when: {role: alice, tools: [add, fact], last_role: [user]}
  reply:
    text: "Let me check."
    tool_calls:
      - {name: add, arguments: {a: 2, b: 3}}
      - {name: fact, arguments: {topic: tea}}
- when: {role: alice, last_role: tool}
  reply: "Tea wins: {filler}"
- when: {role: bob}
  reply: "Coffee wins, says Bob."
- when: {role: judge, turn: 0}
  reply: "CONTINUE"
- when: {role: judge}
  reply: "WINNER: alice"
"""

CONFIG = """
name: scenario
dataset: {path: motions.jsonl, id_field: id}
task: {message: "Motion: {{ motion }}"}
services:
  llm: {kind: sim, options: {script: rules.yaml, time_scale: 0, strict: true}}
roles:
  tools:
    agent: tools
    functions: [scenario_code:add, scenario_code:fact]
  alice:
    service: llm
    system: You are Alice. Argue for tea; use the tools.
    tools: tools
    view: {include: [alice, bob, judge]}
  bob:
    service: llm
    system: You are Bob. Argue for coffee.
    view: {include: [alice, bob, judge]}
  judge:
    service: llm
    system: You are the judge. Reply WINNER and a name, or CONTINUE.
    view: {include: [alice, bob, judge]}
workflow:
  kind: loop
  roles: [alice, bob, judge]
  until: scenario_code:decided
  max_turns: 5
  tool_role: tools
output: {path: out/scenario.jsonl}
"""


async def test_speakers_judge_parallel_tools_and_a_custom_stop(
    tmp_path: Path, runtime: str
) -> None:
    (tmp_path / "scenario_code.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "config.yaml").write_text(CONFIG)
    motions = [{"id": f"m{i}", "motion": f"tea or coffee, take {i}"} for i in range(6)]
    (tmp_path / "motions.jsonl").write_text("".join(json.dumps(m) + "\n" for m in motions))
    config = load_config(
        tmp_path / "config.yaml", [f"runtime.kind={runtime}", "runtime.progress=false"]
    )
    summary = await run_async(config, pipeline=Pipeline(config), progress=False)
    out = tmp_path / "out" / "scenario.jsonl"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"m{i}" for i in range(6)]
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    assert summary["exit_code"] == 0
    assert "SIMULATED" in " ".join(summary["services"].values())
    for r in records:
        roles = [s["role"] for s in r["history"]]
        # two rounds: alice calls both tools at once, gets both results, then speaks
        assert roles == ["task", "alice", "tools", "alice", "bob", "judge"] * 1 + [
            "alice",
            "tools",
            "alice",
            "bob",
            "judge",
        ], roles
        assert r["reason"] == "until"
        call_step = r["history"][1]
        calls = call_step["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["add", "fact"]
        results = r["history"][2]["tool_results"]
        assert [x["tool_call_id"] for x in results] == [c["id"] for c in calls]
        assert [x["content"] for x in results] == ["5.0", "tea is older than coffee"]
        assert not any(x["is_error"] for x in results)
        assert "WINNER: alice" in r["history"][-1]["content"]
    assert summary["tool_calls"] == 6 * 2 * 2 and summary["tool_errors"] == 0
