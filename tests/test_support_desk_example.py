"""The support desk example end to end, as its README runs it, against the simulator.

The simulator's script is a test double (a rule-following agent and customer), so these
tests check the workload's machinery: both sides' tools, the endings, every reward
component and the environments' lifecycle; not the quality of a model's conversation.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "support_desk"
NORMAL = {"user_stop", "transfer", "out_of_scope", "agent_stop"}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(config: str, out: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "peerflow.cli",
            "run",
            str(EXAMPLE / config),
            f"output.path={out}",
            "--no-progress",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def rewards(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for record in recs:
        scored = next(s["data"] for s in record["history"] if s["role"] == "reward")
        out[record["id"]] = {k: scored[k] for k in ("reward", "components", "termination")}
    return out


def test_the_simulated_desk_runs_every_task_to_a_scored_ending(tmp_path):
    out = tmp_path / "desk.jsonl"
    proc = run("support_desk_sim.yaml", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = records(out)
    tasks = [json.loads(line) for line in (EXAMPLE / "tasks.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == sorted(t["id"] for t in tasks)
    assert len(tasks) >= 30
    sides = set()
    for record in recs:
        assert record["status"] == "ok" and record["reason"] in NORMAL, record["id"]
        history = record["history"]
        assert history[1]["content"] == "Hi! How can I help you today?"
        sides |= {
            s["data"]["side"]
            for s in history
            if s["role"] == "env" and s.get("data", {}).get("side")
        }
        scored = rewards([record])[record["id"]]
        assert set(scored["components"]) == {"DB", "ENV_ASSERTION", "COMMUNICATE", "ACTION"}
        assert scored["termination"] == record["reason"]
    assert sides == {"assistant", "user"}  # dual control: both sides acted
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert 0.5 <= summary["metrics"]["reward"] < 1.0  # the script's seeded mistakes cost some
    assert summary["tool_errors"] > 0
    envs = summary["environments"]["desk"]
    assert envs["acquired"] == len(tasks) and envs["live"] == 0 and envs["servers"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_openai_config_gives_the_same_rewards_through_a_strict_server(tmp_path):
    """The real-server config, pointed at a separate strict simulator: the requests are
    valid OpenAI tool-calling requests, and the same seeds give the same conversations."""
    port = _free_port()
    script = f"{EXAMPLE / 'sim_agent.py'}:reply"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peerflow.cli",
            "sim-llm",
            "--port",
            str(port),
            "--time-scale",
            "0",
            "--strict",
            "true",
            "--script",
            script,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert f":{port}/v1" in server.stdout.readline()
        limit = "dataset.limit=12"
        sim_out, api_out = tmp_path / "sim.jsonl", tmp_path / "api.jsonl"
        proc = run(
            "support_desk_openai.yaml",
            api_out,
            f"services.llm.endpoints=[http://127.0.0.1:{port}/v1]",
            "services.llm.model=sim",
            limit,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert run("support_desk_sim.yaml", sim_out, limit).returncode == 0
        api, sim = records(api_out), records(sim_out)
        assert len(api) == 12 and all(r["status"] == "ok" for r in api)
        assert rewards(api) == rewards(sim)
    finally:
        server.terminate()
        server.wait(10)
