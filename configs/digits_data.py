"""An example dataset factory for spray: scikit-learn's 1,797 handwritten digits (8×8, grey).

Used by ``configs/example_factory_dataset.yaml`` (``data.factory: digits_data:digits``). spray finds this
module because it lies next to the config file; no PYTHONPATH is needed. It shows the factory contract:

- ``__len__`` and ``__getitem__(i) -> (image, label)``; the image is un-normalised (here float32 in
  [0, 1]; uint8 arrays and PIL images work as well), resizing and normalisation are left to
  ``data.transform``;
- ``targets``: the labels, so spray need not load every item to learn them;
- ``classes``: the class names in label order;
- ``sample_ids``: stable, unique ids (flags and the incremental cache follow samples by id);
- ``fingerprint``: changes whenever the data changes (else spray reads every sample to fingerprint it).
"""

from __future__ import annotations

import hashlib

import numpy as np


class Digits:
    """scikit-learn's digits as a map-style dataset (see the module docstring for the contract)."""

    def __init__(self, limit: int | None = None) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        n = len(d.target) if limit is None else min(limit, len(d.target))
        self.images = (d.images[:n] / 16.0).astype(np.float32)  # (n, 8, 8), 0..16 → [0, 1]
        self.targets = [int(t) for t in d.target[:n]]
        self.classes = [str(c) for c in range(10)]
        self.sample_ids = [f"digit-{i:04d}" for i in range(n)]
        self.fingerprint = hashlib.sha256(self.images.tobytes() + bytes(self.targets)).hexdigest()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], self.targets[i]


def digits(limit: int | None = None) -> Digits:
    """The factory named in the config: ``digits_data:digits`` with ``factory_kwargs: {limit: ...}``."""
    return Digits(limit)
