"""A finished conversation's reward, from its tool calls replayed on fresh environments.

The live environment is not trusted: two fresh environments are built from the task's
initial state; one replays every tool call of the trajectory (both sides, in order,
failed ones included: they fail again), the other the task's reference actions. Then:

- `DB`: the two states hash equal (the database and the user's state). The reference
  actions are one valid path, not the required one: any path to the same state counts.
- `ENV_ASSERTION`: each of the task's assertions holds on the replayed environment.
- `COMMUNICATE`: each required piece of information appears in some assistant message
  (case-insensitive, commas ignored: "1,250" matches "1250").
- `ACTION`: each reference action was called with the same compared arguments.

The reward is the product of the components the task's `reward_basis` lists (default
`DB` and `COMMUNICATE`), and 0 when the conversation ended abnormally (step cap, too
many tool errors). Every component is reported either way, with what failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from peerflow.envs.domain import Domain, DomainError, Environment

__all__ = ["NORMAL_ENDINGS", "evaluate"]

# Endings whose conversation is scored; any other (max_steps, too_many_errors) gets 0.
NORMAL_ENDINGS = frozenset({"user_stop", "agent_stop", "transfer", "out_of_scope"})
DEFAULT_BASIS = ("DB", "COMMUNICATE")
BASES = ("DB", "ENV_ASSERTION", "COMMUNICATE", "ACTION")


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return raw
    return raw if raw is not None else {}


def _replay(domain: Domain, task: Mapping[str, Any], calls: Iterable[Mapping[str, Any]]) -> Any:
    env = domain.environment()
    env.initialize((task.get("initial_state") or {}).get("initialization_actions"))
    for call in calls:
        side = str(call.get("requestor") or call.get("side") or "assistant")
        env.call(side, str(call.get("name")), _arguments(call.get("arguments")))
    return env


def _norm(text: str) -> str:
    return text.lower().replace(",", "")


def _communicated(info: list[Any], said: list[str]) -> tuple[bool, list[str]]:
    texts = [_norm(s) for s in said if s]
    missing = [str(item) for item in info if not any(_norm(str(item)) in t for t in texts)]
    return not missing, missing


def _matched(action: Mapping[str, Any], calls: list[Mapping[str, Any]]) -> bool:
    want = action.get("arguments") or {}
    keys = action.get("compare_args")
    keys = list(want) if keys is None else list(keys)
    side = action.get("requestor", "assistant")
    for call in calls:
        if call.get("name") != action.get("name"):
            continue
        if str(call.get("requestor") or call.get("side") or "assistant") != side:
            continue
        got = _arguments(call.get("arguments"))
        if isinstance(got, Mapping) and all(got.get(k) == want.get(k) for k in keys):
            return True
    return False


def evaluate(
    domain: Domain,
    task: Mapping[str, Any],
    calls: list[Mapping[str, Any]],
    assistant_messages: list[str],
    termination: str,
    live: Environment | None = None,
) -> dict[str, Any]:
    """The reward of one conversation, with every component and what made it fail.

    `calls` are `{requestor, name, arguments}` in the order they ran. `live`, when given,
    is the environment the conversation used: the result then also says whether the
    replay reached the same state (a tool that is not deterministic would break that).
    """
    criteria = task.get("evaluation_criteria") or {}
    basis = list(criteria.get("reward_basis") or DEFAULT_BASIS)
    unknown = [b for b in basis if b not in BASES]
    if unknown:
        raise DomainError(f"evaluation_criteria.reward_basis: unknown {unknown}; known: {BASES}")
    replayed = _replay(domain, task, calls)
    reference = _replay(domain, task, criteria.get("actions") or ())
    got, want = replayed.state_hash(), reference.state_hash()
    components: dict[str, float] = {}
    details: dict[str, Any] = {}
    components["DB"] = float(got == want)
    if got != want:
        details["db"] = {
            "differs": [k for k in got if got[k] != want[k]],
            "hash": got,
            "expected": want,
        }
    failed = []
    for i, assertion in enumerate(criteria.get("env_assertions") or ()):
        holds, actual = replayed.check(assertion)
        if not holds:
            failed.append({"index": i, "func_name": assertion.get("func_name"), "actual": actual})
    components["ENV_ASSERTION"] = float(not failed)
    if failed:
        details["env_assertions"] = failed
    ok, missing = _communicated(list(criteria.get("communicate_info") or ()), assistant_messages)
    components["COMMUNICATE"] = float(ok)
    if missing:
        details["communicate_missing"] = missing
    unmatched = [
        a.get("name") for a in criteria.get("actions") or () if not _matched(a, list(calls))
    ]
    components["ACTION"] = float(not unmatched)
    if unmatched:
        details["actions_missing"] = unmatched
    reward = 1.0
    for b in basis:
        reward *= components[b]
    normal = termination in NORMAL_ENDINGS
    if not normal:
        reward = 0.0
        details["abnormal_ending"] = termination
    out: dict[str, Any] = {
        "reward": reward,
        "components": components,
        "basis": basis,
        "termination": termination,
        "details": details,
    }
    if live is not None:
        out["replay_matches_live"] = live.state_hash() == got
    return out
