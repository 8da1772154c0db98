"""The support-desk example: its domain, its tasks' reference solutions, and its simulator.

The domain is loaded the way runs load it (`load_domain`); every task's reference actions
must score 1.0 and doing nothing must not. The simulator script is played without a
server: a small driver builds the requests as the dual-control workflow sends them (the
same system prompts and roles, OpenAI-format tool calls, checked by `strict_chat_errors`),
runs both sides' tool calls on one environment and scores each conversation.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from peerflow.envs import load_domain
from peerflow.envs.reward import evaluate
from peerflow.testing import strict_chat_errors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_desk"
DOMAIN = EXAMPLE / "domain"
TASKS = [json.loads(line) for line in (EXAMPLE / "tasks.jsonl").read_text().splitlines() if line]
WRITES = {"make_payment", "resume_line", "enable_roaming", "disable_roaming", "add_data_topup"}
WRITES |= {"change_plan"}
COMPANY = "Bluewave Mobile"
GREETING = "Hello, thank you for contacting Bluewave Mobile. How can I help you today?"
USER_SYSTEM = (
    "You are playing a customer who contacts the support desk.\n\n# Persona\n{persona}\n\n"
    "# Reason for your call\n{reason_for_call}\n\n# What you know\n{known_info}\n\n"
    "# What you do not know\n{unknown_info}\n\n# How to behave\n{task_instructions}\n\n"
    "# Rules\nWrite one short message at a time, as the customer. When the agent asks you to "
    "do something on your phone, use your phone's tools. When your issue is resolved, or "
    "cannot be, end with ###STOP###. If you are transferred to a human agent, write "
    "###TRANSFER###. If what you want is outside what this support desk does, write "
    "###OUT-OF-SCOPE###."
)
ENDINGS = {
    "###STOP###": "user_stop",
    "###TRANSFER###": "transfer",
    "###OUT-OF-SCOPE###": "out_of_scope",
}
MAX_CALLS = 60


@pytest.fixture(scope="module")
def domain():
    return load_domain(DOMAIN)


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("support_desk_sim", EXAMPLE / "sim_agent.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _category(task: dict[str, Any]) -> str:
    return str(task.get("category") or task["id"])


def _reference(task: dict[str, Any]) -> list[dict[str, Any]]:
    return task["evaluation_criteria"].get("actions") or []


# --- the domain ---------------------------------------------------------------------------------
def test_domain_loads_with_described_tools(domain):
    assert len(domain.tools["assistant"]) >= 10
    assert len(domain.tools["user"]) >= 4
    for side in ("assistant", "user"):
        for schema in domain.schemas(side):
            fn = schema["function"]
            assert fn["description"].strip(), fn["name"]
            for pname, prop in fn["parameters"].get("properties", {}).items():
                assert prop.get("description"), f"{fn['name']}.{pname} has no description"
    assert "overdue" in domain.policy and "transfer_to_human_agents" in domain.policy
    assert 12 <= len(domain.db.customers) <= 20 and 4 <= len(domain.db.plans) <= 6


def test_tasks_are_well_formed_and_varied():
    assert len(TASKS) >= 36
    assert len({t["id"] for t in TASKS}) == len(TASKS)
    per_category = defaultdict(int)
    for task in TASKS:
        per_category[_category(task)] += 1
        known = task["user_scenario"]["instructions"]["known_info"]
        assert "555-" in known and "Your name is" in known, task["id"]
    assert len(per_category) >= 8 and min(per_category.values()) >= 3, dict(per_category)


@pytest.mark.parametrize("task", TASKS, ids=[t["id"] for t in TASKS])
def test_reference_actions_score_one_and_nothing_does_not(domain, task):
    env = domain.environment()
    env.initialize(task["initial_state"]["initialization_actions"])
    before = env.state_hash()
    reference = _reference(task)
    for action in reference:  # every reference action succeeds, in order
        outcome = env.call(action["requestor"], action["name"], action["arguments"])
        assert not outcome.is_error, (action, outcome.content)
    info = task["evaluation_criteria"]["communicate_info"]
    good = evaluate(domain, task, reference, info, "user_stop")
    assert good["reward"] == 1.0, good
    assert evaluate(domain, task, reference, info, "max_steps")["reward"] == 0.0
    idle = evaluate(domain, task, [], [], "user_stop")
    if env.state_hash() != before:
        assert idle["components"]["DB"] == 0.0, task["id"]
        assert idle["reward"] == 0.0
    elif info:
        assert idle["components"]["COMMUNICATE"] == 0.0


# --- tools: validation, preconditions, sync ------------------------------------------------------
def _env(domain, *actions):
    env = domain.environment()
    env.initialize(list(actions))
    return env


def test_bad_arguments_name_the_argument(domain):
    env = domain.environment()
    out = env.call("assistant", "get_line", {"line_id": 2001})
    assert out.is_error and "line_id" in out.content
    out = env.call("assistant", "make_payment", {"bill_id": "B-3003", "amount": 35.0})
    assert out.is_error and "payment_method_id" in out.content
    out = env.call("assistant", "add_data_topup", {"line_id": "L-2001", "gigabytes": 9})
    assert out.is_error and "gigabytes" in out.content
    out = env.call("assistant", "get_customer", {"customer_id": "1001"})
    assert out.is_error and "customer_id" in out.content
    out = env.call("assistant", "no_such_tool", {})
    assert out.is_error and "unknown tool" in out.content
    assert env.errors == 5


def test_preconditions_give_clear_errors(domain):
    env = domain.environment()
    paid = env.call(
        "assistant",
        "make_payment",
        {"bill_id": "B-3001", "payment_method_id": "PM-4001", "amount": 38.25},
    )
    assert paid.is_error and "B-3001 is already paid" in paid.content
    partial = env.call(
        "assistant",
        "make_payment",
        {"bill_id": "B-3003", "payment_method_id": "PM-4001", "amount": 10},
    )
    assert partial.is_error and "in full" in partial.content
    foreign = env.call(
        "assistant",
        "make_payment",
        {"bill_id": "B-3003", "payment_method_id": "PM-4002", "amount": 35.0},
    )
    assert foreign.is_error and "not on file" in foreign.content
    ok = env.call(
        "assistant",
        "make_payment",
        {"bill_id": "B-3003", "payment_method_id": "PM-4001", "amount": 35.0},
    )
    assert not ok.is_error and env.db.bills["B-3003"].status == "paid"
    env = _env(domain, {"func_name": "mark_bill_overdue", "arguments": {"bill_id": "B-3002"}})
    change = env.call("assistant", "change_plan", {"line_id": "L-2001", "plan_id": "P-PLUS30"})
    assert change.is_error and "overdue" in change.content
    assert env.db.lines["L-2001"].plan_id == "P-STD15"
    env.call("assistant", "add_data_topup", {"line_id": "L-2001", "gigabytes": 4})
    over = env.call("assistant", "add_data_topup", {"line_id": "L-2001", "gigabytes": 2})
    assert over.is_error and "only 1 more GB" in over.content


def test_sync_shows_no_service_on_a_suspended_line(domain):
    env = _env(
        domain,
        {
            "env_type": "user",
            "func_name": "set_phone_owner",
            "arguments": {"phone_number": "555-0142"},
        },
    )
    assert env.user.signal == "home" and env.user.data_working
    assert json.loads(env.call("user", "check_status_bar", {}).content)["signal"].startswith("Full")
    env.db.bills["B-3002"].status = "overdue"
    domain.setup["suspend_line_for_nonpayment"](env, line_id="L-2001")
    status = json.loads(env.call("user", "check_status_bar", {}).content)
    assert status["signal"] == "No service" and status["data_connection"] == "none"
    early = env.call("assistant", "resume_line", {"line_id": "L-2001"})
    assert early.is_error and "B-3002" in early.content
    env.call(
        "assistant",
        "make_payment",
        {"bill_id": "B-3002", "payment_method_id": "PM-4001", "amount": 35.0},
    )
    assert not env.call("assistant", "resume_line", {"line_id": "L-2001"}).is_error
    assert env.user.signal == "home"  # sync ran after the assistant's call: the phone shows it
    # Abroad: service needs roaming on the line; data also needs the phone's data-roaming switch.
    domain.setup["travel_abroad"](env, country="Spain")
    env.call("user", "restart_phone", {})
    assert env.user.signal == "no_service"
    env.call("assistant", "enable_roaming", {"line_id": "L-2001"})
    assert env.user.signal == "roaming" and not env.user.data_working
    env.call("user", "toggle_data_roaming", {})
    assert env.user.data_working


# --- the simulator script, played without a server ----------------------------------------------
def _tool_call(call_id: str, call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
    }


def play(domain, sim, task: dict[str, Any], seed: int) -> dict[str, Any]:
    """One conversation as the dual-control workflow runs it; returns the evaluation."""
    instructions = dict(task["user_scenario"]["instructions"])
    user_system = USER_SYSTEM.format(persona=task["user_scenario"]["persona"], **instructions)
    agent_system = f"You are a customer service agent of {COMPANY}. Follow the policy below.\n\n"
    agent_system += domain.policy
    env = domain.environment()
    env.initialize(task["initial_state"]["initialization_actions"])
    views = {
        "assistant": [
            {"role": "system", "content": agent_system},
            {"role": "assistant", "content": GREETING},
        ],
        "user": [{"role": "system", "content": user_system}, {"role": "user", "content": GREETING}],
    }
    other = {"assistant": "user", "user": "assistant"}
    calls: list[dict[str, Any]] = []
    said: list[str] = [GREETING]
    side, llm_calls, termination = "user", 0, "max_steps"
    while llm_calls < MAX_CALLS:
        request = {
            "model": "sim",
            "messages": views[side],
            "tools": domain.schemas(side),
            "seed": seed,
        }
        assert strict_chat_errors(request) == [], strict_chat_errors(request)
        out = sim.reply(json.loads(json.dumps(request)))
        llm_calls += 1
        if isinstance(out, str):
            out = {"content": out}
        if out.get("tool_calls"):
            ids = [f"call_{llm_calls}_{i}" for i in range(len(out["tool_calls"]))]
            views[side].append(
                {
                    "role": "assistant",
                    "content": out.get("content"),
                    "tool_calls": [
                        _tool_call(i, c) for i, c in zip(ids, out["tool_calls"], strict=True)
                    ],
                }
            )
            for call_id, call in zip(ids, out["tool_calls"], strict=True):
                outcome = env.call(side, call["name"], call["arguments"])
                calls.append(
                    {"requestor": side, "name": call["name"], "arguments": call["arguments"]}
                )
                views[side].append(
                    {"role": "tool", "tool_call_id": call_id, "content": outcome.content}
                )
            continue
        text = str(out.get("content") or "")
        assert text.strip(), f"{task['id']}: empty reply from the {side} side"
        ending = next((ENDINGS[t] for t in ENDINGS if t in text), None)
        if ending:
            termination = ending
            break
        views[side].append({"role": "assistant", "content": text})
        views[other[side]].append({"role": "user", "content": text})
        if side == "assistant":
            said.append(text)
        side = other[side]
    result = evaluate(domain, task, calls, said, termination, live=env)
    result["llm_calls"] = llm_calls
    result["tool_errors"] = env.errors
    result["transcript"] = views["assistant"]
    return result


def test_sim_script_plays_every_task(domain, sim, capsys):
    results = {task["id"]: play(domain, sim, task, seed=7) for task in TASKS}
    for task in TASKS:
        r = results[task["id"]]
        assert r["termination"] in ("user_stop", "transfer", "out_of_scope"), (task["id"], r)
        assert r["replay_matches_live"], task["id"]
        assert 3 <= r["llm_calls"] <= 30, (task["id"], r["llm_calls"])
    rewards = [r["reward"] for r in results.values()]
    mean = statistics.mean(rewards)
    per_category: dict[str, list[float]] = defaultdict(list)
    for task in TASKS:
        per_category[_category(task)].append(results[task["id"]]["reward"])
    with capsys.disabled():
        print(
            f"\nsupport desk sim: mean reward {mean:.3f} over {len(rewards)} tasks; "
            f"llm calls mean {statistics.mean(r['llm_calls'] for r in results.values()):.1f}"
        )
        for name, values in sorted(per_category.items()):
            print(f"  {name:22s} {statistics.mean(values):.2f}  {values}")
    assert 0.5 <= mean <= 0.95, mean
    assert any(r["tool_errors"] for r in results.values())
    # A task solved without a mistake-prone turn must score; the imperfection is the sim's.
    assert sum(1 for r in rewards if r == 1.0) >= len(rewards) // 2


def test_sim_script_is_deterministic(domain, sim):
    task = TASKS[0]
    first, again = play(domain, sim, task, seed=3), play(domain, sim, task, seed=3)
    assert first["transcript"] == again["transcript"] and first["reward"] == again["reward"]


def _held_out(tid, number, reason, init, actions, behave="", known="", info=()):
    """A task not in tasks.jsonl, written the same way, for the script's generality."""
    return {
        "id": tid,
        "user_scenario": {
            "persona": "A customer.",
            "instructions": {
                "domain": "telecom",
                "reason_for_call": reason,
                "known_info": f"Your name is {{name}}. Your phone number is {number}. {known}",
                "unknown_info": "You do not know the cause.",
                "task_instructions": "Give your name and number when asked. " + behave,
            },
        },
        "initial_state": {
            "initialization_actions": [
                {
                    "env_type": "user",
                    "func_name": "set_phone_owner",
                    "arguments": {"phone_number": number},
                },
                *init,
            ]
        },
        "evaluation_criteria": {
            "actions": actions,
            "communicate_info": list(info),
            "reward_basis": ["DB", "COMMUNICATE"],
        },
    }


