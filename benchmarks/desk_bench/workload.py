"""The support-desk workload as both designs see it: one peerflow config, read once.

The thread-pool baseline does not run peerflow's pipeline, but it must send the LLM the
same requests, or the comparison would not be of the same work. So everything that
shapes a request comes from the peerflow config the peerflow side runs: each role's
system template (rendered with the same Jinja helper), its opening, sampling and
extra body, the tools of its side (the domain's schemas), the task seed, and the
`DualControl` limits (built by peerflow's own `build_workflow`). `ChatSide` then keeps
each side's request messages the way `LLMAgent.chat` builds them for a two-party view
(`view.include: [assistant, user]`, `include_task: false`, no `prompt`): its own turns as
`assistant` messages, each own tool call followed by its `tool` message, the other
side's texts as unlabelled `user` messages, consecutive ones merged. A config outside
that shape is refused rather than approximated.

`expand_tasks` writes the task list both designs run: the domain's tasks repeated in
rounds (`<id>~r<k>`), so that any prefix of it (a time-boxed run) has the tasks' mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peerflow.agents.llm import LLMOptions, add_template_path, compile_template, render
from peerflow.config import load_config
from peerflow.envs.domain import Domain, load_domain
from peerflow.pipeline import task_seed
from peerflow.workflow import build_workflow

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "tests" / "data" / "mini_desk"
SUPPORT = REPO / "examples" / "support_desk"

# The names a role's system template may use here: the task row's fields and these.
ROW_NAMES = {"vars", "row", "role"}


def default_paths() -> dict[str, Path | str]:
    """The real support desk once its files are there, else the engine tests' mini desk."""
    config = SUPPORT / "support_desk_sim.yaml"
    ready = all(
        p.is_file() for p in (SUPPORT / "sim_agent.py", SUPPORT / "domain" / "tools.py", config)
    )
    if ready:
        return {"config": config}
    return {"config": MINI / "desk.yaml"}


@dataclass
class RoleSpec:
    """What one LLM role's requests are made of (see `LLMAgent.preprocess`)."""

    name: str
    side: str
    system: Any  # a compiled Jinja template, or None
    opening: Any
    sampling: dict[str, Any]
    extra_body: dict[str, Any]
    tools: list[dict[str, Any]]


@dataclass
class Workload:
    """A config's dual-control workload: roles, limits, domain, tasks, simulator script."""

    config: Path
    domain_path: Path
    tasks_path: Path
    script: str
    seed: int
    assistant: RoleSpec
    user: RoleSpec
    llm_service: str
    env_service: str
    max_llm_calls: int
    max_tool_errors: int
    max_hops: int
    agent_stop_tools: set[str] = field(default_factory=set)
    domain: Domain | None = None

    def system_text(self, role: RoleSpec, row: dict[str, Any]) -> str | None:
        if role.system is None:
            return None
        return render(role.system, {**row, "vars": row, "row": row, "role": role.name})

    def opening_text(self, role: RoleSpec, row: dict[str, Any]) -> str | None:
        if role.opening is None:
            return None
        return render(role.opening, {**row, "vars": row, "row": row, "role": role.name})

    def seed_of(self, task_id: str) -> int:
        return task_seed(self.seed, task_id)


def _role(name: str, raw: dict[str, Any], side: str, domain: Domain) -> RoleSpec:
    options = LLMOptions.model_validate(raw)
    view = options.view
    include = options.conversation if options.conversation is not None else view.include
    shape = (
        set(include or ()) >= {name}
        and len(set(include or ()) - {name}) == 1
        and view.label in ("auto", "none")
        and view.merge in ("auto", True)
        and view.tools == "hide"
        and not options.include_task
        and options.prompt is None
        and options.structured is None
        and options.parse is None
    )
    if not shape:
        raise ValueError(
            f"roles.{name}: the baseline rebuilds only a two-party view (view.include: "
            "[assistant, user], label auto/none, tools hide, include_task false, no prompt, "
            "no structured/parse); this role's options differ"
        )
    if isinstance(options.tools, list) and any(isinstance(t, dict) for t in options.tools):
        raise ValueError(f"roles.{name}.tools: give the environment role's name")
    tools = domain.schemas(side) if options.tools else []
    return RoleSpec(
        name=name,
        side=side,
        system=compile_template(options.system, f"roles.{name}.system"),
        opening=compile_template(options.opening, f"roles.{name}.opening"),
        sampling=dict(options.sampling),
        extra_body=dict(options.extra_body),
        tools=tools,
    )


