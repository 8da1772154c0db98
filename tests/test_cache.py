"""The response cache: re-runs that send no request, replay with no server, a safe file.

Runs go through real HTTP to the simulator (in-process, so its request counter can be
read), the cache is a real SQLite file, and the concurrency and crash tests use real
processes (one is killed with SIGKILL while it writes).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from peerflow.config import ConfigError, RunConfig, load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.services import managed
from peerflow.services.cache import ResponseStore, request_key
from peerflow.services.sim_llm import SimLLMServer, SimOptions

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def sim() -> AsyncIterator[SimLLMServer]:
    """An in-process simulator: its `counters["requests"]` counts every chat request."""
    server = SimLLMServer(SimOptions(port=0, time_scale=0.0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def url(server: SimLLMServer) -> str:
    return f"http://127.0.0.1:{server.port}/v1"


def unused_url() -> str:
    """A base URL nothing listens on (the port was free a moment ago)."""
    return f"http://127.0.0.1:{managed._free_ports(1)[0]}/v1"


def write_rows(path: Path, ids: list[int]) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "n": i}) + "\n" for i in ids))
    return path


def config_data(
    tmp: Path,
    endpoint: str,
    out: str,
    *,
    rows: list[int] | None = None,
    judge_prompt: str = "Judge the answer.",
    **top: Any,
) -> dict[str, Any]:
    """Two LLM roles on one `openai` service (the simulator), and a top-level cache."""
    data: dict[str, Any] = {
        "name": "cache",
        "dataset": {
            "path": str(write_rows(tmp / f"{out}.rows.jsonl", rows or list(range(6)))),
            "id_field": "id",
        },
        "task": {"message": "Question {{ n }}: what is {{ n }} squared?"},
        "services": {"llm": {"kind": "openai", "model": "sim", "endpoints": [endpoint]}},
        "roles": {
            "writer": {"agent": "llm", "service": "llm", "prompt": "Answer briefly."},
            "judge": {"agent": "llm", "service": "llm", "prompt": judge_prompt},
        },
        "workflow": {"kind": "sequence", "roles": ["writer", "judge"]},
        "runtime": {"max_in_flight": 8, "progress": False},
        "output": {"path": str(tmp / out)},
        "cache": {"path": str(tmp / "cache.db")},
    }
    for key, value in top.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    return data


async def run(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    config = RunConfig.model_validate(data)
    summary = await run_async(config, pipeline=Pipeline(config), progress=False)
    records = [json.loads(line) for line in Path(config.output.path).read_text().splitlines()]
    return summary, sorted(records, key=lambda r: r["id"])


# What a record says, without timing and provenance of delivery (attempts, endpoint, cached).
_STEP_KEYS = ("role", "content", "tool_calls", "usage", "model", "finish_reason", "data", "seed")


def contents(records: list[dict[str, Any]]) -> list[Any]:
    return [
        (r["id"], r["status"], [{k: s.get(k) for k in _STEP_KEYS} for s in r["history"]])
        for r in records
    ]


def llm_steps(records: list[dict[str, Any]], role: str | None = None) -> list[dict[str, Any]]:
    return [
        s
        for r in records
        for s in r["history"]
        if s["role"] in ("writer", "judge") and (role is None or s["role"] == role)
    ]


# --------------------------------------------------------------------------- re-runs


async def test_second_run_makes_no_request_and_writes_the_same_records(
    tmp_path: Path, sim: SimLLMServer
) -> None:
    first, recorded = await run(config_data(tmp_path, url(sim), "first.jsonl"))
    sent = sim.counters["requests"]
    assert sent == 12  # 6 rows x 2 roles
    assert first["cache"]["llm"] == {
        "mode": "read_write",
        "path": str(tmp_path / "cache.db"),
        "hits": 0,
        "misses": 12,
        "stored": 12,
        "store_errors": 0,
    }
    assert not any(s.get("cached") for s in llm_steps(recorded))

    second, again = await run(config_data(tmp_path, url(sim), "second.jsonl"))
    assert sim.counters["requests"] == sent  # not one request reached the server
    assert second["cache"]["llm"]["hits"] == 12 and second["cache"]["llm"]["misses"] == 0
    assert all(s["cached"] is True for s in llm_steps(again))
    assert "attempts" not in llm_steps(again)[0]  # no request was made for it
    assert contents(again) == contents(recorded)
    assert all(r["status"] == "ok" for r in again)


async def test_changed_prompt_re_requests_only_that_roles_calls(
    tmp_path: Path, sim: SimLLMServer
) -> None:
    await run(config_data(tmp_path, url(sim), "first.jsonl"))
    sent = sim.counters["requests"]
    summary, records = await run(
        config_data(tmp_path, url(sim), "changed.jsonl", judge_prompt="Judge it, strictly.")
    )
    assert sim.counters["requests"] == sent + 6  # one judge call per row, nothing else
    assert all(s.get("cached") for s in llm_steps(records, "writer"))
    assert not any(s.get("cached") for s in llm_steps(records, "judge"))
    assert summary["cache"]["llm"]["hits"] == 6 and summary["cache"]["llm"]["misses"] == 6


async def test_read_only_sends_misses_and_stores_nothing(tmp_path: Path, sim: SimLLMServer) -> None:
    await run(config_data(tmp_path, url(sim), "first.jsonl", rows=[0, 1]))
    sent = sim.counters["requests"]
    data = config_data(tmp_path, url(sim), "ro.jsonl", rows=[0, 1, 2], cache={"mode": "read_only"})
    summary, _ = await run(data)
    assert sim.counters["requests"] == sent + 2  # row r2's two calls
    assert summary["cache"]["llm"]["hits"] == 4 and summary["cache"]["llm"]["stored"] == 0
    data = config_data(tmp_path, url(sim), "ro2.jsonl", rows=[2], cache={"mode": "read_only"})
    await run(data)
    assert sim.counters["requests"] == sent + 4  # still not cached


async def test_a_service_can_opt_out_of_the_top_level_cache(
    tmp_path: Path, sim: SimLLMServer
) -> None:
    data = config_data(tmp_path, url(sim), "first.jsonl", rows=[0])
    data["services"]["llm"]["cache"] = {"mode": "off"}
    for out in ("a.jsonl", "b.jsonl"):
        data["output"]["path"] = str(tmp_path / out)
        summary, records = await run(data)
        assert "cache" not in summary and not any(s.get("cached") for s in llm_steps(records))
    assert sim.counters["requests"] == 4
    assert not (tmp_path / "cache.db").exists()


# --------------------------------------------------------------------------- replay


async def test_replay_with_no_server_reproduces_the_run(
    tmp_path: Path, sim: SimLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `openai` service whose endpoint is gone and a managed `sim` service, replayed."""
    data = config_data(tmp_path, url(sim), "recorded.jsonl")
    data["services"]["local"] = {"kind": "sim", "options": {"time_scale": 0.0}}
    data["roles"]["judge"]["service"] = "local"
    _, recorded = await run(data)

    started: list[str] = []
    real_start = managed.ManagedServerService.start

    async def start_guard(self: managed.ManagedServerService) -> None:
        started.append(self.name)
        await real_start(self)

    monkeypatch.setattr(managed.ManagedServerService, "start", start_guard)
    data["services"]["llm"]["endpoints"] = [unused_url()]
    data["output"]["path"] = str(tmp_path / "replayed.jsonl")
    data["cache"]["mode"] = "replay"
    sent = sim.counters["requests"]
    summary, replayed = await run(data)
    assert started == []  # the simulator was never launched
    assert sim.counters["requests"] == sent
    assert summary["outcome"] == "complete" and summary["exit_code"] == 0
    assert summary["cache"]["llm"]["hits"] == 6 and summary["cache"]["local"]["hits"] == 6
    assert contents(replayed) == contents(recorded)
    assert all(s["cached"] for s in llm_steps(replayed))


