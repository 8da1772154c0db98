"""Tables printed by the benchmark and its plots (small PNGs under docs/benchmarks/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nr_bench.docs import OUTCOMES

PLOTS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
LABELS = {
    "row": "row-level (peerflow)",
    "raydata": "batch-level: Ray Data map_batches",
    "loop": "batch-level: in-process batched loop",
}


def funnel_table(expected: dict[str, int], designs: dict[str, dict[str, Any]]) -> str:
    names = [o for o, _, _ in OUTCOMES]
    head = f"{'outcome':<28}{'paper':>8}{'drawn':>8}" + "".join(f"{d:>10}" for d in designs)
    lines = [head]
    total = sum(expected.values()) or 1
    extra = sorted({k for f in designs.values() for k in f["outcomes"]} - set(names))
    for name in names + extra:
        p = next((p for o, p, _ in OUTCOMES if o == name), None)
        paper = f"{100 * p:.2f}%" if p is not None else "-"
        drawn = f"{100 * expected.get(name, 0) / total:.2f}%"
        cells = "".join(
            f"{100 * f['outcomes'].get(name, 0) / max(f['rows'], 1):>9.2f}%"
            for f in designs.values()
        )
        lines.append(f"{name:<28}{paper:>8}{drawn:>8}{cells}")
    return "\n".join(lines)


def design_table(results: dict[str, dict[str, Any]]) -> str:
    cols = [
        ("wall s", lambda r: f"{r['wall']:.1f}"),
        ("active s", lambda r: f"{r['active']:.1f}"),
        ("docs/s", lambda r: f"{r['docs_per_s']:.1f}"),
        ("tok/s", lambda r: f"{r['tokens_per_s_active']:,.0f}"),
        ("tok/s steady", lambda r: f"{r['tokens_per_s_steady']:,.0f}"),
        ("questions", lambda r: f"{r['questions']}"),
        ("idle small", lambda r: f"{100 * r['pools_steady']['small']['idle']:.1f}%"),
        ("idle big", lambda r: f"{100 * r['pools_steady']['big']['idle']:.1f}%"),
        ("seqs/big", lambda r: f"{r['pools_steady']['big']['occupancy']:.1f}"),
        ("CPU used", lambda r: f"{100 * r['cpu']['machine_busy']:.0f}%"),
    ]
    head = f"{'design':<38}" + "".join(f"{c:>13}" for c, _ in cols)
    lines = [head]
    for key, r in results.items():
        lines.append(f"{LABELS.get(key, key):<38}" + "".join(f"{f(r):>13}" for _, f in cols))
    return "\n".join(lines)


def plot_designs(results: dict[str, dict[str, Any]], stem: str = "nr_row_vs_batch") -> list[Path]:
    """Idle fraction of each pool over time (one panel per pool), and tokens/s bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    colors = {"row": "tab:green", "raydata": "tab:red", "loop": "tab:orange"}
    fig, axes = plt.subplots(5, 1, figsize=(7, 9.5), sharex=True)
    for key, r in results.items():
        s = r["series"]
        kw = {"color": colors.get(key), "lw": 1, "label": LABELS.get(key, key)}
        t = s["t"]
        keep = [k for k, x in enumerate(t) if x >= -2]
        t = [t[k] for k in keep]
        axes[0].plot(t, [100 * s["idle_small"][k] for k in keep], **kw)
        axes[1].plot(t, [100 * s["idle_big"][k] for k in keep], **kw)
        axes[2].plot(t, [s["occupancy_big"][k] for k in keep], **kw)
        axes[3].plot(t, _smooth([s["tokens_per_s"][k] for k in keep], 10), **kw)
        axes[4].plot(s["finished"]["t"], s["finished"]["docs_per_s"], **kw)
    axes[0].set_ylabel("small pool\nidle %", fontsize=8)
    axes[1].set_ylabel("big pool\nidle %", fontsize=8)
    axes[2].set_ylabel("big pool: seqs\nrunning / replica", fontsize=8)
    axes[3].set_ylabel("completion tok/s\n(5 s mean)", fontsize=8)
    axes[4].set_ylabel("pages\nfinished / s", fontsize=8)
    axes[4].set_xlabel("seconds since the design's first LLM request (0.5 s polls)")
    for ax in axes[:2]:
        ax.set_ylim(-2, 102)
        ax.axhline(5, color="grey", lw=0.6, ls="--")
    axes[0].legend(fontsize=7, loc="center right")
    axes[0].set_title(
        "NR curation on SIMULATED pools: idle fraction, occupancy, throughput", fontsize=9
    )
    fig.tight_layout()
    idle = PLOTS / f"{stem}_idle.png"
    fig.savefig(idle, dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 2.6))
    keys = list(results)
    vals = [results[k]["tokens_per_s_active"] for k in keys]
    steady = [results[k]["tokens_per_s_steady"] for k in keys]
    ys = range(len(keys))
    ax.barh(
        [y + 0.2 for y in ys],
        vals,
        height=0.4,
        color=[colors.get(k) for k in keys],
        label="active window",
    )
    ax.barh(
        [y - 0.2 for y in ys],
        steady,
        height=0.4,
        color=[colors.get(k) for k in keys],
        alpha=0.5,
        label="steady state",
    )
    ax.set_yticks(list(ys), [LABELS.get(k, k) for k in keys], fontsize=7)
    ax.set_xlabel("completion tokens/s (SIMULATED pools)")
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="grey", label="active window"),
            Patch(color="grey", alpha=0.5, label="steady state"),
        ],
        fontsize=7,
    )
    fig.tight_layout()
    bars = PLOTS / f"{stem}_tokens.png"
    fig.savefig(bars, dpi=80)
    plt.close(fig)
    return [idle, bars]


def _smooth(values: list[float], n: int) -> list[float]:
    """Trailing mean over `n` polls: tokens arrive in bursts as sequences finish."""
    out, acc = [], 0.0
    for k, v in enumerate(values):
        acc += v
        if k >= n:
            acc -= values[k - n]
        out.append(acc / min(k + 1, n))
    return out


def plot_settings(rows: list[dict[str, Any]], path: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = path or PLOTS / "nr_settings.png"
    fig, ax = plt.subplots(figsize=(6, 2.8))
    xs = range(len(rows))
    ax.bar(
        [x - 0.2 for x in xs],
        [r["paper"] for r in rows],
        width=0.4,
        color="grey",
        label="paper (normalised)",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r["normalised"] for r in rows],
        width=0.4,
        color="tab:blue",
        label="peerflow on Ray, SIMULATED (normalised)",
    )
    for x, r in zip(xs, rows, strict=True):
        busy = r.get("machine_busy")
        if busy is not None:
            ax.text(
                x + 0.2, r["normalised"] + 0.03, f"CPU\n{100 * busy:.0f}%", fontsize=6, ha="center"
            )
    ax.set_xticks(list(xs), [r["label"] for r in rows], fontsize=7)
    ax.set_ylabel("throughput / setting 1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
