"""Which concept vector isolates a moving shortcut? Representations of one layer's relevance, compared.

Same poisoned training set, model and sanity gate as ``benchmarks/concepts_detection.py`` (a 6×6
``background_square`` at a random background position in a fraction ``p`` of T-shirt). Each training
image is explained once per tapped layer with spray's Explainer (``EpsilonPlusFlat``, target = label);
the relevance arriving at the layer's output is kept *per channel and position* (``(B, C, h, w)``,
activation × gradient, exactly what :class:`spray.lrp.concepts.ConceptTap` sums over positions: the
benchmark swaps the tap's reduction for the identity) and reduced on the fly per channel:

* ``sum``: Σ over positions (today's concept vector; asserted equal to ``LRPResult.concepts``);
* ``pos``: Σ over positions of the positive relevance only;
* ``max``: max over positions of the positive relevance.

Layers: ``features`` (the default, 32 channels at 7×7 after the last pooling), ``features.4`` (the first
conv block's output before its pooling, 16×28×28) and ``features.2`` (the first convolution's ReLU,
16×28×28). The second block's output before pooling (``features.8``) is not a separate candidate: the
max-pooling passes relevance winner-take-all and a ReLU passes it unchanged, so its per-channel sum, positive
sum and maximum equal those of ``features`` exactly (seen in a smoke run: identical rows); likewise
``features.5`` (after the first pooling) equals ``features.4``. Each of the 9 vectors is then post-processed per class, on the L1-normalised rows
(:func:`spray.analysis.concepts.normalize_concepts`), in three ways:

* ``raw``: as is;
* ``centred``: minus the class mean vector (the kNN then sees the deviation from the class's usual
  concept mix; ``analyze_concepts`` L1-renormalises the rows);
* ``z``: minus the class mean, divided by the class's per-channel standard deviation (reason: a detector
  channel with a small share of the relevance otherwise weighs little in the distance).

Each of the 27 representations is analysed offline, from the same model and backward pass, with
spray's own concept stage (:func:`spray.analysis.concepts.analyze_concepts`, default config) in every
class, and scored like ``concepts_detection.py``: ``ceiling`` (best F1 of any cluster at any k against
the planted set, within the class), ``top_f1`` (F1 of the class's top-scored concept cluster),
``auroc_cls`` / ``auroc_all`` (per-sample :func:`spray.analysis.concepts.concept_suspicion`), ``hit1``
(the top-scored cluster across the 10 classes is in the planted class).

Protocol (fixed and committed before any result was seen)
---------------------------------------------------------
Recipe: ``--per-class 600 --epochs 8 --size 6 --p 0.2`` (target 0, width 16). Only seeds whose model
passes the sanity gate count.

* TUNING seeds 0–4. Rule: choose the representation with the highest mean ``ceiling`` over the gated
  tuning seeds; if several are within 0.02 of the best, the one of them with the highest mean
  ``auroc_cls``. Option (e) of issue 17 ("per-class centring of the best") is the ``centred`` variant
  of the best ``raw`` representation under the same rule; it is reported, not chosen separately.
* REPORTING seeds 5–9: run once, after the choice is written in ``docs/concepts.md``; all 27 rows are
  reported, the chosen one is the figure.
* A representation *isolates* the square on a split if its mean ``ceiling`` ≥ 0.8 and its mean
  ``auroc_cls`` ≥ 0.9 (the issue's AUROC goal). Anything less is reported as not isolating it.

Diagnostic (``--diagnose``, added after the reporting split was run, chooses nothing): is the square
in a representation at all? Within the class, the best single channel's AUROC and a 5-fold
cross-validated logistic-regression probe's AUROC for the planted set (supervised upper bounds).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/concepts_representations.py --seeds 0 1 2 3 4 \\
        --per-class 600 --epochs 8 --size 6 --p 0.2 --out benchmarks/results/concepts_representations.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import concepts_detection as cd  # noqa: E402  (benchmarks/concepts_detection.py)
import detection  # noqa: E402  (benchmarks/detection.py)

import spray.lrp.concepts as lrp_concepts  # noqa: E402
from spray.analysis.concepts import analyze_concepts, concept_suspicion, normalize_concepts  # noqa: E402
from spray.config import AuditConfig  # noqa: E402
from spray.lrp import Explainer  # noqa: E402

log = logging.getLogger("benchmarks.concepts_representations")

LAYERS = ("features", "features.4", "features.2")
REDUCTIONS = ("sum", "pos", "max")
#: Added after the reporting split (exploratory, ``--reductions``): the positive relevance of each channel
#: at the layer's hottest position (the position with the largest positive relevance summed over channels).
EXTRA_REDUCTIONS = ("hot",)
POSTS = ("raw", "centred", "z")
BATCH = 256


@contextlib.contextmanager
def per_position() -> Iterator[None]:
    """Make :class:`spray.lrp.concepts.ConceptTap` keep the ``(B, C, h, w)`` relevance instead of its
    per-channel sum (the tap's reduction, ``_channel_sum``, swapped for the identity)."""
    with mock.patch.object(lrp_concepts, "_channel_sum", lambda r: r.float()):
        yield


def _reduce(r: torch.Tensor) -> dict[str, np.ndarray]:
    """``(B, C, h, w)`` relevance → ``(B, C)`` per reduction (see the module docstring)."""
    flat = r.flatten(2)
    pos = flat.clamp(min=0)
    hottest = pos.sum(1).argmax(1)  # (B,)
    hot = pos[torch.arange(len(pos)), :, hottest]
    return {
        "sum": flat.sum(2).numpy(),
        "pos": pos.sum(2).numpy(),
        "max": pos.amax(2).numpy(),
        "hot": hot.numpy(),
    }


def capture(
    model: torch.nn.Module, x: torch.Tensor, labels: np.ndarray, layers: tuple[str, ...] = LAYERS
) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Heatmaps ``(n, 28, 28)`` and, per layer and reduction, ``(n, C)`` concept vectors.

    The ``sum`` vector at ``features`` is checked against the default Explainer's ``LRPResult.concepts``
    on the first batch (same backward pass, reduction only)."""
    heat: list[np.ndarray] = []
    vecs: dict[str, dict[str, np.ndarray]] = {}
    for layer in layers:
        explainer = Explainer(model, "EpsilonPlusFlat", concept_layer=layer)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in REDUCTIONS + EXTRA_REDUCTIONS}
        for s in range(0, len(x), BATCH):
            lab = torch.from_numpy(labels[s : s + BATCH])
            with per_position():
                r = explainer(x[s : s + BATCH], target="label", labels=lab)
            assert r.concepts is not None and r.concepts.dim() == 4, "per-position capture failed"
            for k, v in _reduce(r.concepts).items():
                parts[k].append(v)
            if layer == layers[0]:
                heat.append(r.relevance.sum(1).numpy())
                if s == 0:
                    ref = Explainer(model, "EpsilonPlusFlat", concept_layer=layer)(x[:BATCH], "label", lab)
                    assert ref.concepts is not None
                    np.testing.assert_allclose(parts["sum"][0], ref.concepts.numpy(), rtol=1e-4, atol=1e-6)
        vecs[layer] = {k: np.concatenate(v) for k, v in parts.items()}
    return np.concatenate(heat), vecs


def post_process(vectors: np.ndarray, how: str) -> np.ndarray:
    """One class's ``(n, C)`` vectors, L1-normalised per row, then ``raw`` / ``centred`` / ``z``."""
    v = normalize_concepts(vectors).astype(np.float64)
    if how == "raw":
        return v.astype(np.float32)
    v = v - v.mean(axis=0, keepdims=True)
    if how == "z":
        v = v / np.maximum(v.std(axis=0, keepdims=True), 1e-12)
    return v.astype(np.float32)


def evaluate(
    vectors: np.ndarray, how: str, labels: np.ndarray, planted: np.ndarray, target: int, cfg: AuditConfig
) -> dict[str, Any]:
    """Concept-space analysis of every class on one representation, scored against the planted set."""
    ids = np.asarray([f"tr{i}" for i in range(len(labels))], dtype=object)
    scores = np.zeros(len(labels))
    analyses = []
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        a = analyze_concepts(
            c, detection.CLASS_NAMES[c], list(ids[rows]), post_process(vectors[rows], how), cfg
        )
        analyses.append(a)
        scores[rows] = concept_suspicion(a)
    cls_rows = np.flatnonzero(labels == target)
    truth = planted[cls_rows]
    best = max((a.clusters[0] for a in analyses if a.clusters), key=lambda f: f.score)
    mine = analyses[target]
    top = mine.clusters[0]
    return {
        "hit1": bool(int(best.key.split("/")[0]) == target),
        "auroc_all": detection._auc(planted, scores)[0],
        "auroc_cls": detection._auc(truth, scores[cls_rows])[0],
        "ceiling": cd._ceiling(mine.clustering.labellings, truth),
        "top_f1": detection.f1(np.isin(ids[cls_rows], top.member_ids), truth)[2],
        "top_k": top.k,
        "top_size": len(top.member_ids),
    }


def channel_diagnostics(vectors: np.ndarray, how: str, truth: np.ndarray, seed: int) -> dict[str, Any]:
    """Is the square in the vector at all? Within the planted class (``(n, C)`` vectors, ``(n,)`` truth):
    the best single channel's AUROC (planted over clean, either sign), its mean L1 share among planted and
    clean samples, and the 5-fold cross-validated AUROC of a logistic-regression probe (supervised: an
    upper bound on what any unsupervised use of the vector could find, not a detector)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    v = post_process(vectors, how)
    aucs = np.array([detection._auc(truth, v[:, c])[0] for c in range(v.shape[1])])
    sign = np.where(aucs >= 0.5, 1.0, -1.0)
    best = int(np.argmax(np.maximum(aucs, 1 - aucs)))
    share = np.abs(normalize_concepts(vectors))[:, best]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    probe = cross_val_predict(
        LogisticRegression(max_iter=2000), v, truth, cv=folds, method="decision_function"
    )
    return {
        "best_channel": best,
        "best_channel_auroc": float(max(aucs[best], 1 - aucs[best])),
        "best_channel_sign": float(sign[best]),
        "best_channel_share_planted": float(share[truth].mean()),
        "best_channel_share_clean": float(share[~truth].mean()),
        "probe_auroc": detection._auc(truth, probe)[0],
    }


def run_seed(
    seed: int, args: argparse.Namespace, data: dict[str, Any], cfg: AuditConfig
) -> list[dict[str, Any]]:
    """Train one poisoned model, capture once, evaluate every representation: one row each."""
    t0 = time.time()
    p = cd.poisoned_model(seed, args, data)
    x = detection.to_input(p.images)
    t1 = time.time()
    heat, vecs = capture(p.model, x, p.labels, tuple(args.layers))
    base = {"seed": seed, "p": args.p, "size": args.size, "target": args.target, "per_class": args.per_class}
    base.update(cd.gate(p, x, heat, args.target))
    base["train_s"], base["capture_s"] = t1 - t0, time.time() - t1
    rows = []
    cls_rows = np.flatnonzero(p.labels == args.target)
    for layer in args.layers:
        for red in args.reductions:
            for how in args.posts:
                t2 = time.time()
                if args.diagnose:
                    v = vecs[layer][red][cls_rows]
                    m = channel_diagnostics(v, how, p.planted[cls_rows], seed)
                else:
                    m = evaluate(vecs[layer][red], how, p.labels, p.planted, args.target, cfg)
                rep = f"{layer}/{red}/{how}"
                rows.append({**base, "rep": rep, **m, "analysis_s": time.time() - t2})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--target", type=int, default=0, help="poisoned class (0: T-shirt)")
    ap.add_argument("--p", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=6, help="side of the square")
    ap.add_argument("--per-class", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/concepts_representations.jsonl"))
    ap.add_argument(
        "--layers", nargs="+", default=list(LAYERS), help="tapped layers (the first gives the heatmap)"
    )
    ap.add_argument(
        "--reductions", nargs="+", default=list(REDUCTIONS), choices=REDUCTIONS + EXTRA_REDUCTIONS
    )
    ap.add_argument("--posts", nargs="+", default=list(POSTS), choices=POSTS)
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="instead of the concept analyses: per representation, the best single channel's and a "
        "supervised linear probe's AUROC for the planted set within the class (channel_diagnostics)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = cd.audit_config()
    xtr, ytr = detection.load_fmnist("train")
    data = {"xtr": xtr, "ytr": ytr}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        rows = run_seed(seed, args, data, cfg)
        with args.out.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        for row in rows:
            keys = ("seed", "gated", "rep") + (
                ("best_channel_auroc", "probe_auroc")
                if args.diagnose
                else ("ceiling", "top_f1", "auroc_cls", "hit1")
            )
            sys.stdout.write(
                " ".join(f"{k}={row[k]:.3f}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys)
                + "\n"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
