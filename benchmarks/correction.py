"""From flag to fix, measured: does ``spray correct`` remove a planted shortcut, and at what cost?

For every cell (artifact, seed): plant the artifact into 15 % of the Shirt images of a Fashion-MNIST subset
(the demo's recipe: ``artifact=demo`` is exactly the demo's data, a 4×4 white square at the top left;
``frame`` and ``glyph`` are the detection benchmark's other fixed artifacts), train the demo's SmallCNN
(3 epochs, timed), and then do what a user does, one command each:

1. ``spray audit --config cell.yaml`` publishes a run;
2. the planted class's highest-ranked finding (members and carriers) is flagged for unlearning, as in the
   dashboard (its precision/recall against the planted samples is recorded);
3. ``spray correct --config cell.yaml --method M`` for M in pclarc, rrclarc, retrain (the re-audit is on
   for P-/RR-ClArC, off for the retraining baseline, which costs full training epochs anyway).

The config's ``correction.test_data`` is 2,000 images of Fashion-MNIST's test split, so clean accuracy and
the paste test are held out. Each row has spray's own before/after evaluation (``correction.json``) plus
checks against the ground truth: the true artifact drawn into other-class test images (flip rate), and the
estimated artifact region's IoU with the true mask. Cost: the correction's seconds (direction, region,
method; evaluation and re-audit excluded) over the seconds of one epoch of the original training, that
epoch timed again right after the correction (other jobs share the machine, so its load drifts; both run
on one thread).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/correction.py --artifacts demo frame glyph --seeds 0 1 2
    python benchmarks/correction.py --report benchmarks/results/correction_<date>.jsonl   # tables only
    python benchmarks/correction.py --report benchmarks/results/correction_<date>.jsonl --markdown  # docs table
    python benchmarks/correction.py --report ROWS --intervals WORK_DIR...   # accuracy changes, 95 % intervals
    python benchmarks/correction.py --report ROWS --floor WORK_DIR...   # shares against a never-exposed model

Rows are appended as JSON lines to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from spray.config import load_config
from spray.correct.evaluate import CleanChanges
from spray.data import read_idx, write_idx
from spray.flags import FlagStore
from spray.lab.artifacts import plant
from spray.lab.cnn import small_cnn
from spray.lab.demo import FASHION_CLASSES, MEAN, STD, load_base_data, make_demo_data
from spray.lab.training import predict, train_classifier
from spray.models import build_model
from spray.runs.reader import RunReader, read_correction_arrays

log = logging.getLogger("benchmarks.correction")

FMNIST = Path("/usr/share/datasets/fashion-mnist")
TARGET = 6
FRACTION = 0.15
EPOCHS = 3
METHODS = ("pclarc", "rrclarc", "retrain")
REPO = Path(__file__).resolve().parents[1]


def cell_data(
    artifact: str, seed: int, per_class: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels, planted flags and the true artifact masks ``(n, 28, 28)`` of one cell.

    ``demo`` is :func:`spray.lab.demo.make_demo_data` itself; another artifact is planted into the samples
    the demo would choose (the same seeded draws).
    """
    if artifact == "demo":
        demo = make_demo_data(per_class=per_class, target_class=TARGET, poison_fraction=FRACTION, seed=seed)
        masks = np.zeros(demo.images.shape, dtype=bool)
        masks[demo.planted] = plant(demo.images[demo.planted], "corner_square", size=4, margin=1).masks
        return demo.images, demo.labels, demo.planted, masks
    images, labels, _, _ = load_base_data()
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)])
    )
    images, labels = images[keep].copy(), labels[keep]
    in_class = np.flatnonzero(labels == TARGET)
    chosen = np.sort(rng.choice(in_class, size=max(1, round(FRACTION * len(in_class))), replace=False))
    pl = plant(images[chosen], artifact, seed=seed)
    images[chosen] = pl.images
    planted = np.zeros(len(labels), dtype=bool)
    planted[chosen] = True
    masks = np.zeros(images.shape, dtype=bool)
    masks[chosen] = pl.masks
    return images, labels, planted, masks


