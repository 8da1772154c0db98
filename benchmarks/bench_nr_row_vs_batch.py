"""Row-level (peerflow) against batch-level scheduling on the NaturalReasoning curation funnel.

Reproduces, on SIMULATED LLM pools, the paper's comparison of row-level scheduling with a
Ray Data batch baseline (paper: 2.1x tokens/s), on pages whose funnel outcome is drawn
with the paper's probabilities. Every design runs the same workflow
(examples/natural_reasoning/nr_sim.yaml: language -> classifier -> score -> question)
against the same simulator processes, with the same total concurrency:

- row-level: `peerflow run` (local runtime), shipped defaults except max_in_flight;
- Ray Data: map_batches over K actors x batch B, each batch's rows gathered concurrently
  (returns when the slowest row is done), as the paper's baseline;
- an in-process batched loop: K asyncio loops x B rows.

    .venv/bin/python benchmarks/bench_nr_row_vs_batch.py              # the three designs
    .venv/bin/python benchmarks/bench_nr_row_vs_batch.py --settings   # + the settings table

The simulator is a measuring instrument (continuous-batching timing, filler text): these
figures compare schedulers against engines of known capacity, never models.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nr_bench import designs, measure, report
from nr_bench.docs import write_docs
from nr_bench.pools import CpuMeter, Poller, Pools, pool_specs

TARGET_RATIO = 2.1
TARGET_IDLE = 0.05


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=60000, help="pages of the row-level run")
    p.add_argument(
        "--batch-docs",
        type=int,
        default=6000,
        help="pages of each batch-level run: the first ones of the same list (the batch "
        "designs are slower; like the paper's runs, designs are compared by rates)",
    )
    p.add_argument("--in-flight", type=int, default=1000, help="total concurrency, every design")
    p.add_argument("--batch", type=int, default=50, help="batch size B of the batch designs")
    p.add_argument("--small", type=int, default=2, help="replicas of the small pool")
    p.add_argument("--big", type=int, default=4, help="replicas of the big pool")
    p.add_argument("--time-scale", type=float, default=2.0, help="simulator time_scale")
    p.add_argument("--seed", type=int, default=0, help="seed of the pages' outcomes")
    p.add_argument("--designs", default="row,raydata,loop", help="comma list of row, raydata, loop")
    p.add_argument("--settings", action="store_true", help="also the Ray settings table")
    p.add_argument("--settings-only", action="store_true", help="only the settings table")
    p.add_argument(
        "--settings-budget", type=float, default=120.0, help="seconds of traffic per setting"
    )
    p.add_argument("--settings-docs", type=int, default=80000, help="pages for the settings")
    p.add_argument(
        "--settings-which", default="0,1,2,3,4,5", help="which settings (indices) to run"
    )
    p.add_argument("--keep", type=Path, default=None, help="keep outputs in this folder")
    p.add_argument("--json", type=Path, default=None, help="write all figures as JSON here")
    return p.parse_args()


def _run_design(
    key: str, args: argparse.Namespace, pools: Pools, docs: Path, work: Path
) -> dict[str, Any]:
    out = work / key / "out.jsonl.zst"
    out.parent.mkdir(parents=True, exist_ok=True)
    services = {name: pools.service(name) for name in ("small", "big")}
    n = args.docs if key == "row" else args.batch_docs
    over = designs.overrides(docs, out, services, [f"dataset.limit={n}"])
    poller = Poller(pools.replicas)
    cpu = CpuMeter(pools.pids())
    poller.start()
    cpu.start()
    clocks = (time.time(), time.monotonic())  # records carry wall time, polls monotonic
    t0 = time.perf_counter()
    if key == "row":
        config = designs.make_config([*over, f"runtime.max_in_flight={args.in_flight}"])
        summary = designs.row_level(config)
        paths = [out]
    elif key == "loop":
        config = designs.make_config(over)
        summary = designs.batched_loop(config, args.in_flight // args.batch, args.batch)
        paths = [out]
    elif key == "raydata":
        shards = work / key / "shards"
        summary = designs.ray_data(over, docs, n, shards, args.in_flight // args.batch, args.batch)
        paths = sorted(p for p in shards.glob("shard-*.jsonl.zst"))
    else:
        raise SystemExit(f"unknown design {key!r}")
    wall = time.perf_counter() - t0
    usage = cpu.stop()
    samples = poller.stop()
    pool_names = [pool for pool, _ in pools.replicas]
    figs = measure.design_figures(samples, pool_names, wall)
    written = measure.output_figures(paths)
    i, _ = measure.active_window(samples)
    t_ref = samples[i][0] - clocks[1] + clocks[0]  # the first request, on the wall clock
    figs["series"]["finished"] = measure.finish_series(written["finished"], t_ref)
    figs.update(
        cpu=usage,
        rows=written["rows"],
        outcomes=written["outcomes"],
        questions=written["questions"],
        ok_ids=written["ok_ids"],
        record_tokens=written["completion_tokens"],
        docs_per_s=written["rows"] / figs["active"],
        docs_per_s_wall=written["rows"] / wall,
        summary_status=summary.get("by_status"),
    )
    return figs


def _verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    row = results.get("row")
    for key, r in results.items():
        if key == "row" or row is None:
            continue
        for what, field in (
            ("active window", "tokens_per_s_active"),
            ("steady state", "tokens_per_s_steady"),
        ):
            ratio = row[field] / max(r[field], 1e-9)
            ok = "MET" if ratio >= TARGET_RATIO else "MISSED"
            lines.append(
                f"row-level / {report.LABELS[key]}: tokens/s {ratio:.2f}x ({what}); "
                f"target >= {TARGET_RATIO}x: {ok}"
            )
        ratio = row["docs_per_s"] / max(r["docs_per_s"], 1e-9)
        lines.append(f"row-level / {report.LABELS[key]}: docs/s {ratio:.2f}x (active window)")
    if row is not None:
        for pool in ("small", "big"):
            idle = row["pools_steady"][pool]["idle"]
            ok = "MET" if idle < TARGET_IDLE else "MISSED"
            mid = row["pools_mid80"][pool]["idle"]
            lines.append(
                f"row-level {pool} pool idle in steady state: {100 * idle:.2f}% "
                f"(target < {100 * TARGET_IDLE:.0f}%): {ok}; over the middle 80% of the whole "
                f"run instead (drain after the last page included): {100 * mid:.2f}%"
            )
    return lines


def main() -> None:
    args = _args()
    if args.settings_only:
        args.settings, keys = True, []
    else:
        keys = [k.strip() for k in args.designs.split(",") if k.strip()]
    work = args.keep or Path(tempfile.mkdtemp(prefix="nr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    docs = work / "docs.jsonl"
    n_docs = max(args.docs, args.batch_docs, args.settings_docs if args.settings else 0)
    drawn = write_docs(docs, n_docs, args.seed)
    specs = pool_specs(args.time_scale, args.small, args.big)
    print("=" * 100)
    print("NaturalReasoning curation, row-level vs batch-level scheduling -- SIMULATED LLM pools")
    print("(the simulator is a measuring instrument: engine timing + filler text, not a model)")
    print("=" * 100)
    print(
        f"pages: {args.docs} (seed {args.seed}), 1,000-3,000 characters each; outcomes drawn "
        "with the paper's probabilities"
    )
    for spec in specs:
        o = spec.options
        print(
            f"pool {spec.name}: {spec.replicas} replicas, step {o['step_base_ms']} ms + "
            f"{o['step_per_seq_ms']} ms/seq, prefill {o['prefill_ms_per_1k']} ms/1k tok, "
            f"time_scale {o['time_scale']}, max_num_seqs {o['max_num_seqs']}"
        )
    print(
        "lengths: classifier reply 1 token (scripted Yes/No); score reply = 4 criteria + a "
        "rationale of the sampled length (median 64 tok, sigma 0.5); question reply holds that "
        "length twice (question + first step); prompts = the page (~250-750 tok)"
    )
    k = args.in_flight // args.batch
    print(
        f"total concurrency {args.in_flight}: row-level max_in_flight={args.in_flight} "
        f"(peerflow's shipped defaults otherwise); batch designs K={k} x B={args.batch}"
    )
    paper_per_replica = args.in_flight * (1 - 0.0368 - 0.9024) / args.big
    print(
        f"paper's estimate of concurrent requests per big replica: {args.in_flight} x 6.08% / "
        f"{args.big} = {paper_per_replica:.1f} (paper: 14,000 x 6.08% / 56 = 15.2)"
    )
    pools = Pools(specs)
    results: dict[str, dict[str, Any]] = {}
    try:
        pools.start()
        for key in keys:
            print(f"\n--- {report.LABELS[key]} ...", flush=True)
            results[key] = r = _run_design(key, args, pools, docs, work)
            print(
                f"    {r['rows']} rows, wall {r['wall']:.1f} s, active {r['active']:.1f} s, "
                f"{r['tokens_per_s_active']:,.0f} tok/s, {r['questions']} questions, "
                f"CPU: driver {100 * r['cpu']['driver_cpu']:.0f}% of a core, simulators "
                f"{100 * r['cpu']['sims_cpu']:.0f}%, machine {100 * r['cpu']['machine_busy']:.0f}%"
                f" of {r['cpu']['cores']} cores",
                flush=True,
            )
        if results:
            _print_results(results, drawn)
        settings = None
        if args.settings:
            from nr_bench import settings as st

            settings = st.run_settings(pools, docs, work, args)
        if args.json:
            dump = {
                k: {kk: vv for kk, vv in v.items() if kk != "ok_ids"} for k, v in results.items()
            }
            args.json.write_text(json.dumps({"designs": dump, "settings": settings}, indent=1))
    finally:
        pools.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _print_results(results: dict[str, dict[str, Any]], drawn: Any) -> None:
    print(
        "\nFunnel (share of rows per outcome; the paper's Table 2 vs the pages drawn vs what "
        "each design wrote):"
    )
    print(report.funnel_table(dict(drawn), results))
    row = results.get("row")
    for key, r in results.items():
        if row is None or key == "row":
            continue
        n = r["rows"]
        expect = {i for i in row["ok_ids"] if int(i.split("-")[1]) < n}
        print(
            f"{report.LABELS[key]}: accepted rows identical to row-level's on the same "
            f"{n} pages: {r['ok_ids'] == expect} ({len(r['ok_ids'])} vs {len(expect)})"
        )
    per_k = {k: round(1000 * r["tokens"] / max(r["rows"], 1)) for k, r in results.items()}
    print(f"completion tokens per 1,000 pages (simulator counters): {per_k}")
    print(
        "\nResults (SIMULATED). tok/s = completion tokens (all pools' /stats) / active window "
        "(first request to last engine activity); steady = the input phase (until the last page "
        "entered) without its first and last 10%; idle = share of "
        "replica time with no sequence running, steady state; seqs/big = mean sequences "
        "running per big replica"
    )
    print(report.design_table(results))
    print()
    for line in _verdicts(results):
        print(line)
    for key, r in results.items():
        if r["cpu"]["machine_busy"] > 0.9:
            print(
                f"WARNING: {report.LABELS[key]} had the machine's CPUs "
                f"{100 * r['cpu']['machine_busy']:.0f}% busy: it measures CPU, not scheduling"
            )
    paths = report.plot_designs(results)
    print("plots: " + ", ".join(str(p.relative_to(designs.REPO)) for p in paths))


if __name__ == "__main__":
    main()
