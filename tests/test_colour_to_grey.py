"""``data.transform.colour_to_grey``: colour image files for a 1-channel (grey) model.

By default (``refuse``) a truly colour image is skipped for a grey model and the reason names the option;
with ``luma`` it is converted as PIL's ``convert("L")`` and torchvision's ``Grayscale`` do, on every path
that brings samples to the model's channels (Pillow, the batched JPEG decoder, factory arrays), and the
setting is part of the heatmap cache key and the run id.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision.transforms.functional import rgb_to_grayscale

from spray.config import AuditConfig, config_from_dict
from spray.data import build_dataset
from spray.errors import ConfigError
from spray.lab.cnn import small_cnn
from spray.runs.identity import cache_dir_name, heatmap_settings, run_hashes
from tests.faults.cli import assert_clean_failure, run_main
from tests.helpers import make_image_folder


def _raw(root: Path, transform: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "grey",
        "model": {
            "factory": "spray.lab.cnn:small_cnn",
            "factory_kwargs": {"in_channels": 1, "num_classes": 2},
        },
        "data": {"kind": "image_folder", "path": str(root), "transform": transform or {}},
        "analysis": {"embedding": "spectral"},
        "output": {"runs_dir": str(root.parent / "runs")},
    }


def _write(tmp_path: Path, raw: dict[str, Any], name: str = "audit.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


@pytest.fixture
def rgb_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "imgs", n_per_class=3, size=28)


def _expected_grey(path: Path) -> torch.Tensor:
    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0
    return rgb_to_grayscale(rgb)


def test_colour_files_for_a_grey_model_are_refused_naming_the_option(
    rgb_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_main(["audit", "--config", str(_write(tmp_path, _raw(rgb_folder))), "-q"], capsys)
    assert_clean_failure(result, 1, "colour image", "data.transform.colour_to_grey: luma")


@pytest.mark.parametrize("transform", [{}, {"mean": [0.5], "std": [0.25]}, {"channels": 1}])
def test_colour_files_for_a_grey_model_are_warned_of_however_the_channels_are_set(
    rgb_folder: Path, transform: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: with a one-value mean (a grey model's natural config) or data.transform.channels: 1,
    nothing said before the audit that the colour files would all be skipped; `spray init` read 'ok'."""
    cfg = config_from_dict(_raw(rgb_folder, transform))
    ds = build_dataset(cfg.data, thumbnail_size=cfg.batch.thumbnail_size)
    with caplog.at_level("WARNING", logger="spray.data.dataset"):
        ds.match_model(small_cnn(in_channels=1, num_classes=2))
    assert ds.channels == 1
    assert "colour ones are skipped" in caplog.text and "colour_to_grey: luma" in caplog.text
    caplog.clear()
    luma = config_from_dict(_raw(rgb_folder, {**transform, "colour_to_grey": "luma"}))
    with caplog.at_level("WARNING", logger="spray.data.dataset"):
        build_dataset(luma.data).match_model(small_cnn(in_channels=1, num_classes=2))
    assert "colour ones are skipped" not in caplog.text


def test_luma_audits_colour_files_with_a_grey_model(
    rgb_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, _raw(rgb_folder, {"colour_to_grey": "luma"}))
    result = run_main(["audit", "--config", str(cfg), "-q"], capsys)
    assert result.code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert summary["n_samples"] == 6 and not summary["skipped"], summary


def test_the_audited_input_is_torchvision_s_and_pil_s_grey(rgb_folder: Path) -> None:
    cfg = config_from_dict(_raw(rgb_folder, {"colour_to_grey": "luma"}))
    ds = build_dataset(cfg.data, thumbnail_size=cfg.batch.thumbnail_size)
    ds.match_model(small_cnn(in_channels=1, num_classes=2))
    assert ds.channels == 1
    for i, sid in enumerate(ds.sample_ids):
        x = ds.load_input(i)
        assert x.shape == (1, 28, 28)
        # torchvision's tensor path weighs red 0.2989 where ITU-R 601-2 (and PIL) say 0.299.
        torch.testing.assert_close(x, _expected_grey(rgb_folder / sid), atol=2e-4, rtol=0)
        pil = torch.from_numpy(np.array(Image.open(rgb_folder / sid).convert("L"))).float()[None] / 255.0
        # PIL rounds to whole grey levels (and its 16-bit fixed-point weights differ in the 6th digit).
        assert float((x - pil).abs().max()) <= 0.51 / 255
    item = ds[0]
    assert item.thumbnail is not None and item.thumbnail.shape[-1] == 1  # type: ignore[union-attr]


