"""The documentation site: it builds cleanly, its generated reference covers every key, the
JSON Schema accepts the shipped configs and rejects typos, and every tutorial runs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from peerflow import schema
from peerflow.services.sim_llm import rules_shape

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"
# Run configs, not the simulator rules files beside them.
SHIPPED_CONFIGS = sorted(
    p
    for p in [*(ROOT / "examples").glob("**/*.yaml"), *TUTORIALS.glob("*/config.yaml")]
    if rules_shape(yaml.safe_load(p.read_text())) is None
)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def peerflow(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """The CLI as a user runs it, from a folder that is not the tutorial's own."""
    return subprocess.run(
        [sys.executable, "-m", "peerflow.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- the site ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert not warnings, "\n".join(warnings)
    return out


def test_site_builds_strict_with_every_page(site: Path) -> None:
    nav = yaml.safe_load(re.sub(r"!!python/name:\S+", "null", (ROOT / "mkdocs.yml").read_text()))[
        "nav"
    ]

    def pages(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for item in node for p in pages(item)]
        return [p for value in node.values() for p in pages(value)]

    for page in pages(nav):
        built = site / page.removesuffix(".md").removesuffix("index").strip("/") / "index.html"
        if page == "index.md":
            built = site / "index.html"
        assert built.exists(), f"{page} was not built"
    concepts = (site / "concepts" / "index.html").read_text()
    assert concepts.count('class="mermaid"') >= 4  # the pictures are rendered diagrams


def test_generated_reference_lists_every_key_of_the_config(site: Path) -> None:
    html = (site / "reference" / "config" / "index.html").read_text()
    assert "peerflow:config-reference" not in html  # the hook replaced its marker
    for model in schema._reference_models():
        for name, _ in schema.fields(model):
            assert f"<code>{name}</code>" in html, f"{model.__name__}.{name} missing"
    # Tutorials include their tested files verbatim.
    page = (site / "tutorials" / "custom-agent" / "index.html").read_text()
    assert "BriefAnswerer" in page and "check_length" in page


def test_every_documented_key_has_a_description() -> None:
    missing = schema.missing_descriptions()
    assert not missing, (
        "add Field(description=...) (or an entry in peerflow.schema.DESCRIPTIONS) for: "
        + ", ".join(missing)
    )


def test_reference_shows_types_defaults_and_required_keys() -> None:
    text = schema.reference_markdown()
    assert "| `max_in_flight` | integer (≥ 1) | `256` |" in text
    assert "| `path` | string | **required** |" in text
    assert "[FieldSpec](#dataset-field)" in text
    for kind in ("openai", "local_model", "sim"):
        assert f"{{#service-{kind}}}" in text
    for kind in ("sequence", "loop", "graph", "custom"):
        assert f"{{#workflow-{kind}}}" in text


# --- the JSON Schema -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    document = schema.json_schema()
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_schema_accepts_the_shipped_configs(validator: Any, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors, errors


@pytest.mark.parametrize(
    "where",
    [(), ("runtime",), ("roles", "teacher"), ("roles", "matcher"), ("services", "llm", "options")],
)
def test_schema_rejects_an_unknown_key(validator: Any, where: tuple[str, ...]) -> None:
    data = yaml.safe_load((ROOT / "examples" / "coral" / "coral_sim.yaml").read_text())
    node = data
    for key in where:
        node = node[key]
    node["temprature"] = 0.5
    assert list(validator.iter_errors(data)), f"a typo under {where} was accepted"


def test_schema_lets_a_custom_agent_have_its_own_keys(validator: Any) -> None:
    data = yaml.safe_load((TUTORIALS / "custom_agent" / "config.yaml").read_text())
    assert data["roles"]["answerer"]["agent"] == "brief:BriefAnswerer"
    assert not list(validator.iter_errors(data))
    data["roles"]["answerer"]["workers"] = "many"  # the common role keys are still typed
    assert list(validator.iter_errors(data))


def test_schema_command_prints_and_writes_the_schema(tmp_path: Path) -> None:
    proc = peerflow("schema", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["$schema"].startswith("https://json-schema.org/")
    assert set(printed["properties"]) >= {"dataset", "roles", "workflow", "output"}
    proc = peerflow("schema", "-o", "s.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "s.json").read_text()) == printed


# --- the tutorials, run as a newcomer runs them --------------------------------------------

ROWS = {"custom_agent": 5, "custom_workflow": 4, "debate": 3, "ray": 6, "tools": 3}


def run_tutorial(name: str, tmp_path: Path, *overrides: str) -> list[dict[str, Any]]:
    config = TUTORIALS / name / "config.yaml"
    out = tmp_path / f"{name}.jsonl"
    check = peerflow("check", str(config), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    proc = peerflow(
        "run", str(config), f"output.path={out}", "--no-progress", *overrides, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = records(out)
    assert len(recs) == ROWS[name] and all(r["status"] == "ok" for r in recs)
    return recs


def test_tutorial_custom_agent(tmp_path: Path) -> None:
    for rec in run_tutorial("custom_agent", tmp_path):
        answer, check = rec["history"]
        assert answer["role"] == "answerer" and len(answer["content"].split()) <= 12
        assert answer["data"]["words"] <= 12 and answer["usage"]["completion_tokens"] > 0
        assert answer["sampling"] == {"temperature": 0.7, "max_tokens": 24}
        assert check == {**check, "role": "checker", "data": {"within_limit": True}}
        assert rec["metrics"]["words"] == answer["data"]["words"]


def test_tutorial_custom_agent_rejects_a_mistyped_option(tmp_path: Path) -> None:
    config = TUTORIALS / "custom_agent" / "config.yaml"
    proc = peerflow("check", str(config), "roles.answerer.wrods=12", cwd=tmp_path)
    assert proc.returncode == 2
    assert "wrods" in proc.stderr and "Traceback" not in proc.stderr


def test_tutorial_custom_workflow(tmp_path: Path) -> None:
    for rec in run_tutorial("custom_workflow", tmp_path):
        roles = [s["role"] for s in rec["history"]]
        rounds = roles.count("writer")
        assert roles == ["task"] + ["writer", "editor"] * rounds and 1 <= rounds <= 3
        last = rec["history"][-1]["data"]
        assert rec["reason"] == ("approved" if last["approved"] else "rounds")
        assert rec["reason"] == "approved" or rounds == 3
        assert rec["metrics"]["rounds"] == rounds


def test_tutorial_debate(tmp_path: Path) -> None:
    recs = {r["id"]: r for r in run_tutorial("debate", tmp_path)}
    for rec in recs.values():
        roles = [s["role"] for s in rec["history"]]
        judged = roles.count("judge")
        assert roles == ["task"] + ["alice", "bob", "carol", "judge"] * judged
        verdict = rec["history"][-1]["data"]
        assert verdict["round"] == judged
        if rec["id"] == "m3":  # the rules file keeps this one undecided: edge out_of_rounds
            assert judged == 3 and verdict["winner"] is None
        else:  # the judge names a winner in round 2: edge decided
            assert judged == 2 and verdict["winner"] == "bob"
        assert rec["metrics"]["decided"] == (rec["id"] != "m3")
    # Scripted replies report their true token count, not max_tokens.
    verdict_step = recs["m1"]["history"][-1]
    assert verdict_step["usage"]["completion_tokens"] == -(-len(verdict_step["content"]) // 4)


def test_tutorial_debate_judge_sees_each_turn_labelled(tmp_path: Path) -> None:
    """The view: every debater's turn is its own user message, named and prefixed."""
    import msgspec

    from peerflow.config import load_config
    from peerflow.message import Message
    from peerflow.pipeline import Pipeline
    from peerflow.testing import strict_chat_errors

    rec = next(r for r in run_tutorial("debate", tmp_path) if r["id"] == "m1")
    config = load_config(TUTORIALS / "debate" / "config.yaml")
    cls, options = Pipeline(config, open_data=False).agent_specs["judge"]
    agent = cls("judge", options, {"llm": None})
    task = {"id": rec["id"], "row": rec["row"], "vars": rec["row"], "history": rec["history"][:-1]}
    chat = agent.chat(msgspec.convert(task, Message))
    assert not strict_chat_errors({"messages": chat})
    assert [m["role"] for m in chat] == [
        "system",
        "user",
        *["user"] * 3,
        "assistant",
        *["user"] * 3,
    ]
    assert [m.get("name") for m in chat[2:5]] == ["alice", "bob", "carol"]
    assert chat[2]["content"].startswith("alice: Alice, turn 0:")
    assert chat[5]["content"].startswith("CONTINUE")  # its own verdict of round 1


def check_tool_exchange(rec: dict[str, Any]) -> None:
    """Every call of the assistant has exactly one result, with its id, in the next step."""
    history = rec["history"]
    assert [s["role"] for s in history] == ["task", "assistant", "tools", "assistant"]
    _, ask, ran, answer = history
    calls = ask["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["calculator", "lookup"]  # in parallel
    assert ask["finish_reason"] == "tool_calls" and ask["usage"]["completion_tokens"] > 0
    results = ran["tool_results"]
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls]
    assert len({c["id"] for c in calls}) == 2
    by_name = {r["name"]: r for r in results}
    assert ran["data"] == {"tool_errors": sum(r["is_error"] for r in results)}
    expression = json.loads(calls[0]["function"]["arguments"])["expression"]
    assert expression == rec["row"]["expression"]
    assert not by_name["calculator"]["is_error"]
    assert float(by_name["calculator"]["content"]) == eval(expression)
    assert answer["content"].startswith("ANSWER:") and "tool_calls" not in answer
    assert rec["reason"] == "until"  # the custom stop condition ended it
    if rec["id"] == "q3":  # an unknown fact: the error went back to the model as a result
        assert by_name["lookup"]["is_error"] and "KeyError" in by_name["lookup"]["content"]
        assert "could not find" in answer["content"]
    else:
        assert not by_name["lookup"]["is_error"]
        assert by_name["lookup"]["content"] in answer["content"]


def test_tutorial_tools(tmp_path: Path) -> None:
    recs = run_tutorial("tools", tmp_path)  # every row ok: the strict simulator sent no 400
    for rec in recs:
        check_tool_exchange(rec)
    assert {r["id"] for r in recs} == {"q1", "q2", "q3"}
    # The run summary counts the calls run and those that failed (q3's lookup).
    summary = json.loads((tmp_path / "tools.jsonl.summary.json").read_text())
    assert summary["tool_calls"] == 6 and summary["tool_errors"] == 1
    assert summary["roles"]["tools"]["tool_calls"] == 6
    assert summary["roles"]["tools"]["tool_errors"] == 1
    assert "tool_calls" not in summary["roles"]["assistant"]
    assert any("SIMULATED" in label for label in summary["services"].values())


def test_run_stats_count_tool_calls_and_errors() -> None:
    from peerflow.message import Message, Step
    from peerflow.stats import RunStats

    def result(n: int, error: bool) -> dict[str, Any]:
        return {"tool_call_id": f"c{n}", "name": "f", "content": "x", "is_error": error}

    stats = RunStats()
    for errors in (0, 2):
        results = [result(n, n < errors) for n in range(3)]
        stats.observe(
            Message(
                id=f"t{errors}",
                row={},
                status="ok",
                history=[
                    Step(role="task", content="go"),
                    Step(role="llm", tool_calls=[{"id": "c0"}, {"id": "c1"}, {"id": "c2"}]),
                    Step(role="tools", tool_results=results, data={"tool_errors": errors}),
                    Step(role="solo", tool_call_id="c9", content="ERROR", data={"tool_errors": 1}),
                ],
            ),
            None,
        )
    summary = stats.summary()
    assert summary["tool_calls"] == 8 and summary["tool_errors"] == 4
    assert (summary["roles"]["tools"]["tool_calls"], summary["roles"]["tools"]["tool_errors"]) == (
        6,
        2,
    )
    assert summary["roles"]["solo"]["tool_errors"] == 2
    assert "tool_calls" not in summary["roles"]["llm"]


def test_tutorial_tools_requests_pass_strict_validation(tmp_path: Path) -> None:
    """The assistant's follow-up request, rebuilt from a record, is one a strict server takes."""
    import msgspec

    from peerflow.config import load_config
    from peerflow.message import Message
    from peerflow.pipeline import Pipeline
    from peerflow.testing import strict_chat_errors

    rec = run_tutorial("tools", tmp_path)[0]
    config = load_config(TUTORIALS / "tools" / "config.yaml")
    cls, options = Pipeline(config, open_data=False).agent_specs["assistant"]
    agent = cls("assistant", options, {"llm": None})
    task = {"id": rec["id"], "row": rec["row"], "vars": rec["row"], "history": rec["history"][:3]}
    message = msgspec.convert(task, Message)
    request = {"messages": agent.chat(message), "tools": options.tools}
    assert not strict_chat_errors(request), strict_chat_errors(request)
    assert [m["role"] for m in request["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
    ]


@pytest.mark.slow
def test_tutorial_tools_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    recs = run_tutorial("tools", tmp_path, "runtime.kind=ray", "runtime.num_cpus=2")
    for rec in recs:
        check_tool_exchange(rec)


@pytest.mark.slow
def test_tutorial_local_to_ray_gives_the_same_records(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    contents = {}
    for kind in ("local", "ray"):
        out = tmp_path / kind
        out.mkdir()
        recs = run_tutorial("ray", out, f"runtime.kind={kind}", "runtime.num_cpus=2")
        contents[kind] = {
            r["id"]: [(s["role"], s.get("content"), s.get("data")) for s in r["history"]]
            for r in recs
        }
        assert all(r["metrics"]["score"] >= 0 for r in recs)
    assert contents["local"] == contents["ray"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tutorial_openai_server_against_a_separate_simulator(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "peerflow.cli", "sim-llm", "--port", str(port), "--time-scale", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once it listens
        assert f":{port}/v1" in line, line
        config = TUTORIALS / "openai_server" / "config.yaml"
        endpoint = f"services.llm.endpoints=[http://127.0.0.1:{port}/v1]"
        out = tmp_path / "o.jsonl"
        env = {"OPENAI_API_KEY": "sk-tutorial"}
        proc = peerflow(
            "run",
            str(config),
            endpoint,
            f"output.path={out}",
            "--no-progress",
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        recs = records(out)
        assert len(recs) == 3 and all(r["status"] == "ok" for r in recs)
        step = recs[0]["history"][-1]
        assert step["role"] == "assistant" and step["content"]
        # The service's and the role's extra_body were sent, and recorded as provenance.
        assert step["sampling"]["top_k"] == 20 and step["sampling"]["repetition_penalty"] == 1.05
        assert "sk-tutorial" not in out.read_text()  # the key is never recorded
        # Without the key's variable, the run refuses to start and says which variable.
        env_without = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        proc = subprocess.run(
            [sys.executable, "-m", "peerflow.cli", "run", str(config), endpoint,
             f"output.path={tmp_path / 'p.jsonl'}", "--no-progress"],
            cwd=tmp_path, env=env_without, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode != 0 and "OPENAI_API_KEY" in proc.stderr
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            time.sleep(0.1)


def test_sim_rules_file_is_found_beside_the_config(tmp_path: Path) -> None:
    """A relative `script:` is the config folder's file, whatever the current folder."""
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (home / "rows.jsonl").write_text('{"id": "a", "q": "hi"}\n')
    (home / "rules.yaml").write_text('- when: {user: "hi"}\n  reply: "HELLO from the rules"\n')
    config = {
        "name": "rules-path",
        "dataset": {"path": "rows.jsonl", "id_field": "id"},
        "task": {"message": "{{ q }}"},
        "services": {"llm": {"kind": "sim", "options": {"script": "rules.yaml", "time_scale": 0}}},
        "roles": {"bot": {"service": "llm"}},
        "workflow": {"kind": "sequence", "roles": ["bot"]},
        "output": {"path": "out.jsonl"},
    }
    (home / "config.yaml").write_text(yaml.safe_dump(config))
    proc = peerflow("run", str(home / "config.yaml"), "--no-progress", cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = records(home / "out.jsonl")
    assert rec["history"][-1]["content"] == "HELLO from the rules"
    # A rules file that is in neither folder is a config error naming the key.
    (home / "rules.yaml").unlink()
    proc = peerflow("check", str(home / "config.yaml"), cwd=elsewhere)
    assert proc.returncode == 2 and "services.llm.options" in proc.stderr
    assert "rules.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_tutorial_funnel(tmp_path: Path) -> None:
    config = TUTORIALS / "funnel" / "config.yaml"
    assert peerflow("check", str(config), cwd=tmp_path).returncode == 0
    out = tmp_path / "reviews.jsonl"
    proc = peerflow("run", str(config), f"output.path={out}", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "- not_english" in proc.stdout and "accepted       3" in proc.stdout
    accepted = {r["id"]: r for r in records(out)}
    rejected = {r["id"]: r for r in records(tmp_path / "reviews.rejected.jsonl")}
    assert set(accepted) == {"r1", "r2", "r5"}
    assert {k: (r["reason"], r["rejection"]["role"]) for k, r in rejected.items()} == {
        "r3": ("not_english", "language"),
        "r4": ("not_a_review", "extractor"),
        "r6": ("no_valid_json", "extractor"),
    }
    assert accepted["r2"]["history"][1]["data"] == {
        "is_review": True,
        "sentiment": "negative",
        "rating": 1,
    }
    reasked = accepted["r5"]["history"][1]["data"]
    assert reasked["rating"] == 4 and len(reasked["invalid_replies"]) == 1
    lamp = rejected["r6"]["history"][1]["data"]["invalid_replies"]
    assert "less than or equal to 5" in lamp[0]["error"] and len(lamp) == 2
    again = peerflow("run", str(config), f"output.path={out}", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "records written this run: 0" in again.stdout
