"""The benchmark's printout: the results table, the reward check, message sizes, the plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
LABELS = {
    "threadpool": "thread pool (tau2-style)",
    "peerflow": "peerflow (local)",
    "peerflow-ray": "peerflow (ray)",
}
# The paper's Fig. 8: share of messages per size bucket (bytes).
BUCKETS = [(32, "<32"), (64, "<64"), (128, "<128"), (256, "<256"), (512, "<512"), (1024, "<1K")]
PAPER_SIZES = [31.9, 18.2, 14.5, 11.5, 11.6, 6.6, 5.7]


def calls_rate(rows: list[dict[str, Any]]) -> float:
    """Trajectories/min from the LLM traffic, per row: LLM requests/s over the mean LLM
    calls of a trajectory of this task list. The mean is over every task id any point
    finished (the designs hold the same conversations, so an id has one count): a short
    window's own finishes are biased to short conversations when trajectories are slow.
    Returns that mean."""
    calls: dict[str, int] = {}
    for r in rows:
        calls.update(r.get("llm_calls_by_id") or {})
    mean = sum(calls.values()) / max(len(calls), 1)
    for r in rows:
        r["traj_per_min_calls"] = 60 * r["llm_requests_per_s"] / max(mean, 1e-9)
    return mean


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("conc", lambda r: f"{r['concurrency']}"),
        ("traj/min", lambda r: f"{r['traj_per_min']:.0f}"),
        ("(by calls)", lambda r: f"{r['traj_per_min_calls']:.0f}"),
        ("tok/s", lambda r: f"{r['tokens_per_s']:,.0f}"),
        ("LLM req/s", lambda r: f"{r['llm_requests_per_s']:.0f}"),
        ("reward", lambda r: "-" if r["mean_reward"] is None else f"{r['mean_reward']:.4f}"),
        ("LLM/traj", lambda r: f"{r['mean_llm_calls']:.2f}"),
        ("tools/traj", lambda r: f"{r['mean_tool_calls']:.2f}"),
        ("CPU proc", lambda r: f"{r['design_cpu']:.2f}"),
        ("CPU +env", lambda r: f"{r['with_env_cpu']:.2f}"),
        ("CPU sims", lambda r: f"{r['sims_cpu']:.2f}"),
        ("machine", lambda r: f"{100 * r['machine_busy']:.0f}%"),
        ("ms CPU/traj", lambda r: f"{r.get('cpu_ms_per_traj', 0):.1f}"),
        ("threads", lambda r: f"{r['peak_threads']}"),
        ("in flight", lambda r: f"{r['peak_in_flight']}"),
        ("sim idle", lambda r: f"{100 * r['sim_idle']:.0f}%"),
        ("seqs/rep", lambda r: f"{r['sim_occupancy']:.0f}"),
    ]
    head = f"{'design':<26}" + "".join(f"{c:>12}" for c, _ in cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        label = LABELS.get(r["design"], r["design"])
        lines.append(f"{label:<26}" + "".join(f"{f(r):>12}" for _, f in cols))
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """peerflow's best tokens/s over the thread pool's best, and per concurrency."""
    base = [r for r in rows if r["design"] == "threadpool"]
    lines = []
    for design in ("peerflow", "peerflow-ray"):
        mine = [r for r in rows if r["design"] == design]
        if not (base and mine):
            continue
        best_b = max(base, key=lambda r: r["tokens_per_s"])
        best_p = max(mine, key=lambda r: r["tokens_per_s"])
        ratio = best_p["tokens_per_s"] / max(best_b["tokens_per_s"], 1e-9)
        lines.append(
            f"{LABELS[design]} best / thread pool best, completion tokens/s: "
            f"{best_p['tokens_per_s']:,.0f} (c={best_p['concurrency']}) / "
            f"{best_b['tokens_per_s']:,.0f} (c={best_b['concurrency']}) = {ratio:.2f}x "
            "(paper: 15.4x, P2P at 1,500 vs tau2 at 500)"
        )
        by_c = {r["concurrency"]: r for r in base}
        per = [
            f"c={r['concurrency']}: "
            f"{r['tokens_per_s'] / max(by_c[r['concurrency']]['tokens_per_s'], 1e-9):.2f}x"
            for r in mine
            if r["concurrency"] in by_c
        ]
        if per:
            lines.append(f"  same concurrency: {', '.join(per)}")
    return lines


def reward_check(rows: list[dict[str, Any]]) -> list[str]:
    """Per task id, the rewards of every design must be equal (same conversations)."""
    by_design: dict[str, dict[str, float]] = {}
    for r in rows:
        by_design.setdefault(r["design"], {}).update(r["rewards_by_id"])
    designs = list(by_design)
    lines = []
    if len(designs) < 2:
        return lines
    ref = by_design[designs[0]]
    for d in designs[1:]:
        other = by_design[d]
        common = set(ref) & set(other)
        diff = [i for i in common if ref[i] != other[i]]
        mean_a = sum(ref[i] for i in common) / max(len(common), 1)
        mean_b = sum(other[i] for i in common) / max(len(common), 1)
        lines.append(
            f"reward per task id, {LABELS.get(designs[0])} vs {LABELS.get(d)}: {len(common)} "
            f"task ids finished by both, {len(diff)} differ; mean reward on them "
            f"{mean_a:.4f} vs {mean_b:.4f} -> {'EQUAL' if not diff else 'DIFFERENT'}"
        )
    return lines


# ------------------------------------------------------------------ message sizes


def message_sizes(path: Path, limit: int = 5000) -> list[int]:
    """Sizes in bytes (UTF-8) of every text that crosses a hop in peerflow's records:
    each turn's content, each tool call's arguments, each tool result."""
    sizes: list[int] = []
    n = 0
    with path.open() as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            n += 1
            for step in rec.get("history") or ():
                if step.get("content") and not step.get("tool_results"):
                    sizes.append(len(step["content"].encode()))
                for call in step.get("tool_calls") or ():
                    args = (call.get("function") or {}).get("arguments")
                    if isinstance(args, str):
                        sizes.append(len(args.encode()))
                for res in step.get("tool_results") or ():
                    sizes.append(len(str(res.get("content") or "").encode()))
            if n >= limit:
                break
    return sizes


def size_table(sizes: list[int]) -> str:
    counts = [0] * (len(BUCKETS) + 1)
    for s in sizes:
        k = next((i for i, (limit, _) in enumerate(BUCKETS) if s < limit), len(BUCKETS))
        counts[k] += 1
    total = max(len(sizes), 1)
    names = [name for _, name in BUCKETS] + [">=1K"]
    lines = [f"{'bytes':<8}{'here':>8}{'paper':>8}"]
    for name, c, p in zip(names, counts, PAPER_SIZES, strict=True):
        lines.append(f"{name:<8}{100 * c / total:>7.1f}%{p:>7.1f}%")
    above = sum(1 for s in sizes if s >= 512)
    lines.append(
        f"share >= 512 B: {100 * above / total:.1f}% here, ~12% in the paper "
        f"({len(sizes)} texts; median {sorted(sizes)[len(sizes) // 2] if sizes else 0} B)"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ plot


def plot(rows: list[dict[str, Any]], stem: str = "desk_threadpool") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    colors = {"threadpool": "tab:red", "peerflow": "tab:green", "peerflow-ray": "tab:blue"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for design in dict.fromkeys(r["design"] for r in rows):
        mine = sorted((r for r in rows if r["design"] == design), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in mine]
        kw = {"color": colors.get(design), "marker": "o", "label": LABELS.get(design, design)}
        axes[0].plot(xs, [r["traj_per_min"] for r in mine], **kw)
        axes[1].plot(xs, [r["tokens_per_s"] for r in mine], **kw)
    axes[0].set_ylabel("trajectories / min")
    axes[1].set_ylabel("completion tokens / s")
    for ax in axes:
        ax.set_xlabel("max concurrency")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "Support desk, dual control: thread pool vs peerflow (SIMULATED LLM, 2-core machine)",
        fontsize=9,
    )
    fig.tight_layout()
    path = PLOTS / f"{stem}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