def test_the_batched_jpeg_decoder_converts_alike(tmp_path: Path) -> None:
    root = tmp_path / "jpegs"
    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
            (root / cls / f"{i}.jpg").write_bytes(buf.getvalue())
    data = config_from_dict(_raw(root, {"colour_to_grey": "luma", "channels": 1})).data
    pillow = build_dataset(data, thumbnail_size=8)
    batched = build_dataset(data, thumbnail_size=8, jpeg_device=torch.device("cpu"))
    b = batched.first_batch(4)
    assert batched.n_device_decoded == 4 and b.x is not None and b.x.shape == (4, 1, 24, 24)
    for row, i in enumerate(b.indices):
        torch.testing.assert_close(b.x[row], pillow.load_input(i), atol=0, rtol=0)
        torch.testing.assert_close(b.x[row], _expected_grey(root / b.sample_ids[row]), atol=2e-4, rtol=0)


def test_factory_colour_arrays_for_a_grey_model(tmp_path: Path) -> None:
    (tmp_path / "colour_ds.py").write_text(
        "import numpy as np\n"
        "def build():\n"
        "    rng = np.random.default_rng(0)\n"
        "    return [(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), i % 2) for i in range(4)]\n"
    )
    raw = _raw(tmp_path, {"channels": 1})
    raw["data"] = {"kind": "factory", "factory": "colour_ds:build", "transform": {"channels": 1}}
    refused = build_dataset(config_from_dict(raw, base_dir=tmp_path).data)
    skipped = refused[0]
    assert "colour_to_grey" in getattr(skipped, "reason", ""), skipped
    raw["data"]["transform"]["colour_to_grey"] = "luma"
    ds = build_dataset(config_from_dict(raw, base_dir=tmp_path).data)
    arr = np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    want = rgb_to_grayscale(torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0)
    torch.testing.assert_close(ds.load_input(0), want, atol=2e-4, rtol=0)


def test_the_setting_is_part_of_the_cache_key_and_run_id(rgb_folder: Path) -> None:
    refuse = config_from_dict(_raw(rgb_folder))
    luma = config_from_dict(_raw(rgb_folder, {"colour_to_grey": "luma"}))
    # The default leaves the keys of existing runs as they were: it is not in the dump.
    assert "colour_to_grey" not in json.dumps(heatmap_settings(refuse))
    assert cache_dir_name(refuse, "m" * 64) != cache_dir_name(luma, "m" * 64)
    assert run_hashes(refuse, "m", "d")["config"] != run_hashes(luma, "m", "d")["config"]


@pytest.mark.parametrize(
    ("transform", "why"),
    [
        ({"channels": 3}, "channels is 3"),
        ({"grayscale_to_rgb": True}, "grayscale_to_rgb makes 3 channels"),
        ({"mean": [0.5] * 3, "std": [0.2] * 3}, "'mean'/'std' have 3 values"),
    ],
)
def test_luma_for_an_rgb_model_is_a_config_error(transform: dict[str, Any], why: str) -> None:
    raw = {
        "model": {"architecture": "resnet18", "num_classes": 2},
        "data": {"kind": "image_folder", "path": "."},
    }
    raw["data"]["transform"] = {"colour_to_grey": "luma", **transform}  # type: ignore[index]
    with pytest.raises(ConfigError, match="colour_to_grey") as err:
        config_from_dict(raw)
    assert why in str(err.value)
    AuditConfig.model_validate({**raw, "data": {**raw["data"], "transform": transform}})  # type: ignore[dict-item]
