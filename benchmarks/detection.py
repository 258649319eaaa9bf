"""Planted Clever Hans: does spray's suspicion ranking find a shortcut that we put there ourselves?

For every cell (artifact, poisoned fraction p, target class, seed): plant the artifact into a
fraction ``p`` of the target class's training images (Fashion-MNIST subset), train a SmallCNN on the
poisoned set, explain every training image with LRP (EpsilonPlusFlat, target = label), run the
per-class analysis of the audit (normalise → PCA → spectral → k-means sweep → score) with the paste
probe, and compare the ranking with the planted ground truth. Clean models (no artifact) measure
false alarms.

Usage::

    python benchmarks/detection.py --quick                  # one cell, a few minutes on CPU
    python benchmarks/detection.py --artifacts corner_square frame glyph --fractions 0.05 0.1 0.2 0.5 \\
        --classes 5 7 9 --seeds 0 1 2 --clean-seeds 0 1 2     # the full grid (hours on 2 cores)

Results are appended as JSON lines to ``--out`` (one line per run), and a table is printed.

Metrics per run (see docs/detection.md):

* gate: target-logit drop when the artifact is removed from the planted samples (their clean
  originals are known), and the relevance share inside the artifact pixels vs their pixel share.
  Runs where the model ignores the artifact are reported but not counted.
* flip: planting the artifact into other-class *test* images flips this fraction to the target class.
* hit@1: the top finding across all classes is in the poisoned class.
* top-finding precision / recall / F1 vs the planted samples (overall top finding; 0 if another
  class), and the ceiling (best F1 of any cluster at any stored k of the poisoned class).
* sample AUROC / AP: per-sample suspicion (:func:`spray.analysis.scoring.sample_suspicion`) over all audited
  samples (``auroc_all``) and within the poisoned class (``auroc_cls``).
* baselines (within the poisoned class, their "top finding" is the smallest cluster, the plain SpRAy
  heuristic): k-means (k=8) on raw pixels, on penultimate activations, CoRelAy's default (k-means k=8
  on all 32 eigenvectors), and a random cluster of the size of spray's top finding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import average_precision_score, roc_auc_score

import spray.analysis.scoring
from spray.analysis.clustering import cluster_sweep
from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
from spray.analysis.scoring import InterventionProbe, rank_findings, sample_suspicion, score_class
from spray.analysis.spectral import spectral_embedding
from spray.config import config_from_dict
from spray.data import read_idx
from spray.lab.artifacts import plant
from spray.lab.cnn import SmallCNN
from spray.lab.training import predict, train_classifier
from spray.lrp import Explainer
from spray.records import ClassAnalysis, ClusterFinding

log = logging.getLogger("benchmarks.detection")

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
MEAN, STD = 0.2860, 0.3530
#: Gate: the model "uses" the artifact if removing it drops the target logit by this much on average...
GATE_LOGIT_DROP = 1.0
#: ... and the artifact pixels hold at least this many times their pixel share of the relevance (1.5:
#: LRP's Flat first-layer rule spreads relevance over each receptive field, so a 1-pixel frame that
#: moves the logit by 7 holds "only" 1.7x its pixel share).
GATE_RELEVANCE_RATIO = 1.5


#: Version of the scoring code this process imported (rows of a results file may mix versions).
SCORING_SHA = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(Path(spray.analysis.scoring.__file__).parent.glob("*.py")))
).hexdigest()[:8]


@dataclass
class Cell:
    artifact: str  # "none" for a clean model
    fraction: float
    target: int
    seed: int


def load_fmnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 28, 28)`` uint8 images and ``(n,)`` labels of the train or t10k split."""
    pre = "train" if split == "train" else "t10k"
    x = read_idx(FMNIST / f"{pre}-images-idx3-ubyte.gz")
    y = read_idx(FMNIST / f"{pre}-labels-idx1-ubyte.gz").astype(np.int64)
    return np.asarray(x), np.asarray(y)


def subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Seeded, sorted indices of ``per_class`` samples of every class."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(idx))


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, 28, 28)`` -> normalised float ``(n, 1, 28, 28)``."""
    return (torch.tensor(images, dtype=torch.float32).div(255.0)[:, None] - MEAN) / STD


def f1(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 of boolean ``pred`` vs ``truth``."""
    tp = float((pred & truth).sum())
    p = tp / max(pred.sum(), 1)
    r = tp / max(truth.sum(), 1)
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def _auc(truth: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    if truth.all() or not truth.any():
        return float("nan"), float("nan")
    return float(roc_auc_score(truth, score)), float(average_precision_score(truth, score))


def smallest_cluster_baseline(features: np.ndarray, truth: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """k-means; the smallest cluster is the 'finding'; per-sample score = 1 - its cluster's fraction."""
    k = min(k, len(features) - 1)
    lab = KMeans(k, n_init=4, random_state=seed).fit_predict(features)
    sizes = np.bincount(lab, minlength=k)
    small = int(np.argmin(np.where(sizes > 0, sizes, len(lab) + 1)))
    _, _, f = f1(lab == small, truth)
    auc, ap = _auc(truth, 1.0 - sizes[lab] / len(lab))
    return {"f1": f, "auroc": auc, "ap": ap}


class GapCNN(torch.nn.Module):
    """SmallCNN's convolutions, one more conv block, then global average pooling and a linear head.

    Global pooling makes its detectors position-free, so a shortcut at a random position can be learned
    (SmallCNN's dense head over a 7×7 map has to learn it at every position); ``--arch gap``.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        base = SmallCNN(1, 10, width=width)
        self.features = torch.nn.Sequential(
            *base.features,
            torch.nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            torch.nn.ReLU(inplace=True),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def run_cell(cell: Cell, args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """Train, audit and score one cell; returns the result row."""
    t0 = time.time()
    xtr, ytr, xte, yte = data["xtr"], data["ytr"], data["xte"], data["yte"]
    idx = subset(ytr, args.per_class, cell.seed)
    images, labels = xtr[idx].copy(), ytr[idx]
    rng = np.random.default_rng([cell.seed, cell.target + 1, int(cell.fraction * 1000)])  # target -1: clean
    planted = np.zeros(len(idx), dtype=bool)
    masks = np.zeros(images.shape, dtype=bool)
    clean_images = images.copy()
    if cell.artifact != "none":
        cls = np.flatnonzero(labels == cell.target)
        pick = np.sort(rng.choice(cls, max(1, round(cell.fraction * cls.size)), replace=False))
        pl = plant(images[pick], cell.artifact, size=args.artifact_size, seed=cell.seed)
        images[pick], masks[pick], planted[pick] = pl.images, pl.masks, True
    torch.manual_seed(cell.seed)
    model = GapCNN(args.width) if args.arch == "gap" else SmallCNN(1, 10, width=args.width)
    train_classifier(
        model, images, labels, epochs=args.epochs, seed=cell.seed, mean=MEAN, std=STD, progress=False
    )
    x = to_input(images)
    acc = float((predict(model, to_input(xte)).numpy() == yte).mean())
    t_train = time.time() - t0

    # LRP of every training image, target = its label.
    explainer = Explainer(model, "EpsilonPlusFlat")
    rel = []
    for s in range(0, len(x), 512):
        r = explainer(x[s : s + 512], target="label", labels=torch.from_numpy(labels[s : s + 512]))
        rel.append(r.relevance.sum(1).numpy())
    relevance = np.concatenate(rel)  # (N, 28, 28)

    if args.save_dir is not None:
        # Everything needed to re-score this cell without retraining (see docs/detection.md).
        args.save_dir.mkdir(parents=True, exist_ok=True)
        stem = args.save_dir / f"{cell.artifact}_{cell.fraction}_{cell.target}_{cell.seed}"
        torch.save(model.state_dict(), f"{stem}.pt")
        np.savez_compressed(f"{stem}.npz", images=images, labels=labels, planted=planted, relevance=relevance)
    row: dict[str, Any] = {
        "artifact": cell.artifact,
        "p": cell.fraction,
        "target": cell.target,
        "seed": cell.seed,
        "epochs": args.epochs,
        "arch": args.arch,
        "artifact_size": args.artifact_size,
        "test_acc": acc,
    }
    # Sanity gate (poisoned runs): does the model use the artifact?
    if cell.artifact != "none":
        with torch.no_grad():
            lp = model(x[planted])[:, cell.target]
            lc = model(to_input(clean_images[planted]))[:, cell.target]
        row["logit_drop"] = float((lp - lc).mean())
        r_pl = np.clip(relevance[planted], 0, None)
        share = (r_pl * masks[planted]).sum(axis=(1, 2)) / np.maximum(r_pl.sum(axis=(1, 2)), 1e-12)
        row["rel_ratio"] = float(share.mean() / masks[planted].mean())
        others = np.flatnonzero(yte != cell.target)[:1000]
        pasted = plant(xte[others], cell.artifact, size=args.artifact_size, seed=cell.seed + 1).images
        row["flip_artifact"] = float((predict(model, to_input(pasted)).numpy() == cell.target).mean())
        uses_relevance = cell.artifact == "brightness" or row["rel_ratio"] >= GATE_RELEVANCE_RATIO
        row["gated"] = bool(row["logit_drop"] >= GATE_LOGIT_DROP and uses_relevance)

    # The audit's per-class analysis, with the paste probe built like the audit builds it.
    cfg = config_from_dict(
        {
            "seed": 0,
            "model": {"factory": "spray.lab.cnn:small_cnn"},
            "data": {"kind": "idx", "images": "x", "labels": "y"},
            "analysis": {"embedding": "spectral", "blur_sigma": args.blur}
            | ({"k_max": args.k_max} if args.k_max is not None else {}),
            "scoring": {"intervention": not args.no_probe, "intervention_samples": 500},
        },
        check_files=False,
    )
    row["k_max"] = cfg.analysis.k_max
    ids = [f"tr{i}" for i in range(len(x))]
    test_ids = [f"te{i}" for i in range(len(xte))]
    x_te = to_input(xte)

    def load_inputs(sids: list[str]) -> torch.Tensor:
        return torch.stack([x[int(s[2:])] if s.startswith("tr") else x_te[int(s[2:])] for s in sids])

    def pred_fn(batch: torch.Tensor) -> torch.Tensor:
        return predict(model, batch)

    analyses: list[ClassAnalysis] = []
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        other = np.flatnonzero(yte != c)
        pr = np.random.default_rng([0, c])
        pick = np.sort(
            pr.choice(other, size=min(cfg.scoring.intervention_samples, other.size), replace=False)
        )
        probe = InterventionProbe(pred_fn, load_inputs, [test_ids[i] for i in pick], yte[pick])
        analyses.append(analyze(c, [ids[i] for i in rows], relevance[rows], cfg, probe, args))
    ranked = rank_findings([a.clusters for a in analyses])
    row["alarms"] = [f.class_name for f in ranked if f.suspicious]
    keep = ("size", "share_in", "share_out", "lift", "consistency", "separation", "map_score", "flip_rate",
            "flip_null", "flip_excess", "flip_p", "appearance", "moving")  # fmt: skip
    row["findings"] = [
        {"key": f.key, "class": f.class_name, "score": f.score, "suspicious": f.suspicious,
         **{k: f.signals[k] for k in keep if k in f.signals}, "evidence": evidence_line(f)}
        for f in ranked[:5] + [f for f in ranked[5:] if f.suspicious]
    ]  # fmt: skip
    row["scoring_sha"] = SCORING_SHA
    row["top"] = f"{ranked[0].class_name}: " + "; ".join(ranked[0].evidence[:2])
    if cell.artifact == "none":
        row["false_alarm"] = bool(row["alarms"])
        row["seconds"] = time.time() - t0
        return row

    # Detection metrics.
    id_row = {s: i for i, s in enumerate(ids)}
    top = ranked[0]
    row["hit1"] = bool(top.class_index == cell.target)
    pred = np.zeros(len(x), dtype=bool)
    pred[[id_row[s] for s in top.member_ids]] = True
    row["prec"], row["rec"], row["f1"] = f1(pred, planted)
    # The top finding with its carriers (other samples repeating its stamp; flagged findings only).
    pred_c = pred.copy()
    pred_c[[id_row[s] for s in top.carrier_ids]] = True
    row["carriers"] = len(top.carrier_ids)
    row["prec_c"], row["rec_c"], row["f1_c"] = f1(pred_c, planted)
    ta = analyses[cell.target]
    cls_rows = np.flatnonzero(labels == cell.target)
    truth_cls = planted[cls_rows]
    top_cls = ta.clusters[0]
    pred_cls = np.isin(np.array([ids[i] for i in cls_rows]), top_cls.member_ids)
    row["f1_cls"] = f1(pred_cls, truth_cls)[2]
    row["ceiling"] = max(
        f1(lab == c, truth_cls)[2] for lab in ta.clustering.labellings.values() for c in np.unique(lab)
    )
    scores = np.zeros(len(x))
    for a in analyses:
        rws = np.flatnonzero(labels == a.class_index)
        scores[rws] = sample_suspicion(
            normalize(relevance[rws]), a.clusters, [ids[i] for i in rws], cfg.scoring.suspicion_tie_break
        )
    row["auroc_all"], row["ap_all"] = _auc(planted, scores)
    row["auroc_cls"], row["ap_cls"] = _auc(truth_cls, scores[cls_rows])
    row["top_flip"] = float(top_cls.signals.get("flip_rate", float("nan")))
    row["top_flip_null"] = float(top_cls.signals.get("flip_null", float("nan")))

    # Baselines, within the poisoned class.
    xc = x[cls_rows]
    with torch.no_grad():
        pen = model.classifier[:-1](model.features(xc)).numpy()
    row["b_pixels"] = smallest_cluster_baseline(xc.reshape(len(xc), -1).numpy(), truth_cls, 8, cell.seed)
    row["b_penult"] = smallest_cluster_baseline(pen, truth_cls, 8, cell.seed)
    row["b_corelay"] = smallest_cluster_baseline(ta.spectral.eigenvectors, truth_cls, 8, cell.seed)
    rnd = np.zeros(len(cls_rows), dtype=bool)
    rnd[rng.choice(len(cls_rows), size=max(1, int(pred_cls.sum())), replace=False)] = True
    row["b_random"] = {"f1": f1(rnd, truth_cls)[2], "auroc": 0.5, "ap": float(truth_cls.mean())}
    row["seconds"] = time.time() - t0
    row["train_seconds"] = t_train
    return row


def analyze(
    c: int,
    sample_ids: list[str],
    rel: np.ndarray,
    cfg: Any,
    probe: InterventionProbe | None,
    args: argparse.Namespace,
) -> ClassAnalysis:
    """The audit's per-class analysis (as ``spray.audit.analyze_class``) without the 2-D map, and with
    fewer k-means restarts (``--n-init``) so that a cell fits the CPU budget."""
    a = cfg.analysis
    features = normalize_heatmaps(rel, absolute=a.absolute, blur_sigma=a.blur_sigma)
    maps = normalize_heatmaps(rel).reshape(rel.shape)
    reduced = reduce_dimension(features, n_components=a.pca_components, seed=cfg.seed)
    spectral = spectral_embedding(
        reduced, n_neighbors=a.n_neighbors, n_eigenvectors=a.n_eigenvectors, seed=cfg.seed, search=a.knn
    )
    choice = a.k_choice.model_copy(update={"n_init": args.n_init})
    clustering = cluster_sweep(spectral, k_max=a.k_max, seed=cfg.seed, choice=choice)
    clusters = score_class(
        c, CLASS_NAMES[c], sample_ids, maps, spectral, clustering, config=cfg.scoring,
        probe=probe if cfg.scoring.intervention else None, seed=cfg.seed,
    )  # fmt: skip
    return ClassAnalysis(
        c, CLASS_NAMES[c], sample_ids, spectral, clustering, np.zeros((len(rel), 2)), "none", clusters
    )


def evidence_line(f: ClusterFinding) -> str:
    """One line for tables: the size, where the relevance lies, and the interventions' main results."""
    keep = ("members put", "each member puts", "pasting it", "removing it lowers the")
    return "; ".join([f.evidence[0], *(e for e in f.evidence[1:] if e.startswith(keep))])


def normalize(rel: np.ndarray) -> np.ndarray:
    """Maps as the audit hands them to scoring: signed, divided by total |R|."""
    return normalize_heatmaps(rel).reshape(rel.shape)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.2f}"
    return str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    """Markdown tables: per run, then aggregated per setting."""
    cols = ["artifact", "p", "target", "seed", "test_acc", "logit_drop", "rel_ratio", "flip_artifact", "gated",
            "hit1", "f1", "f1_c", "f1_cls", "ceiling", "auroc_all", "auroc_cls", "ap_cls"]  # fmt: skip
    print("| " + " | ".join(cols) + " | pixels F1/AUROC | penult F1/AUROC | CoRelAy F1/AUROC | random F1 |")
    print("|" + "---|" * (len(cols) + 4))
    for r in rows:
        if r["artifact"] == "none":
            continue
        base = [f"{r[b]['f1']:.2f}/{r[b]['auroc']:.2f}" for b in ("b_pixels", "b_penult", "b_corelay")] + [
            f"{r['b_random']['f1']:.2f}"
        ]
        print("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " | " + " | ".join(base) + " |")
    clean = [r for r in rows if r["artifact"] == "none"]
    if clean:
        print("\nClean models:")
        for r in clean:
            print(f"- seed {r['seed']}: acc {r['test_acc']:.3f}, alarms: {r['alarms'] or 'none'}")


def summarize(rows: list[dict[str, Any]]) -> None:
    """Aggregate table per setting (gated poisoned runs only) and the clean false-alarm rate."""

    def setting(r: dict[str, Any]) -> str:
        if r["artifact"] in ("corner_square", "frame", "glyph"):
            return "fixed, p = 0.05" if r["p"] < 0.1 else "fixed, p ≥ 0.1"
        return r["artifact"]

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["artifact"] != "none":
            groups.setdefault(setting(r), []).append(r)
    print("\n| setting | runs (gated/all) | hit@1 | top F1 | top F1 with carriers | class-top F1 | ceiling | AUROC all | AUROC class |"
          " alarm on target | pixels F1/AUROC | penult F1/AUROC | CoRelAy F1/AUROC | random F1 |")  # fmt: skip
    print("|" + "---|" * 14)
    for name, rs in groups.items():
        g = [r for r in rs if r.get("gated")]
        if not g:
            print(f"| {name} | 0/{len(rs)} |" + " |" * 12)
            continue

        def m(key: str, sub: str | None = None, rs: list[dict[str, Any]] = g) -> float:
            vals = [float(r[key][sub] if sub else r.get(key, np.nan)) for r in rs]
            return float(np.nanmean(vals))

        alarm = float(np.mean([r["target"] in [CLASS_NAMES.index(a) for a in r["alarms"]] for r in g]))
        base = " | ".join(
            f"{m(b, 'f1'):.2f}/{m(b, 'auroc'):.2f}" for b in ("b_pixels", "b_penult", "b_corelay")
        )
        print(
            f"| {name} | {len(g)}/{len(rs)} | {m('hit1'):.2f} | {m('f1'):.2f} | {m('f1_c'):.2f} | {m('f1_cls'):.2f} | "
            f"{m('ceiling'):.2f} | {m('auroc_all'):.2f} | {m('auroc_cls'):.2f} | {alarm:.2f} | {base} | "
            f"{m('b_random', 'f1'):.2f} |"
        )
    clean = [r for r in rows if r["artifact"] == "none"]
    if clean:
        fa = sum(bool(r["alarms"]) for r in clean)
        print(f"\nClean models: a false alarm in {fa} of {len(clean)} runs", end="")
        print(" (" + "; ".join(f"seed {r['seed']}: {r['alarms'] or 'none'}" for r in clean) + ")")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="one cell: corner_square, p=0.2, Sandal, seed 0, 500 per class"
    )
    ap.add_argument("--artifacts", nargs="*", default=["corner_square", "frame", "glyph"])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--classes", nargs="+", type=int, default=[5, 7, 9])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--clean-seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument(
        "--arch",
        choices=["small", "gap"],
        default="small",
        help="small: SmallCNN (dense head); gap: global average pooling (learns position-free detectors)",
    )
    ap.add_argument(
        "--artifact-size", type=int, default=4, help="side in pixels of corner_square / random_square"
    )
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--n-init", type=int, default=3, help="k-means restarts per k (the audit uses 10)")
    ap.add_argument(
        "--k-max",
        type=int,
        default=None,
        help="analysis.k_max: largest k of the sweep (default: the config's)",
    )
    ap.add_argument("--blur", type=float, default=0.0, help="analysis.blur_sigma (translation tolerance)")
    ap.add_argument("--save-dir", type=Path, default=None, help="keep each cell's model and relevance here")
    ap.add_argument("--no-probe", action="store_true", help="map signals only (no paste test)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/detection.jsonl"))
    ap.add_argument(
        "--report", type=Path, default=None, help="only print the tables of an existing results file"
    )
    ap.add_argument(
        "--min-appearance",
        type=float,
        default=None,
        help="with --report: re-evaluate the flags as if scoring.flag_min_appearance were this value "
        "(from the signals stored with each flagged finding)",
    )
    args = ap.parse_args(argv)
    if args.report is not None:
        rows = [json.loads(line) for line in args.report.read_text().splitlines() if line.strip()]
        if args.min_appearance is not None:
            for r in rows:
                r["alarms"] = [
                    f["class"]
                    for f in r["findings"]
                    if f["suspicious"] and f.get("appearance", 1.0) >= args.min_appearance
                ]
        print_table(rows)
        summarize(rows)
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.quick:
        cells = [Cell("corner_square", 0.2, 5, 0)]
        args.per_class = 500
    else:
        cells = [
            Cell(a, p, c, s)
            for a in args.artifacts
            for p in args.fractions
            for c in args.classes
            for s in args.seeds
        ] + [Cell("none", 0.0, -1, s) for s in args.clean_seeds]
    if not FMNIST.exists():
        raise SystemExit(f"{FMNIST} missing: apt-get install -y dataset-fashion-mnist")
    xtr, ytr = load_fmnist("train")
    xte, yte = load_fmnist("test")
    data = {"xtr": xtr, "ytr": ytr, "xte": xte[:2000], "yte": yte[:2000]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for cell in cells:
        row = run_cell(cell, args, data)
        rows.append(row)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        log.warning("%s", {k: v for k, v in row.items() if not isinstance(v, dict)})
    print_table(rows)
    summarize(rows)


if __name__ == "__main__":
    main()
