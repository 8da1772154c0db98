"""User code beside the config: found on the import path, shipped to Ray, blamed by file:line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peerflow.agents.base import describe_error
from peerflow.config import load_config
from peerflow.loading import ray_runtime_env, user_frame

ROOT = Path(__file__).resolve().parents[1]

MODULE = textwrap.dedent(
    '''\
    """A user's own module, next to the config."""


    def double(message):
        return {"doubled": 2 * int(message.vars["n"])}


    def helper(value):
        if value > 2:
            raise ValueError(f"too big: {value}")
        return value


    def checked(message):
        return {"value": helper(int(message.vars["n"]))}
    '''
)
CONFIG = textwrap.dedent(
    """\
    name: user-code
    dataset: {path: data.jsonl, id_field: id}
    roles:
      worker: {agent: function, function: "mymod_%(tag)s:%(fn)s"}
    workflow: {kind: sequence, roles: [worker]}
    output: {path: out/records.jsonl}
    """
)


def project(folder: Path, fn: str) -> Path:
    """A config folder with its module (unique name per test: modules are cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{folder.name}_{fn}".replace("-", "_")
    (folder / f"mymod_{tag}.py").write_text(MODULE)
    rows = [{"id": f"r{n}", "n": n} for n in range(1, 5)]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = folder / "flow.yaml"
    config.write_text(CONFIG % {"tag": tag, "fn": fn})
    return config


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "peerflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_check_and_run_import_user_modules_from_the_config_folder(tmp_path: Path) -> None:
    config = project(tmp_path / "flow", "double")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = cli("check", str(config), cwd=elsewhere)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ran = cli("run", str(config), "--no-progress", cwd=elsewhere)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = (config.parent / "out" / "records.jsonl").read_text().splitlines()
    recs = sorted((json.loads(line) for line in lines), key=lambda r: r["id"])
    assert [r["history"][-1]["data"]["doubled"] for r in recs] == [2, 4, 6, 8]


def test_missing_user_module_names_where_it_was_looked_for(tmp_path: Path) -> None:
    config = project(tmp_path / "flow", "double")
    config.write_text(config.read_text().replace("mymod_", "nomod_"))
    checked = cli("check", str(config), cwd=tmp_path)
    assert checked.returncode == 2
    assert "config file's folder" in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr


def test_user_code_error_names_role_function_file_and_line(tmp_path: Path) -> None:
    config = project(tmp_path / "flow", "checked")
    ran = cli("run", str(config), "--no-progress", cwd=tmp_path)
    assert ran.returncode == 1, ran.stdout + ran.stderr  # some rows failed
    lines = (config.parent / "out" / "records.jsonl").read_text().splitlines()
    failed = [json.loads(line) for line in lines if json.loads(line)["status"] != "ok"]
    assert len(failed) == 2
    error = failed[0]["history"][-1]["error"]
    tag = "flow_checked"
    # The innermost user line is `raise` in helper (line 10), reached from `checked`.
    assert error.startswith(f"roles.worker (mymod_{tag}:helper) at ")
    assert f"mymod_{tag}.py:10: ValueError: too big: " in error


def test_parse_error_message_gets_the_user_line() -> None:
    def parse(text: str) -> None:
        raise KeyError(text)  # the user line

    class ParseError(Exception):
        pass

    try:
        try:
            parse("verdict")
        except KeyError as inner:
            raise ParseError(
                "roles.judge.parse (mod:parse) failed on the reply: KeyError: 'verdict'"
            ) from inner
    except ParseError as exc:
        line = parse.__code__.co_firstlineno + 1
        text = describe_error("judge", exc)
        assert text.startswith("ParseError: roles.judge.parse (mod:parse) at ")
        assert text.endswith(f"test_user_code.py:{line} failed on the reply: KeyError: 'verdict'")


def test_library_errors_are_not_blamed_on_user_code() -> None:
    try:
        json.loads("{")
    except ValueError as exc:
        where = user_frame(exc)
        assert where is not None and where[0].endswith("test_user_code.py")  # this test's line
    exc2 = ValueError("built elsewhere")
    assert user_frame(exc2) is None and describe_error("r", exc2) == "ValueError: built elsewhere"


# ------------------------------------------------------------------------------- Ray env


def test_ray_runtime_env_ships_the_config_folder_small(tmp_path: Path) -> None:
    config_path = project(tmp_path / "flow", "double")
    (tmp_path / "flow" / "pkgs" / "helpers").mkdir(parents=True)
    config = load_config(config_path, ["runtime.py_modules=[pkgs/helpers]"])
    env = ray_runtime_env(config)
    assert env is not None
    assert env["working_dir"] == str((tmp_path / "flow").resolve())
    for pattern in (".git", ".venv", "__pycache__", "/data.jsonl", "/out/records.jsonl"):
        assert pattern in env["excludes"], pattern
    assert "/out/records.jsonl.*" in env["excludes"]
    assert env["py_modules"] == [str((tmp_path / "flow" / "pkgs" / "helpers").resolve())]
    assert ray_runtime_env(load_config(config_path, ["runtime.working_dir="])) is None
    other = load_config(config_path, [f"runtime.working_dir={tmp_path}"])
    assert ray_runtime_env(other)["working_dir"] == str(tmp_path.resolve())  # type: ignore[index]


def test_ray_actors_import_user_modules(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    config = project(tmp_path / "flow", "double")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = cli(
        "run",
        str(config),
        "--no-progress",
        "runtime.kind=ray",
        "runtime.num_cpus=2",
        cwd=elsewhere,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = (config.parent / "out" / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["history"][-1]["data"]["doubled"] for line in lines) == [
        2,
        4,
        6,
        8,
    ]
