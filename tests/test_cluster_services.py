"""Managed services on a multi-node Ray cluster: replicas on labelled nodes, bound to their
node's address, found through the run's registry, restarted when their server or their node
dies, with no row lost. Every run is real: Ray's own Cluster utility (several raylets on this
machine), the simulator served as a `command` service, real HTTP and real output files.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from conftest import NODE_STORE_BYTES  # noqa: E402

from peerflow.config import ConfigError, RunConfig  # noqa: E402
from peerflow.pipeline import Pipeline  # noqa: E402
from peerflow.run import run_async  # noqa: E402
from peerflow.services import ServiceError, build_service  # noqa: E402
from peerflow.services.cluster import RegistryClient, services_on_cluster  # noqa: E402
from peerflow.services.openai_client import OpenAIService  # noqa: E402

SAFETY = 120.0  # seconds; only turns a hang into a failure
LABEL = "llmbox"
# The simulator, served as any command-line server would be.
SIM = [sys.executable, "-m", "peerflow.cli", "sim-llm", "--host", "{host}", "--port", "{port}"]


def add_node(cluster: Any) -> Any:
    return cluster.add_node(num_cpus=0, resources={LABEL: 1}, object_store_memory=NODE_STORE_BYTES)


@pytest.fixture(scope="module")
def nodes(ray_cluster: Any) -> Iterator[list[Any]]:
    """Two extra raylets offering one `llmbox` each, shared by this module's tests (adding a
    node costs seconds); a test may remove one and append others. All are removed after."""
    if ray_cluster is None:
        pytest.skip("needs the session's multi-node cluster")
    added = [add_node(ray_cluster) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    try:
        yield added
    finally:
        for node in added:
            with contextlib.suppress(Exception):  # already removed by a test
                ray_cluster.remove_node(node, allow_graceful=False)


def service(replicas: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "command",
        "command": SIM,
        "model": "sim",
        "replicas": replicas,
        "resources": {LABEL: 1},
        "startup_timeout": 60,
        **extra,
    }


def config(tmp: Path, n: int, **svc: Any) -> RunConfig:
    rows = "".join(json.dumps({"id": f"r{i}", "n": i}) + "\n" for i in range(n))
    (tmp / "rows.jsonl").write_text(rows)
    return RunConfig.model_validate(
        {
            "name": "cluster-services",
            "dataset": {"path": str(tmp / "rows.jsonl"), "id_field": "id"},
            "task": {"message": "task {{ n }}"},
            "services": {"llm": service(**svc)},
            # On the head node (the only one with CPUs): only service replicas are lost.
            "roles": {
                "solver": {
                    "agent": "llm",
                    "service": "llm",
                    "sampling": {"max_tokens": 40},
                    "resources": {"cpu": 0.1},
                }
            },
            "workflow": {"kind": "sequence", "roles": ["solver"]},
            "runtime": {"kind": "ray", "max_in_flight": 8, "progress": False},
            "output": {"path": str(tmp / "out.jsonl")},
        }
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def assert_every_row_once_and_ok(summary: dict[str, Any], path: Path, n: int) -> None:
    assert summary["outcome"] == "complete", summary.get("reason")
    recs = records(path)
    ids = [r["id"] for r in recs]
    assert sorted(ids) == sorted(f"r{i}" for i in range(n))  # every row, exactly once
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs][:3]


def written(path: Path) -> int:
    """Records in the output so far."""
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def host_port(endpoint: str) -> tuple[str, int]:
    hostport = endpoint.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2.0)
        return s.connect_ex((host, port)) != 0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def until(predicate: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s")
        await asyncio.sleep(every)


async def run_registry(before: set[str]) -> Any:
    """The registry of the run that has started since `before` was taken."""

    async def find() -> Any:
        new = [n for n in registry_names() - before if n.endswith("-registry")]
        return ray.get_actor(new[0]) if new else None

    return await until(find, 60.0, 0.1)


def registry_names() -> set[str]:
    return set(ray.util.list_named_actors(all_namespaces=False))


async def replicas(registry: Any, want: int) -> dict[int, dict[str, Any]]:
    """The service's registered replicas, once `want` of them are healthy."""

    async def ready() -> Any:
        entries = (await registry.status.remote()).get("llm", {})
        healthy = {i: e for i, e in entries.items() if e["healthy"]}
        return healthy if len(healthy) >= want else None

    return await until(ready, 60.0, 0.1)


# --- the pieces, without a cluster -----------------------------------------------------------


