"""A run's parts, built and checked from its config before any work starts.

The pipeline is runtime-agnostic: it turns dataset rows into task messages,
makes agents and services, and finishes tasks into the sink. Runtimes only
move messages between roles; the Ray runtime rebuilds a `Pipeline` from the
same config inside each actor, so both runtimes run identical code per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Container, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from peerflow import checks
from peerflow.agents import Agent, AgentOptions, DedupAgent, agent_class
from peerflow.agents.environment import (
    EnvironmentAgent,
    environment_tools,
    release_held_environment,
)
from peerflow.agents.llm import TASK_ROLE, add_template_path, compile_template, render
from peerflow.agents.tools import resolve_offered_tools
from peerflow.config import RunConfig, validation_errors
from peerflow.loading import add_import_path, load_object
from peerflow.message import Message, Step, new_message
from peerflow.services.adaptive import collect_reports
from peerflow.services.base import Service
from peerflow.services.cache import cache_errors, with_cache
from peerflow.sink import Sink
from peerflow.stats import RunStats
from peerflow.workflow import Workflow

log = logging.getLogger(__name__)


def task_seed(base: int, task_id: str) -> int:
    """A per-task seed that is the same on every runtime and every re-run."""
    digest = hashlib.blake2b(f"{base}:{task_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _null_message(
    name: str, used_by: str, fields: Mapping[str, Any], variables: Mapping[str, Any]
) -> str:
    """Why a variable a template uses has no value in this row, naming the input column."""
    spec = fields.get(name)
    column = spec if isinstance(spec, str) else getattr(spec, "column", name)
    what = "null" if name in variables else "missing"
    if column == name:
        return f"field {name!r} is {what} (used by {used_by})"
    return f"field {column!r} (prompt variable {name!r}) is {what} (used by {used_by})"


class Pipeline:
    def __init__(self, config: RunConfig, *, open_data: bool = True):
        """Build the run's parts and check everything that can be known before it starts.

        With `open_data` (the driver, `peerflow check`), also open the dataset, check
        template variables against its fields, build every agent against unstarted
        services and check the output can be written; worker processes rebuilding a
        checked pipeline skip those. Every problem found is reported at once, as one
        ConfigError pointing at the YAML lines.
        """
        self.config = config
        # `module:attr` references to user code resolve from the config's folder first.
        add_import_path(config.base_dir)
        add_template_path(config.base_dir)
        errors: list[tuple[tuple[str, ...], str]] = []
        self.workflow: Workflow | None
        self.workflow, found = checks.checked_workflow(config)
        errors += found
        self.agent_specs: dict[str, tuple[type[Agent], AgentOptions]] = {}
        # Roles whose options failed validation, as given: their templates and functions
        # are still checked, so that one run of `check` reports every problem.
        unchecked: dict[str, tuple[type[Agent], AgentOptions]] = {}
        for role, role_cfg in config.roles.items():
            try:
                cls = agent_class(role_cfg.agent, role=role)
                options = cls.Options.model_validate(role_cfg.options)
            except ValidationError as exc:
                errors += [(("roles", role, *path), msg) for path, msg in validation_errors(exc)]
                given = {k: v for k, v in role_cfg.options.items() if k in cls.Options.model_fields}
                unchecked[role] = (cls, cls.Options.model_construct(**given))
                continue
            except ValueError as exc:
                errors.append((("roles", role, "agent"), str(exc)))
                continue
            if issubclass(cls, DedupAgent) and not options.output:  # type: ignore[attr-defined]
                # A resumed run's seen set starts from the rows the output already accepted.
                output = str(config.resolve(config.output.path))
                options = options.model_copy(update={"output": output})
            service = getattr(options, "service", None)
            if service is not None and service not in config.services:
                errors.append(
                    (("roles", role, "service"), f"no service named {service!r} under services")
                )
            self.agent_specs[role] = (cls, options)
        # LLM roles may offer tools by the name of an `agent: tools` role or of its tools,
        # or of an `agent: environment` role (its domain's tools for the role's side).
        errors += checks.tool_env_errors(config)
        errors += resolve_offered_tools(
            self.agent_specs, environment_tools(config, self.agent_specs)
        )
        # Roles holding a per-task environment: a task ending without its reward step
        # (failed, or stopped) releases the environment as it is finished.
        self.holds_environments = any(
            issubclass(cls, EnvironmentAgent) for cls, _ in self.agent_specs.values()
        )
        self.task_template = None
        # A syntax error here is reported once, with every other template's, below.
        with contextlib.suppress(ValueError):
            self.task_template = compile_template(config.task.message, "task.message")
        self.metrics_fn = None
        if config.metrics:
            found = checks.callable_errors(config.metrics, "metrics", ("metrics",))
            errors += found
            if not found:
                self.metrics_fn = load_object(config.metrics, what="metrics")
        errors += checks.export_errors(config, self.agent_specs)
        errors += checks.sim_option_errors(config)
        errors += cache_errors(config)
        all_specs = {**self.agent_specs, **unchecked}
        errors += checks.option_callable_errors(all_specs)
        uses, found = checks.template_uses(config, all_specs)
        errors += found
        # Variables each row must give, not null: checked per row in `tasks`.
        self.required_vars = checks.required_vars(config, uses)
        self.dataset = None
        if open_data:
            from peerflow.datasets import DatasetError, open_dataset

            try:
                self.dataset = open_dataset(config.dataset, config.resolve(config.dataset.path))
            except DatasetError as exc:
                errors.append((("dataset", "path"), str(exc)))
            except Exception as exc:  # an unforeseen reader error is still the dataset's
                errors.append((("dataset", "path"), f"cannot open: {type(exc).__name__}: {exc}"))
            if self.dataset is not None:
                columns = None if config.dataset.fields else self.dataset.columns()
                columns_are = (
                    "a key of the dataset's first row"
                    if self.dataset.format == "jsonl"
                    else "a column of the dataset"
                )
                errors += checks.template_var_errors(config, uses, columns, columns_are)
            errors += checks.output_errors(config)
            if not errors:  # agents built on a broken config would only repeat its errors
                try:
                    services = self.services()
                except Exception as exc:
                    errors.append((("services",), f"{type(exc).__name__}: {exc}"))
                else:
                    errors += checks.agent_build_errors(self.agent_specs, services)
        if errors:
            raise config.error(errors)
        self.skipped = 0

    @property
    def duplicate_ids(self) -> int:
        """Input rows of the current (or last) pass whose id repeated an earlier row's."""
        return self.dataset.duplicate_ids if self.dataset is not None else 0

    # --- services and agents ----------------------------------------------
    def services(self, configs: Mapping[str, Any] | None = None) -> dict[str, Service]:
        """Service objects for this run (or for `configs`, in its place), not yet started."""
        from peerflow.services import build_service

        configs = self.config.services if configs is None else configs
        # A service with a response cache is seen through it (`peerflow.services.cache`).
        return {
            name: with_cache(build_service(name, cfg), name, cfg, self.config)
            for name, cfg in configs.items()
        }

    @contextlib.asynccontextmanager
    async def running_services(
        self,
        watch: Any = None,
        configs: Mapping[str, Any] | None = None,
        stats: RunStats | None = None,
    ) -> AsyncIterator[dict[str, Service]]:
        """Start every service for the run, and stop the started ones however the run ends.

        With a `ServiceWatch`, agents get the watched services, and every service must
        answer its health check before this yields: no row is admitted, and no record
        written, while a service is down or mistyped. `configs` replaces the config's
        service sections (the Ray runtime's clients of services already running on the
        cluster). With `stats`, services that keep per-task state (tool environments) add
        their final account to the summary (`environments`) before they stop.
        """
        services = self.services(configs)
        started: list[Service] = []
        try:
            for service in services.values():
                await service.start()
                started.append(service)
                if stats is not None and hasattr(service, "release_owner"):
                    # The driver, before any task: what a killed run on this output left.
                    service.reclaimed_at_start = await service.release_owner()
            if watch is not None and services:
                services = watch.wrap_all(services)
                await watch.check_health()
                watch.start()
            yield services
        finally:
            if watch is not None:
                await watch.stop()
            for service in started:
                report = getattr(service, "final_report", None)
                if stats is not None and report is not None:
                    try:
                        found = await asyncio.wait_for(report(), 15.0)
                    except Exception as exc:
                        found = {"error": f"{type(exc).__name__}: {exc}"}
                    stats.extra.setdefault("environments", {})[service.name] = found
            if stats is not None:  # each adaptive concurrency limit's account, for the summary
                collect_reports(started, stats)
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
    def tasks(self, finished: Container[str] = frozenset()) -> Iterator[Message]:
        """Task messages for every row not yet finished, lazily; bad rows come out failed.

        Every input line gives one message per trial, or one failed message: a line
        that cannot be read, a repeated id, or a row whose prompt variables are
        missing, null or of the wrong type (the error names the field and the line).
        """
        from peerflow.datasets import RowError, map_fields

        assert self.dataset is not None, "pipeline was built without its dataset"
        cfg = self.config
        fields = cfg.dataset.fields
        trials = cfg.task.trials
        seed = cfg.task.seed
        template = self.task_template
        required = tuple(self.required_vars.items())
        unit = self.dataset.unit
        for raw in self.dataset:
            if raw.error is not None:
                if raw.id in finished:
                    self.skipped += 1
                    continue
                row = raw.row if isinstance(raw.row, dict) else {"raw": raw.row}
                yield new_message(raw.id, row, {}).fail("input", raw.error, line=raw.line)
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
                    message.vars = variables = map_fields(raw.row, fields)
                    for name, used_by in required:
                        if variables.get(name) is None:
                            raise RowError(name, _null_message(name, used_by, fields, variables))
                except RowError as exc:
                    yield message.fail(
                        "input",
                        f"{unit} {raw.line}: {exc.message}",
                        line=raw.line,
                        field=exc.field,
                    )
                    continue
                if template is not None:
                    try:
                        text = render(template, {**variables, "vars": variables, "row": raw.row})
                    except Exception as exc:
                        yield message.fail(
                            "input", f"{unit} {raw.line}: task.message: {exc}", line=raw.line
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
        if self.holds_environments:
            release_held_environment(message)
        metrics = self.metrics(message)
        if sink.write(message, metrics):
            stats.observe(message, metrics)
        else:
            stats.duplicates += 1