async def test_replay_miss_fails_its_row_naming_the_request_and_the_run_goes_on(
    tmp_path: Path, sim: SimLLMServer
) -> None:
    await run(config_data(tmp_path, url(sim), "recorded.jsonl", rows=[0, 1, 2]))
    # New rows first, and fail_fast 2: had the misses counted as service failures, the
    # watch would have stopped the run after two of them.
    data = config_data(
        tmp_path,
        unused_url(),
        "replayed.jsonl",
        rows=[7, 8, 9, 0, 1, 2],
        cache={"mode": "replay"},
        runtime={"max_in_flight": 2, "fail_fast": 2},
    )
    summary, records = await run(data)
    assert summary["outcome"] == "complete" and summary["exit_code"] == 1  # some rows failed
    by_id = {r["id"]: r for r in records}
    assert {i for i, r in by_id.items() if r["status"] == "ok"} == {"r0", "r1", "r2"}
    miss = by_id["r8"]
    assert miss["status"] == "error"
    error = miss["error"]
    assert error["kind"] == "permanent" and error["role"] == "writer"
    message = error["message"]
    assert message.startswith("CacheMiss: replay: service 'llm' has no cached response")
    assert "task 'r8'" in message and "model 'sim'" in message and "key " in message
    assert "seed " in message and "Answer briefly." in message  # the request's last turn
    assert miss["history"][-1]["ok"] is False
    assert summary["cache"]["llm"] == {**summary["cache"]["llm"], "hits": 6, "misses": 3}
    assert summary["service_watch"]["llm"]["failures"] == 0


