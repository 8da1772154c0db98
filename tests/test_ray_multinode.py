"""The Ray runtime on a real multi-node cluster: placement by resources, and node loss.

Every test runs on the session's `ray_cluster` (Ray's own `Cluster` utility: several
raylets on this machine) and adds the nodes it needs, each with its own custom label, so
that `resources` in the config decide where actors go; it removes them before it ends.
The placement asserted is what each actor itself reports (`summary["ray"]["placement"]`:
actor key -> node id), and the output is read from the real files.

Node loss is `cluster.remove_node(node, allow_graceful=False)`: the node's raylet, object
store and workers are SIGKILLed, so its actors and the objects it held are gone. Ray
notices only when its GCS health checks fail (measured on this machine: 16 s with Ray's
defaults, 5-6 s with `health_check_period_ms: 1000` and a failure threshold of 3 in the
head's `_system_config`); until then the lost actors are neither dead nor alive and
nothing restarts them. The tests do not depend on that delay: they decide when to act by
polling the output file, and bound every run with a generous timeout so that a hang
fails instead of blocking CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from peerflow.config import RunConfig  # noqa: E402
from peerflow.merge import read_manifest  # noqa: E402
from peerflow.pipeline import Pipeline  # noqa: E402
from peerflow.run import run_async  # noqa: E402

ECHO = "peerflow.testing:Echo"
RUN_TIMEOUT = 150.0  # a lost node costs ~16 s of detection; a hang must still end the test
LABEL = 0.01  # each actor takes this much of a node's label: any number of actors fit
NODE_STORE_BYTES = 150 * 1024 * 1024  # each added node's object store, as in conftest.py


# --- cluster helpers --------------------------------------------------------------------


@pytest.fixture
def cluster(ray_cluster: Any) -> Any:
    """The session's multi-node cluster; these tests need to add nodes to it."""
    if ray_cluster is None:
        pytest.skip("Ray was started outside the session's Cluster: cannot add nodes")
    return ray_cluster


@contextlib.contextmanager
def extra_nodes(cluster: Any) -> Iterator[Callable[[dict[str, float]], Any]]:
    """Yields `add(resources) -> node`: a new zero-CPU raylet with those custom resources,
    visible to the scheduler when `add` returns. Every node added and not yet removed is
    removed (gracefully) on exit, so the session cluster is left as it was."""
    added: list[Any] = []

    def add(resources: dict[str, float]) -> Any:
        node = cluster.add_node(
            num_cpus=0, resources=resources, object_store_memory=NODE_STORE_BYTES
        )
        added.append(node)
        deadline = time.monotonic() + 30
        while not (
            any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes())
            and all(ray.available_resources().get(k, 0) >= v for k, v in resources.items())
        ):
            assert time.monotonic() < deadline, f"node with {resources} never joined"
            time.sleep(0.05)
        return node

    try:
        yield add
    finally:
        for node in added:
            if node in cluster.worker_nodes:
                cluster.remove_node(node, allow_graceful=True)


@ray.remote(num_cpus=0)
class Placeholder:
    """Holds a node's label so that actors asking for it go elsewhere until it is killed."""

    def ready(self) -> bool:
        return True


def occupy(node: Any, resources: dict[str, float]) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    holder = Placeholder.options(
        resources=resources,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
    ).remote()
    ray.get(holder.ready.remote(), timeout=30)
    return holder


# --- configs, runs and outputs ----------------------------------------------------------


def write_rows(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "n": i}) + "\n")
    return path


def make_config(
    tmp: Path,
    *,
    rows: int,
    roles: dict[str, Any],
    workflow: dict[str, Any],
    runtime: dict[str, Any] | None = None,
    task: str = "task {{ n }}",
) -> RunConfig:
    tmp.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "ray-multinode",
        "dataset": {"path": str(write_rows(tmp / "rows.jsonl", rows)), "id_field": "id"},
        "task": {"message": task},
        "roles": roles,
        "workflow": workflow,
        "runtime": {"kind": "ray", "max_in_flight": 8, "progress": False, **(runtime or {})},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    return RunConfig.model_validate(data)


async def run(config: RunConfig) -> dict[str, Any]:
    return await asyncio.wait_for(
        run_async(config, pipeline=Pipeline(config), progress=False), RUN_TIMEOUT
    )


@contextlib.asynccontextmanager
async def running(config: RunConfig) -> AsyncIterator[asyncio.Future[dict[str, Any]]]:
    """The run as a task, for the test to act on the cluster while it goes; a run still
    going when the block fails is cancelled and awaited, so its actors end before the
    nodes the test added are removed."""
    task = asyncio.ensure_future(run(config))
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def records(config: RunConfig) -> list[dict[str, Any]]:
    """Every record the run wrote: output.path, or its shards when the run sharded it."""
    out = Path(config.output.path)
    paths = read_manifest(out) or [out]
    found = []
    for path in paths:
        if path.exists():
            with open(path) as f:
                found += [json.loads(line) for line in f if line.strip()]
    return found


