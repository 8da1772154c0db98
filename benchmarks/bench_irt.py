"""IRT difficulty calibration: parameter recovery at 500 items x 20 solvers, and fit time.

    .venv/bin/python benchmarks/bench_irt.py [--seeds 10] [--difficulty-sds 1.5,1.0]
        [--missing 0.0] [--sizes 500,10000,100000] [--repeats 3]

Recovery: for each spread of true difficulties ``b ~ N(0, sd^2)`` (the generating
distributions are those of `peerflow.irt.simulate`: a ladder of solver abilities with
sd 1, ``a ~ LogNormal(0, 0.3^2)`` for 2PL data), each seed simulates a 500 x 20 matrix
and fits it; the table gives the mean and min over seeds of the difficulty correlation
(the issue's target is Pearson >= 0.9), and the same for an *oracle*: the posterior mean of
each b given the true abilities, discriminations and prior. The oracle is the ceiling that
20 answers per item allow; the gap to it is what the estimator loses, the rest is the data.
The correlation depends on how wide the difficulties spread relative to the per-item
standard error (~0.5-0.6 logits mid-ladder with 20 solvers), hence several spreads.

Timing: wall time of `fit` (median of --repeats) at each --sizes x 20 solvers, on the
simulated default distributions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import stats

from peerflow import irt


def oracle_difficulty(sim: irt.Simulated, difficulty_sd: float) -> np.ndarray:
    """Posterior mean of each b knowing every other true parameter (a grid integral)."""
    grid = np.linspace(-10.0, 10.0, 801)
    prior = -0.5 * (grid / difficulty_sd) ** 2
    out = np.empty(sim.difficulty.size)
    for lo in range(0, out.size, 2000):  # chunks keep the (items, grid, solvers) cube small
        y = sim.responses[lo : lo + 2000, None, :]
        a = sim.discrimination[lo : lo + 2000, None, None]
        z = a * (sim.ability[None, None, :] - grid[None, :, None])
        loglik = np.nansum(y * z - np.logaddexp(0.0, z), axis=2) + prior
        w = np.exp(loglik - loglik.max(axis=1, keepdims=True))
        out[lo : lo + 2000] = (w * grid).sum(axis=1) / w.sum(axis=1)
    return out


def recovery_table(args: argparse.Namespace) -> None:
    print(
        f"Recovery at {args.items} items x {args.solvers} solvers, seeds 0..{args.seeds - 1}, "
        f"missing {args.missing:.0%}; Pearson r of difficulty: mean / min over seeds"
    )
    head = (
        f"{'b sd':>5} {'data':>4} {'fit':>4} | {'r(b) mean':>9} {'min':>6} {'rho(b)':>6} "
        f"{'oracle':>6} {'min':>6} | {'cov(b)':>6} {'r(th)':>6} {'cov(th)':>7} "
        f"{'r(a)':>5} {'cov(a)':>6} | {'conv':>5} {'iters':>5} {'time':>6}"
    )
    print(head)
    print("-" * len(head))
    for sd in args.difficulty_sds:
        for data_model, fit_model in (("1pl", "1pl"), ("2pl", "2pl"), ("2pl", "1pl")):
            rows = []
            for seed in range(args.seeds):
                sim = irt.simulate(
                    args.items,
                    args.solvers,
                    model=data_model,
                    seed=seed,
                    difficulty_sd=sd,
                    missing=args.missing,
                )
                t0 = time.perf_counter()
                f = irt.fit(sim.responses, model=fit_model)
                dt = time.perf_counter() - t0
                r = irt.recovery(sim, f)
                oracle = stats.pearsonr(oracle_difficulty(sim, sd), sim.difficulty)[0]
                rows.append(
                    {
                        **r,
                        "oracle": oracle,
                        "converged": f.converged,
                        "iterations": f.iterations,
                        "time": dt,
                    }
                )

            def col(key: str, rows: list[dict] = rows) -> np.ndarray:
                return np.array([row.get(key, np.nan) for row in rows], dtype=float)

            a_r = col("discrimination_pearson")
            a_cov = col("discrimination_coverage")
            print(
                f"{sd:>5.2f} {data_model:>4} {fit_model:>4} | "
                f"{col('difficulty_pearson').mean():>9.3f} {col('difficulty_pearson').min():>6.3f} "
                f"{col('difficulty_spearman').mean():>6.3f} "
                f"{col('oracle').mean():>6.3f} {col('oracle').min():>6.3f} | "
                f"{col('difficulty_coverage').mean():>6.3f} {col('ability_pearson').mean():>6.3f} "
                f"{col('ability_coverage').mean():>7.3f} "
                f"{'' if np.isnan(a_r).all() else f'{np.nanmean(a_r):.3f}':>5} "
                f"{'' if np.isnan(a_cov).all() else f'{np.nanmean(a_cov):.3f}':>6} | "
                f"{int(col('converged').sum()):>2}/{len(rows):<2} "
                f"{np.median(col('iterations')):>5.0f} {1000 * np.median(col('time')):>4.0f}ms"
            )
    print(
        "r = Pearson, rho = Spearman, cov = share of true values inside +-1.96 SE "
        "(for a: on log a), th = ability; oracle = Pearson r of the posterior mean of b "
        "given the true a, theta and prior (the data's ceiling); iters, time: median per fit."
    )


def timing_table(args: argparse.Namespace) -> None:
    limited = "yes" if irt.threadpool_limits is not None else "no (threadpoolctl missing)"
    print(f"\nFit time, {args.solvers} solvers (median of {args.repeats}; noisy shared machine)")
    print(f"OpenBLAS limited to one thread during fit: {limited}")
    head = f"{'items':>7} {'model':>5} | {'time':>7} {'iters':>5} {'ms/iter':>7} {'conv':>4}"
    print(head)
    print("-" * len(head))
    for n in args.sizes:
        for model in ("1pl", "2pl"):
            sim = irt.simulate(n, args.solvers, model=model, seed=0, missing=args.missing)
            times, f = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                f = irt.fit(sim.responses, model=model)
                times.append(time.perf_counter() - t0)
            assert f is not None
            t = statistics.median(times)
            print(
                f"{n:>7} {model:>5} | {t:>6.2f}s {f.iterations:>5} "
                f"{1000 * t / max(f.iterations, 1):>7.1f} {f.converged!s:>4}"
            )


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per setting")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--solvers", type=int, default=20)
    parser.add_argument(
        "--difficulty-sds",
        type=floats,
        default=[1.5, 1.0, 2.0],
        help="comma-separated sds of the true difficulties (simulate's default is 1.5)",
    )
    parser.add_argument("--missing", type=float, default=0.0, help="share of answers dropped")
    parser.add_argument("--sizes", type=ints, default=[500, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-recovery", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    if not args.no_recovery:
        recovery_table(args)
    if not args.no_timing:
        timing_table(args)


if __name__ == "__main__":
    main()