HELD_OUT = [
    _held_out(
        "ho-1",
        "555-0296",
        "Since this morning your phone has no signal at all and calls fail.",
        [
            {"func_name": "mark_bill_overdue", "arguments": {"bill_id": "B-3047"}},
            {"func_name": "suspend_line_for_nonpayment", "arguments": {"line_id": "L-2018"}},
            {"env_type": "user", "func_name": "dislodge_sim", "arguments": {}},
        ],
        [
            {
                "requestor": "assistant",
                "name": "make_payment",
                "arguments": {"bill_id": "B-3047", "payment_method_id": "PM-4018", "amount": 31.25},
            },
            {"requestor": "assistant", "name": "resume_line", "arguments": {"line_id": "L-2018"}},
            {"requestor": "user", "name": "reseat_sim_card", "arguments": {}},
        ],
        behave="Agree to pay an overdue bill. Do what the agent asks on your phone.",
        info=["31.25"],
    ),
    _held_out(
        "ho-2",
        "555-0142",
        "You would like to upgrade your plan to Max 60.",
        [],
        [
            {
                "requestor": "assistant",
                "name": "change_plan",
                "arguments": {"line_id": "L-2001", "plan_id": "P-MAX60"},
            }
        ],
        known="You want to switch to the Max 60 plan.",
        info=["60.00"],
    ),
    _held_out(
        "ho-3",
        "555-0232",
        "You are on a trip in Mexico and your mobile data is not working; calls are fine.",
        [
            {"env_type": "user", "func_name": "travel_abroad", "arguments": {"country": "Mexico"}},
            {"func_name": "set_line_roaming", "arguments": {"line_id": "L-2011", "enabled": True}},
            {"env_type": "user", "func_name": "set_mobile_data", "arguments": {"on": False}},
        ],
        [
            {"requestor": "user", "name": "toggle_mobile_data", "arguments": {}},
            {"requestor": "user", "name": "toggle_data_roaming", "arguments": {}},
        ],
        behave="Do what the agent asks on your phone.",
    ),
]


@pytest.mark.parametrize("task", HELD_OUT, ids=[t["id"] for t in HELD_OUT])
def test_sim_script_handles_held_out_tasks(domain, sim, task):
    line = next(x for x in domain.db.lines.values() if x.phone_number in json.dumps(task))
    known = task["user_scenario"]["instructions"]["known_info"]
    name = domain.db.customers[line.customer_id].name
    task["user_scenario"]["instructions"]["known_info"] = known.replace("{name}", name)
    results = [play(domain, sim, task, seed) for seed in range(6)]
    assert all(r["termination"] in ("user_stop", "transfer") for r in results)
    assert max(r["reward"] for r in results) == 1.0, [r["details"] for r in results]
