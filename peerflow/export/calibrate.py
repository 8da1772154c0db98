"""`peerflow calibrate`: how hard each generated item is, measured by who can solve it.

Each accepted item (a generated question with its reference answer) is sent to K solver
configurations: different models, or one model at several seeds or temperatures, named
in the config's `export.calibration.solvers`. Their answers are graded against the reference,
and a 1PL or 2PL item response theory model is fitted to the items x solvers matrix
(`peerflow.irt`): an item's difficulty is where on the solvers' ability scale it is
answered correctly half of the time, with a standard error. Unlike "share of solvers
correct", this accounts for which solvers got it right (a question only the strongest
solver answers is harder than one only the weakest misses).

The solving is itself a peerflow run over the items (a `sequence` of one role per solver
configuration), through the config's own services: it is resumable, cached when the
config has a cache, and runs on Ray when the config's runtime does. Its output,
`<output>.calibration.jsonl`, keeps every answer; the difficulties go to
`<output>.difficulty.jsonl` (one line per item) and the fit to
`<output>.difficulty.json`, which the run report and `peerflow export --balance` read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from peerflow.export.records import ExportError, RecordView, read_records
from peerflow.export.writers import write_json

__all__ = ["calibrate", "grade_boxed", "read_calibration_meta"]


def difficulty_path(output: Path) -> Path:
    return output.with_name(output.name + ".difficulty.jsonl")


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".difficulty.json")


def read_calibration_meta(output: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(meta_path(Path(output)).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- grading ------------------------------------------------------------------------------

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def _final(text: str) -> str:
    from peerflow.recipes.natural_reasoning import boxed

    found = boxed(text)
    if found is not None:
        return found
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    m = re.search(r"answer\s*(?:is)?\s*:?\s*(.+)$", last, re.IGNORECASE)
    return m.group(1) if m else last


def _canon(text: str) -> str:
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    text = re.sub(r"[\s$\\{}]", "", text).casefold().rstrip(".")
    return text.replace(",", "") if _NUMBER.match(text.replace(",", "")) else text


def grade_boxed(reply: str, reference: str) -> float:
    """1.0 when the reply's final answer (its last `\\boxed{}`, else its last line) equals the
    reference: as numbers within a relative 1e-6 when both are numbers, else as text with
    spaces, `$`, braces and case ignored."""
    mine, ref = _canon(_final(reply or "")), _canon(str(reference))
    if not mine or not ref:
        return 0.0
    if _NUMBER.match(mine) and _NUMBER.match(ref):
        a, b = float(mine), float(ref)
        return float(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9))
    return float(mine == ref)


def _grader(name: str) -> Callable[[str, str], float]:
    if name == "boxed":
        return grade_boxed
    from peerflow.loading import load_object

    fn = load_object(name, what="export.calibration.grade")
    return fn  # type: ignore[no-any-return]


# --- the solving run ---------------------------------------------------------------------


def solver_roles(cal: Any) -> list[tuple[str, Any, int | None]]:
    """(role name, solver config, seed) for every configuration a solver entry expands to."""
    roles = []
    for n, solver in enumerate(cal.solvers):
        base = solver.name or f"solver{n}"
        if solver.seeds == 1:
            roles.append((base, solver, solver.seed))
        else:
            for k in range(solver.seeds):
                roles.append((f"{base}_s{k}", solver, (solver.seed or 0) + k))
    return roles


def _items(output: Path, config: Any, question: str, answer: str, dest: Path) -> int:
    """Write the items to solve (id, question, answer) for every ok record; returns how many."""
    from peerflow.export import _fields
    from peerflow.report.aggregate import output_paths

    fields = _fields(config)
    for what, name in (("question", question), ("answer", answer)):
        if name not in fields:
            raise ExportError(
                f"export.calibration.{what}: {name!r} is not a field of the config's export.fields "
                f"(fields: {', '.join(fields) or 'none'})"
            )
    n = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as f:
        for record in read_records(output_paths(output)):
            if record.status != "ok":
                continue
            view = RecordView(record, fields)
            q, a = view.get(question), view.get(answer)
            if not q or a is None:
                continue
            f.write(orjson.dumps({"id": record.id, "question": q, "answer": a}) + b"\n")
            n += 1
    tmp.replace(dest)
    return n


def solving_config(config: Any, output: Path, items: Path) -> Any:
    """The run that has every solver configuration answer every item."""
    from peerflow.config import RunConfig

    cal = config.export.calibration
    roles = {}
    for name, solver, seed in solver_roles(cal):
        sampling = dict(solver.sampling)
        if seed is not None:
            sampling["seed"] = seed
        role: dict[str, Any] = {
            "service": solver.service,
            "prompt": cal.prompt,
            "sampling": sampling,
        }
        if cal.system:
            role["system"] = cal.system
        roles[name] = role
    used = {solver.service for solver in cal.solvers}
    unknown = used - set(config.services)
    if unknown:
        raise ExportError(
            "export.calibration.solvers: no service named "
            f"{', '.join(sorted(unknown))} under services"
        )
    data = {
        "name": f"{config.name}-calibration",
        "dataset": {"path": str(items), "id_field": "id"},
        "services": {
            name: svc.model_dump(mode="json")
            for name, svc in config.services.items()
            if name in used
        },
        "roles": roles,
        "workflow": {"kind": "sequence", "roles": list(roles)},
        "runtime": config.runtime.model_dump(mode="json"),
        "output": {"path": str(calibration_output(output)), "report": False},
        "prices": {k: v.model_dump(mode="json") for k, v in config.prices.items()},
    }
    if config.cache is not None:
        data["cache"] = config.cache.model_dump(mode="json")
    solving = RunConfig.model_validate(data)
    solving.base_dir = config.base_dir
    return solving


def calibration_output(output: Path) -> Path:
    return output.with_name(output.name + ".calibration.jsonl")


# --- the fit -----------------------------------------------------------------------------


def responses(
    output: Path, role_names: list[str], grade: Callable[[str, str], float]
) -> tuple[list[str], np.ndarray]:
    """The graded items x solvers matrix from the solving run's records (NaN: no answer)."""
    ids: list[str] = []
    rows: list[list[float]] = []
    index = {name: k for k, name in enumerate(role_names)}
    for record in read_records([calibration_output(output)]):
        row = [math.nan] * len(role_names)
        reference = str((record.row or {}).get("answer", ""))
        for step in record.history:
            k = index.get(step.role)
            if k is not None and step.ok and step.content is not None:
                row[k] = 1.0 if float(grade(step.content, reference)) >= 0.5 else 0.0
        if any(not math.isnan(v) for v in row):
            ids.append(record.id)
            rows.append(row)
    return ids, np.asarray(rows, dtype=float).reshape(len(rows), len(role_names))


