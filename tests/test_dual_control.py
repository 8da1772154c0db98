"""Dual-control conversations end to end: routing, every ending, rewards, faults, no leaks.

The simulator plays both sides from a Python script (tests/data/mini_desk/sim_play.py and
the scripts written below); environments live in real env server processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from peerflow.services.tool_env import ToolEnvService

MINI = Path(__file__).parent / "data" / "mini_desk"


def setup_desk(tmp_path: Path) -> Path:
    folder = tmp_path / "desk"
    shutil.copytree(MINI, folder, ignore=shutil.ignore_patterns("out", "__pycache__"))
    return folder


def run(config: Path, *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peerflow.cli", "run", str(config), "--no-progress", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def last_data(record: dict[str, Any], role: str) -> dict[str, Any]:
    return next(s.get("data") or {} for s in reversed(record["history"]) if s["role"] == role)


def test_a_conversation_is_routed_scored_and_its_environment_released(tmp_path):
    desk = setup_desk(tmp_path)
    proc = run(desk / "desk.yaml")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    got = {r["id"]: r for r in records(desk / "out" / "desk.jsonl")}
    assert set(got) == {"t-pay", "t-air"}
    pay = got["t-pay"]
    roles = [s["role"] for s in pay["history"]]
    # Acquire, the fixed greeting (no model call), then alternation with tool detours.
    assert roles[:4] == ["env", "assistant", "user", "assistant"]
    greeting = pay["history"][1]
    assert greeting["content"] == "Hi! How can I help you today?" and not greeting.get("usage")
    for step in pay["history"]:  # a message has either text or tool calls
        assert not (step.get("content") and step.get("tool_calls"))
    # The customer's tool call ran on the user's side, and its result went back to them.
    air = got["t-air"]["history"]
    i = next(i for i, s in enumerate(air) if s["role"] == "user" and s.get("tool_calls"))
    assert air[i + 1]["role"] == "env" and air[i + 1]["data"]["side"] == "user"
    assert air[i + 2]["role"] == "user"
    for record in got.values():
        assert record["status"] == "ok" and record["reason"] == "user_stop"
        scored = last_data(record, "reward")
        assert scored["reward"] == 1.0 and scored["termination"] == "user_stop"
        assert scored["env_freed"] is True and scored["replay_matches_live"] is True
        assert record["metrics"]["reward"] == 1.0 and record["metrics"]["llm_calls"] >= 3
    summary = json.loads((desk / "out" / "desk.jsonl.summary.json").read_text())
    envs = summary["environments"]["desk"]
    assert envs["acquired"] == 2 and envs["released"] == 2 and envs["live"] == 0
    assert summary["by_reason"] == {"user_stop": 2}
    assert "endings: user_stop 2" in proc.stdout
    assert "live after the run 0" in proc.stdout


ENDINGS = textwrap.dedent(
    '''
    """Each task's first customer message picks how the conversation goes."""

    def reply(request):
        names = {t["function"]["name"] for t in request.get("tools") or ()}
        messages = request["messages"]
        if "find_account" in names:  # the agent
            first = next(m["content"] for m in messages if m["role"] == "user")
            if "errors" in first:
                return {"tool_calls": [{"name": "pay", "arguments": {"account_id": 7}}]}
            if "bye" in first:
                return "Goodbye. ###STOP###"
            if first == "stop" and messages[-1]["role"] == "user":  # text and a call at once
                call = {"name": "find_account", "arguments": {"phone": "555-0101"}}
                return {"content": "Let me check.", "tool_calls": [call]}
            return "Anything else?"
        reason = messages[0]["content"].split("# Reason for your call\\n")[1].split("\\n")[0]
        if len(messages) <= 2:
            return reason
        tokens = {"transfer": "###TRANSFER###", "scope": "###OUT-OF-SCOPE###", "stop": "###STOP###"}
        return tokens.get(reason, "Tell me more.")
    '''
)


def test_every_ending_is_a_termination_reason_and_abnormal_ones_score_zero(tmp_path):
    desk = setup_desk(tmp_path)
    (desk / "endings.py").write_text(ENDINGS)
    reasons = {"loop": "max_steps", "errors": "too_many_errors", "bye": "agent_stop"}
    reasons |= {"transfer": "transfer", "scope": "out_of_scope", "stop": "user_stop"}
    base = json.loads((desk / "tasks.jsonl").read_text().splitlines()[1])
    lines = []
    for key in reasons:
        task = json.loads(json.dumps(base))
        task["id"] = key
        task["user_scenario"]["instructions"]["reason_for_call"] = key
        task["evaluation_criteria"] = {"reward_basis": ["COMMUNICATE"]}  # trivially 1 if scored
        lines.append(json.dumps(task))
    (desk / "endings.jsonl").write_text("\n".join(lines) + "\n")
    proc = run(
        desk / "desk.yaml",
        "dataset.path=endings.jsonl",
        "services.llm.options.script=endings.py:reply",
        "workflow.options.max_llm_calls=12",
        "workflow.max_tool_errors=4",
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    got = {r["id"]: r for r in records(desk / "out" / "desk.jsonl")}
    assert {k: r["reason"] for k, r in got.items()} == reasons
    for key, record in got.items():
        assert record["status"] == "ok"
        scored = last_data(record, "reward")
        assert scored["termination"] == reasons[key]
        normal = reasons[key] not in ("max_steps", "too_many_errors")
        assert scored["reward"] == (1.0 if normal else 0.0), key
    assert got["loop"]["metrics"]["llm_calls"] == 12
    both = next(s for s in got["stop"]["history"] if s.get("tool_calls"))
    assert both.get("content") is None  # a message has text or tool calls, not both
    assert both["data"]["text_with_tool_calls"] == "Let me check."
    assert got["errors"]["metrics"]["tool_errors"] == 4


def serve(tmp_path: Path, servers: int, **kw: Any) -> tuple[ToolEnvService, threading.Thread]:
    """Env servers run by the test (`urls`), so their counters outlive the run."""
    loop = asyncio.new_event_loop()
    service = ToolEnvService("pool", domain=str(MINI), servers=servers, **kw)
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(service.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(30)
    service._loop = loop  # type: ignore[attr-defined]
    return service, thread


def stop(service: ToolEnvService, thread: threading.Thread) -> None:
    loop = service._loop  # type: ignore[attr-defined]
    asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def stats(service: ToolEnvService) -> list[dict[str, Any]]:
    loop = service._loop  # type: ignore[attr-defined]
    return asyncio.run_coroutine_threadsafe(service.server_stats(), loop).result(10)


def faulty_config(desk: Path, urls: list[str], out: Path) -> Path:
    cfg = yaml.safe_load((desk / "desk.yaml").read_text())
    cfg["task"] = {"trials": 30}
    # Each request waits a little (so the run lasts), and 10% fail for good (no retries).
    cfg["services"]["llm"]["options"] |= {"time_scale": 1, "step_base_ms": 10, "error_rate": 0.1}
    cfg["services"]["llm"]["max_retries"] = 0
    cfg["services"]["desk"] = {"kind": "tool_env", "domain": ".", "urls": urls}
    cfg["runtime"] = {"max_in_flight": 20}
    cfg["output"]["path"] = str(out)
    path = desk / "faulty.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_killing_an_env_server_mid_run_fails_only_its_tasks_and_leaks_nothing(tmp_path):
    desk = setup_desk(tmp_path)
    service, thread = serve(tmp_path, servers=2, max_envs=64)
    try:
        out = tmp_path / "faulty.jsonl"
        config = faulty_config(desk, list(service.endpoints), out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "peerflow.cli", "run", str(config), "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        victim = service.processes[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill it once it holds environments
            found = stats(service)[0]
            if found and found["live"] >= 3:
                break
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=240)
        got = records(out)
        ids = [r["id"] for r in got]
        assert len(ids) == len(set(ids)) == 60, output  # one record per task, none lost
        lost = [r for r in got if "environment" in str(r.get("error")) and "lost" in str(r)]
        assert lost, output
        for record in lost:
            assert record["status"] == "error" and record["error"]["role"] == "env"
            assert service.endpoints[0].rsplit(":", 1)[1] in record["error"]["message"]
            assert record["error"]["kind"] == "transient"  # a re-run re-attempts the row
        llm_failed = [r for r in got if r["status"] == "error" and r not in lost]
        assert llm_failed, "the sim's error_rate should fail some LLM calls"
        assert any(r["status"] == "ok" for r in got)
        assert proc.returncode == 1  # failed rows make the exit status say so
        time.sleep(0.5)  # background releases of the last failed tasks
        after = stats(service)
        assert all(s is not None for s in after)
        assert sum(s["live"] for s in after) == 0, after  # no environment leaked
        assert service.restarts == 1
        # The re-run re-attempts exactly the failed rows, on the replaced server too.
        rerun = run(config, "services.llm.options.error_rate=0")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        final = {r["id"]: r for r in records(out)}
        assert len(final) == 60 and all(r["status"] == "ok" for r in final.values())
        assert sum(s["live"] for s in stats(service)) == 0
    finally:
        stop(service, thread)


def test_check_names_a_broken_domain_and_a_role_that_is_no_side(tmp_path):
    desk = setup_desk(tmp_path)
    (desk / "db.json").write_text('{"accounts": {"A1": {"id": "A1"}}}')
    cfg = yaml.safe_load((desk / "desk.yaml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "peerflow.cli", "check", str(desk / "desk.yaml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "services.desk.domain" in proc.stderr + proc.stdout
    assert "accounts.A1.phone: Field required" in proc.stderr + proc.stdout
    shutil.copy(MINI / "db.json", desk / "db.json")
    cfg["roles"]["critic"] = {"service": "llm", "tools": "env"}
    (desk / "critic.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "peerflow.cli", "check", str(desk / "critic.yaml")],
        capture_output=True,
        text=True,
    )
    text = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "roles.critic.tools" in text
    assert "not a side of the environment role 'env'" in text
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerflow.cli",
            "check",
            str(desk / "desk.yaml"),
            'roles.assistant.system={% include "rules.md" %}',
        ],
        capture_output=True,
        text=True,
    )
    text = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "roles.assistant.system: includes 'rules.md'" in text


def test_a_killed_runs_environments_are_reclaimed_by_the_next_run(tmp_path):
    desk = setup_desk(tmp_path)
    service, thread = serve(tmp_path, servers=1, max_envs=64)
    try:
        out = tmp_path / "killed.jsonl"
        config = faulty_config(desk, list(service.endpoints), out)
        slow = ["services.llm.options.error_rate=0", "services.llm.options.step_base_ms=40"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "peerflow.cli", "run", str(config), "--no-progress", *slow],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stats(service)[0]["live"] < 5:
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no release, no cleanup of any kind
        proc.wait(10)
        left = stats(service)[0]["live"]
        assert left >= 5  # held by the killed run's tasks (until their lease ends)
        rerun = run(config, "services.llm.options.error_rate=0")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
        envs = summary["environments"]["desk"]
        assert envs["reclaimed_at_start"] == left and envs["live"] == 0
        assert stats(service)[0]["live"] == 0
        got = [r["id"] for r in records(out)]
        assert len(got) == len(set(got)) == 60
    finally:
        stop(service, thread)


@pytest.mark.parametrize("runtime", ["ray"], indirect=True)
async def test_on_ray_killed_actors_and_env_replicas_lose_no_task_and_leak_nothing(
    tmp_path, runtime
):
    """Role actors and the env server replicas are killed in turn while conversations run:
    every task still ends in exactly one record, and no environment is left live."""
    from peerflow.config import load_config
    from peerflow.run import run_async
    from peerflow.testing import killing_actors

    desk = setup_desk(tmp_path)
    overrides = [
        "runtime.kind=ray",
        "runtime.max_in_flight=24",
        "services.desk.replicas=2",
        "services.llm.options.time_scale=1",
        "services.llm.options.step_base_ms=15",
        "task.trials=20",
    ]
    config = load_config(desk / "desk.yaml", overrides)
    async with killing_actors(["-r:", "-desk-"], every=1.0, first=1.5) as killed:
        summary = await asyncio.wait_for(run_async(config, progress=False), 240)
    assert "-desk-" in killed and "-r:" in killed, killed
    got = records(desk / "out" / "desk.jsonl")
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)) == 40
    lost = [r for r in got if r["status"] == "error"]
    for record in lost:  # only tasks whose environment died with its server
        assert "environment" in record["error"]["message"], record["error"]
    assert len(lost) < 40
    envs = summary["environments"]["desk"]
    print(f"killed {killed}; {len(lost)} tasks lost their environment; environments {envs}")
    assert envs["live"] == 0, envs
