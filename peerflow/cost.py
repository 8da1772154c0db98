"""What a run costs: token prices per model, cost per step, record and run, and a budget.

Prices change every few months and differ by contract, so peerflow ships none: a run's
config gives them, in US dollars per million tokens, either for a model name (`prices:`, at
the top level, applied to every LLM service sending that model name) or for one service
(its own `price:`, which wins). A step's cost is

    (prompt - cached) x input + cached x cached_input + completion x output   (per 1e6)

where `cached` is the prompt tokens the server says it read from its prompt cache
(`usage.prompt_tokens_details.cached_tokens`; `cached_input` defaults to `input`, i.e. no
discount). Reasoning tokens (`usage.completion_tokens_details.reasoning_tokens`) are part of
the completion tokens as servers count and bill them, so they cost the output price; they
are also counted on their own. A step answered from peerflow's response cache costs nothing.

Where it shows: each priced step's `cost_usd`, each record's `cost_usd` (the sum of its
steps), the summary's `cost` section (total, by role, steps without a price), the progress
bar and the end-of-run printout. `runtime.budget_usd` stops admitting rows once the finished
records have cost that much; tasks in flight finish (so the spend ends a little above the
budget), the run ends `stopped` (exit status 3), and re-running the same command continues
with the rows not started, with a budget of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CostTally",
    "Price",
    "apply_prices",
    "as_price",
    "budget_reason",
    "cost_lines",
    "flat_usage",
    "price_step",
    "progress_text",
    "record_cost",
]

# Service kinds whose calls are chat completions with token usage.
LLM_KINDS = ("openai", "sim", "local_model", "command")


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens; `cached_input` None means the same as `input`."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Mapping[str, int]) -> float:
        """The cost in dollars of one reply's `usage` (flattened by `flat_usage`)."""
        prompt = usage.get("prompt_tokens", 0)
        cached = min(usage.get("cached_tokens", 0), prompt)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        dollars = (
            (prompt - cached) * self.input
            + cached * cached_rate
            + usage.get("completion_tokens", 0) * self.output
        )
        return round(dollars / 1e6, 12)


def as_price(value: Any) -> Price | None:
    """A `Price` from a config model, a mapping or a Price; None stays None."""
    if value is None or isinstance(value, Price):
        return value
    if not isinstance(value, Mapping):
        value = value.model_dump()
    return Price(
        input=float(value["input"]),
        output=float(value["output"]),
        cached_input=None if value.get("cached_input") is None else float(value["cached_input"]),
    )


def flat_usage(usage: dict[str, Any]) -> dict[str, int]:
    """A server's `usage` as flat integer counts, the nested details a step needs lifted out.

    `prompt_tokens_details.cached_tokens` becomes `cached_tokens` (DeepSeek's top-level
    `prompt_cache_hit_tokens` too) and `completion_tokens_details.reasoning_tokens` becomes
    `reasoning_tokens`; zero counts are left out, to keep records small.
    """
    out = {k: v for k, v in usage.items() if v.__class__ is int}
    details = usage.get("prompt_tokens_details")
    if details.__class__ is dict:
        n = details.get("cached_tokens")
        if n.__class__ is int and n > 0:
            out["cached_tokens"] = n
    details = usage.get("completion_tokens_details")
    if details.__class__ is dict:
        n = details.get("reasoning_tokens")
        if n.__class__ is int and n > 0:
            out["reasoning_tokens"] = n
    if "cached_tokens" not in out and out.get("prompt_cache_hit_tokens"):
        out["cached_tokens"] = out["prompt_cache_hit_tokens"]
    return out


def price_step(step: Any, service: Any) -> None:
    """Set `step.cost_usd` from its usage and its service's price (if it has one).

    A reply from the response cache was not paid for, so it gets no cost.
    """
    price = getattr(service, "price", None)
    if price is not None and step.usage and not getattr(step, "cached", False):
        step.cost_usd = price.cost(step.usage)


def record_cost(message: Any) -> float | None:
    """A task's cost: the sum of its priced steps, or None when none is priced."""
    total = None
    for step in message.history:
        cost = step.cost_usd
        if cost is not None:
            total = cost if total is None else total + cost
    return None if total is None else round(total, 12)


