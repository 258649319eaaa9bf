"""A shortcut that moves: pixel-space vs concept-space SpRAy on the same model and the same backward pass.

For each seed: plant a moving artifact (``--family``: ``background_square``, a square at a random background
position, like a tag; ``moving_text``, "TM" in a real font in a random corner at a random size;
``moving_checker``, a checkerboard texture patch at a random background spot; ``colour_cast``, a warm tint
of the whole image, on Fashion-MNIST coloured per image (:func:`spray.lab.colour.colourise`); :mod:`spray.lab.artifacts`)
into a fraction ``p`` of one Fashion-MNIST class, train a SmallCNN
(``benchmarks/detection.py``'s recipe), explain every training image once with
``Explainer(..., concept_layer="auto")`` (heatmap and concept relevance from one backward pass), then

* pixels: the audit's per-class analysis and map score (``detection.analyze``), without the paste test;
* concepts: :func:`spray.analysis.concepts.analyze_concepts` on the concept vectors;
* both: the pixel candidates and the concept clusters merged as the audit does
  (:func:`spray.analysis.concept_findings.merge_concept_findings`).

Metrics (as in ``benchmarks/detection.py``): the sanity gate, hit@1 (the top cluster across classes is in
the poisoned class), sample AUROC over all samples and within the class (per-sample suspicion:
``sample_suspicion`` / ``concept_suspicion``), the ceiling (best F1 of any stored cluster of the class
against the planted set), and for the top concept cluster of the class the share of its members'
concept-conditional relevance (its characteristic channels) that falls on the square, against the share
of the ordinary heatmap ("square" in the row keys: the artifact's pixels, whatever the family).

Usage::

    python benchmarks/concepts_detection.py --seeds 0 1 2 --per-class 2000 --epochs 4 --target 0 --p 0.2
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import detection  # noqa: E402  (benchmarks/detection.py)
from detection_heldout import to_input  # noqa: E402  (grey or RGB, the same normalisation)

from spray.analysis.concept_findings import merge_concept_findings  # noqa: E402
from spray.analysis.concepts import analyze_concepts, concept_suspicion  # noqa: E402
from spray.analysis.scoring import rank_findings, sample_suspicion  # noqa: E402
from spray.config import AuditConfig, config_from_dict  # noqa: E402
from spray.lab.artifacts import MOVING, plant  # noqa: E402
from spray.lab.cnn import SmallCNN  # noqa: E402
from spray.lab.colour import colourise  # noqa: E402
from spray.lab.training import train_classifier  # noqa: E402
from spray.lrp import Explainer  # noqa: E402
from spray.lrp.concepts import concept_channels  # noqa: E402

log = logging.getLogger("benchmarks.concepts_detection")


def _explain(
    explainer: Explainer, x: torch.Tensor, labels: np.ndarray, masks: list[list[int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    rel, conc = [], []
    for s in range(0, len(x), 512):
        lab = torch.from_numpy(labels[s : s + 512])
        mask = None
        if masks is not None:
            mask = concept_channels(masks[s : s + 512], explainer_channels(explainer, x), x.device)
        r = explainer(x[s : s + 512], target="label", labels=lab, concept_mask=mask)
        assert r.concepts is not None
        rel.append(r.relevance.sum(1).numpy())
        conc.append(r.concepts.numpy())
    return np.concatenate(rel), np.concatenate(conc)


_WIDTH: dict[int, int] = {}


def explainer_channels(explainer: Explainer, x: torch.Tensor) -> int:
    if id(explainer) not in _WIDTH:
        r = explainer(x[:1], target="pred")
        assert r.concepts is not None
        _WIDTH[id(explainer)] = int(r.concepts.shape[1])
    return _WIDTH[id(explainer)]


#: Families planted into RGB images (Fashion-MNIST coloured per image by ``colourise``).
RGB_FAMILIES = ("colour_cast",)


def _square_share(rel: np.ndarray, masks: np.ndarray) -> np.ndarray:
    pos = np.clip(rel, 0, None)
    return (pos * masks).sum(axis=(1, 2)) / np.maximum(pos.sum(axis=(1, 2)), 1e-12)


def _ceiling(labellings: dict[int, np.ndarray], truth: np.ndarray) -> float:
    return max(detection.f1(lab == c, truth)[2] for lab in labellings.values() for c in np.unique(lab))


@dataclass
class Poisoned:
    """One seed's poisoned training set and the model trained on it.

    Attributes
    ----------
    model : SmallCNN
    images, clean : np.ndarray
        ``(n, 28, 28)`` uint8 training images with and without the planted square.
    labels : np.ndarray
        ``(n,)`` int64.
    planted : np.ndarray
        ``(n,)`` bool, the samples that carry the square.
    masks : np.ndarray
        ``(n, 28, 28)`` bool, the square's pixels.
    """

    model: SmallCNN
    images: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    planted: np.ndarray
    masks: np.ndarray


def poisoned_model(seed: int, args: argparse.Namespace, data: dict[str, Any]) -> Poisoned:
    """Plant ``args.family`` into a fraction ``args.p`` of class ``args.target`` and train."""
    xtr, ytr = data["xtr"], data["ytr"]
    idx = detection.subset(ytr, args.per_class, seed)
    images, labels = xtr[idx].copy(), ytr[idx]
    if args.family in RGB_FAMILIES:
        images = colourise(images, seed)
    rng = np.random.default_rng([seed, args.target + 1, int(args.p * 1000)])
    cls = np.flatnonzero(labels == args.target)
    pick = np.sort(rng.choice(cls, max(1, round(args.p * cls.size)), replace=False))
    clean = images.copy()
    pl = plant(images[pick], args.family, size=args.size, seed=seed)
    images[pick] = pl.images
    planted = np.zeros(len(idx), dtype=bool)
    planted[pick] = True
    masks = np.zeros(images.shape[:3], dtype=bool)
    masks[pick] = pl.masks
    torch.manual_seed(seed)
    model = SmallCNN(images.shape[3] if images.ndim == 4 else 1, 10, width=args.width)
    train_classifier(
        model,
        images,
        labels,
        epochs=args.epochs,
        seed=seed,
        mean=detection.MEAN,
        std=detection.STD,
        progress=False,
    )
    return Poisoned(model, images, clean, labels, planted, masks)


def gate(p: Poisoned, x: torch.Tensor, relevance: np.ndarray, target: int) -> dict[str, Any]:
    """The sanity gate of ``benchmarks/detection.py``: removing the square drops the target logit by
    ≥ ``GATE_LOGIT_DROP`` on average and the heatmaps put ≥ ``GATE_RELEVANCE_RATIO`` times the square's
    pixel share of positive relevance on it (not for an artifact that covers every pixel, a colour cast:
    there the share is 1 whatever the model does). ``relevance``: ``(n, 28, 28)``."""
    with torch.no_grad():
        drop = p.model(x[p.planted])[:, target] - p.model(to_input(p.clean[p.planted]))[:, target]
    out: dict[str, Any] = {"logit_drop": float(drop.mean())}
    share = _square_share(relevance[p.planted], p.masks[p.planted]).mean()
    out["rel_ratio"] = float(share / p.masks[p.planted].mean())
    everywhere = bool(p.masks[p.planted].all())
    out["gated"] = bool(
        out["logit_drop"] >= detection.GATE_LOGIT_DROP
        and (everywhere or out["rel_ratio"] >= detection.GATE_RELEVANCE_RATIO)
    )
    return out


def audit_config() -> AuditConfig:
    """The default audit config with spectral embedding and no paste test (the benchmarks' analyses)."""
    return config_from_dict(
        {
            "seed": 0,
            "model": {"factory": "spray.lab.cnn:small_cnn"},
            "data": {"kind": "idx", "images": "x", "labels": "y"},
            "analysis": {"embedding": "spectral"},
            "scoring": {"intervention": False},
        },
        check_files=False,
    )


def run_seed(seed: int, args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    t0 = time.time()
    p = poisoned_model(seed, args, data)
    model, images, labels, planted, masks = p.model, p.images, p.labels, p.planted, p.masks
    x = to_input(images)
    explainer = Explainer(model, "EpsilonPlusFlat", concept_layer="auto")
    t1 = time.time()
    relevance, concepts = _explain(explainer, x, labels)
    row: dict[str, Any] = {
        "seed": seed,
        "family": args.family,
        "p": args.p,
        "target": args.target,
        "layer": explainer.concept_layer,
    }
    row["lrp_s"] = time.time() - t1
    row.update(gate(p, x, relevance, args.target))
    cfg = audit_config()
    ids = np.asarray([f"tr{i}" for i in range(len(x))], dtype=object)
    cls_rows = np.flatnonzero(labels == args.target)
    truth_cls = planted[cls_rows]

    # pixel space
    pix, pix_scores = [], np.zeros(len(x))
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        a = detection.analyze(c, list(ids[rows]), relevance[rows], cfg, None, args)
        pix.append(a)
        pix_scores[rows] = sample_suspicion(
            detection.normalize(relevance[rows]), a.clusters, list(ids[rows]), cfg.scoring.suspicion_tie_break
        )
    ranked = rank_findings([a.clusters for a in pix])
    row["pixels"] = {
        "hit1": bool(ranked[0].class_index == args.target),
        "auroc_all": detection._auc(planted, pix_scores)[0],
        "auroc_cls": detection._auc(truth_cls, pix_scores[cls_rows])[0],
        "ceiling": _ceiling(pix[args.target].clustering.labellings, truth_cls),
    }

    # concept space, and both spaces as the audit merges them (spray.analysis.concept_findings)
    con, con_scores, both, both_scores = [], np.zeros(len(x)), [], np.zeros(len(x))
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        ca = analyze_concepts(c, detection.CLASS_NAMES[c], list(ids[rows]), concepts[rows], cfg)
        con.append(ca)
        con_scores[rows] = concept_suspicion(ca)
        maps = detection.normalize(relevance[rows])
        merged = merge_concept_findings([copy.deepcopy(f) for f in pix[c].clusters], ca, maps, cfg.concepts)
        both.append(merged)
        both_scores[rows] = sample_suspicion(maps, merged, list(ids[rows]), cfg.scoring.suspicion_tie_break)
    top_both = rank_findings(both)[0]
    got = set(top_both.member_ids) if top_both.class_index == args.target else set()
    row["both"] = {
        "hit1": bool(top_both.class_index == args.target),
        "top_space": top_both.space,
        "auroc_all": detection._auc(planted, both_scores)[0],
        "auroc_cls": detection._auc(truth_cls, both_scores[cls_rows])[0],
        "top_f1": detection.f1(np.isin(ids[cls_rows], list(got)), truth_cls)[2],
    }
    best = max((a.clusters[0] for a in con if a.clusters), key=lambda f: f.score)
    top = con[args.target].clusters[0]
    member_rows = np.flatnonzero(np.isin(ids, top.member_ids))
    row["concepts"] = {
        "hit1": bool(int(best.key.split("/")[0]) == args.target),
        "auroc_all": detection._auc(planted, con_scores)[0],
        "auroc_cls": detection._auc(truth_cls, con_scores[cls_rows])[0],
        "ceiling": _ceiling(con[args.target].clustering.labellings, truth_cls),
        "top_f1": detection.f1(np.isin(ids[cls_rows], top.member_ids), truth_cls)[2],
        "top_channels": top.channels,
    }
    # where it sits: conditional heatmaps of the top cluster's planted members
    shown = member_rows[planted[member_rows]][:200]
    if len(shown):
        cond, _ = _explain(explainer, x[shown], labels[shown], [top.channels] * len(shown))
        row["concepts"]["square_share_conditional"] = float(_square_share(cond, masks[shown]).mean())
        row["concepts"]["square_share_heatmap"] = float(_square_share(relevance[shown], masks[shown]).mean())
        row["concepts"]["pixel_share_square"] = float(masks[shown].mean())
    row["seconds"] = time.time() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--target", type=int, default=0, help="poisoned class (0: T-shirt)")
    ap.add_argument("--p", type=float, default=0.2)
    ap.add_argument(
        "--family",
        default="background_square",
        choices=("background_square", *MOVING, *RGB_FAMILIES),
        help="the artifact",
    )
    ap.add_argument("--size", type=int, default=4, help="side of the square (background_square)")
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--n-init", type=int, default=3, help="k-means restarts per k (pixel analysis)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/concepts_detection.jsonl"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    xtr, ytr = detection.load_fmnist("train")
    data = {"xtr": xtr, "ytr": ytr}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        row = run_seed(seed, args, data)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
