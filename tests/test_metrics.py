"""The local runtime serves Prometheus metrics while it runs."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path

from peerflow.config import RunConfig
from peerflow.pipeline import Pipeline
from peerflow.run import run_async


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_local_runtime_exports_prometheus_metrics_during_the_run(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}"}) + "\n" for i in range(30)))
    port = free_port()
    config = RunConfig.model_validate(
        {
            "dataset": {"path": str(data), "id_field": "id"},
            "roles": {"a": {"agent": "peerflow.testing:Echo", "delay": 0.02}},
            "workflow": {"kind": "sequence", "roles": ["a"]},
            "runtime": {"max_in_flight": 2, "progress": False, "metrics_port": port},
            "output": {"path": str(tmp_path / "out.jsonl")},
        }
    )
    run = asyncio.create_task(run_async(config, pipeline=Pipeline(config), progress=False))
    seen = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        try:
            seen = await asyncio.to_thread(
                lambda: (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    .read()
                    .decode()
                )
            )
        except OSError:
            continue
        if 'peerflow_tasks_finished_total{status="ok"}' in seen:
            break
    await run
    assert "peerflow_in_flight_tasks" in seen
    assert 'peerflow_steps_total{role="a"}' in seen
    assert 'peerflow_tasks_finished_total{status="ok"}' in seen
