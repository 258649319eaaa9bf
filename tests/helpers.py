"""Small builders shared by tests (real files, real models; nothing mocked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(
    root: Path, n_per_class: int = 6, classes: tuple[str, ...] = ("cat", "dog"), size: int = 16
) -> Path:
    """root/<class>/<i>.png with random RGB images; returns root."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i:03d}.png")
    return root
