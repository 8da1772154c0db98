"""The dataset card (`README.md`) of an exported `datasets` folder, written from the run.

A synthetic dataset is only as trustworthy as what is known about how it was made, and a
card written by hand drifts from the data. Everything here comes from the output's summary
and the export itself: the models behind each service (and SIMULATED, prominently, when a
simulator wrote the replies, since those are not model outputs and must never be trained
on as such), the config and its fingerprint, the counts of the output and of the export,
the funnel of the workflow, what the export removed and why, and the difficulty spread
when the items were calibrated.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dataset_card"]


def _yaml_header(splits: dict[str, list[str]], shape: str, rows: int) -> str:
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    size = (
        "n<1K"
        if rows < 1_000
        else "1K<n<10K"
        if rows < 10_000
        else "10K<n<100K"
        if rows < 100_000
        else "100K<n<1M"
        if rows < 1_000_000
        else "n>1M"
    )
    task = "text-generation"
    lines += [
        "tags:",
        "- synthetic",
        "- peerflow",
        f"- {shape}",
        "task_categories:",
        f"- {task}",
        "size_categories:",
        f"- {size}",
        "---",
    ]
    return "\n".join(lines)


def _simulated(summary: dict[str, Any]) -> list[str]:
    return [name for name, label in (summary.get("services") or {}).items() if "SIMULATED" in label]


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def dataset_card(
    *,
    name: str,
    shape: str,
    summary: dict[str, Any] | None,
    export: dict[str, Any],
    splits: dict[str, list[str]],
    command: str,
) -> str:
    """The card's Markdown, with the YAML header `datasets` and the Hub read splits from."""
    summary = summary or {}
    counts = export["written"]
    rows = sum(counts.values())
    parts = [_yaml_header(splits, shape, rows), f"# {name}", ""]
    simulated = _simulated(summary)
    if simulated:
        parts += [
            f"> **SIMULATED.** The replies of {', '.join(simulated)} came from peerflow's "
            "LLM simulator, a timing instrument: they are filler or scripted text, not model "
            "output. Do not train on this dataset; it shows the format only.",
            "",
        ]
    what = {
        "sft": "chat conversations in the OpenAI `messages` format (supervised fine-tuning)",
        "dpo": "preference pairs (`prompt`, `chosen`, `rejected`), for DPO and similar",
        "records": "peerflow's records, one row per task, flattened",
    }[shape]
    parts += [
        f"Synthetic data generated with peerflow {summary.get('peerflow') or ''}: {what}.",
        "",
        "## Splits",
        "",
        _table([(s, f"{counts.get(s, 0):,}") for s in splits], ("split", "rows")),
        "",
        "## How it was made",
        "",
    ]
    services = summary.get("services") or {}
    if services:
        parts += [_table(sorted(services.items()), ("service", "model")), ""]
    config = summary.get("config") or {}
    if config.get("workflow"):
        parts += [f"Workflow: `{config['workflow'].get('kind', '?')}`; roles: "
                  + ", ".join(f"`{r}`" for r in (config.get("roles") or {})) + "."]  # fmt: skip
    if summary.get("fingerprint"):
        parts += [f"Config fingerprint: `{summary['fingerprint']}`."]
    combined = summary.get("combined") or {}
    by_status = combined.get("by_status") or summary.get("output_by_status") or {}
    if by_status:
        parts += [
            "",
            "Records in the output: "
            + ", ".join(f"{n:,} {s}" for s, n in sorted(by_status.items()))
            + ".",
        ]
    funnel = summary.get("funnel") or {}
    if funnel.get("steps"):
        parts += [
            "",
            "### The workflow's funnel",
            "",
            _table(
                [
                    (s["role"], s["reached"], s["rejected"], s["failed"], s["passed"])
                    for s in funnel["steps"]
                ],
                ("role", "reached", "rejected", "failed", "passed"),
            ),
        ]
    parts += ["", "## The export", "", f"```\n{command}\n```", ""]
    removed = export.get("removed") or {}
    if removed:
        parts += [
            "Rows left out, by reason:",
            "",
            _table(sorted(removed.items(), key=lambda kv: -kv[1]), ("reason", "rows")),
            "",
        ]
    if export.get("pairing"):
        parts += [f"Pairing rule: {export['pairing']}", ""]
    difficulty = export.get("difficulty")
    if difficulty:
        parts += [
            "## Difficulty",
            "",
            f"Item difficulty was calibrated with a {difficulty.get('model', '?').upper()} IRT "
            f"model over {difficulty.get('solvers', '?')} solver configurations "
            "(`peerflow calibrate`).",
            "",
        ]
        if difficulty.get("bins"):
            parts += [
                _table(
                    [(b["range"], b["rows"]) for b in difficulty["bins"]],
                    ("difficulty", "rows"),
                ),
                "",
            ]
    parts += [
        "## Using it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("path/to/this/folder")',
        "```",
        "",
        "Publish it (needs a Hugging Face token): "
        "`huggingface-cli upload USER/NAME path/to/this/folder --repo-type dataset`.",
        "",
    ]
    if config:
        text = json.dumps(config, indent=2)
        parts += ["## The config", "", "<details><summary>config</summary>", "",
                  "```json", text, "```", "", "</details>", ""]  # fmt: skip
    return "\n".join(parts)