def complete_lines(path: Path) -> int:
    """Records written so far while a sink may be appending (a last line may be torn)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def wait_for_lines(path: Path, n: int, task: asyncio.Future[Any], timeout: float) -> int:
    """Poll the output until it holds `n` records; fail if the run ended or stalled first."""
    deadline = time.monotonic() + timeout
    while (lines := complete_lines(path)) < n:
        if task.done():
            await task  # raises the run's error, if any
            pytest.fail(f"the run ended with {lines} records before reaching {n}")
        assert time.monotonic() < deadline, f"only {lines} of {n} records after {timeout} s"
        await asyncio.sleep(0.05)
    return lines


def assert_one_ok_record_per_row(out: list[dict[str, Any]], rows: int) -> None:
    ids = [r["id"] for r in out]
    assert len(ids) == len(set(ids)), "duplicated rows"
    assert sorted(ids) == sorted(f"r{i}" for i in range(rows)), "lost rows"
    bad = [(r["id"], r["status"], r.get("error")) for r in out if r["status"] != "ok"]
    assert not bad, bad[:5]


def essence(record: dict[str, Any]) -> Any:
    """What a row's result is, without timings: status and each step's role, text and data."""
    steps = [(s["role"], s.get("content"), s.get("data")) for s in record["history"]]
    return record["status"], steps


def placed(summary: dict[str, Any], prefix: str) -> set[str]:
    """The nodes the actors whose key starts with `prefix` last reported running on."""
    placement = summary["ray"]["placement"]
    found = {node for key, node in placement.items() if key.startswith(prefix)}
    assert found, f"no actor {prefix}* in the placement {placement}"
    return found


def roles_of(record: dict[str, Any]) -> list[str]:
    return [s["role"] for s in record["history"]]


# --- placement ----------------------------------------------------------------------------


async def test_roles_are_spread_across_nodes_by_their_resources(
    tmp_path: Path, cluster: Any
) -> None:
    with extra_nodes(cluster) as add:
        left = add({"mn_left": 1})
        right = add({"mn_right": 1})
        roles = {
            "a": {"agent": ECHO, "resources": {"mn_left": LABEL}, "num_instances": 2},
            "b": {"agent": ECHO, "resources": {"mn_right": LABEL}},
        }
        config = make_config(
            tmp_path, rows=40, roles=roles, workflow={"kind": "sequence", "roles": ["a", "b"]}
        )
        summary = await run(config)
    assert placed(summary, "r:a:") == {left.node_id}
    assert placed(summary, "r:b:") == {right.node_id}
    out = records(config)
    assert_one_ok_record_per_row(out, 40)
    for r in out:
        assert [s.get("content") for s in r["history"]] == [f"task {r['row']['n']}", "a:0", "b:0"]


async def test_sink_shards_live_on_the_nodes_chosen(tmp_path: Path, cluster: Any) -> None:
    with extra_nodes(cluster) as add:
        disk = add({"mn_disk": 1})
        roles = {"a": {"agent": ECHO}, "b": {"agent": ECHO}}
        config = make_config(
            tmp_path,
            rows=60,
            roles=roles,
            workflow={"kind": "loop", "roles": ["a", "b"], "max_turns": 2},
            runtime={"sinks": 2, "sink_resources": {"mn_disk": LABEL}},
        )
        summary = await run(config)
    placement = summary["ray"]["placement"]
    assert {k for k in placement if k.startswith("s:")} == {"s:0:0", "s:0:1"}
    assert placed(summary, "s:") == {disk.node_id}
    shards = read_manifest(Path(config.output.path))
    assert len(shards) == 2 and all(p.exists() for p in shards)
    out = records(config)
    assert_one_ok_record_per_row(out, 60)
    for r in out:
        texts = [s.get("content") for s in r["history"]]
        assert texts == [f"task {r['row']['n']}", "a:0", "b:0", "a:1", "b:1"]


async def test_each_partition_team_runs_on_its_own_node(tmp_path: Path, cluster: Any) -> None:
    with extra_nodes(cluster) as add:
        nodes = [add({"mn_team0": 1}), add({"mn_team1": 1})]
        roles = {"a": {"agent": ECHO}, "b": {"agent": ECHO}}
        config = make_config(
            tmp_path,
            rows=60,
            roles=roles,
            workflow={"kind": "sequence", "roles": ["a", "b"]},
            runtime={
                "partitions": 2,
                "partition_resources": [{"mn_team0": LABEL}, {"mn_team1": LABEL}],
            },
        )
        summary = await run(config)
    for p, node in enumerate(nodes):
        for role in ("a", "b"):
            assert placed(summary, f"r:{role}:{p}:") == {node.node_id}, (role, p)
        assert placed(summary, f"s:{p}:") == {node.node_id}, ("sink", p)
    out = records(config)
    assert_one_ok_record_per_row(out, 60)
    assert all(roles_of(r) == ["task", "a", "b"] for r in out)


# --- node loss and node gain --------------------------------------------------------------

# A graph whose path depends only on the row: alpha, then the parity judge, then beta for
# even rows only. Every step is deterministic (Echo's text counts the role's own steps),
# so a run that lost a node must give each row exactly what a clean run gives it.
PARITY_GRAPH = {
    "kind": "graph",
    "start": "alpha",
    "edges": {
        "alpha": "judge",
        "judge": [{"to": "beta", "when": {"even": True}}, {"to": "end"}],
        "beta": "end",
    },
}


def parity_roles(label: str) -> dict[str, Any]:
    """The Echo roles need `label` (so they run on the node that has it); the judge may
    run anywhere. Echo's texts ("alpha:0") are long enough to offload at a threshold of 4."""
    echo = {"agent": ECHO, "delay": 0.02, "resources": {label: LABEL}}
    return {
        "alpha": {**echo, "num_instances": 2},
        "judge": {"agent": "function", "function": "peerflow.testing:parity"},
        "beta": echo,
    }


