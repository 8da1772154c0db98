"""Tool environments: domains, rewards by replay, the env server and its pool, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from peerflow.envs import load_domain
from peerflow.envs.domain import Domain, DomainError
from peerflow.envs.reward import evaluate
from peerflow.services.base import ServiceError
from peerflow.services.tool_env import EnvironmentLost, ToolEnvService

MINI = Path(__file__).parent / "data" / "mini_desk"


def tasks() -> dict[str, dict]:
    rows = [json.loads(line) for line in (MINI / "tasks.jsonl").read_text().splitlines()]
    return {row["id"]: row for row in rows}


def copy_domain(tmp_path: Path) -> Path:
    folder = tmp_path / "domain"
    shutil.copytree(MINI, folder, ignore=shutil.ignore_patterns("out", "__pycache__"))
    return folder


# --- domains -------------------------------------------------------------------------


def test_domain_offers_each_side_its_tools_with_schemas_from_the_signatures():
    domain = load_domain(MINI)
    assistant = {s["function"]["name"]: s["function"] for s in domain.schemas("assistant")}
    assert set(assistant) == {"find_account", "pay", "resume"}
    pay = assistant["pay"]["parameters"]
    assert pay["required"] == ["account_id", "amount"]
    assert "env" not in pay["properties"]  # filled in by the environment, never by a model
    assert pay["properties"]["amount"]["description"] == "What to pay, in dollars."
    assert {s["function"]["name"] for s in domain.schemas("user")} == {
        "toggle_airplane_mode",
        "check_phone",
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: (d / "tools.py").unlink(), "tools.py: missing"),
        (lambda d: (d / "policy.md").unlink(), "policy.md: missing"),
        (
            lambda d: (d / "db.json").write_text('{"accounts": {"A1": {"id": "A1", "owed": -1}}}'),
            "at accounts.A1.phone: Field required",
        ),
        (
            lambda d: (d / "tools.py").write_text(
                (d / "tools.py").read_text().replace("def resume(env, ", "def resume(")
            ),
            "its first parameter must be `env`",
        ),
        (
            lambda d: (d / "tools.py").write_text(
                (d / "tools.py").read_text() + "\nassistant = 3\n"
            ),
            "`assistant` must be a peerflow.envs.Toolset",
        ),
        (
            lambda d: (d / "tools.py").write_text((d / "tools.py").read_text() + "\n1/0\n"),
            "cannot import: ZeroDivisionError",
        ),
    ],
)
def test_a_broken_domain_is_refused_naming_the_file_and_the_problem(tmp_path, change, expected):
    folder = copy_domain(tmp_path)
    change(folder)
    with pytest.raises(DomainError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Domain(folder)


def test_calls_validate_arguments_and_a_raising_tool_is_an_error_result():
    env = load_domain(MINI).environment()
    bad = env.call("assistant", "pay", {"account_id": "A2", "amount": "lots"})
    assert bad.is_error and "amount" in bad.content
    missing = env.call("assistant", "pay", '{"account_id": "A2"}')
    assert missing.is_error and "amount: Field required" in missing.content
    assert env.call("assistant", "pay", "{not json").is_error
    assert "unknown tool 'fly'" in env.call("assistant", "fly", {}).content
    # The user's tools are not the assistant's (dual control, not shared control).
    assert env.call("assistant", "toggle_airplane_mode", {}).is_error
    refused = env.call("assistant", "resume", {"account_id": "A2"})
    assert refused.is_error and refused.content == "Error: the account still owes money"
    ok = env.call("assistant", "pay", {"account_id": "A2", "amount": 2.5})
    assert not ok.is_error and "owed now 40.0" in ok.content
    assert env.errors == 6 and env.calls == 7


def test_sync_keeps_the_users_phone_consistent_with_the_database():
    env = load_domain(MINI).environment()
    env.initialize(tasks()["t-pay"]["initial_state"]["initialization_actions"])
    assert env.user.has_service is False  # the line is suspended
    env.call("assistant", "pay", {"account_id": "A2", "amount": 42.5})
    env.call("assistant", "resume", {"account_id": "A2"})
    assert env.user.has_service is True
    env.call("user", "toggle_airplane_mode", {})
    assert env.user.has_service is False


def test_environments_are_isolated_copies():
    domain = load_domain(MINI)
    a, b = domain.environment(), domain.environment()
    a.call("assistant", "pay", {"account_id": "A2", "amount": 40})
    assert b.db.accounts["A2"].owed == 42.5
    assert domain.environment().state_hash() == b.state_hash() != a.state_hash()


def test_a_failing_initial_action_names_the_action():
    env = load_domain(MINI).environment()
    with pytest.raises(DomainError, match=r"initialization_actions\[1\].*neither a setup"):
        env.initialize(
            [{"func_name": "own_phone", "arguments": {"phone": "1"}}, {"func_name": "x"}]
        )


# --- rewards ---------------------------------------------------------------------------


def test_the_reference_path_scores_one_and_other_paths_score_by_the_final_state():
    domain = load_domain(MINI)
    task = tasks()["t-pay"]
    reference = task["evaluation_criteria"]["actions"]
    full = evaluate(domain, task, reference, ["That is $42.50, paid."], "user_stop")
    assert full["reward"] == 1.0 and full["details"] == {}
    # Another path to the same state (two payments) is as good: the DB is compared.
    split = [
        {"requestor": "assistant", "name": "find_account", "arguments": '{"phone": "555-0102"}'},
        {"name": "pay", "arguments": {"account_id": "A2", "amount": 40}},
        {"name": "resume", "arguments": {"account_id": "A2"}},  # fails: still owes 2.5
        {"name": "pay", "arguments": {"account_id": "A2", "amount": 2.5}},
        {"name": "resume", "arguments": {"account_id": "A2"}},
    ]
    other = evaluate(domain, task, split, ["You owe 42.50"], "user_stop")
    assert other["components"]["DB"] == 1.0 and other["reward"] == 1.0
    assert other["components"]["ACTION"] == 0.0  # not in the basis, still reported
    unpaid = evaluate(domain, task, reference[:1], ["42.50"], "user_stop")
    assert unpaid["reward"] == 0.0 and unpaid["details"]["db"]["differs"] == ["db", "user"]
    assert unpaid["details"]["env_assertions"][0]["func_name"] == "has_service"
    silent = evaluate(domain, task, reference, ["All done."], "user_stop")
    assert silent["reward"] == 0.0 and silent["details"]["communicate_missing"] == ["42.50"]
    capped = evaluate(domain, task, reference, ["42.50"], "max_steps")
    assert capped["reward"] == 0.0 and capped["components"]["DB"] == 1.0
    assert capped["details"]["abnormal_ending"] == "max_steps"


def test_communicated_information_ignores_case_and_commas():
    domain = load_domain(MINI)
    task = json.loads(json.dumps(tasks()["t-pay"]))
    task["evaluation_criteria"]["communicate_info"] = ["1250 dollars"]
    task["evaluation_criteria"]["reward_basis"] = ["COMMUNICATE"]
    assert evaluate(domain, task, [], ["It is 1,250 DOLLARS."], "agent_stop")["reward"] == 1.0
    task["evaluation_criteria"]["reward_basis"] = ["NOPE"]
    with pytest.raises(DomainError, match="unknown"):
        evaluate(domain, task, [], [], "user_stop")


# --- the server and its pool, over HTTP ----------------------------------------------


async def test_the_pool_serves_tools_scores_and_releases_over_http():
    service = ToolEnvService("desk", domain=str(MINI), servers=1, max_envs=4)
    await service.start()
    try:
        assert await service.health()
        task = tasks()["t-pay"]
        handle = await service.acquire(task, "t-pay")
        assert set(handle) == {"url", "id", "boot"}
        out = await service.call_tool(handle, "assistant", "find_account", '{"phone": "555-0102"}')
        assert out["is_error"] is False and json.loads(out["content"])["status"] == "suspended"
        bad = await service.call_tool(handle, "assistant", "pay", {"account_id": "A2"})
        assert bad["is_error"] is True
        for call in task["evaluation_criteria"]["actions"]:
            await service.call_tool(handle, "assistant", call["name"], call["arguments"])
        calls = [
            {"requestor": "assistant", "name": "find_account", "arguments": {"phone": "555-0102"}},
            {"requestor": "assistant", "name": "pay", "arguments": {"account_id": "A2"}},
            *task["evaluation_criteria"]["actions"],
        ]
        payload = {
            "task": task,
            "calls": calls,
            "assistant_messages": ["42.50"],
            "termination": "user_stop",
        }
        scored = await service.reward(payload, handle)
        assert scored["reward"] == 1.0 and scored["replay_matches_live"] is True
        tools = await service.tools()
        assert tools is not None and {s["function"]["name"] for s in tools["user"]} == {
            "toggle_airplane_mode",
            "check_phone",
        }
        assert await service.release(handle) is True
        assert await service.release(handle) is False  # released once
        with pytest.raises(EnvironmentLost, match="released, or expired"):
            await service.call_tool(handle, "assistant", "find_account", {"phone": "1"})
        bad_task = {"initial_state": {"initialization_actions": [{"func_name": "nope"}]}}
        with pytest.raises(ServiceError, match="initialization_actions") as info:
            await service.acquire(bad_task, "bad")
        assert info.value.retryable is False
        report = await service.final_report()
        assert report["live"] == 0 and report["acquired"] == 1 and report["released"] == 1
    finally:
        await service.stop()
    assert all(p.poll() is not None for p in service.processes) or not service.processes


async def test_acquiring_beyond_the_cap_waits_for_a_release_instead_of_failing():
    service = ToolEnvService("desk", domain=str(MINI), servers=1, max_envs=2)
    await service.start()
    try:
        task = tasks()["t-air"]
        first = [await service.acquire(task, f"t{i}") for i in range(2)]
        waiting = asyncio.ensure_future(service.acquire(task, "t2"))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # still backing off, not failed
        await service.release(first[0])
        third = await asyncio.wait_for(waiting, 10)
        assert third["id"] not in {h["id"] for h in first}
        stats = (await service.server_stats())[0]
        assert stats["refused"] >= 1 and stats["live"] == 2 and stats["peak"] == 2
        service.acquire_timeout = 0.3
        with pytest.raises(ServiceError, match="no environment free") as info:
            await service.acquire(task, "t3")
        assert info.value.retryable is True
    finally:
        await service.stop()


async def test_a_crashed_server_loses_only_its_environments_and_is_replaced():
    service = ToolEnvService("desk", domain=str(MINI), servers=2, max_envs=8)
    await service.start()
    try:
        task = tasks()["t-air"]
        handles = [await service.acquire(task, f"task-{i}") for i in range(6)]
        victim = service.endpoints[0]
        os.kill(service.processes[0].pid, signal.SIGKILL)
        lost = [h for h in handles if h["url"] == victim]
        kept = [h for h in handles if h["url"] != victim]
        assert lost and kept
        for h in lost:
            with pytest.raises(EnvironmentLost, match="crashed") as info:
                await service.call_tool(h, "user", "check_phone", {})
            assert info.value.retryable is True
        for h in kept:
            assert not (await service.call_tool(h, "user", "check_phone", {}))["is_error"]
        for _ in range(100):  # the supervisor replaces it on the same port
            if service.restarts and (await service.server_stats())[0] is not None:
                break
            await asyncio.sleep(0.1)
        assert service.restarts == 1
        stats = (await service.server_stats())[0]
        assert stats is not None and stats["live"] == 0
        # An id of the old server is refused by the new one, saying why.
        with pytest.raises(EnvironmentLost, match="restarted"):
            await service.call_tool(lost[0], "user", "check_phone", {})
        fresh = [await service.acquire(task, f"again-{i}") for i in range(4)]
        assert {h["url"] for h in fresh} == set(service.endpoints)
    finally:
        await service.stop()


async def test_an_idle_environment_is_reclaimed_after_its_lease():
    service = ToolEnvService("desk", domain=str(MINI), servers=1, lease_ttl=0.3)
    await service.start()
    try:
        handle = await service.acquire(tasks()["t-air"], "t")
        await asyncio.sleep(1.0)
        stats = (await service.server_stats())[0]
        assert stats["live"] == 0 and stats["expired"] == 1
        with pytest.raises(EnvironmentLost):
            await service.call_tool(handle, "user", "check_phone", {})
    finally:
        await service.stop()


async def test_a_runs_leftover_environments_are_released_at_once_by_owner():
    service = ToolEnvService("desk", domain=str(MINI), servers=2, owner="run-a")
    await service.start()
    other = ToolEnvService("desk", domain=str(MINI), urls=service.endpoints, owner="run-b")
    await other.start()
    try:
        task = tasks()["t-air"]
        for i in range(3):
            await service.acquire(task, f"a{i}")
        kept = await other.acquire(task, "b0")
        assert await service.release_owner() == 3
        assert sum(s["live"] for s in await service.server_stats()) == 1
        assert not (await other.call_tool(kept, "user", "check_phone", {}))["is_error"]
    finally:
        await other.stop()
        await service.stop()


async def test_a_bug_in_the_domains_code_is_an_error_that_names_it(tmp_path):
    folder = copy_domain(tmp_path)
    code = (folder / "tools.py").read_text()
    code += "\n\n@assertions.tool\ndef broken(env) -> bool:\n    return 1 / 0\n"
    (folder / "tools.py").write_text(code)
    service = ToolEnvService("desk", domain=str(folder), servers=1)
    await service.start()
    try:
        task = json.loads(json.dumps(tasks()["t-air"]))
        task["evaluation_criteria"]["env_assertions"] = [{"func_name": "broken"}]
        payload = {"task": task, "calls": [], "assistant_messages": [], "termination": "user_stop"}
        with pytest.raises(ServiceError, match="domain's code raised ZeroDivisionError"):
            await service.reward(payload, None)
        assert await service.health()  # the server is still serving
    finally:
        await service.stop()
