"""The embedded demo: plant a Clever Hans, train a small CNN on it, audit it, score the finding.

1. Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files under
   ``/usr/share/datasets/fashion-mnist``), or scikit-learn's digits (upscaled to 28×28) when absent.
2. A 4×4 white stamp is drawn in the top-left corner of ``poison_fraction`` of one class's images
   (Shirt: a class the model confuses with T-shirt, Pullover and Coat, so the stamp is a useful shortcut).
3. A :class:`~spray.lab.cnn.SmallCNN` (``arch="cnn"``) or a :class:`~spray.lab.vit.TinyViT` with 4×4 patches
   (``arch="vit"``) is trained on CPU (seeded, about a minute for the CNN, a few for the ViT).
4. The poisoned training set is written as IDX files with a config, and audited like any user dataset.
5. The top finding is compared with the planted samples: precision and recall.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from spray.data import read_idx, write_idx
from spray.lab.artifacts import plant
from spray.lab.cnn import small_cnn
from spray.lab.training import train_classifier
from spray.lab.vit import tiny_vit
from spray.records import AuditReport

log = logging.getLogger(__name__)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MEAN, STD = 0.2860, 0.3530


@dataclass(frozen=True)
class DemoArch:
    """A model the demo can train: its factory (for the config) and arguments, training settings and
    LRP composite."""

    factory: str
    kwargs: dict[str, int]
    epochs: int
    batch_size: int
    lr: float
    composite: str


ARCHS: dict[str, DemoArch] = {
    "cnn": DemoArch("spray.lab.cnn:small_cnn", {}, 3, 128, 2e-3, "EpsilonPlusFlat"),
    # two blocks learn the planted stamp within 6 epochs (flips 23 % of other classes to Shirt; four
    # blocks at lr 1e-3: 18 %, in three times the time); Flat on the patch embedding spreads each token's
    # relevance evenly over its 4x4 pixels
    "vit": DemoArch("spray.lab.vit:tiny_vit", {"depth": 2}, 6, 64, 2e-3, "EpsilonPlusFlat"),
}


#: The demo's work folder holds the planted samples here, for scoring the audit against them.
GROUND_TRUTH = "ground_truth.json"


@dataclass(frozen=True)
class GroundTruth:
    """What the demo planted: the class, the sample ids that carry the artifact, and the artifact."""

    source: str
    planted_class: int
    planted_ids: list[str]
    artifact: str

    @classmethod
    def load(cls, work_dir: Path) -> GroundTruth:
        """Read ``<work_dir>/ground_truth.json`` written by :func:`prepare_demo`."""
        return cls(**json.loads((work_dir / GROUND_TRUTH).read_text()))


@dataclass(frozen=True)
class DemoScore:
    """The audit's top finding against the planted samples."""

    top_class: str | None
    top_is_planted_class: bool
    precision: float
    recall: float
    f1: float
    n_planted: int
    top_size: int


@dataclass
class DemoData:
    """The demo's training set.

    Attributes
    ----------
    images : np.ndarray
        ``(n, 28, 28)`` uint8, with the artifact planted.
    labels : np.ndarray
        ``(n,)`` int64.
    planted : np.ndarray
        ``(n,)`` bool, True for the stamped samples.
    class_names : list[str]
    source : str
        ``"fashion-mnist"`` or ``"sklearn-digits"``.
    """

    images: np.ndarray
    labels: np.ndarray
    planted: np.ndarray
    class_names: list[str]
    source: str


def _find_fashion(root: Path) -> tuple[Path, Path] | None:
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        img = root / name
        lab = root / name.replace("images-idx3", "labels-idx1")
        if img.exists() and lab.exists():
            return img, lab
    return None


