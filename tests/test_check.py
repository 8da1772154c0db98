"""`peerflow check` (and `run`, which builds the same `Pipeline`) stops every knowable mistake.

Each test writes a small config with one mistake and expects one clear error of the
form `file:line: key.path: message`, raised before any service starts or file is written.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from peerflow.agents.llm import LLMAgent, LLMOptions, compile_template
from peerflow.config import ConfigError, RunConfig, config_fingerprint, load_config
from peerflow.message import Step, new_message
from peerflow.pipeline import Pipeline

ROWS = [
    {"id": "q1", "question": "one?", "answer": "A"},
    {"id": "q2", "question": "two?", "answer": "B"},
]

ECHO = """\
name: t
dataset:
  path: rows.jsonl
roles:
  a:
    agent: peerflow.testing:Echo
  b:
    agent: peerflow.testing:Echo
workflow:
  kind: sequence
  roles: [a, b]
output:
  path: out/o.jsonl
"""

LLM = """\
name: t
dataset:
  path: rows.jsonl
  id_field: id
  fields:
    question: question
    answer: {column: answer, type: str}
task:
  message: "Q: {{ question }}"
services:
  llm:
    kind: sim
    options: {script: coral, time_scale: 0}
roles:
  teacher:
    agent: llm
    service: llm
    system: "You know {{ answer }}."
    sampling: {temperature: 0.2, max_tokens: 64}
workflow:
  kind: sequence
  roles: [teacher]
output:
  path: out/o.jsonl
"""


def write(tmp: Path, text: str, rows: list[dict[str, Any]] | None = None) -> Path:
    lines = [json.dumps(r) for r in (ROWS if rows is None else rows)]
    (tmp / "rows.jsonl").write_text("".join(line + "\n" for line in lines))
    path = tmp / "c.yaml"
    path.write_text(text)
    return path


def check_error(tmp: Path, text: str, *overrides: str, rows: list[dict] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        Pipeline(load_config(write(tmp, text, rows), list(overrides)))
    return str(err.value)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# --- a clean config passes, and check writes nothing -----------------------------------


def test_valid_configs_pass_without_writing_anything(tmp_path: Path) -> None:
    for text in (ECHO, LLM):
        Pipeline(load_config(write(tmp_path, text)))
    assert not (tmp_path / "out").exists()


# --- templates -------------------------------------------------------------------------


def test_task_template_variable_must_be_a_field(tmp_path: Path) -> None:
    text = LLM.replace("Q: {{ question }}", "Q: {{ questoin }}")
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'message:')}: task.message: " in msg
    assert "'questoin'" in msg and "did you mean 'question'?" in msg


def test_role_template_variable_must_be_a_field(tmp_path: Path) -> None:
    text = LLM.replace("You know {{ answer }}.", "You know {{ answr }} {{ last('x') }}.")
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'system:')}: roles.teacher.system: " in msg
    assert "'answr'" in msg and "did you mean 'answer'?" in msg
    assert "'last'" not in msg  # a context name, always there


def test_template_variables_are_checked_against_the_columns_without_fields(
    tmp_path: Path,
) -> None:
    text = LLM.replace(
        "  fields:\n    question: question\n    answer: {column: answer, type: str}\n", ""
    )
    Pipeline(load_config(write(tmp_path, text)))  # question and answer are columns
    msg = check_error(tmp_path, text.replace("{{ answer }}", "{{ solution }}"))
    assert "roles.teacher.system: the template uses 'solution', which is not a key of the" in msg


def test_role_template_syntax_error_names_the_key(tmp_path: Path) -> None:
    text = LLM.replace("You know {{ answer }}.", "You know {{ answer .")
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'system:')}: roles.teacher.system: template syntax error" in msg
    assert msg.count("template syntax error") == 1


# --- names imported from modules -----------------------------------------------------


def test_every_module_function_is_imported(tmp_path: Path) -> None:
    text = ECHO.replace("output:", "metrics: peerflow.recipes.coral:nope\noutput:")
    msg = check_error(tmp_path, text)
    assert "metrics: metrics 'peerflow.recipes.coral:nope': module" in msg

    text = LLM.replace("    sampling:", "    parse: no_such_module_x:parse\n    sampling:")
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'parse:')}: roles.teacher.parse: " in msg
    assert "cannot import module 'no_such_module_x'" in msg

    loop = ECHO.replace(
        "  kind: sequence\n  roles: [a, b]",
        "  kind: loop\n  roles: [a, b]\n  until: peerflow.recipes.coral:FINISHED",
    )
    msg = check_error(tmp_path, loop)
    assert f"c.yaml:{line_of(loop, 'until:')}: workflow.until: " in msg

    function = ECHO.replace(
        "agent: peerflow.testing:Echo\n  b:",
        "agent: function\n    function: peerflow.recipes.coral:__doc__\n  b:",
    )
    msg = check_error(tmp_path, function)
    assert "roles.a.function: function 'peerflow.recipes.coral:__doc__' is not callable" in msg


def test_agent_constructor_errors_surface_before_the_run(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_agents_x.py").write_text(
        textwrap.dedent("""
        from peerflow.agents.base import Agent

        class Broken(Agent):
            def __init__(self, role, options, services):
                super().__init__(role, options, services)
                raise RuntimeError("needs a GPU")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ECHO.replace("agent: peerflow.testing:Echo\n  b:", "agent: my_agents_x:Broken\n  b:")
    msg = check_error(tmp_path, text)
    assert "roles.a: cannot build the agent: RuntimeError: needs a GPU" in msg

    (tmp_path / "my_broken_module_x.py").write_text("def oops(:\n")
    text = ECHO.replace("agent: peerflow.testing:Echo\n  b:", "agent: my_broken_module_x:A\n  b:")
    msg = check_error(tmp_path, text)
    assert "roles.a.agent: " in msg and "SyntaxError" in msg


