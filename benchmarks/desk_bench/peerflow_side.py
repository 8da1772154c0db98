"""The peerflow side: env servers started by the benchmark, and `peerflow run` against them.

peerflow runs the workload's own config, unchanged but for what points it at the shared
infrastructure: the LLM service becomes `kind: openai` over the running simulator
replicas, the tool service `kind: tool_env` over the env servers started here (with
the per-call cost), the dataset is the benchmark's task list and `runtime.max_in_flight`
the concurrency. Nothing else is set (`KNOBS` lists what is, for the printout).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from desk_bench.workload import REPO, Workload

PEERFLOW = [sys.executable, "-m", "peerflow.cli"]

# Every setting the peerflow side gets beyond the config: the concurrency and plumbing.
KNOBS = "runtime.max_in_flight=<concurrency>, runtime.progress=false (no other knob)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EnvServers:
    """`n` env server processes of one domain, with the benchmark's per-call cost."""

    domain: Path
    n: int
    max_envs: int
    call_latency: float
    call_cpu: float
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "peerflow.envs.server",
                "--domain",
                str(self.domain),
                "--port",
                str(port),
                "--max-envs",
                str(self.max_envs),
                "--lease-ttl",
                "600",
                "--call-latency",
                str(self.call_latency),
                "--call-cpu",
                str(self.call_cpu),
            ]
            log = (self.log_dir / f"env-{i}.log").open("ab")
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
            self.urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for url in self.urls:
            while self.get(url, "/health") is None:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"env server {url} did not start (logs: {self.log_dir})")
                time.sleep(0.1)

    @staticmethod
    def get(url: str, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(url + path, timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def stats(self) -> list[dict | None]:
        return [self.get(u, "/stats") for u in self.urls]

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        self.urls.clear()


def overrides(
    w: Workload,
    tasks: Path,
    out: Path,
    llm_endpoints: list[str],
    env_urls: list[str],
    concurrency: int,
    runtime: str = "local",
) -> list[str]:
    """The `key=value` overrides that point the workload's config at the shared services."""
    llm = {"kind": "openai", "model": "sim", "endpoints": llm_endpoints}
    env = {"kind": "tool_env", "domain": str(w.domain_path), "urls": env_urls}
    over = [
        f"dataset.path={tasks}",
        f"output.path={out}",
        f"runtime.max_in_flight={concurrency}",
        "runtime.progress=false",
        f"services.{w.llm_service}={json.dumps(llm)}",
        f"services.{w.env_service}={json.dumps(env)}",
    ]
    if runtime != "local":
        over.append(f"runtime.kind={runtime}")
    return over


def launch(
    w: Workload, over: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`peerflow run <config> <overrides>` as a process of its own."""
    cmd = [*PEERFLOW, "run", str(w.config), *over]
    out = log.open("ab")
    return subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
