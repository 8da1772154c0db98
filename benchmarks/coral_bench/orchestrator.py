"""The baseline: a central Coral orchestrator, one process and ONE asyncio loop for every task.

This is the design of the official Collaborative Reasoner implementation the paper compares
against: one loop owns every task (a coroutine per task, `concurrency` of them at once,
bounded by a semaphore), and each coroutine drives its debate to the end, calling the LLM
itself, running the answer matcher and the stop condition in-process. Nothing is
serialised between steps; the task's state is the coroutine's locals.

The work is peerflow's Coral config, step for step: the same roles in the same loop
(`check_after`, `until`, `max_turns`), the same prompts and growing histories
(`workload.Speaker`), sampling, per-task seeds, and the matcher, answer parser, `until`
and metrics functions of `peerflow.recipes.coral` (called on a plain in-process history).
Against a deterministic simulator every design therefore holds the same debates.

Two LLM clients, to separate the architecture from the client:

- `openai`: the openai SDK's `AsyncOpenAI` (what such orchestrators use), its default
  `max_retries`, one shared connection pool (`http_client`) with a limit above the
  concurrency so it never caps; one client object per replica on that pool, the replica
  with the fewest outstanding calls picked per call;
- `peerflow`: peerflow's `OpenAIService` over the same replicas (started and stopped in
  the loop), with the config's retries and timeout.

Run as a process of its own (the sweep measures its CPU):

    python benchmarks/coral_bench/orchestrator.py --tasks T --endpoints U1,U2 \
        --concurrency 100 --client openai --out records.jsonl [--config C]

Each finished task appends one JSON line to `--out` (id, the Coral metrics, LLM calls,
completion tokens, finish time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coral_bench.workload import (
    CONFIG,
    CoralWorkload,
    FunctionRole,
    LLMRole,
    Speaker,
    iter_rows,
    load_workload,
    request_body,
)
from peerflow.agents.llm import render
from peerflow.message import Step, new_message

MODEL = "sim"


class OpenAIClient:
    """The openai SDK: `AsyncOpenAI` objects on one shared, uncapped connection pool."""

    def __init__(self, endpoints: list[str], concurrency: int):
        import openai

        limit = max(1000, 2 * concurrency)
        limits = openai._constants.DEFAULT_CONNECTION_LIMITS.__class__(
            max_connections=limit, max_keepalive_connections=limit
        )
        self.http = openai.DefaultAsyncHttpx2Client(limits=limits)
        self.clients = [
            openai.AsyncOpenAI(base_url=e, api_key="sim", http_client=self.http) for e in endpoints
        ]
        self.outstanding = [0] * len(endpoints)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.http.aclose()

    async def chat(self, body: dict[str, Any], key: str) -> tuple[str | None, dict[str, int]]:
        i = min(range(len(self.clients)), key=self.outstanding.__getitem__)
        self.outstanding[i] += 1
        try:
            fields = dict(body)
            messages = fields.pop("messages")
            known = {k: fields.pop(k) for k in _SDK_ARGS if k in fields}
            resp = await self.clients[i].chat.completions.create(
                model=MODEL, messages=messages, **known, extra_body=fields or None
            )
        finally:
            self.outstanding[i] -= 1
        usage = resp.usage
        return resp.choices[0].message.content, {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }


# Sampling fields the SDK takes as keyword arguments; anything else goes in `extra_body`.
_SDK_ARGS = ("temperature", "top_p", "max_tokens", "seed", "stop", "n", "presence_penalty")


class PeerflowClient:
    """peerflow's own client (`OpenAIService`) over the same replicas."""

    def __init__(self, endpoints: list[str], concurrency: int, settings: dict[str, Any]):
        from peerflow.services.openai_client import OpenAIService

        self.service = OpenAIService(
            "llm",
            model=MODEL,
            endpoints=endpoints,
            max_connections=max(1024, 2 * concurrency),
            **settings,
        )

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    async def chat(self, body: dict[str, Any], key: str) -> tuple[str | None, dict[str, int]]:
        result = await self.service.call(body, key=key)  # raises ServiceError on failure
        return result.content, dict(result.usage or {})


