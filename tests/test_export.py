"""`peerflow export`: real runs against a strict OpenAI-like server, exported and read back.

The SFT file is checked by the strict chat validator and loaded with `datasets`; pairs,
filters, splits, shards, balancing and the accounting of every record left out are
checked on outputs written the way runs write them.
"""

from __future__ import annotations

import json
import os
import random
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fake_chat import call

from peerflow.config import RunConfig
from peerflow.export import ExportError, ExportRequest, export
from peerflow.export.chat import common_prefix
from peerflow.export.records import group_of, parse_condition, parse_split, split_of
from peerflow.export.validate import chat_errors
from peerflow.merge import write_manifest
from peerflow.message import Step
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.sink import OutputRecord

SYSTEM = "You are a helpful assistant."


def tool_then_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Calls `add` once, then answers with what the tool said."""
    if body["messages"][-1]["role"] == "tool":
        return {"content": f"The sum is {body['messages'][-1]['content']}."}
    n = int(body["messages"][1]["content"].split()[-1])
    return {"tool_calls": [call("c1", "add", json.dumps({"a": n, "b": 1}))]}


def score_reply(message: Any) -> dict[str, Any]:
    """The judge of the pair tests: the number in the answer is its score."""
    text = message.last("answer").content or ""
    return {"score": int(text.split()[-1])}


def write_rows(tmp: Path, rows: int) -> None:
    with open(tmp / "rows.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "n": i, "q": f"What is {i} plus one?"}) + "\n")


def tools_config(tmp: Path, url: str, rows: int = 6) -> RunConfig:
    write_rows(tmp, rows)
    return RunConfig.model_validate(
        {
            "dataset": {"path": str(tmp / "rows.jsonl"), "id_field": "id"},
            "task": {"message": "add one to {{ n }}"},
            "services": {"llm": {"kind": "openai", "model": "fake", "endpoints": [url]}},
            "roles": {
                "assistant": {"service": "llm", "system": SYSTEM, "tools": "tools"},
                "tools": {"agent": "tools", "functions": ["peerflow.testing:add"]},
            },
            "workflow": {"kind": "sequence", "roles": ["assistant"], "tool_role": "tools"},
            "runtime": {"kind": "local", "progress": False},
            "output": {"path": str(tmp / "out.jsonl"), "report": False},
            "export": {"assistant": ["assistant"], "fields": {"question": "{{ row.q }}"}},
        }
    )


async def test_sft_keeps_tool_calls_passes_the_strict_validator_and_loads_with_datasets(
    tmp_path: Path, fake: Any
) -> None:
    server = await fake(tool_then_answer)
    cfg = tools_config(tmp_path, server.url)
    await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    out = tmp_path / "out.jsonl"
    dest = tmp_path / "sft.jsonl"
    report = export(ExportRequest(output=out, dest=dest, columns=["question"]))
    assert report["written"] == {"train": 6} and report["removed"] == {}
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    for row in rows:
        assert chat_errors(row["messages"], row["tools"]) == []
        roles = [m["role"] for m in row["messages"]]
        # The assistant's own point of view: its system prompt, the task, its call, the
        # tool's result, and its final answer.
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        assert row["messages"][0]["content"] == SYSTEM
        n = int(row["id"][1:])
        assert row["messages"][2]["tool_calls"][0]["function"]["arguments"] == json.dumps(
            {"a": n, "b": 1}
        )
        assert row["messages"][3]["content"] == str(n + 1)
        assert row["messages"][-1]["content"] == f"The sum is {n + 1}."
        assert [t["function"]["name"] for t in row["tools"]] == ["add"]
        assert row["question"] == f"What is {n} plus one?"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(dest), split="train")
    assert len(loaded) == 6
    for row in loaded:  # Arrow gives every message every key; nulls count as absent
        assert chat_errors(row["messages"], row["tools"]) == []

    folder = tmp_path / "hf"
    report = export(ExportRequest(output=out, dest=folder, split="train=0.5,test=0.5", seed=3))
    ds = datasets.load_dataset(str(folder))
    assert sum(len(ds[s]) for s in ds) == 6 and set(ds) <= {"train", "test"}
    for split in ds:
        for row in ds[split]:
            assert chat_errors(row["messages"], json.loads(row["tools"])) == []
    card = (folder / "README.md").read_text()
    assert "split: train" in card and "Config fingerprint" in card
    assert "SIMULATED" not in card  # a real (fake) server, not the simulator


async def test_a_record_is_written_or_left_out_with_its_reason(tmp_path: Path, fake: Any) -> None:
    server = await fake(tool_then_answer)
    cfg = tools_config(tmp_path, server.url, rows=8)
    await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    out = tmp_path / "out.jsonl"
    with open(out, "ab") as f:  # a failed record, as a run writes one, and a damaged line
        rec = OutputRecord(id="bad", status="error", row={}, error={"stage": "input"})
        f.write(msgspec.json.encode(rec) + b"\n")
        f.write(b'{"id": "torn", "status": \n')
    dest = tmp_path / "kept.parquet"
    report = export(ExportRequest(output=out, dest=dest, where=["row.n >= 3"]))
    assert report["records_read"] == 9
    assert report["written"] == {"train": 5}
    assert report["removed"] == {
        "status error": 1,
        "filter: row.n >= 3": 3,
        "unreadable record": 1,
    }
    removed = [json.loads(x) for x in Path(report["removed_list"]).read_text().splitlines()]
    assert sorted(r["id"] for r in removed) == ["bad", "out.jsonl:10", "r0", "r1", "r2"]
    import pyarrow.parquet as pq

    table = pq.read_table(dest)
    assert table.num_rows == 5 and "messages" in table.column_names


def test_typos_in_paths_and_options_are_errors_naming_them(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_records(out, [record(f"r{i}") for i in range(3)])
    with pytest.raises(ExportError, match="--where nope"):
        export(ExportRequest(output=out, dest=tmp_path / "x.jsonl", shape="records",
                             where=["nope.x > 1"]))  # fmt: skip
    with pytest.raises(ExportError, match=r"add up to 1\.1"):
        export(ExportRequest(output=out, dest=tmp_path / "x.jsonl", shape="records",
                             split="0.6,0.5"))  # fmt: skip
    with pytest.raises(ExportError, match="config"):
        export(ExportRequest(output=out, dest=tmp_path / "x.jsonl"))  # sft needs the config
    with pytest.raises(ExportError, match="no output"):
        export(ExportRequest(output=tmp_path / "none.jsonl", dest=tmp_path / "x.jsonl"))
    with pytest.raises(ExportError, match="calibrate"):
        export(ExportRequest(output=out, dest=tmp_path / "x.jsonl", shape="records", balance=3))


def judge_config(tmp: Path, url: str, rows: int) -> RunConfig:
    write_rows(tmp, rows)
    return RunConfig.model_validate(
        {
            "dataset": {"path": str(tmp / "rows.jsonl"), "id_field": "id"},
            "task": {"message": "{{ q }}", "trials": 3},
            "services": {"llm": {"kind": "openai", "model": "fake", "endpoints": [url]}},
            "roles": {
                "answer": {"service": "llm", "system": SYSTEM},
                "judge": {"agent": "function", "function": "test_export:score_reply"},
            },
            "workflow": {"kind": "sequence", "roles": ["answer", "judge"]},
            "runtime": {"kind": "local", "progress": False},
            "output": {"path": str(tmp / "out.jsonl"), "report": False},
            "export": {"assistant": ["answer"], "score": "judge.score"},
        }
    )


async def test_preference_pairs_take_the_best_and_worst_trial_of_each_row(
    tmp_path: Path, fake: Any
) -> None:
    def seeded(body: dict[str, Any]) -> dict[str, Any]:
        return {"content": f"My answer is {body['seed'] % 7}"}

    server = await fake(seeded)
    cfg = judge_config(tmp_path, server.url, rows=10)
    await run_async(cfg, pipeline=Pipeline(cfg), progress=False)
    out = tmp_path / "out.jsonl"
    records = [json.loads(x) for x in out.read_text().splitlines()]
    scores: dict[str, list[int]] = {}
    for r in records:
        scores.setdefault(group_of(r["id"]), []).append(r["history"][-1]["data"]["score"])
    dest = tmp_path / "pairs.jsonl"
    report = export(ExportRequest(output=out, dest=dest, shape="dpo"))
    assert "highest `judge.score`" in report["pairing"]
    pairs = [json.loads(x) for x in dest.read_text().splitlines()]
    expected = {g for g, s in scores.items() if max(s) > min(s)}
    assert {p["id"] for p in pairs} == expected
    for p in pairs:
        assert p["score_chosen"] == max(scores[p["id"]])
        assert p["score_rejected"] == min(scores[p["id"]])
        assert [m["role"] for m in p["prompt"]] == ["system", "user"]
        best = int(p["score_chosen"])
        assert p["chosen"] == [{"role": "assistant", "content": f"My answer is {best}"}]
        assert p["rejected"][0]["content"].endswith(str(int(p["score_rejected"])))
        assert group_of(p["id_chosen"]) == group_of(p["id_rejected"]) == p["id"]
    # Every record is in a pair or left out with its reason: rows whose trials all scored
    # the same make no pair; a row's middle trial is neither chosen nor rejected.
    removed = report["removed"]
    same = sum(len(s) for g, s in scores.items() if g not in expected)
    assert removed.get("no pair (one trial, or scores too close)", 0) == same
    assert sum(removed.values()) + 2 * len(pairs) == len(records)


def test_common_prefix_ends_where_both_continue_with_the_assistant() -> None:
    s, u = {"role": "system", "content": "s"}, {"role": "user", "content": "q"}
    a1, a2 = {"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}
    assert common_prefix([s, u, a1], [s, u, a2]) == 2
    u2, u3 = {"role": "user", "content": "more"}, {"role": "user", "content": "other"}
    # They diverge at a user turn: the pair's prompt ends before the last shared answer.
    assert common_prefix([s, u, a1, u2, a1], [s, u, a1, u3, a2]) == 2
    assert common_prefix([u, a1], [u2, a1]) == 0


# --- records written directly: splits, shards, memory, dedup, balance -----------------


def record(rid: str, status: str = "ok", **kw: Any) -> OutputRecord:
    return OutputRecord(id=rid, status=status, row=kw.pop("row", {"i": rid}), **kw)


def write_records(path: Path, records: list[OutputRecord]) -> None:
    with open(path, "wb") as f:
        for rec in records:
            f.write(msgspec.json.encode(rec) + b"\n")


def test_split_is_seeded_by_input_row_and_keeps_trials_together() -> None:
    fractions = parse_split("train=0.8,validation=0.1,test=0.1")
    ids = [f"row{i}#{t}" for i in range(3000) for t in range(2)]
    first = [split_of(i, fractions, 7) for i in ids]
    assert first == [split_of(i, fractions, 7) for i in ids]  # the same on every call
    assert all(first[2 * i] == first[2 * i + 1] for i in range(3000))  # trials together
    counts = Counter(first[::2])
    assert 0.77 < counts["train"] / 3000 < 0.83 and 0.08 < counts["test"] / 3000 < 0.12
    other = [split_of(i, fractions, 8) for i in ids[::2]]
    assert other != first[::2]  # another seed, another split
    assert parse_split("0.9,0.1") == [("train", 0.9), ("validation", 0.1)]


def test_conditions() -> None:
    assert parse_condition("metrics.reward >= 0.5").value == 0.5
    assert parse_condition("reason in [a, b]").value == ["a", "b"]
    assert parse_condition("status=ok").op == "=="
    with pytest.raises(ExportError, match="PATH OP VALUE"):
        parse_condition("reward is high")


def test_shards_are_read_and_memory_stays_flat(tmp_path: Path) -> None:
    """A sharded output (a Ray run not merged yet) exports whole, and a 5x larger output
    takes no more memory (both beyond one batch per split): records stream through."""
    text = "lorem ipsum " * 40

    def make(n: int, name: str) -> Path:
        out = tmp_path / f"{name}.jsonl"
        shards = [tmp_path / f"{name}.shard{k}.jsonl" for k in range(3)]
        for k, shard in enumerate(shards):
            write_records(
                shard,
                [
                    record(f"{k}-{i}", history=[Step(role="a", content=text)], metrics={"m": i})
                    for i in range(n // 3)
                ],
            )
        write_manifest(out, shards)
        return out

    peaks = []
    for n, name in ((6000, "small"), (30000, "large")):
        out = make(n, name)
        tracemalloc.start()
        report = export(ExportRequest(output=out, dest=tmp_path / f"{name}.parquet",
                                      shape="records", split="0.5,0.5"))  # fmt: skip
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert sum(report["written"].values()) == n and report["records_read"] == n
    assert peaks[1] < 2 * peaks[0], peaks


def test_dedup_keeps_the_first_and_names_what_each_removed_row_duplicated(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    questions = [
        "A train leaves the station at 3 pm travelling at 60 km/h. How far has it gone by 5 pm?",
        "A train leaves the station at 3pm, travelling at 60 km/h: how far has it gone by 5 pm?",
        "What is the capital city of the country that borders both France and Spain?",
        "A train leaves the station at 3 pm travelling at 60 km/h. How far has it gone by 5 pm?",
        "Explain why the sky appears blue during the day but red at sunset.",
    ]
    write_records(out, [record(f"q{i}", row={"q": q}) for i, q in enumerate(questions)])
    dest = tmp_path / "dedup.jsonl"
    report = export(ExportRequest(output=out, dest=dest, shape="records", dedup="row.q"))
    kept = [json.loads(x)["id"] for x in dest.read_text().splitlines()]
    assert kept == ["q0", "q2", "q4"]
    removed = {
        r["id"]: r for r in map(json.loads, Path(report["removed_list"]).read_text().splitlines())
    }
    assert removed["q3"]["of"] == "q0" and removed["q3"]["reason"] == "duplicate (exact)"
    assert removed["q1"]["of"] == "q0" and removed["q1"]["reason"] == "duplicate (near)"
    assert removed["q1"]["similarity"] >= report["dedup"]["threshold"]


def test_balance_caps_every_difficulty_bin(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rng = random.Random(1)
    n = 600
    write_records(out, [record(f"r{i}") for i in range(n)])
    # Skewed: most items easy, a few hard.
    values = [rng.gauss(-1.0, 0.6) if i % 6 else rng.gauss(1.5, 0.5) for i in range(n)]
    with open(out.with_name(out.name + ".difficulty.jsonl"), "w") as f:
        for i, d in enumerate(values):
            f.write(json.dumps({"id": f"r{i}", "difficulty": d, "difficulty_se": 0.3}) + "\n")
    dest = tmp_path / "bal.jsonl"
    report = export(ExportRequest(output=out, dest=dest, shape="records", balance=4, per_bin=40))
    bins = report["difficulty"]["bins"]
    assert len(bins) == 4
    assert all(b["rows"] == min(40, b["before"]) for b in bins)
    kept = [json.loads(x) for x in dest.read_text().splitlines()]
    assert len(kept) == sum(b["rows"] for b in bins)
    assert sum(report["removed"].values()) == n - len(kept)
    again = export(ExportRequest(output=out, dest=tmp_path / "b2.jsonl", shape="records",
                                 balance=4, per_bin=40))  # fmt: skip
    assert again["difficulty"]["bins"] == bins  # seeded: the same rows each time
