"""Does the heatmap's hottest window sit on a moving shortcut? A position-free pixel reading (issue 17).

Exploratory (chooses nothing; no default depends on it). Same poisoned training set, model and sanity
gate as ``benchmarks/concepts_representations.py`` (a 6×6 ``background_square`` at a random background
position in 20 % of T-shirt). For every image of the planted class, the positive heatmap is summed over
every 6×6 window; the hottest window is where a position-free reading would look. Reported per seed:

* ``peak_on_square``: share of the planted images whose hottest window overlaps the square;
* ``square_window_rank_q``: median, over planted images, of the share of windows hotter than the
  square's own window (0: the square's window is the hottest);
* ``probe_*``: 5-fold cross-validated AUROC (planted vs clean, within the class) of a logistic-regression
  probe on a position-free vector: ``inpatch`` (the input pixels of the hottest window and a 2-pixel
  margin), ``relpatch`` (its normalised relevance), ``both``, and ``fft`` (the magnitude of the 2-D Fourier
  transform of the normalised positive heatmap, invariant to circular shifts). A supervised probe bounds
  what an unsupervised use of the same vector could find.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/concepts_hotwindow.py --seeds 2 4
    OMP_NUM_THREADS=1 python benchmarks/concepts_hotwindow.py --seeds 0 --width 32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import concepts_detection as cd  # noqa: E402  (benchmarks/concepts_detection.py)
import concepts_representations as cr  # noqa: E402
import detection  # noqa: E402

WINDOW, MARGIN = 6, 2


def window_sums(maps: np.ndarray, side: int) -> np.ndarray:
    """``(n, h, w)`` → ``(n, h - side + 1, w - side + 1)`` sums over every ``side × side`` window."""
    c = np.cumsum(np.cumsum(np.pad(maps, ((0, 0), (1, 0), (1, 0))), 1), 2)
    return c[:, side:, side:] - c[:, :-side, side:] - c[:, side:, :-side] + c[:, :-side, :-side]


def hottest(heat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window sums of the positive heatmaps and the top-left corner (rows, columns) of the hottest one."""
    sums = window_sums(np.clip(heat, 0, None), WINDOW)
    rows, cols = np.divmod(sums.reshape(len(sums), -1).argmax(1), sums.shape[2])
    return sums, rows, cols


def vectors(heat: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    """The position-free vectors of the module docstring, ``(n, d)`` each."""
    pos = np.clip(heat, 0, None)
    norm = pos / (pos.sum((1, 2), keepdims=True) + 1e-12)
    _, rows, cols = hottest(heat)
    side = WINDOW + 2 * MARGIN
    pad = ((0, 0), (MARGIN, MARGIN), (MARGIN, MARGIN))
    img, rel = np.pad(images.astype(np.float32) / 255, pad), np.pad(norm, pad)
    cut = [(slice(r, r + side), slice(c, c + side)) for r, c in zip(rows, cols, strict=True)]
    inpatch = np.stack([img[i][s] for i, s in enumerate(cut)]).reshape(len(heat), -1)
    relpatch = np.stack([rel[i][s] for i, s in enumerate(cut)]).reshape(len(heat), -1)
    fft = np.abs(np.fft.rfft2(norm)).reshape(len(heat), -1)
    return {"inpatch": inpatch, "relpatch": relpatch, "both": np.hstack([inpatch, 20 * relpatch]), "fft": fft}


def probe(v: np.ndarray, truth: np.ndarray, seed: int) -> float:
    """5-fold cross-validated AUROC of a logistic-regression probe on standardised ``v``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    v = (v - v.mean(0)) / (v.std(0) + 1e-9)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    score = cross_val_predict(
        LogisticRegression(max_iter=3000, C=0.1), v, truth, cv=folds, method="decision_function"
    )
    return float(detection._auc(truth, score)[0])


def run_seed(seed: int, args: argparse.Namespace, data: dict[str, np.ndarray]) -> dict[str, object]:
    """Train one poisoned model, explain it, and read the planted class's hottest windows."""
    p = cd.poisoned_model(seed, args, data)
    x = detection.to_input(p.images)
    heat, _ = cr.capture(p.model, x, p.labels, ("features",))
    row: dict[str, object] = {"seed": seed, "width": args.width, **cd.gate(p, x, heat, args.target)}
    cls = np.flatnonzero(p.labels == args.target)
    truth, masks = p.planted[cls], p.masks[cls]
    sums, rows, cols = hottest(heat[cls])
    on = np.array(
        [
            masks[i, r : r + WINDOW, c : c + WINDOW].any()
            for i, (r, c) in enumerate(zip(rows, cols, strict=True))
        ]
    )
    row["peak_on_square"] = float(on[truth].mean())
    ranks = []
    for i in np.flatnonzero(truth):
        own = window_sums(masks[i : i + 1].astype(np.float32), WINDOW)[0].argmax()
        ranks.append(float((sums[i].ravel() > sums[i].ravel()[own]).mean()))
    row["square_window_rank_q"] = float(np.median(ranks))
    for name, v in vectors(heat[cls], p.images[cls]).items():
        row[f"probe_{name}"] = probe(v, truth, seed)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="append one JSON line per seed")
    a = ap.parse_args()
    args = argparse.Namespace(target=0, p=0.2, size=6, per_class=600, epochs=8, width=a.width)
    xtr, ytr = detection.load_fmnist("train")
    for seed in a.seeds:
        row = run_seed(seed, args, {"xtr": xtr, "ytr": ytr})
        line = json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
        print(line, flush=True)
        if a.out is not None:
            with a.out.open("a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
