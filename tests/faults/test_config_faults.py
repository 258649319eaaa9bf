"""Fault suite, config and CLI: every bad config exits 2 (1 for a failing factory) and names what to fix.

Each case writes a config (YAML) for a tiny image folder, mutates one thing, runs ``spray audit`` in this
process and checks the exit code, that no raw traceback escaped, and that the message names the key or
file. Cases that need the number of classes (``lrp.target``, ``analysis.classes``) stop at setup, before
any heatmap is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.faults.cli import assert_clean_failure, run_main
from tests.helpers import make_image_folder

Mutation = Callable[[dict[str, Any], Path], None]


def base_config(tmp_path: Path) -> dict[str, Any]:
    """A valid config: the demo's small CNN (3 channels, 2 classes) on a 2-class folder of 28×28 images."""
    if not (tmp_path / "imgs").exists():
        make_image_folder(tmp_path / "imgs", n_per_class=3, size=28)
    return {
        "name": "fault",
        "model": {
            "factory": "spray.lab.cnn:small_cnn",
            "factory_kwargs": {"in_channels": 3, "num_classes": 2},
        },
        "data": {"kind": "image_folder", "path": "imgs"},
        "analysis": {"embedding": "spectral"},
        "output": {"runs_dir": "runs"},
    }


def write(tmp_path: Path, raw: Any, name: str = "audit.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False) if not isinstance(raw, str) else raw)
    return p


def _set(path: str, value: Any) -> Mutation:
    """A mutation that sets the dotted key ``path`` to ``value``."""

    def apply(raw: dict[str, Any], tmp_path: Path) -> None:
        *parents, last = path.split(".")
        d = raw
        for k in parents:
            d = d.setdefault(k, {})
        d[last] = value

    return apply


def _file_at(path: str) -> Mutation:
    def apply(raw: dict[str, Any], tmp_path: Path) -> None:
        (tmp_path / "a_file.txt").write_text("x")
        _set(path, "a_file.txt")(raw, tmp_path)

    return apply


def _folder_at(path: str) -> Mutation:
    def apply(raw: dict[str, Any], tmp_path: Path) -> None:
        (tmp_path / "a_folder").mkdir(exist_ok=True)
        _set(path, "a_folder")(raw, tmp_path)

    return apply


def _module(name: str, source: str, spec: str, kwargs: dict[str, Any] | None = None) -> Mutation:
    def apply(raw: dict[str, Any], tmp_path: Path) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        raw["data"] = {"kind": "factory", "factory": spec, "factory_kwargs": kwargs or {}}

    return apply


_GOOD_FACTORY = (
    "import numpy as np\n"
    "def build(n=8):\n"
    "    return [(np.zeros((28, 28, 3), np.uint8), i % 2) for i in range(n)]\n"
)

# (id, mutation, exit code, names that must appear in the message)
CASES: list[tuple[str, Mutation, int, tuple[str, ...]]] = [
    ("seed-negative", _set("seed", -1), 2, ("seed", "greater than or equal to 0")),
    ("seed-2**80", _set("seed", 2**80), 2, ("seed", "less than or equal to 4294967295")),
    ("seed-bool", _set("seed", True), 2, ("seed",)),
    ("seed-float", _set("seed", 1.5), 2, ("seed",)),
    ("seed-string", _set("seed", "abc"), 2, ("seed",)),
    ("resize-0", _set("data.transform.resize", 0), 2, ("data.transform.resize",)),
    ("center_crop-0", _set("data.transform.center_crop", 0), 2, ("data.transform.center_crop",)),
    ("resize-huge", _set("data.transform.resize", 100_000), 2, ("data.transform.resize", "8192")),
    ("center_crop-negative", _set("data.transform.center_crop", -5), 2, ("data.transform.center_crop",)),
    ("n_neighbors-huge", _set("analysis.n_neighbors", 100_000), 2, ("analysis.n_neighbors",)),
    ("n_neighbors-1", _set("analysis.n_neighbors", 1), 2, ("analysis.n_neighbors",)),
    ("pca_components-huge", _set("analysis.pca_components", 10**7), 2, ("analysis.pca_components",)),
    ("n_eigenvectors-huge", _set("analysis.n_eigenvectors", 10**6), 2, ("analysis.n_eigenvectors",)),
    (
        "n_eigenvectors-below-k_max",
        _set("analysis.n_eigenvectors", 8),
        2,
        ("analysis", "n_eigenvectors (8)", "k_max (12)"),
    ),
    ("k_max-1", _set("analysis.k_max", 1), 2, ("analysis.k_max",)),
    ("k_max-huge", _set("analysis.k_max", 1000), 2, ("analysis.k_max",)),
    ("blur_sigma-huge", _set("analysis.blur_sigma", 1e9), 2, ("analysis.blur_sigma",)),
    ("blur_sigma-nan", _set("analysis.blur_sigma", float("nan")), 2, ("analysis.blur_sigma", "NaN")),
    ("map_epochs-huge", _set("analysis.map_epochs", 10**9), 2, ("analysis.map_epochs",)),
    ("classes-negative", _set("analysis.classes", [-1]), 2, ("analysis.classes",)),
    ("classes-empty", _set("analysis.classes", []), 2, ("analysis.classes",)),
    (
        "classes-out-of-range-at-setup",
        _set("analysis.classes", [0, 5]),
        2,
        ("analysis.classes", "[5]", "2 classes"),
    ),
    ("embedding-unknown", _set("analysis.embedding", "pca"), 2, ("analysis.embedding",)),
    ("group_by-unknown", _set("analysis.group_by", "cluster"), 2, ("analysis.group_by",)),
    ("target-out-of-range-at-setup", _set("lrp.target", 7), 2, ("lrp.target", "0..1")),
    ("target-negative", _set("lrp.target", -1), 2, ("lrp.target",)),
    ("target-unknown-word", _set("lrp.target", "logit"), 2, ("lrp.target",)),
    ("batch_size-0", _set("batch.batch_size", 0), 2, ("batch.batch_size",)),
    ("batch_size-huge", _set("batch.batch_size", 10**9), 2, ("batch.batch_size",)),
    ("num_workers-negative", _set("batch.num_workers", -1), 2, ("batch.num_workers",)),
    ("grid-1", _set("batch.grid", 1), 2, ("batch.grid",)),
    ("thumbnail_size-4", _set("batch.thumbnail_size", 4), 2, ("batch.thumbnail_size",)),
    ("device-tpu", _set("batch.device", "tpu"), 2, ("batch.device",)),
    ("shard_size-0", _set("batch.shard_size", 0), 2, ("batch.shard_size",)),
    ("keep_runs-0", _set("output.keep_runs", 0), 2, ("output.keep_runs",)),
    ("runs_dir-is-a-file", _file_at("output.runs_dir"), 2, ("output.runs_dir", "a_file.txt", "is a file")),
    ("notify_command-empty", _set("nightly.notify_command", "  "), 2, ("nightly.notify_command",)),
    ("data.path-is-a-file", _file_at("data.path"), 2, ("data.path", "a_file.txt", "is a file")),
    ("data.path-missing", _set("data.path", "nowhere"), 2, ("data.path", "nowhere", "does not exist")),
    ("data.path-nul-byte", _set("data.path", "im\0gs"), 2, ("data.path",)),
    (
        "checkpoint-is-a-folder",
        _folder_at("model.checkpoint"),
        2,
        ("model.checkpoint", "a_folder", "is a folder"),
    ),
    ("name-empty", _set("name", " "), 2, ("name",)),
    ("name-null", _set("name", None), 2, ("name",)),
    ("kind-unknown", _set("data.kind", "folder"), 2, ("data.kind",)),
    ("limit-0", _set("data.limit", 0), 2, ("data.limit",)),
    ("max_image_pixels-0", _set("data.max_image_pixels", 0), 2, ("data.max_image_pixels",)),
    ("class_names-duplicate", _set("data.class_names", ["a", "a"]), 2, ("data.class_names", "'a'")),
    ("class_names-empty", _set("data.class_names", []), 2, ("data.class_names",)),
    (
        "class_names-count",
        _set("data.class_names", ["a", "b", "c"]),
        2,
        ("data.class_names", "3 names", "2 class folders"),
    ),
    ("mean-without-std", _set("data.transform.mean", [0.5, 0.5, 0.5]), 2, ("data.transform", "'std'")),
    (
        "mean-2-values",
        _set("data.transform", {"mean": [0.5, 0.5], "std": [1, 1]}),
        2,
        ("data.transform", "not 2"),
    ),
    ("std-zero", _set("data.transform", {"mean": [0.5], "std": [0.0]}), 2, ("data.transform", "'std'")),
    (
        "mean-nan",
        _set("data.transform", {"mean": [float("nan")], "std": [1.0]}),
        2,
        ("data.transform.mean", "NaN"),
    ),
    (
        "mean-4-values",
        _set("data.transform", {"mean": [0.1] * 4, "std": [1.0] * 4}),
        2,
        ("data.transform.mean",),
    ),
    ("channels-2", _set("data.transform.channels", 2), 2, ("data.transform.channels",)),
    (
        "channels-vs-mean",
        _set("data.transform", {"channels": 1, "mean": [0.5] * 3, "std": [1] * 3}),
        2,
        ("data.transform", "channels is 1"),
    ),
    (
        "grey-to-rgb-vs-channels-1",
        _set("data.transform", {"channels": 1, "grayscale_to_rgb": True}),
        2,
        ("data.transform", "contradicts"),
    ),
    (
        "alpha_background-pink",
        _set("data.transform.alpha_background", "pink"),
        2,
        ("data.transform.alpha_background",),
    ),
    ("transform-not-a-mapping", _set("data.transform", "resize"), 2, ("data.transform",)),
    ("factory_kwargs-not-a-mapping", _set("model.factory_kwargs", [1, 2]), 2, ("model.factory_kwargs",)),
    ("idx-without-labels", _set("data", {"kind": "idx", "images": "imgs"}), 2, ("data", "'labels'")),
    (
        "data.factory-no-colon",
        _set("data", {"kind": "factory", "factory": "my_data.build"}),
        2,
        ("data.factory", "package.module:function"),
    ),
    (
        "data.factory-module-missing",
        _set("data", {"kind": "factory", "factory": "no_such_mod_xyz:build"}),
        2,
        ("data.factory", "no_such_mod_xyz", "cannot find module"),
    ),
    (
        "data.factory-function-missing",
        _module("fz_fn", _GOOD_FACTORY, "fz_fn:biuld"),
        2,
        ("data.factory", "'biuld'", "Did you mean 'build'"),
    ),
    (
        "data.factory_kwargs-unknown",
        _module("fz_kw", _GOOD_FACTORY, "fz_kw:build", {"size": 3}),
        2,
        ("data.factory_kwargs", "'size'", "It takes: n"),
    ),
    (
        "data.factory-raises",
        _module("fz_raise", "def build():\n    raise ValueError('no database')\n", "fz_raise:build"),
        1,
        ("data.factory", "failed", "ValueError: no database", "fz_raise.py"),
    ),
    (
        "data.factory-syntax-error",
        _module("fz_syntax", "def build(:\n", "fz_syntax:build"),
        2,
        ("data.factory", "importing 'fz_syntax' failed", "fz_syntax.py"),
    ),
    (
        "data.factory-missing-dependency",
        _module("fz_dep", "import no_such_dependency_q\n", "fz_dep:build"),
        2,
        ("data.factory", "no_such_dependency_q"),
    ),
    (
        "data.factory-not-a-dataset",
        _module("fz_int", "def build():\n    return 42\n", "fz_int:build"),
        1,
        ("data.factory", "int", "map-style dataset"),
    ),
    ("model-two-sources", _set("model.architecture", "resnet18"), 2, ("model", "exactly one of")),
    ("section-missing", lambda raw, p: raw.pop("data"), 2, ("data", "required key is missing")),
    ("typo-top-level", lambda raw, p: raw.update(anlysis={}), 2, ("anlysis", "Did you mean 'analysis'")),
    ("typo-nested", _set("analysis.n_neighbours", 10), 2, ("analysis.n_neighbours", "n_neighbors")),
    (
        "typo-transform",
        _set("data.transform.center_cropp", 10),
        2,
        ("data.transform.center_cropp", "center_crop"),
    ),
]


@pytest.mark.parametrize(("mutate", "code", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Mutation, code: int, names: tuple[str, ...]
) -> None:
    raw = base_config(tmp_path)
    mutate(raw, tmp_path)
    cfg = write(tmp_path, raw)
    result = run_main(["audit", "--config", str(cfg), "-q"], capsys)
    assert_clean_failure(result, code, *names)
    assert not list((tmp_path / "runs").glob("2*")), "a bad config must publish nothing"


# --- faults of the config file itself and of the command line ---------------------------------------------

TEXT_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("duplicate-top-level-key", "seed: 1\nseed: 2\n", ("'seed'", "twice", "lines 1 and 2")),
    (
        "duplicate-nested-key",
        "data:\n  kind: image_folder\n  path: imgs\n  path: other\n",
        ("'path'", "lines 3 and 4"),
    ),
    ("not-a-mapping", "- model\n- data\n", ("mapping of sections", "list")),
    ("yaml-syntax", "model: [unclosed\n", ("not valid YAML",)),
    ("tab-indentation", "model:\n\tfactory: x\n", ("not valid YAML",)),
    ("empty-file", "", ("model", "required key is missing")),
    ("scalar", "42\n", ("mapping of sections", "int")),
]


@pytest.mark.parametrize(("text", "names"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_config_file_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, names: tuple[str, ...]
) -> None:
    cfg = write(tmp_path, text)
    assert_clean_failure(run_main(["audit", "--config", str(cfg)], capsys), 2, "audit.yaml", *names)


def test_config_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "audit.yaml"
    cfg.write_bytes(b"model:\n  factory: \xff\xfe\x00bad\n")
    assert_clean_failure(run_main(["audit", "--config", str(cfg)], capsys), 2, "audit.yaml", "not UTF-8")


def test_config_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(
        run_main(["audit", "--config", str(tmp_path)], capsys), 2, str(tmp_path), "is a folder"
    )


def test_config_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert_clean_failure(
        run_main(["audit", "--config", str(missing)], capsys), 2, "nope.yaml", "does not exist"
    )


def test_runs_dir_option_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, base_config(tmp_path))
    (tmp_path / "file").write_text("x")
    result = run_main(["audit", "--config", str(cfg), "--runs-dir", str(tmp_path / "file")], capsys)
    assert_clean_failure(result, 2, "--runs-dir", "is a file")


def test_unknown_command_and_missing_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(run_main(["audti"], capsys), 2, "invalid choice: 'audti'")
    assert_clean_failure(run_main(["audit"], capsys), 2, "--config")


def test_quiet_prints_warnings_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-q``: INFO lines are gone, warnings stay (here an empty class folder is named)."""
    raw = base_config(tmp_path)
    (tmp_path / "imgs" / "empty").mkdir()
    raw["model"]["factory_kwargs"]["num_classes"] = 3
    raw["lrp"] = {"target": 9}  # stops at setup, after the dataset is built
    cfg = write(tmp_path, raw)
    result = run_main(["audit", "--config", str(cfg), "-q"], capsys)
    assert_clean_failure(result, 2, "lrp.target")
    assert " INFO " not in result.stderr and "WARNING" in result.stderr and "empty" in result.stderr
    loud = run_main(["audit", "--config", str(cfg)], capsys)
    assert " INFO " in loud.stderr


def test_config_load_is_fast_and_torch_free(tmp_path: Path) -> None:
    """A bad config (here a missing factory module) is reported before torch is imported."""
    import subprocess
    import sys

    from tests.faults.cli import spray_env

    raw = base_config(tmp_path)
    raw["data"] = {"kind": "factory", "factory": "missing_mod_q:build"}
    cfg = write(tmp_path, raw)
    code = (
        "import sys\nfrom spray.cli import main\nrc = main(['audit', '--config', sys.argv[1]])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(cfg)], env=spray_env(), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, res.stderr
    assert "cannot find module 'missing_mod_q'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "--config", "x.yaml", "--top", "-1"],
        ["demo", "--per-class", "0"],
        ["demo", "--epochs", "-2"],
    ],
    ids=["audit-top", "demo-per-class", "demo-epochs"],
)
def test_counts_on_the_command_line_must_be_positive(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert_clean_failure(run_main(argv, capsys), 2, argv[-2], "expected a positive integer")