def test_set_endpoints_keeps_the_state_of_endpoints_that_stay() -> None:
    svc = OpenAIService("llm", model="m", endpoints=["http://a/v1", "http://b/v1"])
    a, b = svc._eps
    a.outstanding, a.requests, b.requests = 3, 7, 2
    b.down_until = time.monotonic() + 60
    svc.set_endpoints(["http://c/v1", "http://a/v1/"])
    assert svc.endpoints == ["http://c/v1", "http://a/v1"]
    assert svc._eps[1] is a and a.index == 1 and a.outstanding == 3
    assert svc.stats()["requests"] == 9  # what went to b still counts
    svc.set_endpoints(["http://b/v1"])  # b is back (the registry found it healthy)
    assert svc._eps == [b] and b.down_until == 0.0 and b.requests == 2


async def test_an_empty_pool_fails_calls_as_transient() -> None:
    svc = RegistryClient("llm", registry="pf-none-registry", model="m", max_retries=1, backoff=0)
    svc.refresh = _no_registry  # type: ignore[method-assign]
    await svc.start()
    try:
        with pytest.raises(ServiceError) as info:
            await svc.call({"messages": [{"role": "user", "content": "hi"}]})
        assert info.value.retryable and "no endpoint" in str(info.value)
        assert not await svc.health()
    finally:
        await svc.stop()


async def _no_registry() -> bool:
    return False


async def test_a_command_service_on_the_local_runtime(tmp_path: Path) -> None:
    cfg = config(tmp_path, 20, command=" ".join(SIM), replicas=2)  # one string works too
    local = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"kind": "local"})})
    summary = await asyncio.wait_for(run_async(local, pipeline=Pipeline(local)), SAFETY)
    assert_every_row_once_and_ok(summary, tmp_path / "out.jsonl", 20)
    svc = build_service("llm", cfg.services["llm"])
    await svc.start()
    try:
        assert [host_port(e)[0] for e in svc.endpoints] == ["127.0.0.1", "127.0.0.1"]
        pids = list(svc.pids)  # type: ignore[attr-defined]
    finally:
        await svc.stop()
    assert not any(alive(p) for p in pids)


# --- placement and binding ----------------------------------------------------------------


async def test_replicas_run_on_labelled_nodes_bound_to_their_node_address(
    nodes: list[Any], tmp_path: Path
) -> None:
    cfg = config(tmp_path, 1)
    async with services_on_cluster(cfg, "placement") as rewritten:
        client_cfg = rewritten.services["llm"]
        assert client_cfg.kind == "openai" and client_cfg.registry == "pf-placement-registry"
        registry = ray.get_actor("pf-placement-registry")
        entries = await replicas(registry, 2)
        endpoints = await registry.endpoints.remote("llm")
        assert sorted(endpoints) == sorted(e["endpoint"] for e in entries.values())
        # One replica per labelled node (each offers one llmbox), none elsewhere.
        placed = {e["info"]["node_id"] for e in entries.values()}
        assert placed == {node.node_id for node in nodes}
        pids = []
        for entry in entries.values():
            info = entry["info"]
            host, port = host_port(entry["endpoint"])
            assert host == info["node_ip"] == nodes[0].node_ip_address != "127.0.0.1"
            argv = Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")
            assert argv[argv.index(b"--host") + 1].decode() == host
            # Bound to the node's address only: loopback refuses, the address answers.
            assert refused("127.0.0.1", port) and not refused(host, port)
            pids.append(info["pid"])
        # Driver-side clients follow the registry and reach both replicas.
        client = build_service("llm", client_cfg)
        assert isinstance(client, RegistryClient)
        await client.start()
        try:
            assert sorted(client.endpoints) == sorted(endpoints)
            assert await client.health()
            results = await asyncio.gather(
                *(client.call({"messages": [{"role": "user", "content": "hi"}]}) for _ in range(8))
            )
            assert {r.endpoint for r in results} <= set(endpoints)
        finally:
            await client.stop()
    # Leaving the block stops every server process and removes the actors.
    await until(lambda: not any(alive(p) for p in pids), 20.0)
    assert not [n for n in registry_names() if n.startswith("pf-placement-")]


async def test_a_replica_that_cannot_start_fails_with_its_log_tail(
    nodes: list[Any], tmp_path: Path
) -> None:
    broken = [
        sys.executable,
        "-c",
        "import sys; print('no such model', file=sys.stderr); sys.exit(3)",
        "{port}",
    ]
    cfg = config(tmp_path, 1, command=broken, replicas=1)
    with pytest.raises(ServiceError) as info:
        async with services_on_cluster(cfg, "broken"):
            pass
    text = str(info.value)
    assert "service 'llm'" in text and "no such model" in text and "code 3" in text


