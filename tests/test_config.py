from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spray.config import config_from_dict, load_config
from spray.errors import ConfigError
from tests.helpers import minimal_config, set_key


def test_valid_config_resolves_relative_paths(tmp_path: Path) -> None:
    cfg = config_from_dict(minimal_config(tmp_path), base_dir=tmp_path)
    assert cfg.data.path == (tmp_path / "imgs").resolve()
    assert cfg.output.runs_dir == (tmp_path / "runs").resolve()
    assert cfg.lrp.composite == "EpsilonPlusFlat"


def test_typo_names_key_and_suggests(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    raw["analysis"] = {"n_neighbours": 10}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    msg = str(e.value)
    assert "analysis.n_neighbours" in msg and "n_neighbors" in msg


def test_top_level_typo(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    raw["lrpp"] = {}
    with pytest.raises(ConfigError, match=r"lrpp: unknown key\. Did you mean 'lrp'"):
        config_from_dict(raw, base_dir=tmp_path)


def test_mean_and_std_on_the_0_255_scale_are_refused_with_the_divided_values(tmp_path: Path) -> None:
    """An outside check ran mmpretrain-style mean/std (123.675, ... / 58.395, ...) with exit 0: every input
    became (x - 123.7) / 58.4, a near-constant image, and only a low-accuracy warning hinted at it."""
    raw = minimal_config(tmp_path)
    raw["data"]["transform"] = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    with pytest.raises(ConfigError, match=r"data\.transform.*0-255 scale.*mean \[0\.485, 0\.456, 0\.406\]"):
        config_from_dict(raw, base_dir=tmp_path)
    raw["data"]["transform"] = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert config_from_dict(raw, base_dir=tmp_path).data.transform.mean == [0.485, 0.456, 0.406]
    # one number is the one value for every channel (an outside check: `spray init --transform mean=0.5` said only
    # "Input should be a valid list")
    raw["data"]["transform"] = {"mean": 0.5, "std": 1}
    t = config_from_dict(raw, base_dir=tmp_path).data.transform
    assert (t.mean, t.std) == ([0.5], [1.0])
    # "mean: none" in YAML is the word none (an outside check: "Input should be a valid list (got 'none')")
    raw["data"]["transform"] = {"mean": "none", "std": "None"}
    with pytest.raises(ConfigError, match=r"data\.transform\.mean: write null \(or leave the key out\)") as e:
        config_from_dict(raw, base_dir=tmp_path)
    assert "data.transform.std: write null" in str(e.value)


def test_wrong_type(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    raw["batch"] = {"batch_size": "many"}
    with pytest.raises(ConfigError, match=r"batch\.batch_size"):
        config_from_dict(raw, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("section", "key"),
    [("batch", "batch_size"), ("correction", "rr_directions"), ("correction", "rr_lambda")],
)
def test_a_yaml_boolean_is_not_a_number(tmp_path: Path, section: str, key: str) -> None:
    raw = minimal_config(tmp_path)
    raw[section] = {key: True}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    assert section in str(e.value) and f"{key} must be a number, not the YAML boolean true" in str(e.value)
    raw[section] = {key: 2}  # the number itself is fine
    assert getattr(getattr(config_from_dict(raw, base_dir=tmp_path), section), key) == 2


@pytest.mark.parametrize(
    ("path", "value", "said"),
    [
        (
            ("data", "transform", "mean"),
            [True, 0.5, 0.5],
            "mean must hold numbers, not the YAML boolean true",
        ),
        (
            ("data", "transform", "resize"),
            [224, False],
            "resize must hold numbers, not the YAML boolean false",
        ),
        (("data", "transform", "resize"), True, "resize must be a number, not the YAML boolean true"),
        (("analysis", "classes"), [0, True], "classes must hold numbers, not the YAML boolean true"),
    ],
)
def test_a_yaml_boolean_in_a_list_of_numbers_is_refused(
    tmp_path: Path, path: tuple[str, ...], value: object, said: str
) -> None:
    """A review: ``mean: [true, 0.5, 0.5]`` was read as [1.0, 0.5, 0.5] (pydantic's lax mode, item by item)."""
    raw = minimal_config(tmp_path)
    set_key(raw, path, value)
    if path[-1] == "mean":
        set_key(raw, (*path[:-1], "std"), [0.5, 0.5, 0.5])
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    assert said in str(e.value)


def test_notify_command_is_one_string_split_like_a_shell_line(tmp_path: Path) -> None:
    """A YAML list is refused with the string to write instead (the notifier splits with shlex)."""
    raw = minimal_config(tmp_path)
    raw["nightly"] = {"notify_command": ["notify.sh", "--channel", "ml team"]}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    assert "nightly.notify_command: is a list; give one string" in str(e.value)
    assert "notify.sh --channel 'ml team'" in str(e.value)
    raw["nightly"] = {"notify_command": "notify.sh --channel 'ml team'"}
    assert config_from_dict(raw, base_dir=tmp_path).nightly.notify_command == "notify.sh --channel 'ml team'"


def test_missing_file_named(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    raw["model"]["checkpoint"] = "nope.pt"
    with pytest.raises(ConfigError, match=r"model\.checkpoint: file or folder .*nope\.pt.* does not exist"):
        config_from_dict(raw, base_dir=tmp_path)


def test_model_needs_one_source(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    raw["model"] = {"num_classes": 3}
    with pytest.raises(ConfigError, match="exactly one of 'architecture'"):
        config_from_dict(raw, base_dir=tmp_path)


def test_idx_kind_needs_files(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
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
    a = config_from_dict(minimal_config(tmp_path), base_dir=tmp_path)
    b = config_from_dict({**minimal_config(tmp_path), "output": {"keep_runs": 3}}, base_dir=tmp_path)
    c = config_from_dict({**minimal_config(tmp_path), "lrp": {"composite": "EpsilonPlus"}}, base_dir=tmp_path)
    assert a.section_hash("model", "lrp") == b.section_hash("model", "lrp")
    assert a.section_hash("model", "lrp") != c.section_hash("model", "lrp")


def test_the_run_id_ignores_fields_at_their_defaults(tmp_path: Path) -> None:
    """A release that adds a field at a default keeping the old behaviour keeps every run id (before, any new
    field changed the config hash); writing a default out is the same config as leaving it out."""
    from spray.runs.identity import run_hashes

    base = minimal_config(tmp_path)
    a = config_from_dict(base, base_dir=tmp_path)
    b = config_from_dict(
        {**base, "scoring": {"graded_suspicion": True}, "lrp": {"composite": "EpsilonPlusFlat"}},
        base_dir=tmp_path,
    )
    c = config_from_dict({**base, "scoring": {"graded_suspicion": False}}, base_dir=tmp_path)
    assert run_hashes(a, "m", "d") == run_hashes(b, "m", "d") != run_hashes(c, "m", "d")


def test_the_run_id_ignores_where_the_checkpoint_and_data_are(tmp_path: Path) -> None:
    """Moved inputs of a named dataset are the same run (their content is hashed apart); another setting is
    not."""
    from spray.runs.identity import run_hashes

    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "m.pt").write_bytes(b"x")
    (tmp_path / "m.pt").write_bytes(b"x")
    base = minimal_config(tmp_path)
    base["model"] = {**base["model"], "checkpoint": "m.pt"}
    base["data"] = {**base["data"], "name": "my-data"}  # without a name, the path is the dataset key
    a = config_from_dict(base, base_dir=tmp_path)
    b = config_from_dict(
        {
            **base,
            "model": {**base["model"], "checkpoint": str(moved / "m.pt")},
            "data": {**base["data"], "path": str(moved)},
        },
        base_dir=tmp_path,
    )
    c = config_from_dict({**base, "lrp": {"composite": "EpsilonPlus"}}, base_dir=tmp_path)
    assert (a.model.checkpoint, a.data.path) != (b.model.checkpoint, b.data.path)
    assert run_hashes(a, "m", "d") == run_hashes(b, "m", "d")
    assert run_hashes(a, "m", "d")["config"] != run_hashes(c, "m", "d")["config"]


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


# --- more validation, and property-based: no input gives anything but a config or a ConfigError -----------


def test_duplicate_yaml_key_is_an_error_with_lines(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  architecture: resnet18\n  num_classes: 3\n  num_classes: 4\ndata: {kind: idx}\n")
    with pytest.raises(
        ConfigError, match=r"key 'num_classes' is given twice in one section \(lines 3 and 4\)"
    ):
        load_config(p)


def test_factory_module_next_to_the_config_goes_first_on_sys_path(tmp_path: Path) -> None:
    import sys

    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "data.py").write_text("def build():\n    return []\n")
    raw = {**minimal_config(tmp_path), "data": {"kind": "factory", "factory": "proj.data:build"}}
    config_from_dict(raw, base_dir=tmp_path)
    assert sys.path[0] == str(tmp_path.resolve())
    sys.path.remove(str(tmp_path.resolve()))


def test_class_indices_checked_against_the_known_class_count(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lrp\.target: class index 3 is outside 0\.\.2"):
        config_from_dict({**minimal_config(tmp_path), "lrp": {"target": 3}}, base_dir=tmp_path)
    cfg = config_from_dict({**minimal_config(tmp_path), "lrp": {"target": 2}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"analysis\.classes: \[7\] outside 0\.\.4"):
        cfg.analysis.classes = [0, 7]
        cfg.check_class_count(5, 5)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_KEYS = {
    "": ["name", "seed", "model", "data", "lrp", "batch", "analysis", "scoring", "output", "nightly"],
    "model": ["architecture", "factory", "factory_kwargs", "num_classes", "checkpoint", "allow_pickle"],
    "data": [
        "kind",
        "path",
        "images",
        "labels",
        "factory",
        "factory_kwargs",
        "name",
        "class_names",
        "transform",
        "limit",
        "max_image_pixels",
    ],
    "data.transform": [
        "resize",
        "center_crop",
        "grayscale_to_rgb",
        "channels",
        "alpha_background",
        "mean",
        "std",
    ],
    "lrp": ["composite", "composite_kwargs", "target", "precision", "canonize"],
    "batch": ["batch_size", "num_workers", "device", "grid", "shard_size", "thumbnails", "thumbnail_size"],
    "analysis": [
        "classes",
        "group_by",
        "absolute",
        "blur_sigma",
        "pca_components",
        "n_neighbors",
        "n_eigenvectors",
        "k_max",
        "embedding",
        "map_epochs",
        "min_class_size",
    ],
    "output": ["runs_dir", "keep_runs", "html_report"],
    "nightly": ["notify_command", "fail_on_findings"],
}
_edits = st.lists(
    st.sampled_from([f"{s}.{k}" if s else k for s, ks in _KEYS.items() for k in ks]).flatmap(
        lambda key: st.tuples(st.just(key), _json)
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=_edits)
def test_arbitrary_values_give_a_config_or_a_config_error(
    tmp_path: Path, edits: list[tuple[str, object]]
) -> None:
    raw = minimal_config(tmp_path)
    for key, value in edits:
        *parents, last = key.split(".")
        d = raw
        for k in parents:
            d = d.setdefault(k, {}) if isinstance(d.get(k, {}), dict) else {}
        d[last] = value
    try:
        config_from_dict(raw, base_dir=tmp_path)
    except ConfigError as err:
        assert str(err).startswith(
            ("Invalid config", "The config", "model.", "data.", "output.")
        ) or "factory" in str(err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.dictionaries(st.text(max_size=8) | st.integers() | st.none(), _json, max_size=6) | _json)
def test_arbitrary_documents_give_a_config_error(tmp_path: Path, raw: object) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(raw, base_dir=tmp_path)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_yaml_text_gives_a_config_error(tmp_path: Path, text: str) -> None:
    p = tmp_path / "fuzz.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError):
        load_config(p)


def test_home_in_paths_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    raw = {**minimal_config(tmp_path), "output": {"runs_dir": "~/my_runs"}}
    raw["data"]["path"] = "~/imgs"
    cfg = config_from_dict(raw, base_dir=tmp_path / "elsewhere")
    assert cfg.data.path == tmp_path / "imgs" and cfg.output.runs_dir == tmp_path / "my_runs"


def test_a_section_with_every_key_commented_out_takes_its_defaults(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    text = (
        "model: {architecture: resnet18, num_classes: 3}\n"
        "data: {kind: image_folder, path: imgs}\n"
        "nightly:\n"
        "  # notify_command: mail -s spray team@example.com\n"
        "scoring:\n"
    ).replace("path: imgs}", "path: imgs, transform: }")  # a subsection left empty too
    (tmp_path / "spray.yaml").write_text(text)
    cfg = load_config(tmp_path / "spray.yaml")
    assert cfg.nightly.notify_command is None and cfg.scoring.findings_top == 5
    raw = minimal_config(tmp_path)
    raw["model"] = None  # a required section left empty still names what it needs
    with pytest.raises(ConfigError, match="model: set exactly one of 'architecture'"):
        config_from_dict(raw, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({}, ""),
        ({"lrp": {"concept_layer": "none"}}, "lrp.concept_layer is 'none'"),
        ({"scoring": {"removal": False}}, "scoring.removal is false"),
        ({"concepts": {"enabled": False}}, "concepts.enabled is false"),
    ],
)
def test_the_reason_a_run_is_pixel_only_names_the_setting(
    tmp_path: Path, raw: dict[str, dict[str, object]], reason: str
) -> None:
    from spray.config.audit import pixel_only_reason

    cfg = config_from_dict({**minimal_config(tmp_path), **raw}, base_dir=tmp_path)
    got = pixel_only_reason(cfg.model_dump(mode="json"))
    assert got.startswith(reason) if reason else got == ""


def test_a_misspelt_composite_is_named_with_its_key_and_the_closest(tmp_path: Path) -> None:
    from spray.lrp.composites import get_composite

    with pytest.raises(
        ConfigError,
        match=r"lrp\.composite: unknown LRP composite 'EpsilonPlusFalt'\. Did you mean 'EpsilonPlusFlat'\?",
    ):
        get_composite("EpsilonPlusFalt")


def test_an_empty_class_name_is_refused() -> None:
    """An outside check: ``class_names: [a, "", k3]`` was taken; the class column showed a blank name."""
    from spray.config import DataConfig

    with pytest.raises(ValueError, match=r"class names must not be empty: label 1 has none"):
        DataConfig(kind="idx", images="i.gz", labels="l.gz", class_names=["a", " ", "k3"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_correction_number_must_be_finite(tmp_path: Path, value: str) -> None:
    """An outside check: ``spray correct --lambda nan`` said "should be ≤ 10000000 (got nan)"."""
    import argparse

    import yaml

    from spray.cli.correct import _config

    raw = minimal_config(tmp_path)
    raw["correction"] = {"rr_lambda": float(value)}
    with pytest.raises(ConfigError, match=r"correction\.rr_lambda.*finite number"):
        config_from_dict(raw, base_dir=tmp_path)
    del raw["correction"]
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(raw))
    args = argparse.Namespace(config=str(tmp_path / "audit.yaml"), runs_dir=None, no_reaudit=False,
                              flags_db=None, rr_lambda=float(value))  # fmt: skip
    with pytest.raises(ConfigError) as e:
        _config(args)
    assert "correction.rr_lambda: Input should be a finite number" in str(e.value)
    assert "less than or equal" not in str(e.value)


def test_the_auto_correction_layer_names_the_transformer_rule() -> None:
    """An outside check: docs/config.md's correction.layer said only "the last (B, C, H, W) module", while
    'auto' takes a ViT's last block, whose output is (B, tokens, D)."""
    from spray.config.correction import CorrectionConfig

    text = CorrectionConfig.model_fields["layer"].description or ""
    assert "transformer" in text and "last block" in text and "(B, tokens, D)" in text
    docs = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    assert text.replace("|", "\\|") in docs  # docs/config.md regenerated (python -m spray.config)