def test_replay_of_a_missing_cache_file_is_a_config_error(tmp_path: Path) -> None:
    data = config_data(tmp_path, unused_url(), "x.jsonl", cache={"mode": "replay"})
    with pytest.raises(ConfigError, match=r"cache.path.*replay.*does not exist"):
        Pipeline(RunConfig.model_validate(data))
    data["cache"] = {"mode": "read_write"}  # a mode, but no path anywhere
    with pytest.raises(ConfigError, match="needs a cache `path`"):
        Pipeline(RunConfig.model_validate(data))


async def test_cli_replays_with_a_command_service_that_cannot_start(
    tmp_path: Path, sim: SimLLMServer
) -> None:
    """`peerflow run CONFIG cache.mode=replay`: a managed `command` server is not launched
    (its command would fail at once), and the summary line says the cache answered."""
    data = config_data(tmp_path, url(sim), "recorded.jsonl", rows=[0, 1])
    data["cache"] = {"path": "cache.db"}  # relative to the config file
    _, recorded = await run({**data, "base_dir": tmp_path})
    data["services"]["llm"] = {
        "kind": "command",
        "model": "sim",
        "command": [sys.executable, "-c", "raise SystemExit(3)", "{port}"],
    }
    data["output"]["path"] = str(tmp_path / "replayed.jsonl")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerflow.cli",
            "run",
            str(tmp_path / "run.yaml"),
            "cache.mode=replay",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "response cache: llm 4 hits / 0 misses (replay)" in done.stdout
    replayed = [json.loads(x) for x in (tmp_path / "replayed.jsonl").read_text().splitlines()]
    assert contents(sorted(replayed, key=lambda r: r["id"])) == contents(recorded)
    assert load_config(tmp_path / "run.yaml", ["cache.mode=replay"]).cache.mode == "replay"


# --------------------------------------------------------------------------- the file

WRITER = """
import sys, time
from peerflow.services.cache import ResponseStore
path, first, count, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
store = ResponseStore(path)
store.open()
for i in range(first, first + count):
    key = i.to_bytes(8, "big") * 4
    store.put(key, {"content": "reply %d " % i + "x" * (i % 300), "usage": {"n": i}},
              service="s", request="r%d" % i)
    if pause:
        time.sleep(pause)
store.close()
print("done", flush=True)
"""


def expected(i: int) -> dict[str, Any]:
    return {"content": f"reply {i} " + "x" * (i % 300), "usage": {"n": i}}


