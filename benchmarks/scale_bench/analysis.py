"""From samples to rates, the steady-state window and its means.

Simulator figures come from each replica's own cumulative counters (`/stats`), differenced
on the replica's own clock (`measured_at`), so a late poll changes nothing but the
interval it lands in:

- busy = d(busy_seconds) / d(measured_at): the share of time with at least one sequence
  running (an engine can be "busy" with one sequence in a batch of a thousand);
- occupancy = d(seq_seconds) / d(measured_at) / max_num_seqs: the share of the engine's
  batch capacity in use, the figure that says whether the simulators set the pace.

Steady state is the span in which peerflow holds its in-flight target: from the first
sample with at least 95% of `max_in_flight` tasks in flight to the first sample at which
every row has been admitted (records written + in flight >= rows). Before it, tasks are
still being admitted; after it, the run drains and in-flight falls. Its means are taken
between its two end samples' cumulative counters, not by averaging per-interval figures.
"""

from __future__ import annotations

import itertools
from typing import Any

STEADY_FRACTION = 0.95
# The first seconds of steady state are the ramp: every admitted task's first request is
# still being built and sent. Means are also given without them (`settled`).
SETTLE_SECONDS = 30.0


def _sim_pairs(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[dict, dict]]:
    return [(a["sims"][k], b["sims"][k]) for k in b["sims"] if k in a["sims"]]


def sim_fractions(
    a: dict[str, Any], b: dict[str, Any], max_num_seqs: int, clip: bool = True
) -> tuple[float | None, float | None]:
    """(busy, occupancy) between two samples, the mean over replicas seen in both.

    A simulator accounts its counters on its engine's clock, which may trail its event
    loop's (`measured_at`) by up to 20 ms (`_MAX_LAG_S` in sim_llm), so a one-second interval
    can read up to ~2% high or low. Per-interval figures are therefore clipped to [0, 1];
    the steady-state means (`clip=False`, minutes long) are not, and are exact to ~0.01%.
    """
    busy, occ = [], []
    for x, y in _sim_pairs(a, b):
        dt = y["measured_at"] - x["measured_at"]
        if dt <= 0:
            continue
        busy.append((y["busy_seconds"] - x["busy_seconds"]) / dt)
        occ.append((y["seq_seconds"] - x["seq_seconds"]) / dt / max_num_seqs)
    if not busy:
        return None, None
    b, o = sum(busy) / len(busy), sum(occ) / len(occ)
    if clip:
        b, o = min(max(b, 0.0), 1.0), min(max(o, 0.0), 1.0)
    return b, o


