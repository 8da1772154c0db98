"""A lean HTTP/1.1 client for the one request peerflow makes most: a JSON POST.

Every LLM-backed step is one POST to an inference server, and at tens of thousands of
steps a second the client's own CPU is what a run is made of: aiohttp's client spends
about 115 µs of CPU per request against a local server, this one about 30 (measured
with uvloop, 100 in flight). It speaks just enough HTTP/1.1 for inference servers
(vLLM, SGLang, llama.cpp, the simulator) on plain `http://`: keep-alive connections per
endpoint, bodies by Content-Length, chunked, or until close. Anything else (TLS, a
hosted API) stays with aiohttp, where the network dwarfs the client.

Failures raise `ConnectionError` (an `OSError`: transient, as transport errors are) or
`TimeoutError`; a connection the server closed while idle is replaced transparently
once, before any byte of the request's answer arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["HTTPError", "Pool", "Response"]

_MAX_HEAD = 64 * 1024


class HTTPError(ConnectionError):
    """The server's answer was not HTTP/1.1 this client understands."""


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.got_bytes = False
        self.reusable = True
        self.reused = False  # it served a request before (so the server may have closed it)
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length: int | None = None
        self._chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self._headers is not None and self._length is None and not self._chunked:
                self._finish(bytes(self.buf))  # a body delimited by the close
            else:
                waiter.set_exception(ConnectionError(f"connection closed by the server: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf += data
        try:
            self._parse()
        except HTTPError as exc:
            self.reusable = False
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        buf = self.buf
        if self._headers is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise HTTPError("response head too large")
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HTTPError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
            self._status = int(parts[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            self._headers = headers
            if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
                self.reusable = False
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._chunked = True
            elif "content-length" in headers:
                try:
                    self._length = int(headers["content-length"])
                except ValueError:
                    raise HTTPError("bad Content-Length") from None
            elif self._status in (204, 304) or 100 <= self._status < 200:
                self._length = 0
            else:
                self.reusable = False  # the body ends when the server closes
        if self._chunked:
            self._parse_chunked()
        elif self._length is not None and len(buf) >= self._length:
            body = bytes(buf[: self._length])
            del buf[: self._length]
            self._finish(body)

    def _parse_chunked(self) -> None:
        buf, pos, parts = self.buf, 0, []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise HTTPError("bad chunk size") from None
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # trailers, if any, end with an empty line
                if end < 0:
                    if buf[eol : eol + 4] != b"\r\n\r\n":
                        return
                    end = eol
                del buf[: end + 4]
                self._finish(b"".join(parts))
                return
            start = eol + 2
            if len(buf) < start + size + 2:
                return
            parts.append(bytes(buf[start : start + size]))
            pos = start + size + 2

    def _finish(self, body: bytes) -> None:
        waiter, headers = self.waiter, self._headers or {}
        self._headers, self._length, self._chunked = None, None, False
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, headers, body))


class Pool:
    """Keep-alive connections to one `http://host:port`, at most `limit` open at once."""

    def __init__(self, host: str, port: int, *, limit: int = 1024, connect_timeout: float = 10.0):
        self.host, self.port = host, port
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.idle: deque[_Conn] = deque()
        self.open = 0
        self._waiting: deque[asyncio.Future[_Conn | None]] = deque()
        host_header = f"[{host}]" if ":" in host else host
        self._host = f"{host_header}:{port}".encode()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """One request, answered within `timeout` seconds of being sent.

        Waiting for a connection under the limit is queueing in this client, not the server
        being slow, so it does not count: at tens of thousands of tasks in flight a request
        may queue for minutes, and timing it out unsent would only send it again.
        """
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (
            method.encode(),
            path.encode(),
            self._host,
            len(body),
        )
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n".encode("latin-1")
        return await self._send(head + b"\r\n" + body, timeout)

    async def _send(self, data: bytes, timeout: float | None) -> Response:
        loop = asyncio.get_running_loop()
        for fresh in (False, True):
            conn = await self._acquire(fresh)
            # The deadline is a timer on the answer's future, not `asyncio.wait_for`: that
            # wraps every request in a task of its own, a sizeable share of a step's CPU.
            waiter = conn.waiter = loop.create_future()
            conn.got_bytes = False
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter, timeout)
            try:
                assert conn.transport is not None
                conn.transport.write(data)
                response = await waiter
            except ConnectionError:
                self._drop(conn)
                if conn.got_bytes or fresh or not conn.reused:
                    raise
                continue  # the server had closed it while idle: once more on a new one
            except BaseException:
                self._drop(conn)  # cancelled or timed out mid-answer: never reuse it
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            conn.waiter = None
            if conn.reusable and not conn.closed and not conn.buf:
                conn.reused = True
                self._release(conn)
            else:
                self._drop(conn)
            return response
        raise AssertionError("unreachable")

    async def _acquire(self, fresh: bool) -> _Conn:
        """An idle connection, one handed over by a finished request, or a new one.

        Requests that find the limit reached wait in order, and a connection a request is
        done with goes straight to the longest waiting (never back to the idle list while
        someone waits): a request made in the same turn of the loop cannot jump the queue,
        which at a full pool would leave the unlucky waiting for minutes.
        """
        if not fresh:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self.open -= 1
        loop = asyncio.get_running_loop()
        while self.open >= self.limit:
            waiter: asyncio.Future[_Conn | None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # served as it was cancelled
                    late = waiter.result()
                    if late is not None:
                        self._release(late)
                    else:
                        self._wake()
                raise
            if handed is not None:
                if not handed.closed:
                    return handed
                self.open -= 1  # it died on the way
            # None: a connection was closed, so there is room for a new one
        self.open += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Conn, self.host, self.port), self.connect_timeout
            )
        except asyncio.TimeoutError:
            self.open -= 1
            self._wake()
            raise TimeoutError(f"connect to {self.host}:{self.port} timed out") from None
        except BaseException:
            self.open -= 1
            self._wake()
            raise
        return conn

    def _release(self, conn: _Conn) -> None:
        """A reusable connection: to the longest waiting request, else to the idle list."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def _drop(self, conn: _Conn) -> None:
        conn.waiter = None
        if conn.transport is not None:
            conn.transport.close()
        self.open -= 1
        self._wake()

    def _wake(self) -> None:
        """Room for one more connection: tell the longest waiting request."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None:
                with contextlib.suppress(Exception):
                    conn.transport.close()
        self.open = 0


def _expire(waiter: asyncio.Future[Response], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no complete answer within {timeout:g}s"))


def split_http_url(url: str) -> tuple[str, int, str] | None:
    """(host, port, path) of a plain `http://` URL; None for anything else (https, ...)."""
    if not url.startswith("http://"):
        return None
    rest = url[len("http://") :]
    hostport, slash, path = rest.partition("/")
    path = "/" + path if slash else "/"
    if hostport.startswith("["):
        host, _, port_text = hostport[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    try:
        port = int(port_text) if port_text else 80
    except ValueError:
        return None
    return (host, port, path) if host else None
