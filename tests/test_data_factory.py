"""The factory data source (spray.data.factory): class names, labels and ids as datasets give them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spray.config import DataConfig, config_from_dict
from spray.data import build_dataset
from spray.errors import DataError


def _factory(tmp_path: Path, module: str, body: str) -> DataConfig:
    (tmp_path / f"{module}.py").write_text(body)
    raw: dict[str, Any] = {
        "model": {"architecture": "resnet18", "num_classes": 2},
        "data": {"kind": "factory"},
    }
    raw["data"]["factory"] = f"{module}:build"
    return config_from_dict(raw, base_dir=tmp_path).data


def test_class_names_follow_class_to_idx_not_the_sorted_classes(tmp_path: Path) -> None:
    """An outside check: a torchvision DatasetFolder whose find_classes sets its own label order keeps
    ``classes`` sorted by name (torchvision's contract); spray named every class after another one."""
    body = (
        "import torch\n"
        "ORDER = ['zebra', 'apple', 'mango']\n"
        "class D:\n"
        "    classes = sorted(ORDER)\n"
        "    class_to_idx = {c: ORDER.index(c) for c in ORDER}\n"
        "    targets = [0, 1, 2] * 4\n"
        "    def __len__(self): return 12\n"
        "    def __getitem__(self, i): return torch.full((1, 6, 6), i / 12), self.targets[i]\n"
        "def build(): return D()\n"
    )
    assert build_dataset(_factory(tmp_path, "ordered", body)).class_names == ["zebra", "apple", "mango"]


def test_a_stale_target_the_probe_does_not_read_is_refused_when_its_item_is_loaded(tmp_path: Path) -> None:
    """An outside check: 'targets' was compared with the items' labels on 32 probed items only; the others
    were audited under their 'targets' label while every item is read anyway."""
    body = (
        "import torch\n"
        "class D:\n"
        "    targets = [0, 1] * 200\n"
        "    def __len__(self): return 400\n"
        "    def __getitem__(self, i):\n"
        "        return torch.full((1, 6, 6), i / 400), (1 - self.targets[i] if i == 301 else self.targets[i])\n"
        "def build(): return D()\n"
    )
    ds = build_dataset(_factory(tmp_path, "stale", body))
    assert ds[300].label == 0
    with pytest.raises(
        DataError, match=r"item 301 of the dataset carries label 0, but the dataset's 'targets' say 1"
    ):
        ds[301]


def test_tensor_sample_ids_read_as_their_values(tmp_path: Path) -> None:
    """An outside check: ``sample_ids = torch.arange(...)`` gave ids like 'tensor(1000)', which flags set on the
    same ids given as a list never matched."""
    body = (
        "import numpy as np, torch\n"
        "class D:\n"
        "    targets = [0, 1] * 3\n"
        "    sample_ids = torch.arange(1000, 1006)\n"
        "    def __len__(self): return 6\n"
        "    def __getitem__(self, i): return torch.full((1, 6, 6), i / 6), self.targets[i]\n"
        "def build(): return D()\n"
        "class E(D):\n"
        "    sample_ids = np.array(['a', 'b', 'c', 'd', 'e', 'f'])\n"
        "def build_e(): return E()\n"
    )
    assert build_dataset(_factory(tmp_path, "tensor_ids", body)).sample_ids[:2] == ["1000", "1001"]
    cfg = _factory(tmp_path, "tensor_ids", body).model_copy(update={"factory": "tensor_ids:build_e"})
    assert build_dataset(cfg).sample_ids[:2] == ["a", "b"]