async def test_a_service_no_node_can_host_is_refused_before_anything_starts(
    nodes: list[Any], tmp_path: Path
) -> None:
    cfg = config(tmp_path, 1, resources={"no-such-label": 1})
    with pytest.raises(ConfigError) as info:
        await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    assert "services.llm.resources" in str(info.value)
    assert "no-such-label=1" in str(info.value)
    assert not [n for n in registry_names() if n.startswith("pf-")]


# --- failures mid-run ------------------------------------------------------------------------


async def start_flowing(cfg: RunConfig, tmp_path: Path) -> tuple[Any, Any, Any]:
    """Start a run with two replicas; return once rows are flowing: (run, registry, replicas)."""
    before = registry_names()
    work = asyncio.ensure_future(
        asyncio.wait_for(run_async(cfg, pipeline=Pipeline(cfg), progress=False), SAFETY)
    )
    registry = await run_registry(before)
    entries = await replicas(registry, 2)
    await until(lambda: written(tmp_path / "out.jsonl") >= 20, 60.0)
    return work, registry, entries


async def test_killing_a_replicas_server_mid_run_loses_no_row(
    nodes: list[Any], tmp_path: Path
) -> None:
    n = 200
    work, registry, entries = await start_flowing(config(tmp_path, n), tmp_path)
    victim = entries[0]
    os.kill(victim["info"]["pid"], signal.SIGKILL)

    async def gone() -> bool:
        return victim["endpoint"] not in await registry.endpoints.remote("llm")

    await until(gone, 5.0)  # requests stop going there within seconds

    async def restarted() -> Any:
        entry = (await registry.status.remote()).get("llm", {}).get(0)
        return entry if entry and entry["info"]["pid"] != victim["info"]["pid"] else None

    again = await until(restarted, 30.0)
    assert again["info"]["starts"] == 2 and not work.done()
    summary = await work
    assert_every_row_once_and_ok(summary, tmp_path / "out.jsonl", n)
    # The calls in flight on the killed server were retried (on the other replica), not lost.
    steps = [
        s for r in records(tmp_path / "out.jsonl") for s in r["history"] if s["role"] == "solver"
    ]
    assert any(s.get("attempts", 1) > 1 for s in steps)


async def test_removing_a_node_with_a_replica_mid_run_loses_no_row(
    ray_cluster: Any, nodes: list[Any], tmp_path: Path
) -> None:
    n = 700  # long enough for Ray to see the node gone and restart the replica elsewhere
    work, registry, entries = await start_flowing(config(tmp_path, n), tmp_path)
    victim = next(e for e in entries.values() if e["info"]["node_id"] == nodes[0].node_id)
    ray_cluster.remove_node(nodes[0], allow_graceful=False)
    # A spare node with the label: the lost replica's actor restarts there.
    spare = add_node(ray_cluster)
    nodes.append(spare)

    async def gone() -> bool:
        return victim["endpoint"] not in await registry.endpoints.remote("llm")

    await until(gone, 10.0)
    await until(lambda: not alive(victim["info"]["pid"]), 10.0)  # it died with its node

    async def moved() -> Any:
        assert not work.done(), "the run ended before the replica was back"
        entries = (await registry.status.remote()).get("llm", {})
        return any(e["healthy"] and e["info"]["node_id"] == spare.node_id for e in entries.values())

    await until(moved, 60.0, 0.2)  # the lost replica runs again, on the spare node
    summary = await work
    assert_every_row_once_and_ok(summary, tmp_path / "out.jsonl", n)


async def test_env_servers_run_as_replicas_on_labelled_nodes(nodes: list[Any], tmp_path: Path):
    """A `tool_env` service on Ray: its environment servers are replicas placed by
    resources, bound to their nodes' addresses, and every task's environment is on one."""
    from peerflow.config import load_config

    mini = Path(__file__).parent / "data" / "mini_desk"
    out = tmp_path / "desk.jsonl"
    overrides = [
        "runtime.kind=ray",
        "services.desk.replicas=2",
        "services.desk.resources={llmbox: 1}",
        "task.trials=4",
        f"output.path={out}",
    ]
    summary = await asyncio.wait_for(
        run_async(load_config(mini / "desk.yaml", overrides), progress=False), SAFETY
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    hosts = {host_port(r["history"][0]["data"]["environment"]["url"])[0] for r in records}
    assert hosts == {nodes[0].node_ip_address} and "127.0.0.1" not in hosts
    ports = {host_port(r["history"][0]["data"]["environment"]["url"])[1] for r in records}
    assert len(ports) == 2  # both replicas served tasks
    envs = summary["environments"]["desk"]
    assert envs["servers"] == 2 and envs["acquired"] == 8 and envs["live"] == 0
