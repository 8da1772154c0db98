"""The `language` agent: fastText identification from the wheel, offline, as a funnel step."""

from __future__ import annotations

import json
from pathlib import Path

from peerflow.agents.language import LanguageAgent, LanguageOptions, identify
from peerflow.config import RunConfig
from peerflow.message import new_message
from peerflow.pipeline import Pipeline
from peerflow.run import run_async

TEXTS = {
    "en": "The train leaves at eight, so we computed the average speed from the distance "
    "travelled and the time it took, which gives sixty kilometres per hour.",
    "de": "Der Zug fährt um acht Uhr ab, deshalb haben wir die Durchschnittsgeschwindigkeit "
    "aus der Strecke und der Fahrzeit berechnet.",
    "fr": "Le train part à huit heures, nous avons donc calculé la vitesse moyenne à partir "
    "de la distance parcourue et du temps écoulé.",
    "es": "El tren sale a las ocho, así que calculamos la velocidad media a partir de la "
    "distancia recorrida y del tiempo empleado.",
    "zh": "火车八点出发,所以我们根据行驶的距离和所用的时间计算了平均速度。",
}


def test_identify_names_each_language() -> None:
    for lang, text in TEXTS.items():
        assert identify(text)[0][0] == lang, (lang, identify(text))


def test_rejects_below_threshold_and_keeps_the_scores() -> None:
    agent = LanguageAgent("lang", LanguageOptions(threshold=0.8, reason="filter_by_en"), {})
    for lang, text in TEXTS.items():
        step = agent.run_inline(new_message(lang, {"text": text}, {"text": text}))
        assert step.ok and step.data is not None
        assert step.data["lang"] == lang
        if lang == "en":
            assert step.data["score"] >= 0.8 and "reject" not in step.data
        else:
            assert step.data["score"] < 0.1 and step.data["reject"] == "filter_by_en"
    two = LanguageAgent("lang", LanguageOptions(languages=["en", "de"], threshold=0.5), {})
    step = two.run_inline(new_message("de", {}, {"text": TEXTS["de"]}))
    assert step.data is not None and "reject" not in step.data


def test_a_missing_or_non_text_field_fails_naming_it() -> None:
    agent = LanguageAgent("lang", LanguageOptions(field="body"), {})
    step = agent.run_inline(new_message("x", {"text": "hello"}, {"text": "hello"}))
    assert not step.ok and "no field 'body'" in (step.error or "")
    step = agent.run_inline(new_message("x", {"body": 3}, {"body": 3}))
    assert not step.ok and "field 'body' is int, not text" in (step.error or "")


async def test_a_run_filters_languages_without_any_service(tmp_path: Path) -> None:
    rows = tmp_path / "docs.jsonl"
    rows.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TEXTS.items()))
    cfg = RunConfig.model_validate(
        {
            "dataset": {"path": str(rows), "id_field": "id"},
            "roles": {"lang": {"agent": "language", "reason": "filter_by_en"}},
            "workflow": {"kind": "sequence", "roles": ["lang"]},
            "runtime": {"progress": False},
            "output": {"path": str(tmp_path / "out.jsonl")},
        }
    )
    summary = await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    assert summary["by_status"] == {"ok": 1, "rejected": 4}
    step = summary["funnel"]["steps"][0]
    assert step["reasons"]["filter_by_en"]["rows"] == 4 and step["passed"] == 1
