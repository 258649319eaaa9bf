"""Colour for grey lab data: Fashion-MNIST as RGB images whose colour is no class cue."""

from __future__ import annotations

import numpy as np


def colourise(images: np.ndarray, seed: int) -> np.ndarray:
    """Tint every grey image by its own random colour.

    Parameters
    ----------
    images : np.ndarray
        ``(n, H, W)`` uint8 grey images.
    seed : int
        Seed of the colours.

    Returns
    -------
    np.ndarray
        ``(n, H, W, 3)`` uint8: each image times its own per-channel gain, uniform in [0.35, 1], so colour
        varies within every class and tells no class from another.
    """
    gains = np.random.default_rng([seed, 7]).uniform(0.35, 1.0, (len(images), 1, 1, 3))
    return np.rint(images[..., None].astype(np.float64) * gains).astype(np.uint8)
