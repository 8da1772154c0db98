"""The baseline: a tau2-bench-style runner, one process, one thread per conversation.

As tau2-bench's own runner does, it runs `concurrency` conversations at once in a
`ThreadPoolExecutor`, each thread driving one conversation to its end with a
synchronous HTTP client (`requests`, one Session per thread) to the LLM servers, and
with the environment in the process: the task's `Environment` is built and initialised
here, every tool call runs here (`Environment.call`) after the same per-call cost the
env servers charge (`call_latency` seconds of sleep, `call_cpu` seconds of busy loop,
which holds the GIL as real Python tool code does), and the reward is computed here
(`peerflow.envs.reward.evaluate`, the env servers' own function).

The conversation logic is `peerflow.envs.DualControl`'s, step for step (the hop count,
the LLM-call cap, the tool-error cap, stop tokens and stop tools), and the requests are
built as peerflow builds them (`workload.ChatSide`), with the same per-task seed, so that
against a deterministic simulator both designs hold the same conversations.

Run as a process of its own (the sweep measures its CPU and threads):

    python benchmarks/desk_bench/baseline.py --config C --tasks T --endpoints U1,U2 \
        --concurrency 100 --out records.jsonl [--call-latency S --call-cpu S]

Each finished conversation appends one JSON line to `--out` (id, reward, termination,
LLM and tool calls, tokens, finish time).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desk_bench.workload import ChatSide, Workload, iter_tasks, load_workload, request_body
from peerflow.agents.tools import result as tool_result
from peerflow.envs.reward import evaluate
from peerflow.envs.workflow import AGENT_TOKEN, USER_TOKENS

MODEL = "sim"


def busy(seconds: float) -> None:
    """Burn CPU in Python bytecode, holding the GIL, like the env server's busy loop."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Runner:
    """Runs conversations on threads; `run_one` is one conversation, start to reward."""

    def __init__(
        self,
        workload: Workload,
        endpoints: list[str],
        *,
        call_latency: float = 0.0,
        call_cpu: float = 0.0,
        out: Path | None = None,
        timeout: float = 600.0,
    ):
        self.w = workload
        self.urls = [e.rstrip("/") + "/chat/completions" for e in endpoints]
        self.next_url = itertools.count()
        self.call_latency = call_latency
        self.call_cpu = call_cpu
        self.timeout = timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.out = out.open("a") if out is not None else None
        self.active = 0
        self.peak = 0

    # --- one LLM call ------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = requests.Session()
        return s

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        url = self.urls[next(self.next_url) % len(self.urls)]
        last = ""
        for attempt in range(4):  # the same retry budget as the OpenAI client's default
            try:
                resp = self._session().post(url, json=body, timeout=self.timeout)
                if resp.status_code == 200:
                    return resp.json()
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code < 500 and resp.status_code != 429:
                    break
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5 * 2**attempt)
        raise RuntimeError(f"LLM call failed: {last}")

    # --- one tool call -----------------------------------------------------
    def tool(self, env: Any, side: str, call: Any, n: int) -> dict[str, Any]:
        if not isinstance(call, dict):
            return tool_result(f"call_{n}", "", "Error: malformed tool call", error=True)
        call_id = str(call.get("id") or f"call_{n}")
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = str(fn.get("name") or "")
        if self.call_latency:
            time.sleep(self.call_latency)
        if self.call_cpu:
            busy(self.call_cpu)
        outcome = env.call(side, name, fn.get("arguments"))
        return tool_result(call_id, name, outcome.content, error=outcome.is_error)

    # --- one conversation --------------------------------------------------
    def run_one(self, task: dict[str, Any], capture: list | None = None) -> dict[str, Any]:
        """One conversation, as DualControl routes it; returns its record."""
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            return self._conversation(task, capture)
        finally:
            with self.lock:
                self.active -= 1

    def _conversation(self, task: dict[str, Any], capture: list | None) -> dict[str, Any]:
        w = self.w
        assert w.domain is not None
        started = time.time()
        task_id = str(task["id"])
        seed = w.seed_of(task_id)
        env = w.domain.environment()
        env.initialize((task.get("initial_state") or {}).get("initialization_actions"))
        roles = {w.assistant.name: w.assistant, w.user.name: w.user}
        sides = {name: ChatSide(w.system_text(spec, task)) for name, spec in roles.items()}
        other = {w.assistant.name: w.user.name, w.user.name: w.assistant.name}
        spoke: set[str] = set()
        hops = 1  # the environment's acquiring step
        llm_calls = tool_calls = tool_errors = 0
        prompt_tokens = completion_tokens = 0
        calls: list[dict[str, Any]] = []  # the trajectory's tool calls, as the reward wants
        said: list[str] = []  # the assistant's texts
        termination: str | None = None
        stop_after_tools = False
        speaker = w.assistant.name
        while termination is None:
            spec, chat = roles[speaker], sides[speaker]
            opening = spec.opening is not None and speaker not in spoke
            if opening:
                content, tcalls = w.opening_text(spec, task), None
            else:
                body = request_body(spec, chat, seed, MODEL)
                if capture is not None:
                    capture.append(json.loads(json.dumps(body)))
                data = self.chat(body)
                message = data["choices"][0]["message"]
                content, tcalls = message.get("content"), message.get("tool_calls") or None
                usage = data.get("usage") or {}
                prompt_tokens += int(usage.get("prompt_tokens") or 0)
                completion_tokens += int(usage.get("completion_tokens") or 0)
                llm_calls += 1
            spoke.add(speaker)
            hops += 1
            chat.said(content, tcalls)
            sides[other[speaker]].heard(content)
            if speaker == w.assistant.name and content and not tcalls:
                said.append(content)
            if tcalls:
                for c in tcalls:
                    fn = c.get("function") if isinstance(c, dict) else None
                    if isinstance(fn, dict):
                        calls.append(
                            {
                                "requestor": spec.side,
                                "name": fn.get("name"),
                                "arguments": fn.get("arguments"),
                            }
                        )
                names = {
                    (c.get("function") or {}).get("name") for c in tcalls if isinstance(c, dict)
                }
                if speaker == w.assistant.name and names & w.agent_stop_tools:
                    stop_after_tools = True
                if llm_calls >= w.max_llm_calls or hops >= w.max_hops:
                    termination = "max_steps"
                    break
                results = [self.tool(env, spec.side, c, n) for n, c in enumerate(tcalls)]
                hops += 1
                tool_calls += len(results)
                tool_errors += sum(1 for r in results if r["is_error"])
                chat.results(tcalls, results)
                if tool_errors >= w.max_tool_errors:
                    termination = "too_many_errors"
                elif stop_after_tools:
                    stop_after_tools = False
                    termination = "agent_stop"
                if hops >= w.max_hops:  # DualControl's hop cap overrides any ending
                    termination = "max_steps"
                continue  # the caller speaks again
            text = content or ""
            if speaker == w.user.name:
                for token, reason in USER_TOKENS.items():
                    if token in text:
                        termination = reason
                        break
            elif AGENT_TOKEN in text:
                termination = "agent_stop"
            if termination is None and llm_calls >= w.max_llm_calls:
                termination = "max_steps"
            if hops >= w.max_hops:
                termination = "max_steps"
            speaker = other[speaker]
        scored = evaluate(w.domain, task, calls, said, termination, live=env)
        record = {
            "id": task_id,
            "reward": scored["reward"],
            "components": scored["components"],
            "termination": termination,
            "llm_calls": llm_calls,
            "tool_calls": tool_calls,
            "tool_errors": tool_errors,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "started": started,
            "finished": time.time(),
        }
        if self.out is not None:
            line = json.dumps(record) + "\n"
            with self.lock:
                self.out.write(line)
                self.out.flush()
        return record

    def run_all(self, tasks: Any, concurrency: int) -> int:
        """Every task on a pool of `concurrency` threads; returns how many ended."""
        done = 0
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for fut in [pool.submit(self.run_one, t) for t in tasks]:
                try:
                    fut.result()
                    done += 1
                except Exception as exc:  # a failed conversation is counted, not fatal
                    print(f"conversation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--domain", type=Path, default=None)
    p.add_argument("--tasks", type=Path, required=True)
    p.add_argument("--endpoints", required=True, help="comma list of LLM base URLs (.../v1)")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--call-latency", type=float, default=0.0)
    p.add_argument("--call-cpu", type=float, default=0.0)
    a = p.parse_args(argv)
    w = load_workload(a.config, domain=a.domain, tasks=a.tasks, script="unused:x")
    runner = Runner(
        w,
        a.endpoints.split(","),
        call_latency=a.call_latency,
        call_cpu=a.call_cpu,
        out=a.out,
    )
    print("baseline ready", flush=True)
    n = runner.run_all(iter_tasks(a.tasks), a.concurrency)
    print(f"baseline done: {n} conversations, peak {runner.peak} at once", flush=True)


if __name__ == "__main__":
    main()