# --- workflow and roles ----------------------------------------------------------------


def test_check_after_must_be_one_of_the_loop_roles(tmp_path: Path) -> None:
    text = ECHO.replace(
        "  kind: sequence\n  roles: [a, b]",
        "  kind: loop\n  roles: [a, b]\n  check_after: bb",
    )
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'check_after')}: workflow.check_after: 'bb' is not one" in msg
    assert "did you mean 'b'?" in msg


def test_graph_nodes_must_be_roles(tmp_path: Path) -> None:
    text = ECHO.replace(
        "  kind: sequence\n  roles: [a, b]",
        textwrap.dedent("""\
          kind: graph
          start: a
          edges:
            a:
              - to: c
                when: {ok: true}
              - to: end
            d: b
        """)
        .rstrip()
        .replace("\n", "\n  ")
        .join(["  ", ""]),
    )
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'to: c')}: workflow.edges.a.0.to: role 'c' is not" in msg
    assert f"c.yaml:{line_of(text, 'd: b')}: workflow.edges.d: role 'd' is not" in msg
    assert "end" not in msg.replace("defined", "")  # `end` is a valid target

    bad_start = (
        text.replace("start: a", "start: z").replace("to: c", "to: b").replace("d: b", "b: end")
    )
    assert "workflow.start: role 'z' is not defined under roles" in check_error(tmp_path, bad_start)


