"""The lean HTTP/1.1 client, against a raw asyncio server that answers however a test says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from peerflow.services.http1 import HTTPError, Pool, split_http_url


@asynccontextmanager
async def server(
    answer: Callable[[bytes], list[bytes]], *, close_after: int = 0
) -> AsyncIterator[dict]:
    """Serve: read one request (head + Content-Length body), write `answer(body)`'s parts.

    `close_after`: close the connection after that many requests (0: keep it open).
    Yields counters: connections accepted, requests served.
    """
    seen = {"connections": 0, "requests": 0, "open": 0, "peak": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        seen["open"] += 1
        seen["peak"] = max(seen["peak"], seen["open"])
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                seen["requests"] += 1
                for part in answer(body):
                    if part == b"<sleep>":
                        await asyncio.sleep(0.3)
                        continue
                    writer.write(part)
                    await writer.drain()
                served += 1
                if close_after and served >= close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            seen["open"] -= 1
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen["port"] = srv.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        srv.close()


def ok(body: bytes = b'{"ok": true}', extra: bytes = b"") -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body]


async def test_keep_alive_reuses_one_connection_and_reads_content_length_bodies():
    async with server(lambda body: ok(b"echo:" + body)) as seen:
        pool = Pool("127.0.0.1", seen["port"])
        for i in range(5):
            answer = await pool.request("POST", "/v1/x", b"n%d" % i, {"X-A": "1"}, 5)
            assert answer.status == 200 and answer.body == b"echo:n%d" % i
        assert seen["connections"] == 1 and seen["requests"] == 5
        pool.close()


async def test_chunked_bodies_split_across_writes_and_headers_case_insensitive():
    def chunked(body: bytes) -> list[bytes]:
        return [
            b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n",
            b"5\r\nhel",
            b"lo\r\n6;ext=1\r\n world\r\n",
            b"0\r\n\r\n",
        ]

    async with server(chunked) as seen:
        pool = Pool("127.0.0.1", seen["port"])
        for _ in range(2):  # and the connection stays usable after a chunked body
            answer = await pool.request("POST", "/", b"{}", None, 5)
            assert answer.status == 429 and answer.body == b"hello world"
            assert answer.headers["retry-after"] == "7"
        assert seen["connections"] == 1


async def test_a_body_delimited_by_close_and_connection_close_are_honoured():
    def until_close(body: bytes) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"all of it"]

    async with server(until_close, close_after=1) as seen:
        pool = Pool("127.0.0.1", seen["port"])
        assert (await pool.request("POST", "/", b"", None, 5)).body == b"all of it"
        assert (await pool.request("POST", "/", b"", None, 5)).body == b"all of it"
        assert seen["connections"] == 2 and pool.open == 0  # never kept after `close`


async def test_a_connection_the_server_closed_while_idle_is_replaced_transparently():
    async with server(lambda body: ok(), close_after=1) as seen:
        pool = Pool("127.0.0.1", seen["port"])
        for _ in range(3):
            assert (await pool.request("POST", "/", b"", None, 5)).status == 200
            await asyncio.sleep(0.05)  # the server closes its side after each answer
        assert seen["requests"] == 3


async def test_failures_are_transport_errors_or_timeouts():
    async with server(lambda body: [b"<sleep>", *ok()]) as seen:
        pool = Pool("127.0.0.1", seen["port"])
        with pytest.raises(TimeoutError):
            await pool.request("POST", "/", b"", None, 0.1)
        assert pool.open == 0  # a timed-out connection is never reused
        assert (await pool.request("POST", "/", b"", None, 5)).status == 200
    async with server(lambda body: [b"SSH-2.0-OpenSSH\r\n\r\n"]) as seen:
        with pytest.raises(HTTPError, match="status line"):
            await Pool("127.0.0.1", seen["port"]).request("POST", "/", b"", None, 5)
    async with server(lambda body: [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"]) as seen:
        pool = Pool("127.0.0.1", seen["port"])
        task = asyncio.ensure_future(pool.request("POST", "/", b"", None, 5))
        await asyncio.sleep(0.1)
        assert not task.done()  # waits for the rest of the body
        task.cancel()
    refused = Pool("127.0.0.1", seen["port"])  # that server is gone now
    with pytest.raises(OSError):
        await refused.request("POST", "/", b"", None, 5)
    assert issubclass(HTTPError, OSError)  # transient, like every transport error


async def test_the_connection_limit_holds_requests_back_instead_of_failing_them():
    async with server(lambda body: [b"<sleep>", *ok(body)]) as seen:
        pool = Pool("127.0.0.1", seen["port"], limit=2)
        answers = await asyncio.gather(
            *(pool.request("POST", "/", b"%d" % i, None, 10) for i in range(6))
        )
        assert sorted(a.body for a in answers) == [b"%d" % i for i in range(6)]
        assert seen["peak"] <= 2 and seen["connections"] <= 2


async def test_the_timeout_runs_from_the_send_not_from_the_wait_for_a_connection():
    async with server(lambda body: [b"<sleep>", *ok(body)]) as seen:
        pool = Pool("127.0.0.1", seen["port"], limit=1)
        first = asyncio.ensure_future(pool.request("POST", "/", b"1", None, 10))
        await asyncio.sleep(0.05)  # the first request holds the only connection
        # queued ~0.25 s, then answered ~0.3 s after its send: more than 0.5 s in all
        assert (await pool.request("POST", "/", b"2", None, 0.5)).body == b"2"
        assert (await first).body == b"1"
        with pytest.raises(TimeoutError, match=r"no complete answer within 0\.1s"):
            await pool.request("POST", "/", b"3", None, 0.1)  # the server takes 0.3 s


async def test_a_finished_request_hands_its_connection_to_the_longest_waiting():
    async with server(lambda body: [b"<sleep>", *ok(body)]) as seen:
        pool = Pool("127.0.0.1", seen["port"], limit=1)
        order: list[bytes] = []

        async def one(body: bytes) -> None:
            order.append((await pool.request("POST", "/", body, None, 10)).body)

        async def first_then_another() -> None:
            await one(b"1")
            await one(b"4")  # asks in the same turn as "1" frees the connection

        main = asyncio.ensure_future(first_then_another())
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(one(b"2")), asyncio.ensure_future(one(b"3"))]
        await asyncio.gather(main, *waiting)
        assert order == [b"1", b"2", b"3", b"4"]
        assert seen["connections"] == 1


async def test_a_waiting_request_that_is_cancelled_gives_up_its_turn():
    async with server(lambda body: [b"<sleep>", *ok(body)]) as seen:
        pool = Pool("127.0.0.1", seen["port"], limit=1)
        first = asyncio.ensure_future(pool.request("POST", "/", b"1", None, 10))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(pool.request("POST", "/", b"2", None, 10))
        after = asyncio.ensure_future(pool.request("POST", "/", b"3", None, 10))
        await asyncio.sleep(0.05)
        gone.cancel()
        assert (await first).body == b"1" and (await after).body == b"3"
        assert pool.open == 1 and len(pool.idle) == 1 and not pool._waiting


def test_only_plain_http_urls_are_taken():
    assert split_http_url("http://10.0.0.5:8000/v1/chat/completions") == (
        "10.0.0.5",
        8000,
        "/v1/chat/completions",
    )
    assert split_http_url("http://[::1]:9000/v1") == ("::1", 9000, "/v1")
    assert split_http_url("http://host/v1") == ("host", 80, "/v1")
    assert split_http_url("https://api.example.com/v1") is None
    assert split_http_url("http://host:port/v1") is None