def _diff(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if a.get(key) is None or b.get(key) is None:
        return None
    return b[key] - a[key]


def _per_second(a: dict[str, Any], b: dict[str, Any], key: str, dt: float) -> float | None:
    d = _diff(a, b, key)
    return None if d is None else d / dt


def interval(
    a: dict[str, Any], b: dict[str, Any], max_num_seqs: int, clip: bool = True
) -> dict[str, Any]:
    """Rates between two samples (per second, CPU in cores)."""
    dt = max(b["t"] - a["t"], 1e-9)
    busy, occ = sim_fractions(a, b, max_num_seqs, clip)
    finished = _diff(a, b, "finished")
    steps = _diff(a, b, "steps")
    driver = _diff(a, b, "cpu_driver")
    mb, mt = b["machine"][0] - a["machine"][0], b["machine"][1] - a["machine"][1]
    llm = sum(y["completed"] - x["completed"] for x, y in _sim_pairs(a, b))
    running = sum(s.get("running", 0) for s in b["sims"].values())
    waiting = sum(s.get("waiting", 0) for s in b["sims"].values())
    return {
        "t": b["t"],
        "span": dt,
        "busy": busy,
        "occupancy": occ,
        "tasks_per_s": None if finished is None else finished / dt,
        "steps_per_s": None if steps is None else steps / dt,
        "llm_steps_per_s": llm / dt,
        "cpu_driver": None if driver is None else driver / dt,
        "cpu_sims": (b["cpu_sims"] - a["cpu_sims"]) / dt,
        "run_driver": _per_second(a, b, "run_driver", dt),
        "wait_driver": _per_second(a, b, "wait_driver", dt),
        "wait_sims": _per_second(a, b, "wait_sims", dt),
        "cpu_sampler": (b["sampler_cpu"] - a["sampler_cpu"]) / dt,
        "gc_pause": _per_second(a, b, "gc_pause", dt),  # share of the time in full collections
        "machine_busy": mb / mt if mt > 0 else None,  # share of all cores
        "in_flight": b["in_flight"],
        "running": running,
        "sim_waiting": waiting,
        "rss": b["rss"],
        "fds": b["fds"],
    }


def series(samples: list[dict[str, Any]], max_num_seqs: int) -> list[dict[str, Any]]:
    """`interval` between every two consecutive samples."""
    return [interval(a, b, max_num_seqs) for a, b in itertools.pairwise(samples)]


def gc_events_from_samples(samples: list[dict[str, Any]]) -> list[list[float]]:
    """Approximate full-collection events from the samples' counters, for a result saved
    without `gc_events`: one per interval in which any happened (start = the interval's)."""
    out = []
    for a, b in itertools.pairwise(samples):
        took = (b.get("gc_pause") or 0.0) - (a.get("gc_pause") or 0.0)
        if took > 0:
            out.append([a["t"], took, 0])
    return out


def steady_window(samples: list[dict[str, Any]], target: int, rows: int) -> tuple[int, int] | None:
    """(first, last) sample index of steady state (module docstring), or None if it never held."""
    start = None
    for i, s in enumerate(samples):
        if s["in_flight"] is not None and s["in_flight"] >= STEADY_FRACTION * target:
            start = i
            break
    if start is None:
        return None
    for j in range(start, len(samples)):
        s = samples[j]
        known = s["in_flight"] is not None and s["finished"] is not None
        if known and s["finished"] + s["in_flight"] >= rows:
            return (start, j) if j > start else None
    return None


def steady_summary(
    samples: list[dict[str, Any]],
    window: tuple[int, int],
    max_num_seqs: int,
    gc_events: list[list[float]] | None = None,
) -> dict[str, Any]:
    """Means over the steady window, from cumulative counters at its two ends."""
    i, j = window
    a, b = samples[i], samples[j]
    # Count and total from the samples' cumulative counters; the longest pause needs the
    # events (NaN for a result saved without them).
    pauses = [e[1] for e in gc_events or () if a["t"] <= e[0] <= b["t"]]
    out = interval(a, b, max_num_seqs, clip=False)
    inside = samples[i : j + 1]
    levels = [s["in_flight"] for s in inside if s["in_flight"] is not None]
    running = [sum(x.get("running", 0) for x in s["sims"].values()) for s in inside]
    first_done = next((s["t"] for s in inside if s["finished"]), None)
    settled = None
    k = next((n for n in range(i, j) if samples[n]["t"] >= a["t"] + SETTLE_SECONDS), None)
    if k is not None:
        c = samples[k]
        busy, occ = sim_fractions(c, b, max_num_seqs, clip=False)
        settled = {"start": c["t"], "busy": busy, "occupancy": occ}
    out.update(
        settled=settled,
        start=a["t"],
        end=b["t"],
        span=b["t"] - a["t"],
        in_flight_mean=sum(levels) / len(levels) if levels else None,
        in_flight_min=min(levels) if levels else None,
        running_mean=sum(running) / len(running) if running else 0,
        sim_waiting=max(sum(x.get("waiting", 0) for x in s["sims"].values()) for s in inside),
        first_finish=first_done,
        gc_full=(b.get("gc_full") or 0) - (a.get("gc_full") or 0),
        gc_pause_total=(b.get("gc_pause") or 0.0) - (a.get("gc_pause") or 0.0),
        gc_pause_max=max(pauses, default=float("nan")),
    )
    return out


def diagnosis(
    steady: dict[str, Any] | None,
    *,
    replicas: int,
    max_num_seqs: int,
    max_connections: int,
    target: int,
    cores: int,
    goal: float = 0.95,
) -> list[str]:
    """What bounded the simulators' occupancy, in numbers (printed whether or not it is met)."""
    if steady is None:
        return ["no steady state: in-flight never held its target while rows were left"]
    lines = []
    occ = steady["occupancy"]
    capacity = replicas * max_num_seqs
    connection_cap = replicas * min(max_connections, max_num_seqs)
    lines.append(
        f"occupancy {occ:.1%} of {capacity:,} sequence slots "
        f"({'met' if occ >= goal else 'MISSED'}: goal {goal:.0%}"
        + ("" if occ >= goal else f", short by {goal - occ:.1%} of capacity")
        + ")"
    )
    lines.append(
        f"ceilings: client connections {connection_cap:,} ({connection_cap / capacity:.0%} of "
        f"slots), tasks in flight {target:,} ({min(target / capacity, 9.99):.0%} of slots)"
    )
    queued = (steady["in_flight_mean"] or 0) - steady["running_mean"]
    lines.append(
        f"tasks in flight {steady['in_flight_mean']:,.0f} on average, {steady['running_mean']:,.0f}"
        f" running in a simulator, {queued:,.0f} elsewhere (waiting for a connection, or in "
        "peerflow between steps)"
    )
    cpu_d = steady["cpu_driver"] or 0.0
    machine = steady["machine_busy"] or 0.0
    lines.append(
        f"CPU: peerflow's process {cpu_d:.2f} core (one core is its ceiling), simulators "
        f"{steady['cpu_sims']:.2f}, whole machine {machine:.0%} of {cores} cores, sampler "
        f"{steady['cpu_sampler']:.3f}"
    )
    run, wait = steady.get("run_driver"), steady.get("wait_driver")
    if run is not None and wait is not None:
        lines.append(
            f"peerflow's loop thread: on a CPU {run:.0%} of the time, runnable but waiting for "
            f"one {wait:.0%}, idle {max(0.0, 1 - run - wait):.0%} (the simulators' threads "
            f"waited {steady['wait_sims']:.2f} thread-seconds per second)"
        )
    if steady.get("gc_full"):
        lines.append(
            f"Python's full garbage collections in peerflow's process: {steady['gc_full']} in "
            f"steady state, {steady['gc_pause_total']:.1f} s in all "
            f"({steady['gc_pause_total'] / steady['span']:.1%} of it), the longest "
            f"{steady['gc_pause_max']:.2f} s; each stops the event loop while the simulators "
            "finish requests that no new ones replace"
        )
    settled = steady.get("settled")
    if settled is not None:
        lines.append(
            f"without the first {SETTLE_SECONDS:g} s of steady state (the ramp): occupancy "
            f"{settled['occupancy']:.1%}, busy {settled['busy']:.1%}"
        )
    return lines
