"""spray.lab.colour: grey lab images as RGB ones whose colour is no class cue."""

from __future__ import annotations

import numpy as np

from spray.lab.colour import colourise


def test_each_image_gets_its_own_seeded_tint_and_black_stays_black() -> None:
    grey = np.zeros((50, 28, 28), dtype=np.uint8)
    grey[:, 8:20, 8:20] = 200
    rgb = colourise(grey, seed=3)
    assert rgb.shape == (50, 28, 28, 3) and rgb.dtype == np.uint8
    assert (rgb[:, 0, 0] == 0).all()  # background stays black
    tints = rgb[:, 10, 10].astype(float) / 200  # the gain of every channel of every image
    assert ((tints >= 0.35 - 0.01) & (tints <= 1.0)).all()
    assert len({tuple(t) for t in tints.round(2)}) == 50  # every image its own colour
    assert (rgb[:, 8:20, 8:20] == rgb[:, 10:11, 10:11]).all()  # one tint over the whole image
    assert (colourise(grey, seed=3) == rgb).all() and not (colourise(grey, seed=4) == rgb).all()
