"""Helpers of the benchmark tests: a simulator process, and a recording HTTP proxy that
keeps every chat request's JSON body.

Put in front of a simulator, it shows that two designs send byte-for-byte the same
requests (the benchmarks' fairness rests on it).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Recorder:
    """An HTTP proxy to one simulator that records each chat request's JSON body."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.bodies: list[dict] = []
        lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self, data: bytes | None) -> None:
                req = urllib.request.Request(
                    rec.target + self.path.removeprefix("/v1"),
                    data=data,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=60) as resp:
                    out = resp.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    rec.bodies.append(json.loads(raw))
                self._relay(raw)

            def do_GET(self) -> None:  # health probes: /v1/models
                self._relay(None)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def simulator(*args: str) -> Iterator[str]:
    """A simulator process (`peerflow.services.sim_llm` with `args`); yields its base URL.

    Its output is drained after start-up, so a chatty simulator never blocks on a full pipe.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerflow.services.sim_llm", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "listening on" in line, proc.stderr.read() if proc.stderr else line
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=stream.read, daemon=True).start()
        yield line.strip().rsplit(" ", 1)[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def canon(body: dict) -> str:
    """A request body as comparable text (keys sorted)."""
    return json.dumps(body, sort_keys=True)
