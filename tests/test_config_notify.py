"""A nightly.notify_command program given as ./name or ../name is the one beside the config, whatever the
job's cwd, and a missing one is said as such (not "not found on PATH")."""

import logging
import shlex
from pathlib import Path

import pytest

from spray.config import config_from_dict


def _raw(tmp_path: Path, command: str) -> dict:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    return {
        "model": {"architecture": "resnet18", "num_classes": 3},
        "data": {"kind": "image_folder", "path": "imgs"},
        "nightly": {"notify_command": command},
    }


def test_a_dot_slash_program_resolves_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    conf = tmp_path / "conf dir"
    conf.mkdir()
    script = conf / "notify.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="spray"):
        cfg = config_from_dict(_raw(conf, "./notify.sh --to 'ops team'"), base_dir=conf)
    assert shlex.split(cfg.nightly.notify_command or "") == [
        str(conf.resolve() / "notify.sh"),
        "--to",
        "ops team",
    ]
    assert "notify_command" not in caplog.text


def test_a_missing_script_beside_the_config_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    with caplog.at_level(logging.WARNING, logger="spray"):
        cfg = config_from_dict(_raw(sub, "../notify.sh"), base_dir=sub)
    assert cfg.nightly.notify_command == str(tmp_path.resolve() / "notify.sh")
    assert "does not exist or is not executable" in caplog.text and "not found on PATH" not in caplog.text


def test_a_bare_name_stays_a_path_lookup(tmp_path: Path) -> None:
    assert config_from_dict(_raw(tmp_path, "true"), base_dir=tmp_path).nightly.notify_command == "true"
