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

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"
SHIPPED_CONFIGS = sorted([*(ROOT / "examples").glob("**/*.yaml"), *TUTORIALS.glob("*/config.yaml")])


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

ROWS = {"custom_agent": 5, "custom_workflow": 4, "debate": 3, "ray": 6}


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
    for rec in run_tutorial("debate", tmp_path):
        roles = [s["role"] for s in rec["history"]]
        judged = roles.count("judge")
        assert roles == ["task"] + ["alice", "bob", "carol", "judge"] * judged
        assert 1 <= judged <= 3
        verdict = rec["history"][-1]["data"]
        assert verdict["round"] == judged and (verdict["winner"] or judged == 3)


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
