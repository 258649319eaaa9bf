"""Model faults (issue #14): every bad model setting ends in a clear message that names the key or file
to fix and the right exit code, never a raw traceback (``spray audit`` run in this process).

Data: an image folder of 2 classes × 6 random 16×16 RGB images. Models: tests/model_factories.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.faults.cli import CliResult, assert_clean_failure, run_main
from tests.helpers import make_image_folder

FACTORIES = "tests.model_factories"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", n_per_class=6, size=16)


def _audit(
    tmp_path: Path, data_dir: Path, model: dict[str, Any], capsys: pytest.CaptureFixture[str], **data: Any
) -> CliResult:
    config = {
        "name": "model-faults",
        "model": model,
        "data": {"kind": "image_folder", "path": str(data_dir), **data},
        "batch": {"batch_size": 4, "grid": 8, "device": "cpu"},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_main(["audit", "--config", str(path), "-q"], capsys)


def _factory(name: str, **kwargs: Any) -> dict[str, Any]:
    return {"factory": f"{FACTORIES}:{name}", "factory_kwargs": kwargs}


# (case id, model section, exit code, names that must appear)
CONFIG_CASES: list[tuple[str, dict[str, Any], int, tuple[str, ...]]] = [
    (
        "unknown torchvision architecture",
        {"architecture": "resnet19", "num_classes": 2},
        2,
        ("model.architecture", "resnet19"),
    ),
    (
        "unknown timm architecture",
        {"architecture": "timm:convnxt_tiny", "num_classes": 2},
        2,
        ("model.architecture", "convnext_tiny"),
    ),
    ("timm prefix without a name", {"architecture": "timm:", "num_classes": 2}, 2, ("architecture", "timm:")),
    (
        "architecture and factory",
        {"architecture": "resnet18", "num_classes": 2, **_factory("tiny")},
        2,
        ("architecture", "factory"),
    ),
    ("neither architecture nor factory", {"num_classes": 2}, 2, ("architecture", "factory")),
    ("architecture without num_classes", {"architecture": "resnet18"}, 2, ("num_classes",)),
    (
        "factory without a colon",
        {"factory": "tests.model_factories.tiny"},
        2,
        ("factory", "package.module:function"),
    ),
    (
        "factory module missing",
        {"factory": "no_such_module_xyz:build"},
        2,
        ("model.factory", "no_such_module_xyz"),
    ),
    ("factory function missing", {"factory": f"{FACTORIES}:nope"}, 2, ("model.factory", "nope")),
    (
        "factory_kwargs the factory does not take",
        _factory("tiny", num_classes=2, depth=3),
        2,
        ("model.factory_kwargs.depth", "num_classes, in_channels"),
    ),
    (
        "architecture_kwargs it does not take",
        {"architecture": "resnet18", "num_classes": 2, "architecture_kwargs": {"depth": 3}},
        2,
        ("model.architecture_kwargs", "depth"),
    ),
    (
        "architecture_kwargs without architecture",
        {**_factory("tiny"), "architecture_kwargs": {"depth": 3}},
        2,
        ("architecture_kwargs",),
    ),
    ("output selector of the wrong type", {**_factory("tuple_output"), "output": [0]}, 2, ("model.output",)),
    (
        "output selector a boolean",
        {**_factory("tuple_output"), "output": True},
        2,
        ("model.output", "boolean"),
    ),
]


@pytest.mark.parametrize(("case", "model", "code", "names"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_model_config_faults(
    case: str,
    model: dict[str, Any],
    code: int,
    names: tuple[str, ...],
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert_clean_failure(_audit(tmp_path, data_dir, model, capsys), code, *names)


MODEL_CASES: list[tuple[str, dict[str, Any], int, tuple[str, ...]]] = [
    (
        "factory raises",
        _factory("raising", depth=5),
        1,
        ("model.factory failed", "bad depth 5", "_build_layers", "model_factories.py"),
    ),
    ("factory returns a string", _factory("not_a_model"), 1, ("model.factory", "str")),
    ("forward returns a tuple", _factory("tuple_output"), 1, ("model.output", "tuple of 2")),
    ("forward returns a dict", _factory("dict_output"), 1, ("model.output", "'logits'")),
    ("forward returns an object", _factory("object_output"), 1, ("model.output", "Output")),
    (
        "output index out of range",
        {**_factory("tuple_output"), "output": 5},
        1,
        ("model.output", "5", "tuple of 2"),
    ),
    (
        "output key missing",
        {**_factory("dict_output"), "output": "logit"},
        1,
        ("model.output", "'logit'", "'logits'"),
    ),
    ("output selects a list", {**_factory("object_output"), "output": "hidden"}, 1, ("model.output", "list")),
    ("output set for a plain tensor", {**_factory("tiny"), "output": 0}, 1, ("model.output", "remove it")),
    ("output of the wrong shape", _factory("wrong_shape"), 1, ("logits of shape", "(2, 2, 1)")),
    ("NaN logits", _factory("nan_output"), 1, ("NaN",)),
    ("fewer outputs than classes", _factory("tiny", num_classes=1), 1, ("model.num_classes", "1 outputs")),
    (
        "model expects other channels",
        _factory("tiny", in_channels=1),
        1,
        ("colour image", "data.transform.colour_to_grey", "data.transform.channels: 3"),
    ),
    ("layer without a rule", _factory("with_lstm"), 1, ("rnn", "LSTM", "extra_rules")),
    ("relevance not conserved", _factory("normalising"), 1, ("relevance is not conserved", "Normalising")),
]


@pytest.mark.parametrize(("case", "model", "code", "names"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_faults(
    case: str,
    model: dict[str, Any],
    code: int,
    names: tuple[str, ...],
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert_clean_failure(_audit(tmp_path, data_dir, model, capsys), code, *names)


# --------------------------------------------------------------------------------------------------
# checkpoints


def _checkpoint_case(tmp_path: Path, kind: str) -> tuple[dict[str, Any], int, tuple[str, ...]]:
    from tests.model_factories import tiny

    path = tmp_path / "weights.pt"
    if kind == "missing":
        return (
            {**_factory("tiny"), "checkpoint": str(tmp_path / "gone.pt")},
            2,
            ("model.checkpoint", "gone.pt"),
        )
    if kind == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
        return {**_factory("tiny"), "checkpoint": str(path)}, 1, ("checkpoint", "weights.pt")
    if kind == "pickled model":
        torch.save(tiny(), path)
        return {**_factory("tiny"), "checkpoint": str(path)}, 1, ("allow_pickle", "weights.pt")
    if kind == "a list":
        torch.save([1, 2, 3], path)
        return {**_factory("tiny"), "checkpoint": str(path)}, 1, ("state dict", "list")
    if kind == "head of another class count (factory)":
        torch.save(tiny(num_classes=3).state_dict(), path)
        return (
            {**_factory("tiny"), "checkpoint": str(path)},
            1,
            ("fc.weight", "3 outputs", "model.factory_kwargs"),
        )
    if kind == "head of another class count (architecture)":
        import torchvision

        torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
        model = {"architecture": "resnet18", "num_classes": 2, "checkpoint": str(path)}
        return model, 1, ("fc.weight", "model.num_classes to 3")
    if kind == "another architecture":
        torch.save(tiny().state_dict(), path)
        model = {"architecture": "resnet18", "num_classes": 2, "checkpoint": str(path)}
        return model, 1, ("model.architecture", "weights.pt")
    raise AssertionError(kind)


CHECKPOINT_CASES = [
    "missing",
    "garbage",
    "pickled model",
    "a list",
    "head of another class count (factory)",
    "head of another class count (architecture)",
    "another architecture",
]


@pytest.mark.parametrize("kind", CHECKPOINT_CASES)
def test_checkpoint_faults(
    kind: str, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, code, names = _checkpoint_case(tmp_path, kind)
    assert_clean_failure(_audit(tmp_path, data_dir, model, capsys), code, *names)


def test_output_selectors_make_those_models_auditable(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fix the messages name works: tuple (index), dict (key) and object (attribute) outputs."""
    for name, key in (("tuple_output", 0), ("dict_output", "logits"), ("object_output", "logits")):
        (tmp_path / name).mkdir()
        result = _audit(tmp_path / name, data_dir, {**_factory(name), "output": key}, capsys)
        assert result.code in (0, 10), result.output
        assert "Traceback" not in result.output
