"""The Coral workload as every design sees it: one peerflow config, read once.

The central orchestrator does not run peerflow's pipeline, but it must send the LLM the
same requests, or the comparison would not be of the same work. So everything that shapes
a request comes from the config the peerflow side runs: the task template and the
dataset's field mapping (rendered with peerflow's Jinja helper), each LLM role's system
and prompt templates, sampling and extra body, the per-task seed, and the loop (roles in
order, `check_after`, `until`, `max_turns`, built by peerflow's own `build_workflow`).

`Speaker` keeps a debate role's request messages turn by turn, the way `LLMAgent.chat`
builds them for Coral's view (`view.include: [teacher, student]`, labels `auto` = none for
a two-party view, merge `auto` = merged): the task as the first `user` message, the role's
own turns as `assistant` messages and the other speaker's as `user` messages, consecutive
ones merged. The extractor (`include_task: false`, no view, a `prompt`) sends its system
message and its rendered prompt only. A config outside that shape is refused rather than
approximated.

`expand_tasks` writes the task list every design runs: the dataset's rows repeated in
rounds with ids `<question_id>~r<k>`, so that any prefix of it (a time-boxed run) has the
dataset's mix, and peerflow reads it with `repeat: 1`, giving the same ids and seeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerflow.agents.llm import LLMOptions, add_template_path, compile_template, render
from peerflow.config import load_config
from peerflow.datasets import map_fields
from peerflow.loading import load_object
from peerflow.pipeline import task_seed
from peerflow.workflow import build_workflow

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "examples" / "coral" / "coral_sim.yaml"


@dataclass
class LLMRole:
    """What one LLM role's requests are made of (see `LLMAgent.preprocess`)."""

    name: str
    system: Any  # a compiled Jinja template, or None
    prompt: Any
    sampling: dict[str, Any]
    extra_body: dict[str, Any]
    dialogue: bool  # a debate speaker (sees the task and both speakers) or the extractor
    parse: Any  # `module:function(message, text)` -> step data, or None


@dataclass
class FunctionRole:
    name: str
    fn: Any
    args: dict[str, Any]


@dataclass
class CoralWorkload:
    """A Coral config: its roles, loop, task template and dataset mapping."""

    config: Path
    dataset: Path
    id_field: str
    fields: dict[str, Any]
    task_template: Any
    seed: int
    roles: dict[str, LLMRole | FunctionRole]
    order: list[str]
    check_after: str | None
    until: Any
    max_turns: int
    metrics: Any
    service: str
    sim_options: dict[str, Any]
    service_settings: dict[str, Any]

    def seed_of(self, task_id: str) -> int:
        return task_seed(self.seed, task_id)

    def variables(self, row: dict[str, Any]) -> dict[str, Any]:
        return map_fields(row, self.fields)

    def task_text(self, row: dict[str, Any], variables: dict[str, Any]) -> str:
        return render(self.task_template, {**variables, "vars": variables, "row": row})


def _llm_role(name: str, raw: dict[str, Any]) -> LLMRole:
    options = LLMOptions.model_validate(raw)
    view = options.view
    include = set(options.conversation if options.conversation is not None else view.include or ())
    plain = (
        options.structured is None
        and options.tools is None
        and options.opening is None
        and view.label in ("auto", "none")
        and view.merge in ("auto", True)
    )
    speaker = plain and options.include_task and options.prompt is None and len(include) == 2
    extractor = plain and not options.include_task and not include and options.prompt is not None
    if not (speaker or extractor):
        raise ValueError(
            f"roles.{name}: the orchestrator rebuilds only Coral's two shapes (a speaker: "
            "include_task, view.include of two speakers, no prompt; an extractor: no task, "
            "no view, a prompt); this role's options differ"
        )
    return LLMRole(
        name=name,
        system=compile_template(options.system, f"roles.{name}.system"),
        prompt=compile_template(options.prompt, f"roles.{name}.prompt"),
        sampling=dict(options.sampling),
        extra_body=dict(options.extra_body),
        dialogue=speaker,
        parse=load_object(options.parse, what=f"roles.{name}.parse") if options.parse else None,
    )