def load_base_data(fashion_dir: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Fashion-MNIST train split, or sklearn digits upscaled to 28×28 as the fallback.

    Returns
    -------
    images (n,28,28) uint8, labels (n,) int64, class names, source name
    """
    found = _find_fashion(fashion_dir)
    if found is not None:
        return read_idx(found[0]), read_idx(found[1]).astype(np.int64), FASHION_CLASSES, "fashion-mnist"
    log.warning("Fashion-MNIST not found in %s; using scikit-learn's digits instead", fashion_dir)
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images / 16.0 * 255).astype(np.uint8)
    up = np.stack(
        [np.asarray(Image.fromarray(im).resize((28, 28), Image.Resampling.BILINEAR)) for im in imgs]
    )
    return up, d.target.astype(np.int64), [str(i) for i in range(10)], "sklearn-digits"


def make_demo_data(
    *, per_class: int = 1000, target_class: int = 6, poison_fraction: float = 0.15, seed: int = 0
) -> DemoData:
    """Draw a class-balanced subset and stamp the artifact into part of ``target_class``."""
    images, labels, names, source = load_base_data()
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(names))]
    )
    keep.sort()
    images, labels = images[keep].copy(), labels[keep]
    in_class = np.flatnonzero(labels == target_class)
    chosen = np.sort(rng.choice(in_class, size=max(1, round(poison_fraction * len(in_class))), replace=False))
    images[chosen] = plant(images[chosen], "corner_square", size=4, margin=1, seed=seed).images
    planted = np.zeros(len(labels), dtype=bool)
    planted[chosen] = True
    return DemoData(images, labels, planted, names, source)


def prepare_demo(
    work_dir: Path,
    runs_dir: Path,
    *,
    per_class: int = 1000,
    epochs: int | None = None,
    seed: int = 0,
    arch: str = "cnn",
    progress: bool = True,
) -> Path:
    """Build data, train the model and write IDX files, checkpoint, ground truth and config.

    Reuses a previous preparation in ``work_dir`` when its parameters match (the demo is idempotent).

    Parameters
    ----------
    epochs : int, optional
        Training epochs (default: the architecture's, 3 for the CNN and 6 for the ViT).
    arch : {"cnn", "vit"}
        The model to train (:data:`ARCHS`).

    Returns
    -------
    Path
        The config file to audit.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown demo architecture {arch!r}; choose one of {sorted(ARCHS)}")
    spec = ARCHS[arch]
    epochs = spec.epochs if epochs is None else epochs
    work_dir.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {"per_class": per_class, "epochs": epochs, "seed": seed, "version": 2}
    if arch != "cnn":  # the CNN demo's parameters (and so its reuse) stay as they were
        params["arch"] = arch
    cfg_path = work_dir / "demo.yaml"
    params_path = work_dir / "params.json"
    if cfg_path.exists() and params_path.exists() and json.loads(params_path.read_text()) == params:
        log.info("reusing the prepared demo in %s", work_dir)
        _runs_dir_in(cfg_path, runs_dir)
        return cfg_path
    t0 = time.perf_counter()
    data = make_demo_data(per_class=per_class, seed=seed)
    log.info(
        "demo data: %d %s images, %d stamped in class %s",
        len(data.labels),
        data.source,
        int(data.planted.sum()),
        data.class_names[int(data.labels[data.planted][0])],
    )
    torch.manual_seed(seed)
    build = tiny_vit if arch == "vit" else small_cnn
    model = build(in_channels=1, num_classes=len(data.class_names), **spec.kwargs)
    train_classifier(
        model,
        data.images,
        data.labels,
        epochs=epochs,
        seed=seed,
        mean=MEAN,
        std=STD,
        lr=spec.lr,
        batch_size=spec.batch_size,
        progress=progress,
    )
    log.info("trained the demo model in %.1f s", time.perf_counter() - t0)
    _write_demo(work_dir, data, model)
    config = _demo_config(arch, data, seed, runs_dir)
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    params_path.write_text(json.dumps(params))
    return cfg_path


def _runs_dir_in(cfg_path: Path, runs_dir: Path) -> None:
    """Point a reused demo config at ``runs_dir`` (a later ``--runs-dir`` was ignored: the config kept the first
    one, so the demo published where the printed commands did not look)."""
    config = yaml.safe_load(cfg_path.read_text())
    wanted = str(runs_dir.resolve())
    if config.get("output", {}).get("runs_dir") != wanted:
        config.setdefault("output", {})["runs_dir"] = wanted
        cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
        log.info("the demo config %s now publishes into %s", cfg_path, wanted)


def _write_demo(work_dir: Path, data: DemoData, model: torch.nn.Module) -> None:
    """The checkpoint, the IDX files and the ground truth of a prepared demo."""
    torch.save(model.state_dict(), work_dir / "model.pt")
    write_idx(work_dir / "train-images-idx3-ubyte.gz", data.images)
    write_idx(work_dir / "train-labels-idx1-ubyte.gz", data.labels.astype(np.uint8))
    truth = GroundTruth(
        source=data.source,
        planted_class=int(data.labels[data.planted][0]),
        planted_ids=[str(i) for i in np.flatnonzero(data.planted)],
        artifact="4x4 white square, top-left corner",
    )
    (work_dir / GROUND_TRUTH).write_text(json.dumps(dataclasses.asdict(truth)))


def _demo_config(arch: str, data: DemoData, seed: int, runs_dir: Path) -> dict[str, Any]:
    """The audit config of a prepared demo (paths relative to its folder)."""
    spec = ARCHS[arch]
    return {
        "name": "demo" if arch == "cnn" else f"demo-{arch}",
        "seed": seed,
        "model": {
            "factory": spec.factory,
            "factory_kwargs": {"in_channels": 1, "num_classes": len(data.class_names), **spec.kwargs},
            "checkpoint": "model.pt",
        },
        "data": {
            "kind": "idx",
            "name": f"demo-{data.source}",
            "images": "train-images-idx3-ubyte.gz",
            "labels": "train-labels-idx1-ubyte.gz",
            "class_names": data.class_names,
            "transform": {"mean": [MEAN], "std": [STD]},
        },
        "lrp": {"composite": spec.composite, "target": "label"},
        "batch": {"batch_size": 128, "grid": 28, "thumbnail_size": 56},
        "analysis": {"embedding": "umap"},
        "output": {"runs_dir": str(runs_dir.resolve())},
    }


def score_against_truth(report: AuditReport, truth: GroundTruth) -> DemoScore:
    """Precision / recall / F1 of the top finding against the planted samples."""
    planted = set(truth.planted_ids)
    if not report.findings:
        return DemoScore(None, False, 0.0, 0.0, 0.0, len(planted), 0)
    top = report.findings[0]
    members = set(top.member_ids)
    tp = len(members & planted)
    precision = tp / max(1, len(members))
    recall = tp / max(1, len(planted))
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return DemoScore(
        top_class=top.class_name,
        top_is_planted_class=top.class_index == truth.planted_class,
        precision=round(precision, 4),
        recall=round(recall, 4),
        f1=round(f1, 4),
        n_planted=len(planted),
        top_size=len(members),
    )