class Orchestrator:
    """Drives Coral tasks to their end, each in a coroutine of this one loop."""

    def __init__(
        self,
        w: CoralWorkload,
        client: Any,
        out: Path | None = None,
        capture: list[dict[str, Any]] | None = None,
    ):
        self.w = w
        self.client = client
        self.out = out.open("a") if out is not None else None
        self.capture = capture  # request bodies, for the test
        self.active = 0
        self.peak = 0
        self.failed = 0

    async def run_one(self, row: dict[str, Any]) -> dict[str, Any]:
        """One debate, start to verdict: the loop of the config, step by step."""
        w = self.w
        task_id = str(row[w.id_field])
        seed = w.seed_of(task_id)
        variables = w.variables(row)
        task = w.task_text(row, variables)
        message = new_message(task_id, row, variables, seed=seed)
        message.history.append(Step(role="task", content=task))
        ctx = {**variables, "vars": variables, "row": row, "message": message}
        ctx["history"], ctx["last"] = message.history, message.last
        speakers: dict[str, Speaker] = {}
        for name, role in w.roles.items():
            if isinstance(role, LLMRole) and role.dialogue:
                system = render(role.system, {**ctx, "role": name}) if role.system else None
                speakers[name] = Speaker(system, task)
        llm_calls = completion = 0
        pos = turns = 0
        ok = True
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            while True:
                name = w.order[pos]
                role = w.roles[name]
                if isinstance(role, FunctionRole):
                    data = role.fn(message, **role.args)
                    step = Step(role=name, data=data if isinstance(data, dict) else None)
                else:
                    if role.dialogue:
                        messages = speakers[name].messages
                    else:
                        c = {**ctx, "role": name}
                        messages = []
                        if role.system is not None:
                            messages.append({"role": "system", "content": render(role.system, c)})
                        messages.append({"role": "user", "content": render(role.prompt, c)})
                    body = request_body(role, messages, seed)
                    if self.capture is not None:
                        self.capture.append(json.loads(json.dumps({**body, "model": MODEL})))
                    content, usage = await self.client.chat(body, task_id)
                    llm_calls += 1
                    completion += int(usage.get("completion_tokens") or 0)
                    step = Step(role=name, content=content, usage=usage)
                    if role.parse is not None:
                        step.data = role.parse(message, content or "")
                    if role.dialogue:
                        for other, chat in speakers.items():
                            if other == name:
                                chat.said(content)
                            else:
                                chat.heard(content)
                message.history.append(step)
                if name == w.check_after:
                    turns += 1
                    if w.until is not None and w.until(message):
                        message.reason = "until"
                        break
                    if turns >= w.max_turns:
                        message.reason = "max_turns"
                        break
                pos = (pos + 1) % len(w.order)
        except Exception as exc:  # a failed task is recorded, as peerflow records it
            ok = False
            self.failed += 1
            if self.failed <= 5:  # the first few say why; the rest are counted
                print(f"task {task_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            self.active -= 1
        metrics = w.metrics(message) if (w.metrics and ok) else {}
        record = {
            "id": task_id,
            "status": "ok" if ok else "error",
            "agreement": metrics.get("agreement"),
            "agreement_correctness": metrics.get("agreement_correctness"),
            "turns": metrics.get("turns"),
            "llm_calls": llm_calls,
            "completion_tokens": completion,
            "finished": time.time(),
        }
        if self.out is not None:
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()
        return record

    async def run_all(self, rows: Any, concurrency: int) -> int:
        """Every row as a coroutine, `concurrency` at once (a semaphore); returns how many."""
        sem = asyncio.Semaphore(concurrency)
        done = 0
        pending: set[asyncio.Task[Any]] = set()

        async def one(row: dict[str, Any]) -> None:
            nonlocal done
            try:
                await self.run_one(row)
                done += 1
            finally:
                sem.release()

        await self.client.start()
        try:
            for row in rows:
                await sem.acquire()
                t = asyncio.create_task(one(row))
                pending.add(t)
                t.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
        finally:
            await self.client.stop()
        return done


def make_client(kind: str, endpoints: list[str], concurrency: int, w: CoralWorkload) -> Any:
    if kind == "openai":
        return OpenAIClient(endpoints, concurrency)
    if kind == "peerflow":
        return PeerflowClient(endpoints, concurrency, w.service_settings)
    raise ValueError(f"unknown client {kind!r} (openai or peerflow)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--tasks", type=Path, required=True)
    p.add_argument("--endpoints", required=True, help="comma list of LLM base URLs (.../v1)")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--client", choices=["openai", "peerflow"], default="openai")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    w = load_workload(a.config)
    endpoints = a.endpoints.split(",")
    orch = Orchestrator(w, make_client(a.client, endpoints, a.concurrency, w), out=a.out)
    print(f"orchestrator ready ({a.client} client)", flush=True)
    n = asyncio.run(orch.run_all(iter_rows(a.tasks), a.concurrency))
    print(
        f"orchestrator done: {n} tasks ({orch.failed} failed), peak {orch.peak} at once",
        flush=True,
    )


if __name__ == "__main__":
    main()