def load_workload(config: Path = CONFIG, overrides: list[str] | None = None) -> CoralWorkload:
    """Read a Coral-shaped peerflow config (LLM speakers, an LLM extractor, a function)."""
    cfg = load_config(config, overrides or [])
    add_template_path(cfg.base_dir)
    flow = build_workflow(cfg.workflow)
    for attr in ("order", "check_after", "until", "max_turns"):
        if not hasattr(flow, attr):
            raise ValueError(f"{config}: the workflow is not a `loop`")
    roles: dict[str, LLMRole | FunctionRole] = {}
    services = set()
    for name in flow.order:
        raw = dict(cfg.roles[name].model_extra or {})
        agent = raw.pop("agent", None) or getattr(cfg.roles[name], "agent", None)
        if agent == "llm":
            services.add(raw["service"])
            roles[name] = _llm_role(name, raw)
        elif agent == "function":
            fn = load_object(raw.pop("function"), what=f"roles.{name}.function")
            roles[name] = FunctionRole(name, fn, dict(raw.get("args") or {}))
        else:
            raise ValueError(f"roles.{name}: agent {agent!r} is neither llm nor function")
    if len(services) != 1:
        raise ValueError("every LLM role must use the same service")
    service = services.pop()
    svc = cfg.services[service]
    settings = svc.model_dump() if hasattr(svc, "model_dump") else dict(svc)
    if cfg.dataset.id_field is None:
        raise ValueError("the dataset needs an id_field")
    return CoralWorkload(
        config=Path(config).resolve(),
        dataset=cfg.resolve(cfg.dataset.path),
        id_field=cfg.dataset.id_field,
        fields=cfg.dataset.fields,
        task_template=compile_template(cfg.task.message, "task.message"),
        seed=cfg.task.seed,
        roles=roles,
        order=list(flow.order),
        check_after=flow.check_after,
        until=flow.until,
        max_turns=flow.max_turns,
        metrics=load_object(cfg.metrics, what="metrics") if cfg.metrics else None,
        service=service,
        sim_options=dict(settings.get("options") or {}),
        service_settings={
            k: settings[k] for k in ("max_retries", "timeout") if settings.get(k) is not None
        },
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def expand_tasks(w: CoralWorkload, dest: Path, total: int) -> int:
    """Write `total` rows: the dataset's, round after round, ids `<id>~r<k>`."""
    base = read_rows(w.dataset)
    if not base:
        raise ValueError(f"{w.dataset}: no rows")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w") as f:
        for n in range(total):
            row = dict(base[n % len(base)])
            row[w.id_field] = f"{row[w.id_field]}~r{n // len(base)}"
            f.write(json.dumps(row) + "\n")
    return total


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class Speaker:
    """One debate role's request messages, kept turn by turn (see the module docstring)."""

    __slots__ = ("messages",)

    def __init__(self, system: str | None, task: str):
        self.messages: list[dict[str, Any]] = []
        if system is not None:
            self.messages.append({"role": "system", "content": system})
        self.messages.append({"role": "user", "content": task})

    def said(self, content: str | None) -> None:
        self.messages.append({"role": "assistant", "content": content or ""})

    def heard(self, text: str | None) -> None:
        """The other speaker's turn: an unlabelled user message, merged into a previous one."""
        if not text:
            return
        prev = self.messages[-1]
        if prev["role"] == "user":
            self.messages[-1] = {"role": "user", "content": f"{prev['content']}\n\n{text}"}
        else:
            self.messages.append({"role": "user", "content": text})


def request_body(role: LLMRole, messages: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """The body `LLMAgent.preprocess` builds (the client adds `model`)."""
    body: dict[str, Any] = {**role.extra_body, "messages": messages, **role.sampling}
    body.setdefault("seed", seed)
    return body
