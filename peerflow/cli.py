"""`peerflow run CONFIG key=value ...`, `check CONFIG`, `merge OUTPUT`, `report OUTPUT`,
`schema`, `sim-llm ...`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from peerflow.config import ConfigError, load_config


def _print_summary(summary: dict[str, Any]) -> None:
    out = sys.stdout
    print(f"\n== {summary['name']} ({summary['runtime']} runtime) ==", file=out)
    for name, label in summary["services"].items():
        print(f"service {name}: {label}", file=out)
    rate = summary["success_rate"]
    print(
        f"records written this run: {summary['records_written']} "
        f"(ok {summary['by_status'].get('ok', 0)}, rejected "
        f"{summary['by_status'].get('rejected', 0)}, error {summary['by_status'].get('error', 0)}; "
        "success rate "
        f"{'-' if rate is None else f'{rate:.1%}'}); already finished before: "
        f"{summary['finished_before_this_run']}; total in output: "
        f"{summary['total_records_in_output']}",
        file=out,
    )
    held = summary.get("output_by_status") or {}
    if held:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(held.items()))
        print(f"output now holds {sum(held.values())} records, one per row: {counts}", file=out)
    if summary.get("duplicate_input_ids"):
        print(
            f"duplicate ids in the input: {summary['duplicate_input_ids']} (recorded as "
            "errors under derived ids)",
            file=out,
        )
    reasons = summary.get("by_reason") or {}
    if set(reasons) - {"done", "ok"}:
        print("endings: " + ", ".join(f"{r} {n}" for r, n in reasons.items()), file=out)
    if summary.get("tool_calls"):
        print(f"tool calls: {summary['tool_calls']} ({summary['tool_errors']} errors)", file=out)
    for name, env in (summary.get("environments") or {}).items():
        if "isolation" in env and "runs" in env:  # a code sandbox
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(env["statuses"].items()))
            print(
                f"sandbox {name}: isolation {env['isolation']}, {env['runs']} runs "
                f"({statuses or 'none'}), {env['sandbox_wall_s']:.1f}s wall and "
                f"{env['sandbox_cpu_s']:.1f}s CPU in the sandbox",
                file=out,
            )
            continue
        if "live" not in env:
            print(f"environments of {name}: no account ({env.get('error')})", file=out)
            continue
        print(
            f"environments of {name}: acquired {env['acquired']}, released {env['released']}, "
            f"expired {env['expired']}, live after the run {env['live']} "
            f"({env['servers']} server(s), {env['server_restarts']} restarted)",
            file=out,
        )
    tokens = summary["tokens"]
    print(
        f"wall {summary['wall_seconds']:.1f}s, {summary['tasks_per_second']:.2f} tasks/s, "
        f"{summary['steps_per_second']:.0f} steps/s, tokens prompt {tokens['prompt']} "
        f"completion {tokens['completion']} ({summary['completion_tokens_per_second']:.0f}/s)",
        file=out,
    )
    from peerflow.cost import cost_lines
    from peerflow.services.adaptive import concurrency_lines

    for line in cost_lines(summary) + concurrency_lines(summary):
        print(line, file=out)
    for role, rs in summary["roles"].items():
        lat = rs["latency_seconds"]
        print(
            f"  {role:<12} steps {rs['steps']:>7} errors {rs['errors']:>5} "
            f"p50 {lat['p50'] * 1000:8.1f} ms  p95 {lat['p95'] * 1000:8.1f} ms",
            file=out,
        )
    _print_funnel(summary.get("funnel") or {}, out)
    if summary["metrics"]:
        print(
            "metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in summary["metrics"].items()), file=out
        )
    for sample in summary["error_samples"]:
        print(f"error sample: {sample}", file=out)
    if summary.get("cache"):
        print("response cache: " + cache_line(summary["cache"]), file=out)
    print(f"output: {summary['output']}", file=out)


def cache_line(cache: dict[str, Any]) -> str:
    """`llm 40 hits / 2 misses (read_write), ...`: the response cache per service, one line."""
    return "; ".join(
        f"{name} {c['hits']} hits / {c['misses']} misses ({c['mode']})" for name, c in cache.items()
    )


def _print_funnel(funnel: dict[str, Any], out: Any) -> None:
    """Where this run's rows ended, step by step; printed when some row was rejected."""
    steps = funnel.get("steps") or []
    if not any(step["rejected"] for step in steps):
        return
    rows = funnel["rows"]
    print(f"funnel over {rows} rows (shares of all rows):", file=out)
    for step in steps:
        print(
            f"  {step['role']:<12} reached {step['reached']:>7}  rejected {step['rejected']:>7}"
            f"  failed {step['failed']:>5}  tokens {step['tokens']:>10}",
            file=out,
        )
        for reason, seen in step["reasons"].items():
            print(
                f"    - {reason:<28} {seen['rows']:>7}  {seen['share']:7.2%} of rows"
                f"  ({seen['of_reached']:.1%} of those reaching {step['role']})",
                file=out,
            )
    print(
        f"  accepted {funnel['accepted']:>7}  {funnel['accepted_share'] or 0:7.2%} of rows",
        file=out,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from peerflow.pipeline import Pipeline
    from peerflow.run import EXIT_CODES, EXIT_CONFIG, EXIT_INTERNAL, run
    from peerflow.sink import FingerprintMismatch, OutputBusy

    try:
        config = load_config(args.config, args.overrides)
        pipeline = Pipeline(config)
    except ConfigError as exc:
        print(f"peerflow: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # a bug in a user's module, say: still no traceback
        print(
            f"peerflow: the run could not be set up: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        if os.environ.get("PEERFLOW_DEBUG"):
            raise
        return EXIT_CONFIG
    try:
        summary = run(
            config,
            pipeline=pipeline,
            progress=False if args.no_progress else None,
            retry_failed=args.retry_failed,
            force=args.force,
        )
    except ConfigError as exc:  # found only once the runtime is up, e.g. unplaceable Ray actors
        print(f"peerflow: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (OutputBusy, FingerprintMismatch) as exc:
        print(f"peerflow: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # an unwritable output path, a full disk
        where = f" {exc.filename}" if exc.filename else ""
        print(f"peerflow: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # a runtime fault: the summary is written, rows can be resumed
        print(
            f"peerflow: the run failed: {type(exc).__name__}: {exc}\n"
            "peerflow: rows in flight were abandoned; re-run the same command to resume",
            file=sys.stderr,
        )
        if os.environ.get("PEERFLOW_DEBUG"):
            raise
        return EXIT_INTERNAL
    _print_summary(summary)
    code = summary["exit_code"]
    if summary["outcome"] != "complete":
        print(f"peerflow: {summary['outcome']}: {summary['reason']}", file=sys.stderr)
    print(f"exit status {code}: {EXIT_CODES[code]}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    """Everything `run` checks before it starts a service or writes a file, and nothing more."""
    from peerflow.config import config_fingerprint
    from peerflow.pipeline import Pipeline

    rules = _rules_file(args.config)
    if rules is not None:
        return _check_rules(args.config, rules)
    try:
        config = load_config(args.config, args.overrides)
        pipeline = Pipeline(config)
    except ConfigError as exc:
        print(f"peerflow: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in a user's module, say: still no traceback
        print(f"peerflow: the check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("PEERFLOW_DEBUG"):
            raise
        return 2
    dataset = pipeline.dataset
    print(
        f"{args.config}: ok ({len(config.roles)} role(s), {config.workflow.kind} workflow, "
        f"dataset {dataset.format if dataset else '?'}, "
        f"config fingerprint {config_fingerprint(config)})"
    )
    return 0


def _rules_file(path: str) -> list[Any] | None:
    """The rules of a simulator rules file (which `check` also accepts), or None for any
    other file (a run config, or something unreadable that `load_config` will report)."""
    import yaml

    from peerflow.services.sim_llm import rules_shape

    try:
        with open(path, encoding="utf-8") as f:
            shape = rules_shape(yaml.safe_load(f))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return shape[0] if shape is not None and isinstance(shape[0], list) else None


def _check_rules(path: str, rules: list[Any]) -> int:
    """Check a simulator rules file as the simulator loads it at start-up."""
    from peerflow.services.sim_llm import SimOptions, load_script

    try:
        load_script(SimOptions(script=path))
    except ValueError as exc:
        print(f"peerflow: simulator rules error:\n{exc}", file=sys.stderr)
        return 2
    print(
        f"{path}: ok (simulator rules file, {len(rules)} rule(s); name it in a sim service's "
        "`options.script`)"
    )
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from peerflow.merge import merge_shards
    from peerflow.sink import OutputBusy

    try:
        result = merge_shards(args.output, keep_shards=args.keep_shards)
    except OutputBusy as exc:
        print(f"peerflow: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"peerflow: cannot merge {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"merged {len(result.inputs)} file(s) into {result.output}: {result.records} records, "
        f"{result.duplicates} duplicate ids dropped, {len(result.removed)} shard file(s) removed"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the run report of an output: one self-contained HTML page (docs/report.md)."""
    from peerflow.report import build_report

    try:
        path = build_report(args.output, args.out, summary_file=args.summary)
    except FileNotFoundError as exc:
        print(f"peerflow: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"peerflow: cannot write the report: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


def _csv(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def cmd_export(args: argparse.Namespace) -> int:
    """Turn an output's records into training data (docs/export.md)."""
    from pathlib import Path

    from peerflow.config import ConfigError
    from peerflow.export import ExportError, ExportRequest, command_line, export

    req = ExportRequest(
        output=Path(args.output),
        dest=Path(args.dest),
        shape=args.format,
        to=args.to,
        config=Path(args.config) if args.config else None,
        assistant=_csv(args.assistant) or None,
        status=_csv(args.status) or None,
        reasons=_csv(args.reason),
        where=args.where,
        split=args.split,
        seed=args.seed,
        pair_by=args.pair_by,
        margin=args.margin,
        dedup=args.dedup,
        dedup_threshold=args.threshold,
        balance=args.balance,
        per_bin=args.per_bin,
        columns=_csv(args.columns),
        limit=args.limit,
        command=command_line(args.argv),
    )
    try:
        report = export(req)
    except (ExportError, ConfigError) as exc:
        print(f"peerflow export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"peerflow export: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    written = ", ".join(f"{n:,} {s}" for s, n in report["written"].items()) or "nothing"
    unit = {"sft": "examples", "dpo": "pairs", "records": "records"}[report["format"]]
    print(f"read {report['records_read']:,} records; wrote {unit} to {report['dest']}: {written}")
    for reason, n in sorted(report["removed"].items(), key=lambda kv: -kv[1]):
        print(f"  left out {n:,}: {reason}")
    if report.get("pairing"):
        print(f"  pairing: {report['pairing']}")
    print(f"  what was left out, per record: {report['removed_list']}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure each accepted item's difficulty with K solvers and an IRT fit (docs/export.md)."""
    from pathlib import Path

    from peerflow.config import ConfigError
    from peerflow.export import ExportError, load_config
    from peerflow.export.calibrate import calibrate, fit_and_write
    from peerflow.report import _summary_for

    output = Path(args.output)
    try:
        config = load_config(
            output, Path(args.config) if args.config else None, _summary_for(output, None)
        )
        if config is None:
            raise ExportError(f"{output} has no summary recording its config: give --config")
        if args.fit_only:
            meta = fit_and_write(output, config)
        else:
            import asyncio

            meta = asyncio.run(calibrate(output, config, progress=not args.no_progress))
    except (ExportError, ConfigError) as exc:
        print(f"peerflow calibrate: {exc}", file=sys.stderr)
        return 2
    d = meta["difficulty"]
    print(
        f"calibrated {meta['items']:,} items with {meta['solvers']} solvers ({meta['model']}): "
        f"difficulty mean {d['mean']:.2f}, sd {d['sd']:.2f}, range [{d['min']:.2f}, "
        f"{d['max']:.2f}], median standard error {d['median_se']:.2f}; "
        f"{meta['all_correct']} solved by all, {meta['none_correct']} by none"
    )
    for name, s in meta["solver_ability"].items():
        print(
            f"  {name}: ability {s['ability']:+.2f} (se {s['se']:.2f}), "
            f"accuracy {s['accuracy']:.1%}"
        )
    simulated = sorted(
        {s.service for s in config.export.calibration.solvers}
        & {name for name, svc in config.services.items() if svc.kind == "sim"}
    )
    if simulated:
        print(
            f"SIMULATED: {', '.join(simulated)} answered with the LLM simulator's filler or "
            "scripted text, not a model's: these difficulties measure nothing"
        )
    print(f"difficulties: {output}.difficulty.jsonl")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print (or write) the config file's JSON Schema, for editors' completion and validation."""
    import json

    from peerflow.schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        try:
            with open(args.output, "w") as f:
                f.write(text)
        except OSError as exc:
            print(f"peerflow: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "sim-llm":
        from peerflow.services.sim_llm import main as sim_main

        sim_main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="peerflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a workflow config (re-running resumes)")
    p_run.add_argument("config")
    p_run.add_argument("overrides", nargs="*", help="key.sub=value overrides (values are YAML)")
    p_run.add_argument("--no-progress", action="store_true")
    p_run.add_argument(
        "--retry-failed",
        action="store_true",
        help="re-attempt every failed row (by default only transient failures are re-attempted)",
    )
    p_run.add_argument(
        "--force",
        action="store_true",
        help="resume even though the config's fingerprint differs from the output's",
    )
    p_run.set_defaults(fn=cmd_run)
    p_check = sub.add_parser("check", help="validate a config without running it")
    p_check.add_argument("config")
    p_check.add_argument("overrides", nargs="*")
    p_check.set_defaults(fn=cmd_check)
    p_merge = sub.add_parser("merge", help="merge a sharded output (ray runtime) into one file")
    p_merge.add_argument("output", help="the run's output.path")
    p_merge.add_argument("--keep-shards", action="store_true")
    p_merge.set_defaults(fn=cmd_merge)
    p_report = sub.add_parser(
        "report", help="write an output's run report (one self-contained HTML file)"
    )
    p_report.add_argument("output", help="the run's output.path")
    p_report.add_argument("-o", "--out", help="where to write it (default: <output>.report.html)")
    p_report.add_argument("--summary", help="the run's summary file, when output.summary moved it")
    p_report.set_defaults(fn=cmd_report)
    p_export = sub.add_parser(
        "export", help="turn an output into training data (SFT chats, DPO pairs, Parquet, datasets)"
    )
    p_export.add_argument("output", help="the run's output.path")
    p_export.add_argument(
        "dest", help="a .jsonl or .parquet file, or a folder (a Hugging Face datasets folder)"
    )
    p_export.add_argument(
        "--format", default="sft", choices=("sft", "dpo", "records"),
        help="sft: OpenAI `messages` chats; dpo: preference pairs; records: flat records",
    )  # fmt: skip
    p_export.add_argument("--to", choices=("jsonl", "parquet", "hf"), help="default: from DEST")
    p_export.add_argument("--config", help="the run's config (default: the one in its summary)")
    p_export.add_argument(
        "--assistant", help="roles whose turns are the assistant's (default: export.assistant)"
    )
    p_export.add_argument(
        "--status", help="statuses to keep, comma-separated (default: ok; dpo: ok,rejected)"
    )
    p_export.add_argument("--reason", help="keep rejected records only for these reasons")
    p_export.add_argument(
        "--where", action="append", default=[], metavar="COND",
        help="keep records where PATH OP VALUE holds, e.g. 'metrics.reward >= 0.5' (repeatable)",
    )  # fmt: skip
    p_export.add_argument(
        "--split", help="seeded split by input row, e.g. train=0.9,validation=0.05,test=0.05"
    )
    p_export.add_argument("--seed", type=int, default=0, help="seed of the split and sampling")
    p_export.add_argument(
        "--pair-by", help="dpo: the score path, higher is chosen (default: export.score, else "
        "accepted over rejected)",
    )  # fmt: skip
    p_export.add_argument("--margin", type=float, default=0.0, help="dpo: least score gap")
    p_export.add_argument(
        "--dedup", nargs="?", const="default", metavar="PATH",
        help="drop exact and near duplicates of PATH (default: export.dedup), first kept",
    )  # fmt: skip
    p_export.add_argument("--threshold", type=float, help="near-duplicate Jaccard threshold")
    p_export.add_argument(
        "--balance", type=int, metavar="BINS",
        help="balance by calibrated difficulty: BINS equal-width bins (peerflow calibrate first)",
    )  # fmt: skip
    p_export.add_argument("--per-bin", type=int, help="rows per difficulty bin (default: fewest)")
    p_export.add_argument("--columns", help="extra columns: paths or export.fields names")
    p_export.add_argument("--limit", type=int, help="read at most this many records")
    p_export.set_defaults(fn=cmd_export)
    p_cal = sub.add_parser(
        "calibrate", help="measure each accepted item's difficulty (K solvers, an IRT fit)"
    )
    p_cal.add_argument("output", help="the run's output.path")
    p_cal.add_argument("--config", help="the run's config (default: the one in its summary)")
    p_cal.add_argument(
        "--fit-only", action="store_true", help="refit the answers already collected"
    )
    p_cal.add_argument("--no-progress", action="store_true")
    p_cal.set_defaults(fn=cmd_calibrate)
    p_schema = sub.add_parser(
        "schema", help="print the JSON Schema of config files (for editor completion)"
    )
    p_schema.add_argument("-o", "--output", help="write it to this file instead of stdout")
    p_schema.set_defaults(fn=cmd_schema)
    sub.add_parser(
        "sim-llm",
        help="serve the simulated OpenAI-compatible LLM (a measuring "
        "instrument, not a model); see `peerflow sim-llm --help`",
    )
    # Overrides may come before or after flags: collect every leftover key=value.
    args, rest = parser.parse_known_args(argv)
    stray = [a for a in rest if "=" not in a or a.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if rest:
        args.overrides = [*getattr(args, "overrides", []), *rest]
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = args.fn(args)
    except KeyboardInterrupt:
        print("\npeerflow: interrupted; re-run the same command to resume", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
