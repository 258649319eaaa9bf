"""Paths in the config: empty ones and NUL bytes are refused with the key named, environment variables are
expanded (an unset one refused), correction.flags_db resolves against the config's folder for every command,
and an empty --runs-dir is refused."""

import argparse
import os
from pathlib import Path

import pytest
import yaml

from spray.cli.options import load_audit_config
from spray.config import config_from_dict, load_config
from spray.errors import ConfigError
from spray.runs.publish import check_runs_dir
from tests.helpers import minimal_config


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_a_relative_flags_db_is_beside_the_config_whatever_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    raw = minimal_config(conf)
    raw["correction"] = {"flags_db": "flags/mine.sqlite"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(_write(conf, raw))
    assert cfg.flags_db_path() == conf.resolve() / "flags" / "mine.sqlite"


@pytest.mark.parametrize(
    ("path", "said"),
    [
        (("output", "runs_dir"), r"output\.runs_dir: an empty path"),
        (("data", "path"), r"data\.path: an empty path"),
        (("model", "checkpoint"), r"model\.checkpoint: an empty path"),
        (("correction", "flags_db"), r"correction\.flags_db: an empty path"),
    ],
)
def test_an_empty_path_is_refused(tmp_path: Path, path: tuple[str, str], said: str) -> None:
    raw = minimal_config(tmp_path)
    raw.setdefault(path[0], {})[path[1]] = ""
    with pytest.raises(ConfigError, match=said):
        config_from_dict(raw, base_dir=tmp_path)


@pytest.mark.parametrize(("section", "key"), [("output", "runs_dir"), ("correction", "flags_db")])
def test_a_nul_byte_is_refused(tmp_path: Path, section: str, key: str) -> None:
    raw = minimal_config(tmp_path)
    raw.setdefault(section, {})[key] = "ru\0ns"
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: .* holds a NUL byte"):
        config_from_dict(raw, base_dir=tmp_path)


def test_publishing_into_a_path_with_a_nul_byte_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NUL byte"):
        check_runs_dir(tmp_path / "ru\0ns")


def test_environment_variables_are_expanded_and_an_unset_one_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPRAY_TEST_RUNS", str(tmp_path / "somewhere"))
    monkeypatch.delenv("SPRAY_TEST_UNSET", raising=False)
    raw = minimal_config(tmp_path)
    raw["output"] = {"runs_dir": "$SPRAY_TEST_RUNS/x"}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    assert cfg.output.runs_dir == tmp_path / "somewhere" / "x"
    assert not any("$" in p for p in os.listdir(tmp_path))
    raw["output"] = {"runs_dir": "${SPRAY_TEST_UNSET}/x"}
    with pytest.raises(ConfigError, match=r"output\.runs_dir: .*\$\{SPRAY_TEST_UNSET\}, which is not set"):
        config_from_dict(raw, base_dir=tmp_path)


def test_an_empty_runs_dir_option_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, minimal_config(tmp_path))
    with pytest.raises(ConfigError, match=r"--runs-dir is empty"):
        load_audit_config(argparse.Namespace(config=str(path), runs_dir=""))
    given = tmp_path / "given"
    cfg = load_audit_config(argparse.Namespace(config=str(path), runs_dir=str(given)))
    assert cfg.output.runs_dir == given.resolve()


@pytest.mark.parametrize("command", ["audit", "run"])
def test_an_empty_runs_dir_option_is_a_usage_error(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from spray.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--config", "x.yaml", "--runs-dir", ""])
    assert e.value.code == 2
    assert "--runs-dir: is empty; give the runs folder" in capsys.readouterr().err
