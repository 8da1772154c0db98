"""A run's parts, built and checked from its config before any work starts.

The pipeline is runtime-agnostic: it turns dataset rows into task messages,
makes agents and services, and finishes tasks into the sink. Runtimes only
move messages between roles; the Ray runtime rebuilds a `Pipeline` from the
same config inside each actor, so both runtimes run identical code per step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from peerflow.agents import Agent, AgentOptions, agent_class
from peerflow.agents.llm import TASK_ROLE, compile_template
from peerflow.config import RunConfig, validation_errors
from peerflow.loading import load_object
from peerflow.message import Message, Step, new_message
from peerflow.services.base import Service
from peerflow.sink import Sink
from peerflow.stats import RunStats
from peerflow.workflow import Workflow, build_workflow, unknown_roles

log = logging.getLogger(__name__)


def task_seed(base: int, task_id: str) -> int:
    """A per-task seed that is the same on every runtime and every re-run."""
    digest = hashlib.blake2b(f"{base}:{task_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


class Pipeline:
    def __init__(self, config: RunConfig, *, open_data: bool = True):
        self.config = config
        errors: list[tuple[tuple[str, ...], str]] = []
        self.workflow: Workflow | None = None
        try:
            self.workflow = build_workflow(config.workflow)
        except Exception as exc:
            errors.append((("workflow",), str(exc)))
        self.agent_specs: dict[str, tuple[type[Agent], AgentOptions]] = {}
        for role, role_cfg in config.roles.items():
            try:
                cls = agent_class(role_cfg.agent, role=role)
                options = cls.Options.model_validate(role_cfg.options)
            except ValidationError as exc:
                errors += [(("roles", role, *path), msg) for path, msg in validation_errors(exc)]
                continue
            except ValueError as exc:
                errors.append((("roles", role, "agent"), str(exc)))
                continue
            service = getattr(options, "service", None)
            if service is not None and service not in config.services:
                errors.append(
                    (("roles", role, "service"), f"no service named {service!r} under services")
                )
            self.agent_specs[role] = (cls, options)
        if self.workflow is not None:
            for role in sorted(unknown_roles(self.workflow, config.roles)):
                errors.append((("workflow",), f"role {role!r} is not defined under roles"))
        try:
            self.task_template = compile_template(config.task.message, "task.message")
        except ValueError as exc:
            errors.append((("task", "message"), str(exc)))
        self.metrics_fn = None
        if config.metrics:
            try:
                self.metrics_fn = load_object(config.metrics, what="metrics")
            except ValueError as exc:
                errors.append((("metrics",), str(exc)))
        self.dataset = None
        if open_data:
            from peerflow.datasets import DatasetError, open_dataset

            try:
                self.dataset = open_dataset(config.dataset, config.resolve(config.dataset.path))
            except DatasetError as exc:
                errors.append((("dataset", "path"), str(exc)))
        if errors:
            raise config.error(errors)
        self.skipped = 0

    # --- services and agents ----------------------------------------------
    def services(self) -> dict[str, Service]:
        """Service objects for this run, not yet started."""
        from peerflow.services import build_service

        return {name: build_service(name, cfg) for name, cfg in self.config.services.items()}

    @contextlib.asynccontextmanager
    async def running_services(self) -> AsyncIterator[dict[str, Service]]:
        """Start every service for the run, and stop the started ones however the run ends."""
        services = self.services()
        started: list[Service] = []
        try:
            for service in services.values():
                await service.start()
                started.append(service)
            yield services
        finally:
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception:
                    log.exception("stopping service %s failed", service.name)

    def agents(self, services: Mapping[str, Service]) -> dict[str, Agent]:
        return {
            role: cls(role, options, services) for role, (cls, options) in self.agent_specs.items()
        }

    # --- tasks ---------------------------------------------------------------
    def tasks(self, finished: set[str] | frozenset[str] = frozenset()) -> Iterator[Message]:
        """Task messages for every row not yet finished, lazily; bad rows come out failed."""
        from peerflow.datasets import RowError, map_fields

        assert self.dataset is not None, "pipeline was built without its dataset"
        cfg = self.config
        fields = cfg.dataset.fields
        trials = cfg.task.trials
        seed = cfg.task.seed
        template = self.task_template
        for raw in self.dataset:
            if raw.error is not None:
                if raw.id in finished:
                    self.skipped += 1
                    continue
                row = raw.row if isinstance(raw.row, dict) else {"raw": raw.row}
                yield new_message(raw.id, row, {}).fail("input", raw.error, index=raw.index)
                continue
            for trial in range(trials):
                task_id = raw.id if trials == 1 else f"{raw.id}#{trial}"
                if task_id in finished:
                    self.skipped += 1
                    continue
                message = new_message(
                    task_id, raw.row, {}, trial=trial, seed=task_seed(seed, task_id)
                )
                try:
                    message.vars = map_fields(raw.row, fields)
                except RowError as exc:
                    yield message.fail(
                        "input", f"row {raw.index}: {exc.message}", index=raw.index, field=exc.field
                    )
                    continue
                if template is not None:
                    try:
                        text = template.render(**message.vars, vars=message.vars, row=raw.row)
                    except Exception as exc:
                        yield message.fail(
                            "input", f"row {raw.index}: task.message: {exc}", index=raw.index
                        )
                        continue
                    message.history.append(Step(role=TASK_ROLE, content=text, started=time.time()))
                yield message

    def start(self, message: Message) -> str | None:
        assert self.workflow is not None
        try:
            return self.workflow.start(message)
        except Exception as exc:
            message.fail("workflow", f"{type(exc).__name__}: {exc}")
            return None

    # --- finishing -----------------------------------------------------------
    def metrics(self, message: Message) -> dict[str, Any] | None:
        if self.metrics_fn is None:
            return None
        try:
            return self.metrics_fn(message)
        except Exception as exc:  # a metrics bug must not lose the record
            return {"metrics_error": f"{type(exc).__name__}: {exc}"}

    def finish(self, message: Message, sink: Sink, stats: RunStats) -> None:
        message.finished = time.time()
        metrics = self.metrics(message)
        if sink.write(message, metrics):
            stats.observe(message, metrics)
        else:
            stats.duplicates += 1
