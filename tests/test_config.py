from __future__ import annotations

from pathlib import Path

import pytest

from peerflow.config import ConfigError, load_config
from peerflow.pipeline import Pipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "coral"

BASE = """\
name: t
dataset:
  path: rows.jsonl
roles:
  a:
    agent: peerflow.testing:Echo
workflow:
  kind: sequence
  roles: [a]
output:
  path: out.jsonl
"""


def write(tmp: Path, text: str) -> Path:
    (tmp / "rows.jsonl").write_text('{"x": 1}\n')
    path = tmp / "c.yaml"
    path.write_text(text)
    return path


def test_valid_config_resolves_paths_against_its_own_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.resolve(config.output.path) == tmp_path / "out.jsonl"
    Pipeline(config)


def test_unknown_key_names_its_path_and_line(tmp_path: Path) -> None:
    text = BASE.replace(
        "output:\n  path: out.jsonl", "output:\n  path: out.jsonl\n  sucess_only: true"
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "output.sucess_only: unknown key" in str(err.value)
    assert "c.yaml:12:" in str(err.value)


def test_unknown_service_key_without_union_tag(tmp_path: Path) -> None:
    text = (
        BASE
        + "services:\n  llm:\n    kind: openai\n    model: m\n"
        + "    endpoints: [http://x/v1]\n    temprature: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "services.llm.temprature: unknown key" in str(err.value)


def test_unknown_agent_option_is_reported_before_the_run(tmp_path: Path) -> None:
    text = BASE.replace(
        "agent: peerflow.testing:Echo", "agent: peerflow.testing:Echo\n    dellay: 1"
    )
    config = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"c\.yaml:7: roles\.a\.dellay: unknown key"):
        Pipeline(config)


def test_workflow_role_must_exist(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE.replace("roles: [a]", "roles: [a, b]")))
    with pytest.raises(ConfigError, match="role 'b' is not defined under roles"):
        Pipeline(config)


def test_missing_dataset_file_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE.replace("rows.jsonl", "nope.jsonl")))
    with pytest.raises(ConfigError, match=r"dataset\.path.*nope\.jsonl"):
        Pipeline(config)


def test_llm_role_with_unknown_service(tmp_path: Path) -> None:
    text = BASE.replace("agent: peerflow.testing:Echo", "agent: llm\n    service: gpt")
    with pytest.raises(ConfigError, match=r"roles\.a\.service: no service named 'gpt'"):
        Pipeline(load_config(write(tmp_path, text)))


def test_overrides_parse_yaml_values_and_create_paths(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, BASE),
        ["runtime.max_in_flight=7", "dataset.limit=3", "output.success_only=true"],
    )
    assert config.runtime.max_in_flight == 7
    assert config.dataset.limit == 3
    assert config.output.success_only is True
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        load_config(write(tmp_path, BASE), ["runtime.max_in_flight"])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("name", ["coral_sim.yaml", "coral_local.yaml"])
def test_shipped_examples_validate(name: str) -> None:
    Pipeline(load_config(EXAMPLES / name))
