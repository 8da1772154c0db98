"""The benchmark's printout: the results table, the ratio, the agreement check, the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOTS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
LABELS = {
    "orch-openai": "orchestrator + openai SDK",
    "orch-peerflow": "orchestrator + pf client",
    "peerflow": "peerflow (local)",
    "peerflow-ray": "peerflow (ray)",
}
ORDER = list(LABELS)
COLORS = {
    "orch-openai": "tab:red",
    "orch-peerflow": "tab:orange",
    "peerflow": "tab:green",
    "peerflow-ray": "tab:blue",
}


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("replicas", lambda r: f"{r['replicas']}"),
        ("in flight", lambda r: f"{r['concurrency']}"),
        ("tok/s", lambda r: f"{r['tokens_per_s']:,.0f}"),
        ("traj/min", lambda r: f"{r['traj_per_min']:,.0f}"),
        ("LLM steps/s", lambda r: f"{r['llm_steps_per_s']:,.0f}"),
        ("CPU us/step", lambda r: f"{r['cpu_us_per_step']:,.0f}"),
        ("CPU proc", lambda r: f"{r['design_cpu']:.2f}"),
        ("CPU sims", lambda r: f"{r['sims_cpu']:.2f}"),
        ("machine", lambda r: f"{100 * r['machine_busy']:.0f}%"),
        ("sim idle", lambda r: f"{100 * r['sim_idle']:.0f}%"),
        ("seqs/rep", lambda r: f"{r['seqs_per_replica']:.0f}"),
        ("agree corr", lambda r: f"{r['agreement_correctness']:.4f}"),
        ("LLM/traj", lambda r: f"{r['llm_calls_per_traj']:.2f}"),
        ("tok/traj", lambda r: f"{r['tokens_per_traj']:,.0f}"),
        ("records", lambda r: f"{r['records']}"),
    ]
    head = f"{'design':<27}" + "".join(f"{c:>12}" for c, _ in cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{LABELS.get(r['design'], r['design']):<27}" + "".join(f"{f(r):>12}" for _, f in cols)
        )
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """peerflow over the openai-SDK orchestrator, tokens/s, at the largest common scale."""
    lines = []
    base = {r["replicas"]: r for r in rows if r["design"] == "orch-openai"}
    for design in ("orch-peerflow", "peerflow", "peerflow-ray"):
        mine = {r["replicas"]: r for r in rows if r["design"] == design}
        common = sorted(set(base) & set(mine))
        if not common:
            continue
        top = common[-1]
        a, b = mine[top]["tokens_per_s"], base[top]["tokens_per_s"]
        best_b = max(base.values(), key=lambda r: r["tokens_per_s"])
        lines.append(
            f"{LABELS[design]} / {LABELS['orch-openai']}, completion tokens/s at "
            f"{top} replicas ({50 * top} in flight): {a:,.0f} / {b:,.0f} = "
            f"{a / max(b, 1e-9):.2f}x; over the orchestrator's best "
            f"({best_b['tokens_per_s']:,.0f} at {best_b['replicas']} replicas): "
            f"{a / max(best_b['tokens_per_s'], 1e-9):.2f}x (paper: 6.8x)"
        )
    return lines


def agreement_check(rows: list[dict[str, Any]]) -> list[str]:
    """Per task id, agreement correctness (and matcher turns) must be equal across designs."""
    by: dict[str, dict[str, tuple[bool, Any]]] = {}
    for r in rows:
        d = by.setdefault(r["design"], {})
        for i, c in r["correct_by_id"].items():
            d[i] = (c, r["turns_by_id"].get(i))
    designs = [d for d in ORDER if d in by]
    if len(designs) < 2:
        return []
    ref = by[designs[0]]
    lines = []
    for d in designs[1:]:
        other = by[d]
        common = set(ref) & set(other)
        diff = [i for i in common if ref[i] != other[i]]
        ma = sum(ref[i][0] for i in common) / max(len(common), 1)
        mb = sum(other[i][0] for i in common) / max(len(common), 1)
        lines.append(
            f"agreement correctness per task id, {LABELS[designs[0]]} vs {LABELS[d]}: "
            f"{len(common)} ids finished by both, {len(diff)} differ (correctness or turns); "
            f"mean {ma:.4f} vs {mb:.4f} -> {'EQUAL' if not diff else 'DIFFERENT'}"
        )
    return lines


def plot(rows: list[dict[str, Any]], stem: str = "coral_orchestrator") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for design in [d for d in ORDER if any(r["design"] == d for r in rows)]:
        mine = sorted((r for r in rows if r["design"] == design), key=lambda r: r["replicas"])
        xs = [r["replicas"] for r in mine]
        kw = {"color": COLORS[design], "marker": "o", "label": LABELS[design]}
        axes[0].plot(xs, [r["tokens_per_s"] for r in mine], **kw)
        axes[1].plot(xs, [r["cpu_us_per_step"] for r in mine], **kw)
    axes[0].set_ylabel("completion tokens / s")
    axes[1].set_ylabel("CPU µs per LLM-backed step (design's process)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("simulator replicas (50 tasks in flight each)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "Coral: central asyncio orchestrator vs peerflow (SIMULATED LLM, 2-core machine)",
        fontsize=9,
    )
    fig.tight_layout()
    path = PLOTS / f"{stem}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
