"""Figures of one design's run from the simulators' /stats samples (the one yardstick).

- active window: from the first poll in which any replica received a request to the last
  in which a replica's counters moved (startup of Ray actors and the like is outside it);
- input phase: from the first request to the last poll in which the small pool (every
  page's first LLM call) still received requests; after it no page is left to admit and
  the design only drains what it holds (for row-level, ~1,000 rows at the big pool);
- steady state: the input phase without its first and last 10% (a 10-hour run, as in
  the paper, is all steady state; a few minutes here are not);
- pool idle fraction: over a window, per replica ``1 - d(busy_seconds) / d(measured_at)``,
  averaged over the pool's replicas; occupancy is ``d(seq_seconds) / d(measured_at)``
  (sequences running on a replica, on average).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

Sample = tuple[float, list[dict[str, Any]]]


def _moved(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return b["requests"] != a["requests"] or b["busy_seconds"] != a["busy_seconds"]


def active_window(samples: list[Sample]) -> tuple[int, int]:
    """Indices (i, j) of the samples that bracket the design's LLM traffic."""
    first = last = None
    for k in range(1, len(samples)):
        if any(_moved(a, b) for a, b in zip(samples[k - 1][1], samples[k][1], strict=True)):
            if first is None:
                first = k - 1
            last = k
    if first is None or last is None:
        return 0, len(samples) - 1
    return first, last


def input_end(samples: list[Sample], pools: list[str], i: int, j: int) -> float:
    """Time of the last poll (in i..j) in which a small-pool replica received requests."""
    last = samples[i][0]
    for k in range(i + 1, j + 1):
        moved = any(
            pool == "small" and b["requests"] != a["requests"]
            for pool, a, b in zip(pools, samples[k - 1][1], samples[k][1], strict=True)
        )
        if moved:
            last = samples[k][0]
    return last


def window(samples: list[Sample], t0: float, t1: float) -> tuple[int, int]:
    i = min(range(len(samples)), key=lambda k: abs(samples[k][0] - t0))
    j = min(range(len(samples)), key=lambda k: abs(samples[k][0] - t1))
    return i, max(j, i + 1) if i + 1 < len(samples) else j


def pool_figures(
    samples: list[Sample], pools: list[str], i: int, j: int
) -> dict[str, dict[str, float]]:
    """Per pool between samples i and j: idle fraction, occupancy per replica, tokens."""
    a, b = samples[i][1], samples[j][1]
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(pools):
        idle, occ, tokens, requests = [], [], 0, 0
        for pool, x, y in zip(pools, a, b, strict=True):
            if pool != name:
                continue
            span = max(y["measured_at"] - x["measured_at"], 1e-9)
            # Clamped at 0: the two counters are read a few microseconds apart.
            idle.append(max(0.0, 1 - (y["busy_seconds"] - x["busy_seconds"]) / span))
            occ.append((y["seq_seconds"] - x["seq_seconds"]) / span)
            tokens += y["completion_tokens"] - x["completion_tokens"]
            requests += y["requests"] - x["requests"]
        out[name] = {
            "idle": sum(idle) / len(idle),
            "occupancy": sum(occ) / len(occ),
            "tokens": tokens,
            "requests": requests,
        }
    return out


def series(samples: list[Sample], pools: list[str], t_ref: float) -> dict[str, list[float]]:
    """Per poll interval: time (s from t_ref), each pool's idle fraction, tokens/s."""
    out: dict[str, list[float]] = {"t": [], "tokens_per_s": [], "small_requests_per_s": []}
    for name in dict.fromkeys(pools):
        out[f"idle_{name}"] = []
        out[f"occupancy_{name}"] = []
    for k in range(1, len(samples)):
        figs = pool_figures(samples, pools, k - 1, k)
        dt = max(samples[k][0] - samples[k - 1][0], 1e-9)
        out["t"].append(samples[k][0] - t_ref)
        out["tokens_per_s"].append(sum(f["tokens"] for f in figs.values()) / dt)
        out["small_requests_per_s"].append(figs.get("small", {}).get("requests", 0) / dt)
        for name, f in figs.items():
            out[f"idle_{name}"].append(f["idle"])
            out[f"occupancy_{name}"].append(f["occupancy"])
    return out


def design_figures(samples: list[Sample], pools: list[str], wall: float) -> dict[str, Any]:
    """Whole-run and steady-state figures of one design."""
    i, j = active_window(samples)
    t_start, t_end = samples[i][0], samples[j][0]
    active = max(t_end - t_start, 1e-9)
    whole = pool_figures(samples, pools, 0, len(samples) - 1)
    tokens = sum(f["tokens"] for f in whole.values())
    t_in = input_end(samples, pools, i, j)
    feed = max(t_in - t_start, 1e-9)
    si, sj = window(samples, t_start + 0.1 * feed, t_in - 0.1 * feed)
    steady = pool_figures(samples, pools, si, sj)
    steady_span = max(samples[sj][0] - samples[si][0], 1e-9)
    return {
        "wall": wall,
        "active": active,
        "tokens": tokens,
        "tokens_per_s_wall": tokens / wall,
        "tokens_per_s_active": tokens / active,
        "tokens_per_s_steady": sum(f["tokens"] for f in steady.values()) / steady_span,
        "steady_seconds": steady_span,
        "input_seconds": feed,
        "pools_whole": pool_figures(samples, pools, i, j),
        "pools_steady": steady,
        # The literal rule "drop the first and last 10% of the run", drain included.
        "pools_mid80": pool_figures(
            samples, pools, *window(samples, t_start + 0.1 * active, t_end - 0.1 * active)
        ),
        "series": series(samples, pools, t_start),
    }


def output_figures(paths: list[Path]) -> dict[str, Any]:
    """What a design wrote, read back from its output files (the same reader for all):
    outcome per row (the funnel), accepted ids, completion tokens and finish times."""
    from peerflow.merge import with_side_files
    from peerflow.sink import records_since

    outcomes: Counter[str] = Counter()
    ok_ids: set[str] = set()
    finished: list[float] = []
    completion = 0
    for rec in records_since(with_side_files(paths), 0.0):
        outcome = rec.reason if rec.status == "rejected" else rec.status
        outcomes[outcome or rec.status] += 1
        if rec.status == "ok":
            ok_ids.add(rec.id)
        finished.append(rec.finished)
        completion += (rec.tokens or {}).get("completion", 0)
    return {
        "rows": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "questions": len(ok_ids),
        "ok_ids": ok_ids,
        "completion_tokens": completion,
        "finished": sorted(finished),
    }


def finish_series(finished: list[float], t_ref: float, step: float = 2.0) -> dict[str, list[float]]:
    """Pages finished per second in `step`-second bins; `finished` and `t_ref` on one clock."""
    if not finished:
        return {"t": [], "docs_per_s": []}
    end = finished[-1] - t_ref
    bins = [0] * (int(max(end, 0) // step) + 1)
    for f in finished:
        k = int((f - t_ref) // step)
        if 0 <= k < len(bins):
            bins[k] += 1
    return {
        "t": [(k + 0.5) * step for k in range(len(bins))],
        "docs_per_s": [n / step for n in bins],
    }
