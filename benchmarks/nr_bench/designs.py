"""The designs compared: peerflow (row-level) and two batch-level baselines.

All three build the same `Pipeline` from the same config, so every row pays the same
per-request work: the same agents render the same prompts, send the same HTTP requests
through the same client, validate the same JSON, apply the same rejection rules, and
write the same record through the same `Sink`. Only the scheduling differs:

- row-level: `peerflow.run.run` on the local runtime; a row takes its next step as soon
  as its previous one finished, and a finished row's slot goes to the next row at once;
- Ray Data: `map_batches` over an actor pool, as the paper's baseline (Algorithm 2): each
  actor builds the pipeline once and runs its batch's rows concurrently with
  `asyncio.gather`, returning when the slowest row is done; K actors x batch B in flight;
- batched loop: K asyncio loops in one process, each taking the next B rows, gathering
  them, and only then taking the next B.

The per-row step loop below is `peerflow.runtimes.steps.Workers._work` without the
inboxes: the same calls in the same order (`run_inline` for inline agents, `run` else,
append the step, `workflow.advance`, a misroute fails the task, then `finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from peerflow.agents import Agent
from peerflow.config import RunConfig, load_config
from peerflow.message import RUNNING, Message
from peerflow.pipeline import Pipeline
from peerflow.runtimes.steps import misroute
from peerflow.sink import Sink
from peerflow.stats import RunStats

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "examples" / "natural_reasoning" / "nr_sim.yaml"


def overrides(
    docs: Path, out: Path, services: dict[str, dict[str, Any]], extra: list[str] = ()
) -> list[str]:
    """The config overrides every design uses: our documents, our output, our pools."""
    return [
        f"dataset.path={docs}",
        f"output.path={out}",
        "runtime.progress=false",
        *(f"services.{name}={json.dumps(svc)}" for name, svc in services.items()),
        *extra,
    ]


def make_config(over: list[str]) -> RunConfig:
    return load_config(WORKFLOW, over)


async def run_row(
    pipeline: Pipeline, agents: dict[str, Agent], message: Message, sink: Sink, stats: RunStats
) -> None:
    """One row from admission to its record: the runtime's step loop, inlined."""
    workflow = pipeline.workflow
    assert workflow is not None
    nxt = pipeline.start(message) if message.status == RUNNING else None
    while nxt is not None:
        agent = agents.get(nxt)
        if agent is None:
            misroute(message, nxt)
            break
        if agent.inline:
            message.history.append(agent.run_inline(message))
        else:
            message.history.append(await agent.run(message))
        nxt = workflow.advance(message)
    pipeline.finish(message, sink, stats)


# ------------------------------------------------------------------------ row-level


def row_level(config: RunConfig) -> dict[str, Any]:
    """peerflow itself: the local runtime, shipped defaults but `max_in_flight`."""
    from peerflow.run import run

    return run(config, pipeline=Pipeline(config))


# -------------------------------------------------------------------- batched loop


async def _batched(config: RunConfig, loops: int, batch: int) -> dict[str, Any]:
    pipeline = Pipeline(config)
    out = config.resolve(config.output.path)
    sink = Sink(out, success_only=config.output.success_only, flush_bytes=config.output.flush_bytes)
    sink.open()
    stats = RunStats()
    try:
        async with pipeline.running_services() as services:
            agents = pipeline.agents(services)
            for agent in agents.values():
                await agent.setup()
            tasks = pipeline.tasks(sink.finished)

            async def loop() -> None:
                while True:
                    rows = list(itertools.islice(tasks, batch))
                    if not rows:
                        return
                    await asyncio.gather(*(run_row(pipeline, agents, m, sink, stats) for m in rows))

            async def flusher() -> None:
                while True:
                    await asyncio.sleep(config.output.flush_interval)
                    sink.flush()

            flush = asyncio.create_task(flusher())
            try:
                await asyncio.gather(*(loop() for _ in range(loops)))
            finally:
                flush.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flush
    finally:
        sink.close()
    return stats.summary(name="batched-loop")


def batched_loop(config: RunConfig, loops: int, batch: int) -> dict[str, Any]:
    """K loops x B rows in one process (uvloop, like `peerflow run`)."""
    try:
        import uvloop

        return uvloop.run(_batched(config, loops, batch))
    except ImportError:
        return asyncio.run(_batched(config, loops, batch))