def parity_path(record: dict[str, Any]) -> list[str]:
    even = record["row"]["n"] % 2 == 0
    return ["task", "alpha", "judge"] + (["beta"] if even else [])


NODE_LOSS_ROWS = 120


@pytest.mark.parametrize(
    "offload",
    [
        pytest.param(None, id="inline"),
        # Every step text (and the long task text) goes through the object store, whose
        # copies on the lost node die with it.
        pytest.param(4, id="offloaded"),
    ],
)
async def test_losing_a_worker_node_loses_no_row_and_changes_no_result(
    tmp_path: Path, cluster: Any, offload: int | None
) -> None:
    rows = NODE_LOSS_ROWS
    label = f"mn_pool_{offload}"
    task = "task {{ n }}" if offload is None else "task {{ n }} " + "x" * 600
    with extra_nodes(cluster) as add:
        doomed = add({label: 1})
        spare = add({label: 1})

        def config(name: str) -> RunConfig:
            return make_config(
                tmp_path / name,
                rows=rows,
                roles=parity_roles(label),
                workflow=PARITY_GRAPH,
                runtime={"offload_threshold": offload, "max_in_flight": 16},
                task=task,
            )

        clean = config("clean")
        await run(clean)

        # The spare node is held while the run starts, so every labelled actor starts on
        # the doomed node; it is freed just before the doomed node goes.
        holder = occupy(spare, {label: 1})
        lossy = config("lossy")
        out = Path(lossy.output.path)
        try:
            async with running(lossy) as task_:
                await wait_for_lines(out, rows // 8, task_, timeout=60)
                ray.kill(holder, no_restart=True)
                await asyncio.to_thread(cluster.remove_node, doomed, allow_graceful=False)
                at_loss = complete_lines(out)
                summary = await task_
        finally:
            ray.kill(holder, no_restart=True)
    assert at_loss < rows, "the run had finished before the node was lost: nothing tested"
    for role in ("alpha", "beta"):
        # Placement is as last reported: an instance whose restart answered no status
        # round before the run ended still shows the lost node, so ask only for the spare.
        assert spare.node_id in placed(summary, f"r:{role}:"), role
    got = records(lossy)
    assert_one_ok_record_per_row(got, rows)
    want = {r["id"]: essence(r) for r in records(clean)}
    assert len(want) == rows
    differ = [r["id"] for r in got if essence(r) != want[r["id"]]]
    assert not differ, f"{len(differ)} rows differ from the clean run, e.g. {differ[:5]}"
    for r in got:
        assert roles_of(r) == parity_path(r)
        assert r["history"][0]["content"].startswith(f"task {r['row']['n']}")


async def test_actors_move_to_a_node_added_mid_run(tmp_path: Path, cluster: Any) -> None:
    rows = 200
    roles = {
        "a": {"agent": ECHO, "delay": 0.02},
        "g": {"agent": ECHO, "delay": 0.02, "resources": {"mn_gpuish": LABEL}, "num_instances": 2},
    }
    with extra_nodes(cluster) as add:
        first = add({"mn_gpuish": 1})
        config = make_config(
            tmp_path,
            rows=rows,
            roles=roles,
            workflow={"kind": "loop", "roles": ["a", "g"], "max_turns": 2},
        )
        out = Path(config.output.path)
        async with running(config) as task:
            await wait_for_lines(out, rows // 8, task, timeout=60)
            # Until the new node joins, no node can host `g`: its actors wait to restart.
            await asyncio.to_thread(cluster.remove_node, first, allow_graceful=False)
            at_loss = complete_lines(out)
            second = add({"mn_gpuish": 1})  # Ray starts nodes from the main thread only
            summary = await task
    assert at_loss < rows, "the run had finished before the node was lost: nothing tested"
    assert placed(summary, "r:g:") == {second.node_id}
    got = records(config)
    assert_one_ok_record_per_row(got, rows)
    for r in got:
        texts = [s.get("content") for s in r["history"]]
        assert texts == [f"task {r['row']['n']}", "a:0", "g:0", "a:1", "g:1"]
