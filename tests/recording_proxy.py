"""A recording HTTP proxy for the benchmark tests: it keeps every chat request's JSON body.

Put in front of a simulator, it shows that two designs send byte-for-byte the same
requests (the benchmarks' fairness rests on it).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
