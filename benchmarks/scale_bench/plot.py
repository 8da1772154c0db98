"""The chart: memory and in-flight, simulator busy/occupancy, throughput, CPU over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], path: Path) -> None:
    """Four stacked panels sharing the time axis; the steady-state window is shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = result["series"]
    samples = result["samples"]
    steady = result["steady"]
    t0 = result["run_started_at"]  # seconds on the sampler's clock when run() was called
    ts = [s["t"] - t0 for s in samples]
    tr = [r["t"] - t0 for r in rates]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    ax_mem, ax_sim, ax_rate, ax_cpu = axes

    ax_mem.plot(ts, [s["rss"] / 2**30 for s in samples], color="tab:purple", label="RSS (GiB)")
    ax_mem.set_ylabel("peerflow RSS (GiB)", color="tab:purple")
    ax_mem.set_ylim(bottom=0)
    ax_inf = ax_mem.twinx()
    ax_inf.plot(
        ts,
        [s["in_flight"] or 0 for s in samples],
        color="tab:green",
        label="tasks in flight",
    )
    ax_inf.plot(
        ts,
        [sum(x.get("running", 0) for x in s["sims"].values()) for s in samples],
        color="tab:olive",
        linestyle="--",
        label="sequences running in the simulators",
    )
    ax_inf.set_ylabel("tasks / sequences")
    ax_inf.set_ylim(bottom=0)
    lines = ax_mem.get_legend_handles_labels()
    more = ax_inf.get_legend_handles_labels()
    ax_mem.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)

    ax_sim.plot(tr, [r["occupancy"] for r in rates], color="tab:blue", label="occupancy")
    ax_sim.plot(
        tr, [r["busy"] for r in rates], color="tab:orange", alpha=0.7, label="busy (>= 1 seq)"
    )
    ax_sim.axhline(0.95, color="grey", linestyle=":", linewidth=1, label="95% goal")
    for n, (start, took, _) in enumerate(result.get("gc_events") or ()):
        ax_sim.axvspan(
            start - t0,
            start - t0 + took,
            color="tab:red",
            alpha=0.35,
            label="peerflow: full GC" if n == 0 else None,
        )
    ax_sim.set_ylim(0, 1.05)
    ax_sim.set_ylabel("simulator fraction")
    ax_sim.legend(loc="center right", fontsize=8)

    ax_rate.plot(tr, [r["llm_steps_per_s"] for r in rates], color="tab:red", label="LLM steps/s")
    ax_rate.plot(
        tr, [r["tasks_per_s"] or 0 for r in rates], color="tab:green", label="tasks finished/s"
    )
    ax_rate.set_ylabel("per second")
    ax_rate.set_ylim(bottom=0)
    ax_rate.legend(loc="upper left", fontsize=8)

    ax_cpu.plot(tr, [r["cpu_driver"] or 0 for r in rates], color="tab:purple", label="peerflow")
    ax_cpu.plot(
        tr,
        [r.get("wait_driver") or 0 for r in rates],
        color="tab:purple",
        linestyle=":",
        label="peerflow runnable, waiting for a CPU",
    )
    ax_cpu.plot(tr, [r["cpu_sims"] for r in rates], color="tab:cyan", label="simulators")
    cores = result["plan"]["cores"]
    ax_cpu.plot(
        tr,
        [(r["machine_busy"] or 0) * cores for r in rates],
        color="black",
        alpha=0.5,
        label="whole machine",
    )
    ax_cpu.set_ylabel("CPU (cores)")
    ax_cpu.set_ylim(0, cores + 0.1)
    ax_cpu.set_xlabel("seconds since the run started")
    ax_cpu.legend(loc="upper left", fontsize=8)

    if steady is not None:
        for ax in axes:
            ax.axvspan(steady["start"] - t0, steady["end"] - t0, color="grey", alpha=0.12)
    plan = result["plan"]
    fig.suptitle(
        f"Coral, {plan['rows']:,} rows, {plan['in_flight']:,} in flight on the local runtime; "
        f"{plan['replicas']} SIMULATED replicas x {plan['max_num_seqs']:,} seqs "
        f"(time_scale {plan['time_scale']:g}); shaded: steady state",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