def fit_and_write(output: Path, config: Any) -> dict[str, Any]:
    """Fit the IRT model to the graded answers; write the difficulties and the fit."""
    from peerflow import irt

    cal = config.export.calibration
    names = [name for name, _, _ in solver_roles(cal)]
    ids, matrix = responses(output, names, _grader(cal.grade))
    if not ids:
        raise ExportError(
            f"no item was answered by any solver ({calibration_output(output)} has no answers)"
        )
    answered_by = np.sum(~np.isnan(matrix), axis=0)
    silent = [name for name, n in zip(names, answered_by, strict=True) if n == 0]
    if silent:  # a solver whose every call failed says nothing about any item
        keep = answered_by > 0
        names = [name for name, k in zip(names, keep, strict=True) if k]
        matrix = matrix[:, keep]
        rows = ~np.all(np.isnan(matrix), axis=1)
        ids = [item for item, k in zip(ids, rows, strict=True) if k]
        matrix = matrix[rows]
    if len(names) < 2 or not ids:
        raise ExportError(
            f"only {len(names)} solver configuration(s) answered anything "
            f"({', '.join(silent)} answered nothing): a fit needs at least 2"
        )
    try:
        fit = irt.fit(matrix, model=cal.model)
    except ValueError as exc:
        raise ExportError(f"the IRT fit failed: {exc}") from None
    correct = np.nansum(matrix, axis=1)
    answered = np.sum(~np.isnan(matrix), axis=1)
    dest = difficulty_path(output)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as f:
        for i, item in enumerate(ids):
            line: dict[str, Any] = {
                "id": item,
                "difficulty": round(float(fit.difficulty[i]), 4),
                "difficulty_se": round(float(fit.difficulty_se[i]), 4),
                "correct": int(correct[i]),
                "answered": int(answered[i]),
            }
            if cal.model == "2pl":
                line["discrimination"] = round(float(fit.discrimination[i]), 4)
                line["discrimination_se"] = round(float(fit.discrimination_se[i]), 4)
            f.write(orjson.dumps(line) + b"\n")
    tmp.replace(dest)
    meta = {
        "model": cal.model,
        "items": len(ids),
        "solvers": len(names),
        "solver_ability": {
            name: {
                "ability": round(float(a), 4),
                "se": round(float(s), 4),
                "accuracy": round(float(np.nanmean(matrix[:, k])), 4),
            }
            for k, (name, a, s) in enumerate(zip(names, fit.ability, fit.ability_se, strict=True))
        },
        "log_likelihood": float(fit.log_likelihood),
        "converged": bool(fit.converged),
        "grade": cal.grade,
        "difficulty": {
            "mean": float(np.mean(fit.difficulty)),
            "sd": float(np.std(fit.difficulty)),
            "min": float(np.min(fit.difficulty)),
            "max": float(np.max(fit.difficulty)),
            "median_se": float(np.median(fit.difficulty_se)),
        },
        "solvers_without_answers": silent,
        "all_correct": int(np.sum(correct == answered)),
        "none_correct": int(np.sum(correct == 0)),
    }
    write_json(meta_path(output), meta)
    return meta


async def calibrate(output: Path, config: Any, *, progress: bool = True) -> dict[str, Any]:
    """Solve every accepted item with every solver configuration, then fit and write."""
    from peerflow.run import run_async

    cal = config.export.calibration
    if cal is None or not cal.solvers:
        raise ExportError(
            "the config has no `export.calibration` section with solvers "
            "(docs/export.md#difficulty)"
        )
    folder = output.with_name(output.name + ".calibration")
    items = folder / "items.jsonl"
    n = _items(output, config, cal.question, cal.answer, items)
    if n == 0:
        raise ExportError(f"{output} has no accepted record with a question and an answer")
    summary = await run_async(solving_config(config, output, items), progress=progress)
    meta = fit_and_write(output, config)
    meta["solving_run"] = {
        "output": str(calibration_output(output)),
        "by_status": summary.get("output_by_status"),
        "exit_code": summary.get("exit_code"),
    }
    write_json(meta_path(output), meta)
    return meta
