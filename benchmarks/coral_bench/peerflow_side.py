"""The peerflow side: `peerflow run` of the Coral config, pointed at the running simulators.

peerflow runs the shipped config unchanged but for what points it at the shared
infrastructure and the benchmark's task list: the LLM service becomes `kind: openai` over
the simulator replicas (keeping the config's `max_retries` and `timeout`), the dataset is
the expanded task list (`repeat: 1`, so ids and seeds are the orchestrator's), and
`runtime.max_in_flight` is the concurrency. `KNOBS` says so in the printout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from coral_bench.workload import REPO, CoralWorkload

PEERFLOW = [sys.executable, "-m", "peerflow.cli"]

KNOBS = (
    "runtime.max_in_flight = 50 x replicas (and runtime.kind=ray for the Ray points); "
    "every other setting is the shipped config's or peerflow's default "
    "(plumbing only: services.llm -> the simulator replicas, dataset -> the task list, "
    "output path, progress bar off)"
)


def overrides(
    w: CoralWorkload,
    tasks: Path,
    total: int,
    out: Path,
    endpoints: list[str],
    concurrency: int,
    runtime: str = "local",
) -> list[str]:
    """The `key=value` overrides that point the config at the shared simulators."""
    llm = {"kind": "openai", "model": "sim", "endpoints": endpoints, **w.service_settings}
    over = [
        f"dataset.path={tasks}",
        "dataset.repeat=1",
        f"dataset.limit={total}",
        f"output.path={out}",
        f"runtime.max_in_flight={concurrency}",
        "runtime.progress=false",
        f"services.{w.service}={json.dumps(llm)}",
    ]
    if runtime != "local":
        over.append(f"runtime.kind={runtime}")
    return over


def launch(w: CoralWorkload, over: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`peerflow run <config> <overrides>` as a process of its own."""
    return subprocess.Popen(
        [*PEERFLOW, "run", str(w.config), *over],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=dict(os.environ),
    )
