from pathlib import Path

import pytest

from spray.config import config_from_dict, load_config
from spray.errors import ConfigError


def _base(tmp_path: Path) -> dict:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    return {
        "model": {"architecture": "resnet18", "num_classes": 3},
        "data": {"kind": "image_folder", "path": "imgs"},
    }


def test_valid_config_resolves_relative_paths(tmp_path: Path) -> None:
    cfg = config_from_dict(_base(tmp_path), base_dir=tmp_path)
    assert cfg.data.path == (tmp_path / "imgs").resolve()
    assert cfg.output.runs_dir == (tmp_path / "runs").resolve()
    assert cfg.lrp.composite == "EpsilonPlusFlat"


def test_typo_names_key_and_suggests(tmp_path: Path) -> None:
    raw = _base(tmp_path)
    raw["analysis"] = {"n_neighbours": 10}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    msg = str(e.value)
    assert "analysis.n_neighbours" in msg and "n_neighbors" in msg


def test_top_level_typo(tmp_path: Path) -> None:
    raw = _base(tmp_path)
    raw["lrpp"] = {}
    with pytest.raises(ConfigError, match=r"lrpp: unknown key\. Did you mean 'lrp'"):
        config_from_dict(raw, base_dir=tmp_path)


def test_wrong_type(tmp_path: Path) -> None:
    raw = _base(tmp_path)
    raw["batch"] = {"batch_size": "many"}
    with pytest.raises(ConfigError, match=r"batch\.batch_size"):
        config_from_dict(raw, base_dir=tmp_path)


def test_missing_file_named(tmp_path: Path) -> None:
    raw = _base(tmp_path)
    raw["model"]["checkpoint"] = "nope.pt"
    with pytest.raises(ConfigError, match=r"model\.checkpoint: file or folder .*nope\.pt.* does not exist"):
        config_from_dict(raw, base_dir=tmp_path)


def test_model_needs_one_source(tmp_path: Path) -> None:
    raw = _base(tmp_path)
    raw["model"] = {"num_classes": 3}
    with pytest.raises(ConfigError, match="exactly one of 'architecture'"):
        config_from_dict(raw, base_dir=tmp_path)


def test_idx_kind_needs_files(tmp_path: Path) -> None:
    raw = _base(tmp_path)
    raw["data"] = {"kind": "idx", "images": "a.gz"}
    with pytest.raises(ConfigError, match="'labels'"):
        config_from_dict(raw, base_dir=tmp_path)


def test_load_missing_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_section_hash_ignores_output(tmp_path: Path) -> None:
    a = config_from_dict(_base(tmp_path), base_dir=tmp_path)
    b = config_from_dict({**_base(tmp_path), "output": {"keep_runs": 3}}, base_dir=tmp_path)
    c = config_from_dict({**_base(tmp_path), "lrp": {"composite": "EpsilonPlus"}}, base_dir=tmp_path)
    assert a.section_hash("model", "lrp") == b.section_hash("model", "lrp")
    assert a.section_hash("model", "lrp") != c.section_hash("model", "lrp")


def test_config_reference_doc_is_current() -> None:
    from spray.config import config_reference_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text().strip() == config_reference_markdown().strip(), (
        "regenerate: python -m spray.config > docs/config.md"
    )


def test_example_configs_validate() -> None:
    from spray.config import load_config

    for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"):
        cfg = load_config(p, check_files=False)
        assert cfg.name
