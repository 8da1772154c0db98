"""`agent: dedup`: reject a row whose text is a near-duplicate of one already accepted.

Generating many rows from similar seeds makes the same question again and again; each
repeat costs the rest of the workflow's tokens and then has to be removed. This stage
rejects it at once: the role's `text` (a template over the task, e.g. the generated
question) is normalised, MinHash-signed (`peerflow.dedup`) and checked against every text
that passed before it; the first occurrence passes and is remembered, a later exact or
near copy is rejected with the reason `duplicate` and, as detail, which row it repeats and
the estimated similarity. Put the stage last, so that "passed" means "accepted".

The seen set is the run's, not the process's:
- on the local runtime it lives in the process;
- on Ray one small actor per dedup role holds it (`SeenSet`, started by the runtime), and
  the role's actors send it signatures (about 750 bytes each), not texts, so hashing stays
  spread over the role's actors while the check-and-add is one atomic call;
- a first occurrence's step keeps the text it was compared as (`data.text`), and a resumed
  run first loads those of the accepted rows already in the output, so a duplicate of a
  row an earlier run kept is rejected too.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from peerflow.agents.base import Agent, AgentOptions
from peerflow.agents.llm import compile_template, render, template_context
from peerflow.message import Message, Step
from peerflow.services.base import Service

__all__ = ["DedupAgent", "DedupOptions", "SeenSet"]


class DedupOptions(AgentOptions):
    text: str = Field(
        description="The text compared (a template over the task), e.g. "
        "`{{ last('question').data.question }}`."
    )
    threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity of character 5-grams at or above which a "
        "text is a near duplicate (default: peerflow.dedup's, measured on a labelled set).",
    )
    reason: str = Field(default="duplicate", description="The rejection's reason.")
    empty: str = Field(
        default="reject",
        pattern="^(reject|pass)$",
        description="A row whose text renders empty: `reject` (reason `no_text`) or `pass`.",
    )
    # Set by peerflow, not in YAML: the Ray run's seen-set actor, and the output whose
    # accepted rows a resumed run starts from.
    shared: str | None = Field(default=None, description="(set by the Ray runtime)")
    output: str | None = Field(default=None, description="(set by peerflow)")


def _settings(threshold: float | None) -> Any:
    from peerflow.dedup import DedupSettings

    settings = DedupSettings()
    return settings if threshold is None else dataclasses.replace(settings, threshold=threshold)


def preload(index: Any, output: str | None, role: str) -> int:
    """Add the texts the role kept in the accepted rows already in `output` (a resumed run);
    returns how many were added. Each kept text is in its step's data, as compared: no
    template is rendered again (the row's variables are not in the record)."""
    if not output:
        return 0
    from peerflow.export.records import read_records
    from peerflow.report.aggregate import output_paths

    added = 0
    for record in read_records(output_paths(Path(output))):
        if record.status != "ok":
            continue
        for step in reversed(record.history):
            if step.role == role and step.data and step.data.get("text"):
                index.add(record.id, str(step.data["text"]))
                added += 1
                break
    return added


class SeenSet:
    """The seen set of one dedup role for a whole Ray run (one actor; see the module doc)."""

    def __init__(self, threshold: float | None, output: str | None, role: str):
        from peerflow.dedup import Deduper

        self.index = Deduper(_settings(threshold))
        self.preloaded = preload(self.index, output, role)
        self.checks = 0

    def check_and_add(
        self, key: str, norm_hash: int, hashvalues: Any, numbers: Any
    ) -> tuple[str, str, float] | None:
        self.checks += 1
        dup = self.index.check_and_add_signature(key, norm_hash, hashvalues, numbers)
        return None if dup is None else (dup.of, dup.kind, dup.similarity)

    def report(self) -> dict[str, Any]:
        return {"kept": len(self.index), "checks": self.checks, "preloaded": self.preloaded}


class DedupAgent(Agent):
    """See the module docstring."""

    Options = DedupOptions
    options: DedupOptions

    def __init__(self, role: str, options: DedupOptions, services: Mapping[str, Service]):
        super().__init__(role, options, services)
        self.template = None
        self.text = compile_template(options.text, f"roles.{role}.text")
        self.settings = _settings(options.threshold)
        self.index: Any = None
        self.actor: Any = None

    async def setup(self) -> None:
        if self.options.shared:
            import ray

            self.actor = ray.get_actor(self.options.shared)
            return
        from peerflow.dedup import Deduper

        self.index = Deduper(self.settings)
        preload(self.index, self.options.output, self.role)

    async def process(self, message: Message, request: Any) -> Step:
        from peerflow.dedup import fingerprint

        text = render(self.text, template_context(message, self.role)).strip()  # type: ignore[arg-type]
        if not text:
            if self.options.empty == "pass":
                return Step(role=self.role, data={"dedup": "no text"})
            return Step(role=self.role, data={"reject": "no_text"})
        norm_hash, hashvalues, numbers = fingerprint(text, self.settings)
        if self.actor is not None:
            found = await self.actor.check_and_add.remote(
                message.id, norm_hash, hashvalues, numbers
            )
        else:
            if self.index is None:  # built without setup (a test, a custom runtime)
                await self.setup()
            dup = self.index.check_and_add_signature(message.id, norm_hash, hashvalues, numbers)
            found = None if dup is None else (dup.of, dup.kind, dup.similarity)
        if found is None:  # kept: its text stays in the record, for a resumed run's seen set
            return Step(role=self.role, data={"dedup": "first", "text": text})
        of, kind, similarity = found
        detail = {"of": of, "kind": kind, "similarity": round(float(similarity), 4)}
        return Step(role=self.role, data={"reject": {"reason": self.options.reason, **detail}})


@contextlib.asynccontextmanager
async def shared_seen_sets(config: Any, run_id: str, stats: Any = None) -> AsyncIterator[Any]:
    """Ray: one `SeenSet` actor per dedup role, for the block.

    Yields the config in which those roles' `shared` names their actor (every role actor
    builds its agent from it). On exit each actor's account goes to the run summary
    (`dedup`) and the actors are killed.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    roles = {name: cfg for name, cfg in config.roles.items() if cfg.agent == "dedup"}
    if not roles:
        yield config
        return
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    handles: dict[str, Any] = {}
    updated = {}
    for name, cfg in roles.items():
        options = DedupOptions.model_validate(cfg.options)
        actor = f"pf-{run_id}-seen-{name}"
        output = options.output or str(config.resolve(config.output.path))
        handles[name] = (
            ray.remote(SeenSet)
            .options(name=actor, num_cpus=0, scheduling_strategy=here)
            .remote(options.threshold, output, name)
        )
        updated[name] = type(cfg).model_validate(
            {**cfg.model_dump(exclude_unset=True), **cfg.options, "shared": actor}
        )
    try:
        yield config.model_copy(update={"roles": {**config.roles, **updated}})
    finally:
        from peerflow.placement import reports_then_kill

        reports = await reports_then_kill(handles, 10.0)
        if stats is not None:
            stats.extra["dedup"] = reports
