"""The analysis at ImageNet scale: synthetic classes of 1,300 heatmaps through the real analysis stage,
sharded over torchrun ranks, and a projection to 1,000 classes on 8 ranks (issue #20 item 4).

Runs :func:`spray.analysis_stage.analyze_run` as the audit does after the batch stage: rank 0 holds the
analysis inputs (ids, hashes, labels, 32×32 float16 heatmaps), broadcasts the ids and hashes, sends every
rank the heatmaps of the classes :func:`~spray.analysis_shards.assign_classes` gives it, every rank
analyses its classes, and rank 0 gathers them and ranks the findings. The heatmaps are synthetic
(:func:`spray.lab.synthetic.make_heatmaps`: 5 strategies per class, one a 3 % corner cluster, seeded per
class), so there is no model: the paste test (``scoring.intervention``) is off; everything else is the
default config (UMAP map, k = 2..12, 32 eigenvectors, PCA to 128).

    # 2 ranks (gloo, CPU) and 1 process, 40 classes of 1,300 samples, one thread per rank:
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/torchrun --standalone --nproc_per_node=2 \\
        benchmarks/analysis_scale.py --classes 40
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/analysis_scale.py --classes 40

Each run writes ``benchmarks/results/analysis_scale_<W>r_<C>x<n>_<date>.json`` with every class's
seconds, the transfers' costs, the machine's load, and the projection (see :func:`project`).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per rank: must happen before numpy / numba are imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGENET_CLASSES = 1000
IMAGENET_PER_CLASS = 1300
TARGET_RANKS = 8


def _peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _inputs(n_classes: int, per_class: int, grid: int) -> Any:
    """Synthetic analysis inputs: ``n_classes`` classes of ``per_class`` heatmaps, class-major order."""
    from spray.analysis_shards import AnalysisInputs
    from spray.lab.synthetic import make_heatmaps

    n = n_classes * per_class
    rel = np.empty((n, grid, grid), dtype=np.float16)
    for c in range(n_classes):
        heat, _, _ = make_heatmaps(per_class, n_clusters=5, small_fraction=0.03, size=grid, seed=c)
        rel[c * per_class : (c + 1) * per_class] = heat
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    ids = [f"n{c:05d}/{i:05d}.JPEG" for c in range(n_classes) for i in range(per_class)]
    hashes = [f"{i:032x}" for i in range(n)]
    return AnalysisInputs(ids, hashes, labels, labels.copy(), rel)


class _Timed:
    """Wraps ``module.name`` and records the wall and CPU seconds of every call (and its first int argument:
    the class index for ``analyze_class``)."""

    def __init__(self, module: str, name: str) -> None:
        import importlib

        self.module = importlib.import_module(module)
        self.name = name
        self.calls: list[tuple[int | None, float, float]] = []
        self.real = getattr(self.module, name)
        setattr(self.module, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t, c = time.perf_counter(), time.process_time()
        out = self.real(*args, **kwargs)
        key = args[0] if args and isinstance(args[0], int) else None
        self.calls.append((key, time.perf_counter() - t, time.process_time() - c))
        return out

    def wall(self) -> float:
        return sum(w for _, w, _ in self.calls)

    def cpu(self) -> float:
        return sum(c for _, _, c in self.calls)


#: Functions timed: the stage's own steps, and the steps of one class's analysis (imported inside
#: ``analyze_class`` from their modules, so patching the module attribute reaches them).
_TIMED = {
    "analyze_class": "spray.analysis_stage",
    "share_inputs": "spray.analysis_stage",
    "send_heatmaps": "spray.analysis_stage",
    "gather_classes": "spray.analysis_stage",
    "_warm_up": "spray.analysis_stage",
    "normalize_heatmaps": "spray.analysis.preprocess",
    "reduce_dimension": "spray.analysis.preprocess",
    "spectral_embedding": "spray.analysis.spectral",
    "cluster_sweep": "spray.analysis.clustering",
    "embed_2d": "spray.analysis.embedding",
    "score_class": "spray.analysis.classes",
}
_STEPS = (
    "normalize_heatmaps",
    "reduce_dimension",
    "spectral_embedding",
    "cluster_sweep",
    "embed_2d",
    "score_class",
)


def measure(n_classes: int, per_class: int, grid: int) -> dict[str, Any]:
    """Run the analysis stage on this rank (every rank of the torchrun job calls this)."""
    import torch

    from spray.analysis_stage import analyze_run
    from spray.config import AuditConfig
    from spray.distributed import dist_context

    ctx = dist_context(torch.device("cpu"), timeout_s=3600)
    load0 = os.getloadavg()
    t = time.perf_counter()
    inputs = _inputs(n_classes, per_class, grid) if ctx.is_main else None
    t_generate = time.perf_counter() - t
    cfg = AuditConfig.model_validate(
        {
            "model": {"architecture": "resnet18", "num_classes": n_classes},
            "data": {"kind": "idx", "images": "x", "labels": "y"},
            "scoring": {"intervention": False},
        }
    )
    dataset = SimpleNamespace(class_names=[f"class{c}" for c in range(n_classes)])
    timers = {name: _Timed(module, name) for name, module in _TIMED.items()}
    ctx.barrier()
    t = time.perf_counter()
    result = analyze_run(cfg, None, torch.device("cpu"), dataset, inputs, Path("unused"), ctx=ctx)  # type: ignore[arg-type]
    wall = time.perf_counter() - t
    mine: dict[str, Any] = {
        "rank": ctx.rank,
        "wall_s": wall,
        "generate_s": t_generate,
        "share_inputs_s": timers["share_inputs"].wall(),
        "send_heatmaps_s": timers["send_heatmaps"].wall(),
        "gather_classes_s": timers["gather_classes"].wall(),
        "warm_up_s": timers["_warm_up"].wall(),
        "class_s": {str(c): w for c, w, _ in timers["analyze_class"].calls},
        "class_cpu_s": {str(c): cpu for c, _, cpu in timers["analyze_class"].calls},
        "steps_s": {k: timers[k].wall() for k in _STEPS},
        "steps_cpu_s": {k: timers[k].cpu() for k in _STEPS},
        "load_1min_before": load0[0],
        "load_1min_after": os.getloadavg()[0],
        "peak_rss_gb": _peak_rss_gb(),
    }
    every = [mine]
    if ctx.world_size > 1:
        every = [None] * ctx.world_size  # type: ignore[list-item]
        torch.distributed.all_gather_object(every, mine)
    if not ctx.is_main:
        return {}
    assert result is not None
    class_kb = (
        float(np.mean([len(pickle.dumps(ca)) for ca in result.classes]) / 1024) if result.classes else None
    )
    return {
        "world_size": ctx.world_size,
        "n_classes": n_classes,
        "per_class": per_class,
        "grid": grid,
        "n_findings": len(result.findings),
        "class_pickle_kb_mean": class_kb,
        "ranks": every,
    }


def project(res: dict[str, Any]) -> dict[str, Any]:
    """1,000 classes × 1,300 samples on 8 ranks, from the measured per-class cost.

    Equal classes are dealt out evenly (125 per rank), so a rank's analysis is 125 × the mean class
    time. To that come the numba warm-up (once per rank, in parallel) and rank 0's transfers, each scaled
    from what it moved here: the broadcast of every sample's ids and hashes (× the number of samples), the
    heatmaps it sends (here to 1 of 2 ranks, there to 7 of 8: × samples × (7/8)/(1/2)) and the classes it
    gathers (× the number of classes received). Two figures: with the class times measured on the clock
    of this shared machine (``wall``: each rank got a fraction of a core), and with their CPU time
    (``cpu``: what a rank with a core of its own needs, the usual case for 8 ranks on a GPU node).
    """
    ranks = res["ranks"]
    w = res["world_size"]
    scale_n = IMAGENET_CLASSES * IMAGENET_PER_CLASS / (res["n_classes"] * res["per_class"])
    main = ranks[0]
    n_received = res["n_classes"] - len(main["class_s"])
    per_rank = math.ceil(IMAGENET_CLASSES / TARGET_RANKS)
    warm = max(r["warm_up_s"] for r in ranks)
    share = main["share_inputs_s"] * scale_n
    send = main["send_heatmaps_s"] * scale_n * ((TARGET_RANKS - 1) / TARGET_RANKS) / ((w - 1) / w)
    gather = main["gather_classes_s"] / n_received * IMAGENET_CLASSES * (TARGET_RANKS - 1) / TARGET_RANKS
    out: dict[str, Any] = {
        "classes_per_rank": per_rank,
        "warm_up_s": warm,
        "share_inputs_s": share,
        "send_heatmaps_s": send,
        "gather_classes_s": gather,
    }
    for clock in ("wall", "cpu"):
        secs = [s for r in ranks for s in r["class_s" if clock == "wall" else "class_cpu_s"].values()]
        mean = float(np.mean(secs))
        total = warm + share + send + per_rank * mean + gather
        out[clock] = {
            "class_s_mean": mean,
            "class_s_p90": float(np.percentile(secs, 90)),
            "total_s": total,
            "total_min": total / 60,
            "single_process_min": (warm + IMAGENET_CLASSES * mean) / 60,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=40, help="Classes measured (of 1,300 samples each).")
    ap.add_argument("--per-class", type=int, default=IMAGENET_PER_CLASS)
    ap.add_argument("--grid", type=int, default=32, help="Heatmap side (batch.grid; 32 by default).")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/...).")
    args = ap.parse_args()
    res = measure(args.classes, args.per_class, args.grid)
    if not res:
        return
    if res["world_size"] > 1:  # the gather's cost is only measured with more than one rank
        res["projection_1000x1300_8_ranks"] = project(res)
    res["date"] = datetime.date.today().isoformat()
    res["cpu_count"] = os.cpu_count()
    res["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    res["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    out = args.out or ROOT / "benchmarks" / "results" / (
        f"analysis_scale_{res['world_size']}r_{args.classes}x{args.per_class}_{res['date']}.json"
    )
    out.write_text(json.dumps(res, indent=2) + "\n")
    r0 = res["ranks"][0]
    secs = [s for r in res["ranks"] for s in r["class_s"].values()]
    print(
        f"{res['world_size']} rank(s), {args.classes} classes × {args.per_class}: analysis {r0['wall_s']:.1f} s "
        f"(class mean {np.mean(secs):.2f} s, warm-up {r0['warm_up_s']:.1f} s, load "
        f"{r0['load_1min_before']:.1f} → {r0['load_1min_after']:.1f}); wrote {out}"
    )
    if "projection_1000x1300_8_ranks" in res:
        p = res["projection_1000x1300_8_ranks"]
        print(
            f"projected 1,000 × 1,300 on {TARGET_RANKS} ranks: {p['wall']['total_min']:.1f} min with this "
            f"machine's class times, {p['cpu']['total_min']:.1f} min with their CPU time"
        )


if __name__ == "__main__":
    main()