def check_file(path: Path) -> dict[bytes, dict[str, Any]]:
    """Every row of the cache, after an integrity check; each must be whole and right."""
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    store = ResponseStore(path, readonly=True)
    store.open()
    try:
        rows = {}
        for key, value in store._reader.execute("SELECT key, value FROM responses"):  # type: ignore[union-attr]
            i = int.from_bytes(key[:8], "big")
            assert key == i.to_bytes(8, "big") * 4
            rows[key] = json.loads(value)
            assert rows[key] == expected(i)
            assert store.get(key) == expected(i)
        return rows
    finally:
        store.close()


def writer(path: Path, first: int, count: int, pause: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(first), str(count), str(pause)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_processes_writing_one_cache_keep_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    procs = [writer(path, 0, 3000), writer(path, 1500, 3000)]  # 1500 keys written by both
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "done" in out
    rows = check_file(path)
    assert len(rows) == 4500


def test_a_writer_killed_mid_write_leaves_a_readable_cache(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    proc = writer(path, 0, 1_000_000, pause=0.0002)
    deadline = time.monotonic() + 30
    stored = 0
    while time.monotonic() < deadline and stored < 2000:
        time.sleep(0.1)
        if path.exists():
            try:
                conn = sqlite3.connect(path, timeout=5)
                stored = conn.execute("SELECT count(*) FROM responses").fetchone()[0]
                conn.close()
            except sqlite3.OperationalError:
                stored = 0  # the tables are being created
    assert stored >= 2000, "the writer did not get going"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    rows = check_file(path)
    assert len(rows) >= stored
    # The recovered file takes writes again.
    store = ResponseStore(path)
    store.open()
    store.put(b"k" * 32, {"content": "after"}, service="s", request="after")
    store.close()
    store = ResponseStore(path, readonly=True)
    store.open()
    assert store.get(b"k" * 32) == {"content": "after"}
    store.close()


def test_the_key_is_the_whole_canonical_request() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}
    same = {"seed": 1, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert request_key(body) == request_key(same)  # key order does not matter
    for change in (
        {"seed": 2},
        {"model": "n"},
        {"temperature": 0.5},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_object"}},
        {"messages": [{"role": "user", "content": "hi!"}]},
    ):
        assert request_key({**body, **change}) != request_key(body), change
    assert request_key(body, {"namespace": "v2"}) != request_key(body)


async def test_ray_actors_share_the_cache_and_replay_starts_no_replica(
    tmp_path: Path, ray_cluster: Any
) -> None:
    """Recorded locally, replayed on Ray: the role actors answer from the file, and the
    managed service gets no replica on the cluster (its command would fail at once)."""
    data = config_data(tmp_path, "unused", "recorded.jsonl")
    data["services"]["llm"] = {"kind": "sim", "options": {"time_scale": 0.0}}
    _, recorded = await run(data)
    data["services"]["llm"] = {
        "kind": "command",
        "model": "sim",
        "command": [sys.executable, "-c", "raise SystemExit(3)", "{port}"],
        "startup_timeout": 5,
    }
    data["output"]["path"] = str(tmp_path / "replayed.jsonl")
    data["cache"]["mode"] = "replay"
    data["runtime"]["kind"] = "ray"
    summary, replayed = await run(data)
    assert summary["outcome"] == "complete", summary["reason"]
    assert summary["cache"]["llm"]["hits"] == 12 and summary["cache"]["llm"]["misses"] == 0
    assert contents(replayed) == contents(recorded)


def test_processes_creating_one_cache_at_once_all_open_it(tmp_path: Path) -> None:
    """Making a new file WAL meets "database is locked" when another process creates it too
    (seen in CI); each must wait its turn, not fail."""
    code = (
        "import sys; from peerflow.services.cache import ResponseStore; "
        "s = ResponseStore(sys.argv[1]); s.open(); s.close(); print('opened')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(5):
        path = tmp_path / f"new{round_}.db"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(6)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 and "opened" in out, err