def load_workload(
    config: Path,
    domain: Path | None = None,
    tasks: Path | None = None,
    script: str | None = None,
) -> Workload:
    """Read a dual-control peerflow config; `domain`, `tasks`, `script` override its own."""
    cfg = load_config(config)
    base = cfg.base_dir
    add_template_path(base)  # `{% include "policy.md" %}`, as the pipeline does
    flow = build_workflow(cfg.workflow)
    for attr in ("assistant", "user", "reward", "environment", "max_llm_calls"):
        if not hasattr(flow, attr):
            raise ValueError(f"{config}: the workflow is not peerflow.envs:DualControl")
    env_role = cfg.roles[flow.environment]
    env_service = env_role.model_extra["service"]
    svc = cfg.services[env_service]
    domain_path = Path(domain) if domain else (base / svc.domain)
    dom = load_domain(domain_path)
    raw_roles = {name: dict(role.model_extra or {}) for name, role in cfg.roles.items()}
    sides = (env_role.model_extra or {}).get("sides") or {
        "assistant": "assistant",
        "user": "user",
    }
    assistant = _role(flow.assistant, raw_roles[flow.assistant], sides[flow.assistant], dom)
    user = _role(flow.user, raw_roles[flow.user], sides[flow.user], dom)
    llm_service = raw_roles[flow.assistant]["service"]
    if raw_roles[flow.user]["service"] != llm_service:
        raise ValueError("both LLM roles must use the same service")
    if script is None:
        llm = cfg.services[llm_service]
        given = (getattr(llm, "options", None) or {}).get("script")
        if not given:
            raise ValueError(f"{config}: give the simulator script (--script)")
        file, _, fn = str(given).rpartition(":")
        script = f"{(base / file).resolve()}:{fn}"
    return Workload(
        config=Path(config).resolve(),
        domain_path=domain_path.resolve(),
        tasks_path=Path(tasks).resolve() if tasks else cfg.resolve(cfg.dataset.path),
        script=script,
        seed=cfg.task.seed,
        assistant=assistant,
        user=user,
        llm_service=llm_service,
        env_service=env_service,
        max_llm_calls=flow.max_llm_calls,
        max_tool_errors=flow.max_tool_errors,
        max_hops=flow.max_steps,
        agent_stop_tools=set(flow.agent_stop_tools),
        domain=dom,
    )


def read_tasks(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def expand_tasks(source: Path, dest: Path, total: int) -> int:
    """Write `total` tasks: the source's, round after round, ids `<id>~r<k>`."""
    base = read_tasks(source)
    if not base:
        raise ValueError(f"{source}: no tasks")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w") as f:
        for n in range(total):
            row = dict(base[n % len(base)])
            row["id"] = f"{row['id']}~r{n // len(base)}"
            f.write(json.dumps(row) + "\n")
    return total


def iter_tasks(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class ChatSide:
    """One LLM role's request messages, kept turn by turn (see the module docstring)."""

    __slots__ = ("messages",)

    def __init__(self, system: str | None):
        self.messages: list[dict[str, Any]] = []
        if system is not None:
            self.messages.append({"role": "system", "content": system})

    def said(self, content: str | None, tool_calls: list[dict[str, Any]] | None) -> None:
        """This role's own turn."""
        entry: dict[str, Any] = {"role": "assistant", "content": content or ""}
        if tool_calls:
            entry["tool_calls"] = tool_calls
        self.messages.append(entry)

    def results(self, calls: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        """The `tool` messages answering this role's calls, in call order."""
        found: dict[str, dict[str, Any]] = {}
        for res in results:
            found.setdefault(str(res["tool_call_id"]), res)
        for n, call in enumerate(calls):
            call_id = str(call.get("id") or f"call_{n}") if isinstance(call, dict) else f"call_{n}"
            res = found.get(call_id)
            if res is None:
                content = "ERROR: no result was recorded for this tool call"
            else:
                content = str(res.get("content") or "")
                if res.get("is_error") and content[:5].upper() != "ERROR":
                    content = f"ERROR: {content}"
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def heard(self, text: str | None) -> None:
        """The other side's text: an unlabelled user message, merged into a previous one."""
        if not text:
            return
        prev = self.messages[-1] if self.messages else None
        if prev is not None and prev["role"] == "user":
            self.messages[-1] = {"role": "user", "content": f"{prev['content']}\n\n{text}"}
        else:
            self.messages.append({"role": "user", "content": text})


def request_body(role: RoleSpec, side: ChatSide, seed: int, model: str) -> dict[str, Any]:
    """The body `LLMAgent.preprocess` + `OpenAIService.call` send for this turn."""
    body: dict[str, Any] = {**role.extra_body, "messages": side.messages, **role.sampling}
    if role.tools:
        body["tools"] = role.tools
    body.setdefault("seed", seed)
    body["model"] = model
    return body