# ------------------------------------------------------------------------ Ray Data


class BatchProcessing:
    """A Ray Data batch actor: the pipeline built once; each call runs one batch to the end.

    `__call__` is synchronous on purpose: Ray Data then gives an actor one batch at a time,
    so K actors hold exactly K x B rows, the paper's "same total concurrency" (an `async`
    `__call__` would let Ray 2.60 run up to 4 batches per actor at once:
    RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY). The rows of the batch run
    concurrently with `asyncio.gather` on the actor's own event loop (uvloop, built once with
    the services); the call returns when the slowest row has its record.
    """

    def __init__(self, over: list[str], shard_dir: str):
        from peerflow.datasets import map_fields
        from peerflow.pipeline import task_seed

        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        # Ray Data ends its actors without a teardown hook: their HTTP sessions are then
        # collected unclosed, which aiohttp reports through the loop; that is expected here.
        self.loop.set_exception_handler(_quiet_unclosed)
        self.config = config = make_config(over)
        self.map_fields, self.task_seed = map_fields, task_seed
        self.pipeline = Pipeline(config, open_data=False)
        self.services = self.pipeline.services()
        self.loop.run_until_complete(self._setup())
        shard = Path(shard_dir) / f"shard-{os.getpid()}.jsonl.zst"
        self.sink = Sink(shard, success_only=config.output.success_only)
        self.sink.open()
        self.stats = RunStats()

    async def _setup(self) -> None:
        for service in self.services.values():
            await service.start()
        self.agents = self.pipeline.agents(self.services)
        for agent in self.agents.values():
            await agent.setup()

    def _message(self, row: dict[str, Any]) -> Message:
        """What `Pipeline.tasks` makes of a row: same id, seed and prompt variables."""
        from peerflow.message import new_message

        cfg = self.config
        task_id = str(row[cfg.dataset.id_field])
        message = new_message(task_id, row, {}, seed=self.task_seed(cfg.task.seed, task_id))
        message.vars = self.map_fields(row, cfg.dataset.fields)
        return message

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        messages = [self._message(row) for row in batch.to_dict("records")]

        async def all_rows() -> None:
            await asyncio.gather(
                *(run_row(self.pipeline, self.agents, m, self.sink, self.stats) for m in messages)
            )

        self.loop.run_until_complete(all_rows())
        self.sink.flush()
        return pd.DataFrame(
            {
                "id": [m.id for m in messages],
                "status": [m.status for m in messages],
                "reason": [m.reason or "" for m in messages],
                "completion": [m.tokens()[1] for m in messages],
            }
        )


def _quiet_unclosed(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if not str(context.get("message", "")).startswith("Unclosed"):
        loop.default_exception_handler(context)


def ray_data(
    over: list[str], docs: Path, limit: int, shard_dir: Path, actors: int, batch: int
) -> dict[str, Any]:
    """`read rows -> map_batches(BatchProcessing, batch_size=B, concurrency=K)`, consumed by
    the driver as the outputs stream in; Ray is started here and shut down before return."""
    import ray

    with docs.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in itertools.islice(f, limit)]
    bench = str(Path(__file__).resolve().parent.parent)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([bench, str(REPO)])}}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,  # actor failures still reach the driver as exceptions
        runtime_env=env,
    )
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        shard_dir.mkdir(parents=True, exist_ok=True)
        # One batch per block, so that any idle actor can take the next batch.
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch)))
        ds = ds.map_batches(
            BatchProcessing,
            fn_constructor_kwargs={"over": over, "shard_dir": str(shard_dir)},
            batch_size=batch,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=actors),
            # K actors must fit beside the simulators on this machine's cores.
            num_cpus=min(1.0, 0.8 * (os.cpu_count() or 1) / actors),
        )
        by_status: dict[str, int] = {}
        reasons: dict[str, int] = {}
        completion = 0
        t0 = time.time()
        for out in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for status, reason, tokens in zip(
                out["status"], out["reason"], out["completion"], strict=True
            ):
                by_status[status] = by_status.get(status, 0) + 1
                if status == "rejected":
                    reasons[reason] = reasons.get(reason, 0) + 1
                completion += int(tokens)
        return {
            "by_status": by_status,
            "reasons": reasons,
            "tokens": {"completion": completion},
            "consume_seconds": time.time() - t0,
        }
    finally:
        ray.shutdown()