class CostTally:
    """A run's spend and its token details, summed over finished records (mergeable)."""

    __slots__ = ("by_role", "cached_prompt_tokens", "priced_steps", "reasoning_tokens",
                 "unpriced_steps", "usd")  # fmt: skip

    def __init__(self) -> None:
        self.usd = 0.0
        self.by_role: dict[str, float] = defaultdict(float)
        self.priced_steps = 0
        self.unpriced_steps = 0  # steps with token usage but no price (cache hits excepted)
        self.reasoning_tokens = 0
        self.cached_prompt_tokens = 0

    def observe(self, message: Any) -> None:
        for step in message.history:
            usage = step.usage
            if not usage:
                continue
            self.reasoning_tokens += usage.get("reasoning_tokens", 0)
            self.cached_prompt_tokens += usage.get("cached_tokens", 0)
            cost = step.cost_usd
            if cost is not None:
                self.usd += cost
                self.by_role[step.role] += cost
                self.priced_steps += 1
            elif not getattr(step, "cached", False):
                self.unpriced_steps += 1

    def merge(self, other: CostTally) -> None:
        self.usd += other.usd
        for role, usd in other.by_role.items():
            self.by_role[role] += usd
        self.priced_steps += other.priced_steps
        self.unpriced_steps += other.unpriced_steps
        self.reasoning_tokens += other.reasoning_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens

    def tokens(self) -> dict[str, int]:
        """Token counts beyond prompt and completion, only those some server reported."""
        out = {}
        if self.reasoning_tokens:
            out["reasoning"] = self.reasoning_tokens
        if self.cached_prompt_tokens:
            out["cached_prompt"] = self.cached_prompt_tokens
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 6),
            "by_role": {role: round(usd, 6) for role, usd in sorted(self.by_role.items())},
            "priced_steps": self.priced_steps,
            "unpriced_steps": self.unpriced_steps,
        }

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


def apply_prices(config: Any) -> None:
    """Give every LLM service without its own `price` the run's price for its model.

    Raises ValueError when `runtime.budget_usd` is set but no LLM service has a price (the
    budget could never be reached).
    """
    prices = getattr(config, "prices", None) or {}
    priced = False
    for cfg in config.services.values():
        if cfg.kind not in LLM_KINDS:
            continue
        if cfg.price is None and cfg.model in prices:
            cfg.price = prices[cfg.model]
        priced = priced or cfg.price is not None
    if config.runtime.budget_usd is not None and not priced:
        raise ValueError(
            "runtime.budget_usd is set but no LLM service has a price: give `prices` "
            "(model -> {input, output} in USD per million tokens) or a service's `price`"
        )


def budget_reason(spent: float, budget: float) -> str:
    return (
        f"budget reached: ${spent:.4f} spent of runtime.budget_usd ${budget:.4f}; no more rows "
        "were admitted, those in flight finished; re-run the same command to continue"
    )


def progress_text(stats: Any) -> str:
    """The progress bar's cost field: ` cost=$0.0123` (with `/$budget`), or nothing."""
    cost = stats.cost
    budget = (stats.extra.get("budget") or {}).get("usd")
    if not cost.priced_steps and budget is None:
        return ""
    return f" cost=${cost.usd:.4f}" + (f"/${budget:g}" if budget is not None else "")


def cost_lines(summary: Mapping[str, Any]) -> list[str]:
    """The end-of-run printout's lines about cost and the budget."""
    lines = []
    cost = summary.get("cost") or {}
    tokens = summary.get("tokens") or {}
    extra = [f"{k} {tokens[k]}" for k in ("reasoning", "cached_prompt") if k in tokens]
    if cost.get("priced_steps"):
        roles = ", ".join(f"{r} ${usd:.4f}" for r, usd in cost["by_role"].items())
        line = f"cost: ${cost['usd']:.4f} ({roles})"
        if cost.get("unpriced_steps"):
            line += f"; {cost['unpriced_steps']} step(s) with tokens but no price"
        lines.append(line)
    elif cost.get("unpriced_steps") and summary.get("budget"):
        lines.append(f"cost: unknown, no step was priced ({cost['unpriced_steps']} steps)")
    if extra:
        lines.append("tokens also: " + ", ".join(extra))
    budget = summary.get("budget")
    if budget:
        if budget.get("reached"):
            lines.append(
                f"budget: ${budget['usd']:g} reached at ${budget['spent_at_stop_usd']:.4f}; "
                "admission stopped, rows not started are left for the next run"
            )
        elif cost.get("usd", 0.0) >= budget["usd"]:
            lines.append(
                f"budget: ${budget['usd']:g} exceeded (${cost['usd']:.4f}) by tasks already in "
                "flight; every row had been admitted before it was reached"
            )
        else:
            lines.append(f"budget: ${budget['usd']:g}, not reached")
    return lines
