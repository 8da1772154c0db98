from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from peerflow.services.sim_llm import SimLLMServer, SimOptions

# An in-process simulator and a client session, as the `sim` fixture yields them.
Sim = Callable[..., AbstractAsyncContextManager[tuple[SimLLMServer, aiohttp.ClientSession]]]

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

NODE_STORE_BYTES = 150 * 1024 * 1024  # object store per node: small, several share this RAM
NODE_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": "1000",
    "health_check_period_ms": "1000",
    "health_check_failure_threshold": "3",
}

# Every runtime the conformance and hardening suites hold to the same promises.
RUNTIMES = [
    "local",
    pytest.param(
        "ray",
        marks=pytest.mark.skipif(
            not HAVE_RAY, reason="ray is not installed (pip install 'peerflow[ray]')"
        ),
    ),
]


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    """The runtime under test; a Ray one shares the session's local Ray."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real multi-node Ray on this machine, shared by the session (starting one costs
    seconds): Ray's own `Cluster` utility with a head node (2 CPUs, where the driver and
    the sinks run) and one worker node labelled `worker`. Every Ray test thus runs across
    two raylets; tests that add or remove nodes add their own, with their own labels, and
    remove them before they end. Yields the `ray.cluster_utils.Cluster`.
    """
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Notice a removed node in ~4 s rather than Ray's default ~16 s (Ray reads its system
    # settings from RAY_<name> variables): node-loss tests then spend less time waiting.
    for name, value in NODE_HEALTH_CHECKS.items():
        os.environ.setdefault(f"RAY_{name}", value)
    if ray.is_initialized():  # someone else's Ray (a test started one): use it as it is
        yield None
        return
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "object_store_memory": NODE_STORE_BYTES},
    )
    cluster.add_node(num_cpus=0, resources={"worker": 1}, object_store_memory=NODE_STORE_BYTES)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    """Start an in-process simulator on a free port with option overrides, plus a client.

    `rules` writes a rules file and uses it as the script.
    """

    @asynccontextmanager
    async def start(
        rules: list[Any] | None = None, **overrides: Any
    ) -> AsyncIterator[tuple[SimLLMServer, aiohttp.ClientSession]]:
        opts = {"port": 0, "time_scale": 0.0, **overrides}
        if rules is not None:
            path = tmp_path / "rules.yaml"
            path.write_text(yaml.safe_dump(rules))
            opts["script"] = str(path)
        server = SimLLMServer(SimOptions(**opts))
        await server.start()
        conn = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=20)  # an engine deadlock fails instead of hanging
        try:
            async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
                yield server, session
        finally:
            await server.stop()

    return start


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Any], Any]]:
    """`await fake(reply)`: a started `tests/fake_chat.py` server answering with `reply(body)`
    (a strict OpenAI-like server: it refuses with a 400 what a strict one would)."""
    from fake_chat import FakeChat

    made: list[FakeChat] = []

    async def make(reply: Any) -> FakeChat:
        server = FakeChat(reply)
        await server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        await server.close()
