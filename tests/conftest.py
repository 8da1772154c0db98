from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

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
def ray_cluster() -> Iterator[None]:
    """One small local Ray for the whole session (ray.init costs seconds); runs reuse it."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()
