"""A real headless Chromium (Debian's `chromium` package) driven over the DevTools protocol.

Used to check pages peerflow writes (the run report) the way a user's browser shows them:
after their scripts ran, with every console message and uncaught exception collected.
The protocol is JSON over a websocket (aiohttp's client); Chromium says which port it
listens on in `DevToolsActivePort` in its profile folder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
)


class Page:
    """One tab: `send` a protocol command and get its result; events are kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._seen = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif "method" in data:
                self.events.append(data)
                self._seen.set()

    async def send(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        await self.ws.send_str(json.dumps({"id": self._next, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def wait_for(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first event named `method` (already seen, or the next one)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} event within {timeout} s")
            self._seen.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._seen.wait(), left)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and browser log errors."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                found.append(f"exception: {text}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "warning",
                "assert",
            ):
                args = [a.get("value", a.get("description")) for a in params.get("args", [])]
                found.append(f"console.{params['type']}: {args}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in (
                "error",
                "warning",
            ):
                entry = params["entry"]
                found.append(f"log {entry['level']}: {entry.get('text')} ({entry.get('url')})")
        return found

    async def screenshot(
        self, path: Path, *selectors: str, max_height: int = 16000, margin: int = 8
    ) -> Path:
        """A PNG of the page's full width, from the top of the first element `selectors`
        match to the bottom of the last (the whole page when none is given)."""
        script = (
            "(() => { const sel = SEL; const els = sel.length ? sel.map(s => "
            "document.querySelector(s)) : [document.documentElement];"
            " const rs = els.map(e => e.getBoundingClientRect());"
            " const top = Math.max(Math.min(...rs.map(r => r.top)) + scrollY - MARGIN, 0);"
            " const bottom = Math.max(...rs.map(r => r.bottom)) + scrollY + MARGIN;"
            " return [document.documentElement.scrollWidth, top, bottom - top]; })()"
        )
        box = await self.evaluate(
            script.replace("SEL", json.dumps(list(selectors))).replace("MARGIN", str(margin))
        )
        width, top, height = box
        shot = await self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": top, "width": width, "height": min(height, max_height), "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


@contextlib.asynccontextmanager
async def open_page(
    url: str, profile: Path, *, width: int = 1280, height: int = 900
) -> AsyncIterator[Page]:
    """Start Chromium, open `url` in its tab with console and log events on, yield the tab
    once the page's load event fired; Chromium is stopped on exit."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed")
    profile.mkdir(parents=True, exist_ok=True)
    port_file = profile / "DevToolsActivePort"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    page: Page | None = None
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit status {proc.poll()})")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            target = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await page.send(f"{domain}.enable")
                page.events.clear()  # about:blank's own events
                await page.send("Page.navigate", url=url)
                await page.wait_for("Page.loadEventFired")
                while await page.evaluate("location.href + ' ' + document.readyState") != (
                    f"{url} complete"
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} did not load")
                    await asyncio.sleep(0.05)
                yield page
                await page.close()
    finally:
        if page is not None:
            await page.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
