"""Small builders shared by tests (real files, real models; nothing mocked)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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


def small_folder_config(root: Path, classes: tuple[str, ...] = ("cat", "dog"), **model: object) -> dict:
    """A quick audit config of spray's small CNN on ``root/imgs`` (made here: 12 images of 28 px a class)."""
    make_image_folder(root / "imgs", n_per_class=12, size=28, classes=classes)
    return {
        "model": {
            "factory": "spray.lab.cnn:small_cnn",
            "factory_kwargs": {"in_channels": 3, "num_classes": len(classes)},
            **model,
        },
        "data": {"kind": "image_folder", "path": "imgs"},
        "analysis": {"embedding": "spectral", "min_class_size": 5, "n_neighbors": 4, "k_max": 3},
        "scoring": {"intervention_samples": 5},
        "output": {"runs_dir": "runs"},
    }


def minimal_config(folder: Path) -> dict:
    """The smallest raw config that loads: a ResNet-18 by name on an (empty) image folder ``folder/imgs``."""
    (folder / "imgs").mkdir(exist_ok=True)
    return {
        "model": {"architecture": "resnet18", "num_classes": 3},
        "data": {"kind": "image_folder", "path": "imgs"},
    }


def set_key(raw: dict, path: tuple[str, ...], value: object) -> dict:
    """``raw`` with ``value`` at the nested key ``path`` (sections created as needed)."""
    node = raw
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    return raw


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod  # dataclasses look their module up while the script runs
    spec.loader.exec_module(mod)
    return mod
