"""Pooling relevance to the analysis grid: every input pixel counts once, at any input size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spray.attribution import _area_weights, pool_relevance


@pytest.mark.parametrize("side", [48, 100, 240, 299])
def test_every_pixel_counts_once_when_the_side_is_no_multiple_of_the_grid(side: int) -> None:
    """Adaptive average pooling's windows overlap: a pixel of relevance 1 was stored as 0.56-3.5."""
    g = torch.Generator().manual_seed(side)
    for y, x in torch.randint(0, side, (20, 2), generator=g).tolist():
        r = torch.zeros(1, 1, side, side)
        r[0, 0, y, x] = 1.0
        pooled = pool_relevance(r, 32)
        assert pooled.shape == (1, 32, 32) and abs(float(pooled.sum()) - 1.0) < 1e-5
    uniform = pool_relevance(torch.ones(2, 3, side, side), 32)
    torch.testing.assert_close(uniform, torch.full_like(uniform, 3 * (side / 32) ** 2))


def test_area_weights_agree_with_plain_sums_on_multiples() -> None:
    r = torch.randn(2, 1, 64, 96)
    plain = pool_relevance(r, 32)  # multiples: block sums
    weights = torch.einsum("ih,bhw,jw->bij", _area_weights(64, 32, r), r[:, 0], _area_weights(96, 32, r))
    torch.testing.assert_close(plain, weights)
    assert torch.equal(pool_relevance(torch.ones(1, 1, 28, 28), 32), torch.ones(1, 28, 28))  # small: native


def test_maps_beyond_float16_are_refused_and_maps_that_vanish_are_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Heatmaps are stored as float16: inf or all-zero maps would reach the analysis silently."""
    import logging

    from spray.attribution import _stored_maps
    from spray.errors import ModelError

    ok = _stored_maps(torch.full((2, 4, 4), 0.5))
    assert ok.dtype == np.float16 and float(ok.max()) == 0.5
    with pytest.raises(ModelError, match="exceed float16's range"):
        _stored_maps(torch.full((1, 4, 4), 1e6))
    with caplog.at_level(logging.WARNING, logger="spray.attribution"):
        tiny = _stored_maps(torch.full((3, 4, 4), 1e-24))
    assert not tiny.any() and "3 relevance maps of a batch round to exactly 0" in caplog.text


def test_a_duplicate_image_later_in_the_run_is_explained_whatever_the_writer_did(tmp_path: Path) -> None:
    """An outside check: with the same image twice (ends of two shards), whether the second was explained
    depended on whether the background writer had saved the first one's shard yet (n_computed 235, 239 or
    243 of 247 between identical runs, and confidences 1e-7 apart): what counts as cached is now fixed when
    the batch stage starts."""
    import yaml

    from spray.cli import main
    from spray.data import write_idx
    from spray.runs.reader import RunReader
    from tests.test_correct_world import build_world

    world = build_world(tmp_path, flag=False)
    images = np.concatenate([world.images, world.images[:1]])
    labels = np.concatenate([world.labels, world.labels[:1]])
    write_idx(world.root / "images.idx", images)
    write_idx(world.root / "labels.idx", labels.astype(np.uint8))
    raw = yaml.safe_load(world.config.read_text())
    raw["batch"]["shard_size"] = 16  # the duplicate's shard comes long after the first one was saved
    raw["batch"]["batch_size"] = 16
    world.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    timings = RunReader.open(world.runs_dir / "latest").summary.timings
    computed = [timings["n_computed"]]
    assert computed == [len(images)]