def read_test_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` Fashion-MNIST test images ``(n, 28, 28)`` uint8 and labels ``(n,)``."""
    x = np.asarray(read_idx(FMNIST / "t10k-images-idx3-ubyte.gz"))[:n]
    y = np.asarray(read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")).astype(np.int64)[:n]
    return x, y


def model_inputs(images: np.ndarray) -> torch.Tensor:
    """``(n, 28, 28)`` uint8 images → the models' normalised inputs ``(n, 1, 28, 28)``."""
    return (torch.from_numpy(np.array(images)).float().div(255.0)[:, None] - MEAN) / STD  # a writable copy


def write_test_split(root: Path, n: int) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """The first ``n`` test images as IDX files (the correction's held-out data)."""
    x, y = read_test_split(n)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "test-images.idx", x)
    write_idx(root / "test-labels.idx", y.astype(np.uint8))
    return root / "test-images.idx", root / "test-labels.idx", x, y


def prepare_cell(
    work: Path, artifact: str, seed: int, args: argparse.Namespace, test: tuple[Path, Path]
) -> dict[str, Any]:
    """Data, trained model (timed), config; returns what the row needs."""
    images, labels, planted, masks = cell_data(artifact, seed, args.per_class)
    work.mkdir(parents=True, exist_ok=True)
    epoch_s: float | None = None
    if not (args.reuse_models and (work / "model.pt").is_file()):
        torch.manual_seed(seed)
        model = small_cnn(in_channels=1, num_classes=10)
        t0 = time.perf_counter()
        train_classifier(model, images, labels, epochs=EPOCHS, seed=seed, mean=MEAN, std=STD, progress=False)
        epoch_s = (time.perf_counter() - t0) / EPOCHS
        torch.save(model.state_dict(), work / "model.pt")
    write_idx(work / "images.idx", images)
    write_idx(work / "labels.idx", labels.astype(np.uint8))
    cfg = {
        "name": f"correction-{artifact}-{seed}",
        "seed": seed,
        "model": {"factory": "spray.lab.cnn:small_cnn", "factory_kwargs": {"in_channels": 1, "num_classes": 10},
                  "checkpoint": "model.pt"},
        "data": {"kind": "idx", "name": f"correction-{artifact}-{seed}", "images": "images.idx", "labels": "labels.idx",
                 "class_names": FASHION_CLASSES, "transform": {"mean": [MEAN], "std": [STD]}},
        "lrp": {"composite": "EpsilonPlusFlat", "target": "label"},
        "batch": {"batch_size": 128, "grid": 28, "thumbnail_size": 28, "device": "cpu"},
        "analysis": {"embedding": "spectral"},
        "output": {"runs_dir": "runs", "html_report": False},
        "correction": {"test_data": {"kind": "idx", "images": str(test[0]), "labels": str(test[1])}},
    }  # fmt: skip
    (work / "cell.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return {"planted": planted, "masks": masks, "labels": labels, "images": images, "epoch_s": epoch_s}


def reference_epoch(images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one epoch of the original training, measured now (the machine's
    load drifts; the CPU seconds of a one-thread process hardly do)."""
    torch.manual_seed(seed)
    model = small_cnn(in_channels=1, num_classes=10)
    t0, c0 = time.perf_counter(), time.process_time()
    train_classifier(model, images, labels, epochs=1, seed=seed, mean=MEAN, std=STD, progress=False)
    return time.perf_counter() - t0, time.process_time() - c0


def spray(argv: list[str], work: Path) -> tuple[float, str]:
    """Run one spray command (this checkout, one thread); returns its seconds and stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "spray.cli", *argv], cwd=work, env=env, capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"spray {' '.join(argv)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0, res.stdout


def flag_top_finding(work: Path, planted: np.ndarray) -> dict[str, Any]:
    """Flag the planted class's highest-ranked finding (members and carriers), as a user would."""
    reader = RunReader.open(work / "runs" / "latest")
    ranked = reader.findings()
    found = [f for f in ranked if f.class_index == TARGET]
    top = next((f for f in found if f.suspicious), found[0])
    ids = list(top.member_ids) + list(top.carrier_ids)
    FlagStore(work / "runs" / "flags.sqlite").flag(reader.summary.dataset, ids, "unlearn",
                                                    run_id=reader.summary.run_id, cluster_key=top.key)  # fmt: skip
    sel = np.zeros(len(planted), dtype=bool)
    sel[[int(i) for i in ids]] = True
    tp = int((sel & planted).sum())
    return {"finding": top.key, "finding_rank": ranked.index(top) + 1, "finding_suspicious": top.suspicious,
            "flag_precision": tp / max(1, int(sel.sum())), "flag_recall": tp / max(1, int(planted.sum()))}  # fmt: skip


def truth_checks(folder: Path, work: Path, artifact: str, seed: int, test_x: np.ndarray, test_y: np.ndarray,
                 true_mask: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Flip rate of the true artifact and region IoU, for the original and the corrected model."""
    kind = "corner_square" if artifact == "demo" else artifact
    others = test_y != TARGET
    pasted = plant(test_x[others], kind, seed=seed + 1).images

    out: dict[str, Any] = {}
    for name, cfg_path in (("before", work / "cell.yaml"), ("after", folder / "config.yaml")):
        model = build_model(load_config(cfg_path).model).eval()
        clean = predict(model, model_inputs(test_x[others])).numpy()
        stamped = predict(model, model_inputs(pasted)).numpy()
        base = clean != TARGET
        out[f"true_flip_{name}"] = float(((stamped == TARGET) & base).sum() / max(1, int(base.sum())))
    region = read_correction_arrays(folder)["region"]
    out["region_iou"] = float((region & true_mask).sum() / max(1, int((region | true_mask).sum())))
    return out


def cpu_cost(timings: dict[str, float], ref_epoch_cpu_s: float) -> dict[str, float | None]:
    """The correction's CPU seconds over those of one reference epoch (None where not recorded)."""
    cpu = timings.get("correction_cpu_s")
    return {"correction_cpu_s": cpu, "ref_epoch_cpu_s": ref_epoch_cpu_s,
            "cost_epochs_cpu": None if cpu is None or ref_epoch_cpu_s <= 0 else cpu / ref_epoch_cpu_s}  # fmt: skip


def run_cell(
    artifact: str, seed: int, args: argparse.Namespace, test: tuple[Path, Path, np.ndarray, np.ndarray]
) -> list[dict[str, Any]]:
    """Prepare, audit, flag and correct one cell with every method; returns one row per method."""
    work = args.work_dir / f"{artifact}-{seed}"
    cell = prepare_cell(work, artifact, seed, args, test[:2])
    audit_s, _ = spray(["audit", "--config", "cell.yaml", "-q"], work)
    flags = flag_top_finding(work, cell["planted"])
    true_mask = cell["masks"][cell["planted"]][0]
    rows = []
    ref_epoch_s: float | None = None
    ref_epoch_cpu_s = 0.0
    for method in args.methods:
        extra = ["--no-reaudit"] if method == "retrain" else []
        wall, stdout = spray(["correct", "--config", "cell.yaml", "--method", method, "-q", *extra], work)
        folder = Path(stdout.splitlines()[1].strip())
        rec = json.loads((folder / "correction.json").read_text())
        # the baseline trains whole epochs anyway: its cost is read against the previous reference epoch
        if method != "retrain" or ref_epoch_s is None:
            ref_epoch_s, ref_epoch_cpu_s = reference_epoch(cell["images"], cell["labels"], seed)
        ev, v, r = rec["evaluation"], rec["verdict"], rec["reaudit"]
        row = {
            "artifact": artifact, "seed": seed, "method": method, "epoch_s": cell["epoch_s"], "audit_s": audit_s,
            **flags, "correction_s": rec["timings"]["correction_s"], "wall_s": wall,
            "ref_epoch_s": ref_epoch_s, "cost_epochs": rec["timings"]["correction_s"] / ref_epoch_s,
            **cpu_cost(rec["timings"], ref_epoch_cpu_s),
            "layer": rec["direction"]["layer"], "pooling": rec["direction"]["pooling"],
            "cav_auroc": rec["direction"]["separation"]["auroc"], "region": ev["region_source"],
            "before": ev["before"], "after": ev["after"], **v,
            "reaudit_after": None if r is None else r["after"], "still_flagged": None if r is None else r["still_flagged"],
            "training_steps": None if rec["training"] is None else rec["training"]["steps"],
            "correction_id": rec["correction_id"], "version": rec["spray_version"],
            "parameters": rec["parameters"], "commit": _commit(), "load_1min": os.getloadavg()[0],
        }  # fmt: skip
        row.update(truth_checks(folder, work, artifact, seed, test[2], test[3], true_mask))
        row["folder"] = str(folder)
        rows.append(row)
        log.warning("%s seed %d %s: flip %.3f -> %.3f, share %.3f -> %.3f, acc %+.2f pt, cleared %s, cost %.2f ep",
                    artifact, seed, method, ev["before"]["flip_rate"], ev["after"]["flip_rate"],
                    ev["before"]["relevance_share"], ev["after"]["relevance_share"], 100 * v["accuracy_change"],
                    v["finding_cleared"], row["cost_epochs"])  # fmt: skip
    if args.floor_model:
        add_floor(rows, work, artifact, seed, args.per_class)
    else:
        for row in rows:
            row.pop("folder")
    return rows


def add_floor(rows: list[dict[str, Any]], work: Path, artifact: str, seed: int, per_class: int) -> None:
    """Add the never-exposed model's share (:func:`clean_model_share`) and the share of the excess over
    it that each correction removed to the cell's rows."""
    shares = clean_model_share(work, artifact, seed, per_class, [Path(r.pop("folder")) for r in rows])
    for row, clean in zip(rows, shares, strict=True):
        row["share_clean_model"] = clean
        row["excess_removed"] = excess_removed(row, clean)


def excess_removed(row: dict[str, Any], clean: float) -> float | None:
    """``(before - after) / (before - clean)`` of the row's relevance shares (None when the audited model
    put no more there than the never-exposed one)."""
    before, after = row["before"]["relevance_share"], row["after"]["relevance_share"]
    return (before - after) / (before - clean) if before > clean else None


def cell_folders(row: dict[str, Any], work_dirs: list[Path]) -> tuple[Path, Path]:
    """The row's cell folder (in the first work dir that has it) and its correction's published folder."""
    cell = f"{row['artifact']}-{row['seed']}"
    work = next(w / cell for w in work_dirs if (w / cell).is_dir())
    return work, next((work / "runs" / "corrections").glob(f"*-{row['correction_id'][:12]}"))


def paired_changes(audited: Path, corrected: Path, inputs: torch.Tensor, y: np.ndarray) -> CleanChanges:
    """Test images ``inputs`` ``(n, 1, 28, 28)`` (labels ``y``) that only the corrected model (config
    ``corrected``) gets right and those that only the audited one (config ``audited``) does."""
    right = [
        predict(build_model(load_config(path).model).eval(), inputs).numpy() == y
        for path in (audited, corrected)
    ]
    return CleanChanges(len(y), int((right[1] & ~right[0]).sum()), int((right[0] & ~right[1]).sum()))


def paired_intervals(rows: list[dict[str, Any]], work_dirs: list[Path], n_test: int) -> list[dict[str, Any]]:
    """The clean-accuracy change of each row with its 95 % interval (the same test images, paired), from
    the models kept in the cells' folders: for rows written before ``spray correct`` recorded it."""
    x, y = read_test_split(n_test)
    inputs = model_inputs(x)
    out = []
    for r in rows:
        work, folder = cell_folders(r, work_dirs)
        ch = paired_changes(work / "cell.yaml", folder / "config.yaml", inputs, y)
        low, high = ch.interval()
        out.append({"cell": work.name, "method": r["method"], "change": (ch.gained - ch.lost) / ch.n,
                    "low": low, "high": high, "gained": ch.gained, "lost": ch.lost})  # fmt: skip
    return out


def clean_model_share(
    work: Path, artifact: str, seed: int, per_class: int, folders: list[Path]
) -> list[float]:
    """Relevance share of a model that never saw the artifact, for each correction folder's region.

    The model is the cell's architecture trained (same recipe and seed) on the cell's data without any
    planted sample; it is explained on the same flagged images, with the audit's LRP settings, as the
    correction's evaluation explains the audited and the corrected model. What it puts on the artifact's
    pixels is relevance that a model without the shortcut draws there anyway.
    """
    from spray.correct.relevance import composite_kwargs, region_share, relevance_maps

    images, labels, planted, _ = cell_data(artifact, seed, per_class)
    torch.manual_seed(seed)
    clean = small_cnn(in_channels=1, num_classes=10)
    train_classifier(clean, images[~planted], labels[~planted], epochs=EPOCHS, seed=seed, mean=MEAN, std=STD,
                     progress=False)  # fmt: skip
    clean.eval()
    lrp = load_config(work / "cell.yaml").lrp
    kw = composite_kwargs(lrp, ((0 - MEAN) / STD, (1 - MEAN) / STD))
    shares = []
    for folder in folders:
        rows = np.array(
            sorted(
                int(i) for i in json.loads((folder / "correction.json").read_text())["flags"]["sample_ids"]
            )
        )
        x, y = model_inputs(images[rows]), labels[rows].astype(np.int64)
        maps = relevance_maps(clean, iter(x.split(128)), y, lrp, torch.device("cpu"), kw)
        shares.append(float(region_share(maps, read_correction_arrays(folder)["region"]).mean()))
    return shares


def floor_rows(rows: list[dict[str, Any]], work_dirs: list[Path], per_class: int) -> Iterator[dict[str, Any]]:
    """For each row, as it is measured: the clean model's share and the share of the excess over it that
    the correction removed (:func:`excess_removed`)."""
    for r in rows:
        work, folder = cell_folders(r, work_dirs)
        (clean,) = clean_model_share(work, r["artifact"], r["seed"], per_class, [folder])
        before, after = r["before"]["relevance_share"], r["after"]["relevance_share"]
        yield {"cell": work.name, "method": r["method"], "share_before": before, "share_after": after,
               "share_clean_model": clean, "share_drop": r["relevance_drop"], "clean_model_drop": 1 - clean / before,
               "excess_removed": excess_removed(r, clean)}  # fmt: skip


def _commit() -> str:
    """The checkout's commit (``git rev-parse``), or ``"unknown"`` outside a git checkout."""
    res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return res.stdout.strip() or "unknown"


def _f(x: Any, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.2f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per row, then the goals per method."""
    head = ("artifact", "seed", "method", "flip", "flip↓", "share", "share↓", "acc", "Δacc", "cleared", "cost ep",
            "true flip", "IoU")  # fmt: skip
    print(" | ".join(head))
    for r in rows:
        b, a = r["before"], r["after"]
        print(" | ".join([
            r["artifact"], str(r["seed"]), r["method"], f"{_f(b['flip_rate'])}→{_f(a['flip_rate'])}", _f(r["flip_drop"]),
            f"{_f(b['relevance_share'])}→{_f(a['relevance_share'])}", _f(r["relevance_drop"]),
            f"{_f(b['clean_accuracy'])}→{_f(a['clean_accuracy'])}", f"{100 * r['accuracy_change']:+.2f}",
            str(r["finding_cleared"]), _f(r["cost_epochs"], pct=False),
            f"{_f(r['true_flip_before'])}→{_f(r['true_flip_after'])}", _f(r["region_iou"], pct=False),
        ]))  # fmt: skip
    for m in sorted({r["method"] for r in rows}):
        sub = [r for r in rows if r["method"] == m]
        goals = {
            "flip down >= 90 %": sum((r["flip_drop"] or 0) >= 0.9 for r in sub),
            "relevance down >= 80 %": sum((r["relevance_drop"] or 0) >= 0.8 for r in sub),
            "clean accuracy within 1 point": sum(r["accuracy_change"] >= -0.01 for r in sub),
            "re-audit cleared": sum(bool(r["finding_cleared"]) for r in sub),
            "cost <= 1 epoch": sum(r["cost_epochs"] <= 1.0 for r in sub),
        }
        print(f"{m}: " + "; ".join(f"{k}: {v}/{len(sub)}" for k, v in goals.items()))


def _mean_range(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    a = np.asarray(xs, dtype=float) * scale
    return f"{a.mean():.{digits}f} ({a.min():.{digits}f}–{a.max():.{digits}f})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The docs table: per artifact and method, mean (min–max) over seeds."""
    out = [
        "| artifact | method | seeds | flip rate before → after, % | flip ↓ | relevance share before → after, % "
        "| share ↓ | clean acc. change, points | avg. group acc. before → after, % | re-audit cleared "
        "| cost, epochs (wall) | cost, epochs (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for art in dict.fromkeys(r["artifact"] for r in rows):
        for m in METHODS:
            sub = [r for r in rows if r["artifact"] == art and r["method"] == m]
            if not sub:
                continue
            fb = [r["before"]["flip_rate"] for r in sub]
            fa = [r["after"]["flip_rate"] for r in sub]
            sb = [r["before"]["relevance_share"] for r in sub]
            sa = [r["after"]["relevance_share"] for r in sub]
            gb = [(r["before"]["clean_accuracy"] + r["before"]["pasted_accuracy"]) / 2 for r in sub]
            ga = [(r["after"]["clean_accuracy"] + r["after"]["pasted_accuracy"]) / 2 for r in sub]
            cleared = [r["finding_cleared"] for r in sub if r["finding_cleared"] is not None]
            cpu = [r["cost_epochs_cpu"] for r in sub if r.get("cost_epochs_cpu") is not None]
            out.append(
                f"| {art} | {m} | {len(sub)} | {_mean_range(fb)} → {_mean_range(fa)} "
                f"| {_mean_range([r['flip_drop'] for r in sub], digits=0)} "
                f"| {_mean_range(sb)} → {_mean_range(sa)} | {_mean_range([r['relevance_drop'] for r in sub], digits=0)} "
                f"| {_mean_range([r['accuracy_change'] for r in sub], digits=2)} "
                f"| {_mean_range(gb)} → {_mean_range(ga)} "
                f"| {f'{sum(cleared)}/{len(cleared)}' if cleared else '–'} "
                f"| {_mean_range([r['cost_epochs'] for r in sub], scale=1.0, digits=2)} "
                f"| {_mean_range(cpu, scale=1.0, digits=2) if cpu else '–'} |"
            )
    return "\n".join(out)


def floor_table(rows: list[dict[str, Any]]) -> str:
    """The relevance share against a never-exposed model's (rows that carry ``share_clean_model``)."""
    out = [
        "| artifact | method | seeds | share, never-exposed model, % | its drop from the audited, % "
        "| share after, % | excess over it removed, % | cells with excess removed ≥ 80 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for art in dict.fromkeys(r["artifact"] for r in rows):
        for m in METHODS:
            sub = [r for r in rows if r["artifact"] == art and r["method"] == m and "share_clean_model" in r]
            if not sub:
                continue
            clean = [r["share_clean_model"] for r in sub]
            own = [1 - r["share_clean_model"] / r["before"]["relevance_share"] for r in sub]
            excess = [r["excess_removed"] for r in sub if r["excess_removed"] is not None]
            out.append(
                f"| {art} | {m} | {len(sub)} | {_mean_range(clean)} | {_mean_range(own, digits=0)} "
                f"| {_mean_range([r['after']['relevance_share'] for r in sub])} "
                f"| {_mean_range(excess, digits=0) if excess else '–'} | {sum(e >= 0.8 for e in excess)}/{len(sub)} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", nargs="+", default=["demo", "frame", "glyph"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--per-class", type=int, default=1000, help="training images per class (the demo's 1000)")
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/spray-correction-bench"))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    ap.add_argument("--out", type=Path, default=Path(f"benchmarks/results/correction_{stamp}.jsonl"))
    ap.add_argument(
        "--reuse-models",
        action="store_true",
        help="load the model.pt an earlier run left in a cell's folder (same seed and recipe) instead "
        "of training it again (the row's epoch_s is then null; the costs use the reference epoch)",
    )
    ap.add_argument(
        "--no-floor",
        dest="floor_model",
        action="store_false",
        help="skip the never-exposed model (its share depends only on the cell's data, flags and "
        "region: take it from an earlier run's rows)",
    )
    ap.add_argument("--report", type=Path, default=None, help="only print the tables of a results file")
    ap.add_argument("--markdown", action="store_true", help="with --report: the docs table (markdown)")
    ap.add_argument("--intervals", nargs="+", type=Path, metavar="WORK_DIR",
                    help="with --report: each row's clean-accuracy change with its 95 %% interval, from the "
                    "models kept in these work dirs")  # fmt: skip
    ap.add_argument("--floor", nargs="+", type=Path, metavar="WORK_DIR",
                    help="with --report: each row's relevance share against that of a model trained without "
                    "the planted samples (retrained here, about one minute per row), cells in these work dirs")  # fmt: skip
    args = ap.parse_args(argv)
    if args.report is not None:
        rows = [json.loads(x) for x in args.report.read_text().splitlines() if x.strip()]
        if args.intervals:
            for it in paired_intervals(rows, args.intervals, args.test_samples):
                print(json.dumps(it))
        elif args.floor:
            torch.set_num_threads(1)
            for it in floor_rows(rows, args.floor, args.per_class):
                print(json.dumps(it), flush=True)
        elif args.markdown:
            print(markdown_table(rows))
            if any("share_clean_model" in r for r in rows):
                print("\n" + floor_table(rows))
        else:
            print_table(rows)
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    test = write_test_split(args.work_dir / "test", args.test_samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for artifact in args.artifacts:
        for seed in args.seeds:
            for row in run_cell(artifact, seed, args, test):
                rows.append(row)
                with args.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    print_table(rows)


if __name__ == "__main__":
    main()
