"""A tiny world with a planted shortcut, shared by the correction tests (and checked here).

Three classes of 12×12 grey images (a horizontal bar, and two rings of nearly the same radius, noisy: classes
1 and 2 are hard to tell apart), a 3×3 white square in the top-left corner of 40 % of class 1, and a tiny
CNN trained on it (seeded, about a second). The square is the shortcut: pasting it into other images makes
the model say "class 1". Written as IDX files with an audit config, a flag database holding the planted
samples, and (on request) a real published audit run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from spray.data import write_idx
from spray.flags import FlagStore

SIZE = 12
N_PER_CLASS = 80
TARGET = 1
DATASET = "tiny-world"


class TinyCNN(nn.Module):
    """Two conv blocks and a dense head (the shape of spray's SmallCNN, much smaller)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def tiny_cnn(num_classes: int = 3) -> TinyCNN:
    """Factory (``model.factory: tests.test_correct_world:tiny_cnn``)."""
    return TinyCNN(num_classes)


def make_images(seed: int = 0, n_per_class: int = N_PER_CLASS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, 12, 12)`` uint8 images, ``(n,)`` labels, ``(n,)`` planted mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    protos = [
        ((yy >= 5) & (yy <= 7) & (xx >= 2) & (xx <= 10)),
        (np.abs(np.hypot(yy - 6, xx - 6) - 3.0) < 1.0),
        (np.abs(np.hypot(yy - 6, xx - 6) - 3.6) < 1.0),
    ]
    imgs, labels = [], []
    for c, p in enumerate(protos):
        base = p.astype(np.float32) * 150
        for _ in range(n_per_class):
            shift = rng.integers(-1, 2, 2)
            img = np.roll(base, tuple(shift), axis=(0, 1)) + rng.normal(0, 45, (SIZE, SIZE))
            imgs.append(np.clip(img, 0, 200))
            labels.append(c)
    images = np.asarray(imgs).astype(np.uint8)
    labels_a = np.asarray(labels, dtype=np.int64)
    planted = np.zeros(len(labels_a), dtype=bool)
    cls = np.flatnonzero(labels_a == TARGET)
    planted[rng.choice(cls, int(0.4 * len(cls)), replace=False)] = True
    images[planted, 0:3, 0:3] = 255
    return images, labels_a, planted


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, 12, 12)`` → ``(n, 1, 12, 12)`` float in [0, 1] (the config has no normalisation)."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]


def train_tiny(images: np.ndarray, labels: np.ndarray, seed: int = 0, epochs: int = 25) -> TinyCNN:
    """Train a TinyCNN (Adam, full batches of 64; about a second)."""
    torch.manual_seed(seed)
    model = TinyCNN()
    x, y = to_input(images), torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), 64):
            i = perm[s : s + 64]
            loss = nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def paste_square(images: np.ndarray) -> np.ndarray:
    """The planted stamp drawn into copies of ``images``."""
    out = images.copy()
    out[:, 0:3, 0:3] = 255
    return out


def flip_rate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of other-class images not predicted as TARGET that are after the stamp is pasted."""
    other = labels != TARGET
    with torch.no_grad():
        before = model(to_input(images[other])).argmax(1)
        after = model(to_input(paste_square(images[other]))).argmax(1)
    base = before != TARGET
    return float(((after == TARGET) & base).sum() / max(1, int(base.sum())))


@dataclass
class World:
    """Files of the tiny world."""

    root: Path
    config: Path
    flags_db: Path
    runs_dir: Path
    images: np.ndarray
    labels: np.ndarray
    planted: np.ndarray
    model: TinyCNN


def build_world(root: Path, *, flag: bool = True, seed: int = 0, correction: dict | None = None) -> World:
    """Write images, labels, checkpoint, config and (``flag``) the planted samples' flags under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    images, labels, planted = make_images(seed)
    model = train_tiny(images, labels, seed)
    torch.save(model.state_dict(), root / "model.pt")
    write_idx(root / "images.idx", images)
    write_idx(root / "labels.idx", labels.astype(np.uint8))
    runs = root / "runs"
    cfg = {
        "name": "tiny",
        "seed": 0,
        "model": {"factory": "tests.test_correct_world:tiny_cnn", "checkpoint": "model.pt"},
        "data": {"kind": "idx", "name": DATASET, "images": "images.idx", "labels": "labels.idx"},
        "batch": {"batch_size": 64, "grid": 12, "thumbnail_size": 12, "device": "cpu"},
        "analysis": {"embedding": "spectral", "min_class_size": 10, "k_max": 6},
        "scoring": {"intervention_samples": 60},
        "output": {"runs_dir": "runs", "html_report": False},
        # 24 fine-tuning steps only: a larger step than the default's, which is sized for thousands of samples
        "correction": {"min_group_size": 5, "epochs": 4, "batch_size": 32, "checkpoint_every": 5, "lr": 1e-2,
                       "eval_max_samples": 200, **(correction or {})},
    }  # fmt: skip
    (root / "audit.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    db = runs / "flags.sqlite"
    if flag:
        FlagStore(db).flag(
            DATASET, [str(i) for i in np.flatnonzero(planted)], "unlearn", cluster_key="1/k2/c0"
        )
    return World(root, root / "audit.yaml", db, runs, images, labels, planted, model)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A tiny world with flags (no audit run)."""
    return build_world(tmp_path_factory.mktemp("world"))


def test_the_tiny_model_uses_the_planted_square(world: World) -> None:
    # The precondition every correction test relies on: the shortcut is learned, and the task is too.
    with torch.no_grad():
        acc = (world.model(to_input(world.images)).argmax(1).numpy() == world.labels).mean()
    assert acc > 0.7
    assert flip_rate(world.model, world.images, world.labels) > 0.5
