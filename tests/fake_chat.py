"""A tiny OpenAI-compatible chat server for tool and multi-party tests.

A test gives it `reply(body) -> assistant message dict`; it records every request
body, and answers 400 (recording why) to any request a strict OpenAI server would
reject, as judged by `peerflow.testing.strict_chat_errors`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from peerflow.testing import strict_chat_errors

Reply = Callable[[dict[str, Any]], dict[str, Any]]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free loopback port; returns its runner and its `/v1` base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


class FakeChat:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []
        self.rejected: list[list[str]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        errors = strict_chat_errors(body)
        if errors:
            self.rejected.append(errors)
            return web.json_response({"error": {"message": "; ".join(errors)}}, status=400)
        message = {"role": "assistant", "content": None, **self.reply(body)}
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "fake",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "fake"}]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.runner, self.url = await serve(app)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def by_system(self, text: str) -> list[dict[str, Any]]:
        """The requests whose system prompt contains `text` (one role's requests)."""
        return [
            b for b in self.bodies if b["messages"] and text in b["messages"][0].get("content", "")
        ]


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
