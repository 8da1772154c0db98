"""The run report: one self-contained HTML file describing an output and its runs.

`peerflow report OUTPUT` writes it on demand, and every run writes `<output>.report.html`
when it ends (`output.report: false` turns that off). The page has no external asset
(inline CSS, SVG plots and a small script), so it opens from disk, from an attachment or
from a dataset card, with no server. It is built from three things beside the output:

- the records themselves, streamed once in constant memory (`aggregate`);
- the summary (`<output>.summary.json`): services, config, fingerprint, the runs;
- the time series the run sampled (`<output>.timeseries.json`, `peerflow.timeseries`).

Only the records are required: without the other two the page says what it lacks.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerflow.report.aggregate import Report, aggregate, output_paths
from peerflow.timeseries import read_timeseries, timeseries_path, write_timeseries

if TYPE_CHECKING:
    from peerflow.config import RunConfig
    from peerflow.timeseries import Sampler

__all__ = [
    "Report",
    "build_report",
    "config_record",
    "output_paths",
    "report_path",
    "timeseries_path",
    "write_run_files",
]

_SECRET = re.compile(
    r"(^|_)(api_?key|secret|password|passwd|authorization|access_token|bearer|token)$", re.I
)


# The report at the end of a run reads every record of the output (about 80 MB/s of JSON
# lines on one core). Past this much, a run ends without it rather than spend minutes; a
# `.zst` file counts as six times its size (what JSON lines typically compress by).
END_OF_RUN_MAX_BYTES = 2 << 30


def report_path(output: Path) -> Path:
    return output.with_name(output.name + ".report.html")


def _text_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size * (6 if p.name.endswith(".zst") else 1) for p in paths)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "***" if _SECRET.search(str(k)) and isinstance(v, str) and v else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def config_record(config: RunConfig) -> dict[str, Any]:
    """The config as the run used it (defaults filled in), for the summary and the report.

    peerflow configs name environment variables rather than hold keys (`api_key_env`), but
    a value under a key that looks like a secret (in `extra_body`, say) is masked anyway:
    the report is meant to be shared.
    """
    return _redact(config.model_dump(mode="json"))


def _summary_for(output: Path, summary_file: Path | None) -> dict[str, Any] | None:
    path = summary_file or output.with_name(output.name + ".summary.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build_report(
    output: str | Path,
    dest: str | Path | None = None,
    *,
    summary: dict[str, Any] | None = None,
    summary_file: str | Path | None = None,
) -> Path:
    """Write the report of `output` to `dest` (default `<output>.report.html`); returns it.

    Raises FileNotFoundError when the output has no records file at all.
    """
    from peerflow.report.page import render

    output = Path(output)
    if not output_paths(output):
        raise FileNotFoundError(f"no output at {output} (nor shards listed for it)")
    if summary is None:
        summary = _summary_for(output, Path(summary_file) if summary_file else None)
    agg = aggregate(output).to_json()
    html = render(agg, summary, read_timeseries(output), output)
    dest = Path(dest) if dest else report_path(output)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, dest)
    return dest


def write_run_files(
    config: RunConfig, summary: dict[str, Any], sampler: Sampler | None
) -> list[Path]:
    """At the end of a run: its time series, then (unless `output.report` is off) the
    report. Returns the files written. Never raises: a report that cannot be written must
    not turn a finished run into a failed one, so the problem is said on stderr instead."""
    from peerflow.progress import console

    written: list[Path] = []
    out = config.resolve(config.output.path)
    try:
        if sampler is not None:
            written.append(
                write_timeseries(
                    out,
                    sampler.to_json(
                        runtime=summary.get("runtime"),
                        outcome=summary.get("outcome"),
                        fingerprint=summary.get("fingerprint"),
                    ),
                )
            )
        paths = output_paths(out) if getattr(config.output, "report", True) else []
        if paths and _text_bytes(paths) > END_OF_RUN_MAX_BYTES:
            console(
                f"the output is too large to read for a report at the end of every run: "
                f"`peerflow report {out}` writes it (it reads every record once)"
            )
        elif paths:
            summary_file = None
            if config.output.summary:
                summary_file = config.resolve(config.output.summary)
            written.append(build_report(out, summary_file=summary_file))
    except Exception as exc:
        console(f"the run report could not be written: {type(exc).__name__}: {exc}")
    return written