def test_custom_workflow_must_declare_its_roles(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_flows_x.py").write_text(
        textwrap.dedent("""
        from peerflow.workflow import Workflow

        class Silent(Workflow):
            def first(self, message):
                return "a"

            def after(self, message):
                return "ghost"

        class Declared(Silent):
            def roles(self):
                return {"a", "ghost"}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ECHO.replace(
        "  kind: sequence\n  roles: [a, b]", "  kind: custom\n  path: my_flows_x:Silent"
    )
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'path: my')}: workflow.path: " in msg
    assert "must implement roles()" in msg
    msg = check_error(tmp_path, text.replace(":Silent", ":Declared"))
    assert "role 'ghost' is not defined under roles" in msg


# --- services and sampling -------------------------------------------------------------


def test_sim_option_typos_are_errors_not_prefix_matches(tmp_path: Path) -> None:
    text = LLM.replace("time_scale: 0}", "time_scal: 0, see: 1}")
    msg = check_error(tmp_path, text)
    line = line_of(text, "options:")
    assert f"c.yaml:{line}: services.llm.options.time_scal: unknown key; did you mean" in msg
    assert "services.llm.options.see: unknown key" in msg
    msg = check_error(tmp_path, LLM.replace("time_scale: 0}", "time_scale: 0, error_rate: 2}"))
    assert "services.llm.options.error_rate: " in msg
    msg = check_error(tmp_path, LLM.replace("script: coral", "script: no/such/rules.yaml"))
    assert "services.llm.options: " in msg and "no/such/rules.yaml" in msg


def test_sim_cli_takes_no_abbreviated_flags(tmp_path: Path) -> None:
    from peerflow.services.sim_llm import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--time-sc", "0"])


def test_sampling_typo_gets_did_you_mean_and_extra_body_hint(tmp_path: Path) -> None:
    text = LLM.replace("temperature: 0.2", "temprature: 0.2")
    msg = check_error(tmp_path, text)
    assert f"c.yaml:{line_of(text, 'sampling:')}: roles.teacher.sampling: " in msg
    assert "unknown sampling key 'temprature'; did you mean 'temperature'?" in msg
    assert "extra_body" in msg
    assert "cannot be set under sampling" in check_error(
        tmp_path, LLM.replace("max_tokens: 64", "stream: true")
    )
    assert "'temperature' must be a number" in check_error(
        tmp_path, LLM.replace("temperature: 0.2", "temperature: hot")
    )
    # Server extensions are accepted as they are.
    ok = LLM.replace(
        "max_tokens: 64", "max_tokens: 64, top_k: 20, min_p: 0.05, repetition_penalty: 1.1"
    )
    Pipeline(load_config(write(tmp_path, ok)))


def test_extra_body_goes_into_the_request(tmp_path: Path) -> None:
    text = LLM.replace("    sampling:", "    extra_body: {my_server_knob: 3}\n    sampling:")
    pipeline = Pipeline(load_config(write(tmp_path, text)))
    agent = pipeline.agents(pipeline.services())["teacher"]
    message = next(pipeline.tasks())
    request = asyncio.run(agent.preprocess(message))
    assert request["my_server_knob"] == 3
    assert request["temperature"] == 0.2


# --- output, overrides ----------------------------------------------------------------


def test_output_folder_must_be_creatable(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    msg = check_error(tmp_path, ECHO, "output.path=afile/sub/o.jsonl")
    assert "output.path: cannot create" in msg and "is a file, not a folder" in msg
    msg = check_error(tmp_path, ECHO, f"output.path={tmp_path}")
    assert "output.path: " in msg and "is a folder" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        msg = check_error(tmp_path, ECHO, "output.path=locked/new/o.jsonl")
    finally:
        locked.chmod(0o755)
    assert "the folder" in msg and "is not writable" in msg


def test_unwritable_output_folder_is_reported(tmp_path: Path, monkeypatch) -> None:
    """As root os.access says yes to everything: check the check itself with a refusing access."""
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()

    def access(path: Any, mode: int, **kw: Any) -> bool:
        if Path(path) == locked and mode & os.W_OK:
            return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    msg = check_error(tmp_path, ECHO, "output.path=locked/new/o.jsonl")
    assert f"output.path: cannot create {locked}/new/o.jsonl: the folder {locked} is not" in msg


def test_an_override_that_is_not_yaml_is_a_string(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, LLM), ["task.message=Q: {{ question }}: [1,", "name=a: b: c"]
    )
    assert config.task.message == "Q: {{ question }}: [1,"
    assert config.name == "a: b: c"
    assert load_config(write(tmp_path, LLM), ["runtime.max_in_flight=7"]).runtime.max_in_flight == 7


# --- many problems at once, through the CLI --------------------------------------------


def test_cli_check_reports_every_problem_without_a_traceback(tmp_path: Path) -> None:
    text = (
        LLM.replace("temperature: 0.2", "temprature: 0.2")
        .replace("time_scale: 0}", "time_scal: 0}")
        .replace("{{ question }}", "{{ questoin }}")
        .replace("    sampling:", "    parse: no_such_module_x:fn\n    sampling:")
    )
    path = write(tmp_path, text)
    proc = subprocess.run(
        [sys.executable, "-m", "peerflow.cli", "check", str(path), "output.path=out/x.jsonl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    keys = [
        "task.message",
        "services.llm.options.time_scal",
        "roles.teacher.parse",
        "roles.teacher.sampling",
    ]
    lines = proc.stderr.splitlines()[1:]
    assert [next(k for k in keys if f": {k}: " in line) for line in lines] == keys, proc.stderr
    assert all(line.startswith(f"{path}:") for line in lines)  # in the file's order, located
    ok = subprocess.run(
        [sys.executable, "-m", "peerflow.cli", "check", str(write(tmp_path, LLM))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout and "fingerprint" in ok.stdout


# --- rows: null, missing, wrongly typed, duplicated -------------------------------------


def messages(tmp: Path, text: str, rows: list[dict[str, Any]]) -> list[Any]:
    pipeline = Pipeline(load_config(write(tmp, text, rows)))
    return list(pipeline.tasks())


def test_null_missing_and_mistyped_prompt_variables_fail_their_row(tmp_path: Path) -> None:
    rows = [
        {"id": "ok", "question": "q?", "answer": "A"},  # line 1
        {"id": "nullq", "question": None, "answer": "A"},  # line 2: null, used by task.message
        {"id": "noq", "answer": "A"},  # line 3: missing
        {"id": "nulla", "question": "q?", "answer": None},  # line 4: typed str, null
        {"id": "inta", "question": "q?", "answer": 3},  # line 5: typed str, an int
    ]
    out = messages(tmp_path, LLM, rows)
    assert [m.id for m in out] == ["ok", "nullq", "noq", "nulla", "inta"]
    assert out[0].status == "running" and out[0].history[0].content == "Q: q?"
    errors = {m.id: m.error for m in out[1:]}
    assert all(m.status == "error" for m in out[1:])
    assert errors["nullq"]["message"] == "line 2: field 'question' is null (used by task.message)"
    assert errors["nullq"]["field"] == "question" and errors["nullq"]["line"] == 2
    assert (
        errors["noq"]["message"]
        == "line 3: missing field 'question' (column for prompt variable 'question')"
    )
    assert errors["nulla"]["message"] == (
        "line 4: field 'answer' (prompt variable 'answer') is null, expected str"
    )
    assert errors["inta"]["message"].startswith("line 5: field 'answer' (prompt variable")
    assert "expected str, got int 3" in errors["inta"]["message"]
    for m in out:
        assert all("None" not in (s.content or "") for s in m.history)


def test_a_null_variable_used_only_by_a_role_fails_at_admission(tmp_path: Path) -> None:
    text = LLM.replace("    answer: {column: answer, type: str}", "    answer: answer")
    out = messages(tmp_path, text, [{"id": "x", "question": "q?", "answer": None}])
    assert out[0].error["message"] == (
        "line 1: field 'answer' is null (used by roles.teacher.system)"
    )


def test_optional_fields_may_be_null(tmp_path: Path) -> None:
    text = LLM.replace(
        "    answer: {column: answer, type: str}",
        "    answer: {column: answer, type: str, required: false}",
    ).replace("You know {{ answer }}.", "{% if answer %}You know {{ answer }}.{% endif %}")
    out = messages(tmp_path, text, [{"id": "x", "question": "q?", "answer": None}])
    assert out[0].status == "running"


def test_templates_never_print_none() -> None:
    template = compile_template("[{{ x }}]", "t")
    assert template is not None
    with pytest.raises(ValueError, match="null"):
        template.render(x=None)
    assert template.render(x=0) == "[0]"
    options = LLMOptions(service="s", prompt="{{ last('a').content }}")
    agent = LLMAgent("b", options, {"s": object()})  # type: ignore[dict-item]
    message = new_message("t", {}, {})
    message.history.append(Step(role="a", content=None, tool_calls=[{"id": "1"}]))
    with pytest.raises(ValueError, match="null"):
        agent.chat(message)


def test_duplicate_ids_give_one_message_per_line(tmp_path: Path) -> None:
    rows = [{"id": "q1", "question": "a?", "answer": "A"}] * 3 + [
        {"id": "q2", "question": "b?", "answer": "B"}
    ]
    pipeline = Pipeline(load_config(write(tmp_path, LLM, rows)))
    out = list(pipeline.tasks())
    assert [m.id for m in out] == ["q1", "q1#dup@line2", "q1#dup@line3", "q2"]
    assert [m.status for m in out] == ["running", "error", "error", "running"]
    assert out[1].error["line"] == 2 and "duplicate id 'q1'" in out[1].error["message"]
    assert pipeline.duplicate_ids == 2
    # A re-run that finished everything skips every line, duplicates included.
    again = Pipeline(load_config(write(tmp_path, LLM, rows)))
    assert list(again.tasks(finished={m.id for m in out})) == []
    assert again.skipped == 4


def test_trials_keep_ids_unique_with_duplicates(tmp_path: Path) -> None:
    rows = [{"id": "q1", "question": "a?", "answer": "A"}] * 2
    out = messages(tmp_path, LLM + "\n", rows)
    config_trials = LLM.replace("task:\n", "task:\n  trials: 2\n")
    out = messages(tmp_path, config_trials, rows)
    assert [m.id for m in out] == ["q1#0", "q1#1", "q1#dup@line2"]


# --- a run with broken input completes with one record per line -------------------------


def test_run_with_duplicates_and_truncated_input_gives_one_record_per_line(
    tmp_path: Path,
) -> None:
    from peerflow.run import run

    lines = [{"id": f"r{i}", "x": i} for i in range(400)]
    lines[7] = {"id": "r3", "x": 7}  # a repeated id
    payload = "".join(json.dumps(r) + "\n" for r in lines).encode()
    data = gzip.compress(payload)
    (tmp_path / "rows.jsonl.gz").write_bytes(data[: len(data) * 3 // 4])
    text = ECHO.replace("path: rows.jsonl", "path: rows.jsonl.gz\n  id_field: id")
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml", ["runtime.progress=false"])
    summary = run(config)
    records = [json.loads(x) for x in (tmp_path / "out" / "o.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    assert "r3#dup@line8" in ids
    damaged = [
        r for r in records if "truncated or corrupt" in (r.get("error") or {}).get("message", "")
    ]
    assert len(damaged) == 1
    good = sum(1 for r in records if r["status"] == "ok")
    assert good + 2 == len(records)  # every line read, plus the duplicate and the damage
    assert summary is not None


# --- fingerprint -----------------------------------------------------------------------


def _fp(tmp: Path, *overrides: str) -> str:
    return config_fingerprint(load_config(write(tmp, LLM), list(overrides)))


def test_fingerprint_covers_what_shapes_the_data_only(tmp_path: Path) -> None:
    base = _fp(tmp_path)
    assert len(base) == 16 and int(base, 16) >= 0
    assert base == _fp(tmp_path)
    same = [
        "output.path=elsewhere.jsonl",
        "runtime.max_in_flight=3",
        "runtime.progress=false",
        "services.llm.timeout=5",
        "services.llm.replicas=2",
        "services.llm.options.time_scale=1",
        "roles.teacher.workers=4",
        "output.flush_interval=2",
        "name=other",
        "dataset.limit=1",
    ]
    for override in same:
        assert _fp(tmp_path, override) == base, override
    different = [
        "task.message=Question: {{ question }}",
        "roles.teacher.sampling.temperature=0.9",
        "services.llm.model=other",
        "dataset.repeat=2",
        "roles.teacher.system=Hi {{ answer }}",
        "workflow.max_steps=3",
        "task.seed=1",
        "services.llm.options.seed=9",
        "dataset.path=other.jsonl",
    ]
    for override in different:
        assert _fp(tmp_path, override) != base, override


def test_fingerprint_covers_a_sandboxs_limits_not_its_pool(tmp_path: Path) -> None:
    """A sandbox's time or memory limit decides which programs pass, so it shapes the data;
    how many servers and slots run them does not."""
    base = _fp(tmp_path, "services.box={kind: sandbox}")
    assert _fp(tmp_path, "services.box={kind: sandbox, replicas: 3, max_concurrent: 8}") == base
    assert _fp(tmp_path, "services.box={kind: sandbox, limits: {wall_s: 1}}") != base
    assert _fp(tmp_path, "services.box={kind: sandbox, isolation: none}") != base


def test_fingerprint_is_stable_for_a_dumped_and_reloaded_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LLM))
    again = RunConfig.model_validate(config.model_dump())
    assert config_fingerprint(again) == config_fingerprint(config)


def test_a_rules_file_counts_by_its_contents_not_its_path(tmp_path: Path) -> None:
    """Moving the project folder keeps the fingerprint (resume still works); editing the
    simulator's rules changes it (the replies would differ)."""
    first, moved = tmp_path / "a", tmp_path / "b"
    for folder in (first, moved):
        folder.mkdir()
        (folder / "rules.yaml").write_text("- {when: {role: judge}, reply: WINNER}\n")
    fp_first = _fp(first, "services.llm.options.script=rules.yaml")
    config = load_config(write(first, LLM), ["services.llm.options.script=rules.yaml"])
    Pipeline(config)  # makes the script path absolute, as a run does before fingerprinting
    assert config_fingerprint(config) == fp_first
    assert _fp(moved, "services.llm.options.script=rules.yaml") == fp_first
    (moved / "rules.yaml").write_text("- {when: {role: judge}, reply: CONTINUE}\n")
    assert _fp(moved, "services.llm.options.script=rules.yaml") != fp_first


# --- every shipped YAML file, as a newcomer would check it ------------------------------

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_YAML = sorted(
    p.relative_to(ROOT)
    for p in [*(ROOT / "examples").glob("**/*.yaml"), *(ROOT / "docs").glob("**/*.yaml")]
)


@pytest.mark.parametrize("path", SHIPPED_YAML, ids=str)
def test_check_passes_every_shipped_yaml(path: Path) -> None:
    """Run configs and simulator rules files alike: `peerflow check FILE` says ok."""
    proc = subprocess.run(
        [sys.executable, "-m", "peerflow.cli", "check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path}: ok")


def test_check_reports_a_broken_rules_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {when: {bogus: 1}, reply: x}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "peerflow.cli", "check", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "rule 0.when: unknown selectors bogus" in proc.stderr
