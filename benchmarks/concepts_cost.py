"""Cost of the concept relevance (``lrp.concept_layer``): batch-stage time and run disk, with vs without.

Time: spray's Explainer (EpsilonPlusFlat) on batches already in memory, with ``concept_layer=None`` and
with the default layer (``"auto"``), alternated round by round so that other jobs on the machine slow
both alike; the median of the per-round ratios is reported. Disk: a real audit of a synthetic image
folder (``spray.audit.audit``) with ``lrp.concept_layer: auto`` and ``none``; bytes of the published
run folder and of the cache directory.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/concepts_cost.py --rounds 7
    python benchmarks/concepts_cost.py --models resnet18 --size 224 --batch 16 --skip-disk
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spray.lab.cnn import small_cnn
from spray.lrp import Explainer

log = logging.getLogger("concepts_cost")

MODELS = {
    "small_cnn": (lambda: small_cnn(1, 10, 32), 1, 28),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), 3, None),
    "resnet50": (lambda: torchvision.models.resnet50(num_classes=10), 3, None),
}


def _time(explainer: Explainer, x: torch.Tensor, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        explainer(x, target="pred")
    return (time.perf_counter() - start) / repeats


def time_model(name: str, size: int, batch: int, rounds: int, repeats: int) -> dict[str, Any]:
    """Median seconds per batch without/with concepts, and the median per-round ratio."""
    factory, channels, native = MODELS[name]
    torch.manual_seed(0)
    model: nn.Module = factory().eval()
    side = native or size
    x = torch.randn(batch, channels, side, side)
    plain = Explainer(model)
    tapped = Explainer(model, concept_layer="auto")
    plain(x), tapped(x)  # first-batch checks and warm-up
    base, conc, ratios = [], [], []
    for _ in range(rounds):
        a = _time(plain, x, repeats)
        b = _time(tapped, x, repeats)
        base.append(a)
        conc.append(b)
        ratios.append(b / a)
    return {
        "model": name,
        "input": [channels, side, side],
        "batch": batch,
        "layer": tapped.concept_layer,
        "channels": int(tapped(x[:1]).concepts.shape[1]),  # type: ignore[union-attr]
        "plain_s": statistics.median(base),
        "concepts_s": statistics.median(conc),
        "overhead": statistics.median(ratios) - 1.0,
    }


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk(n_per_class: int, size: int) -> list[dict[str, Any]]:
    """Bytes of a run folder and its cache with and without concepts (same tiny image-folder audit)."""
    from spray.audit import audit
    from tests.runs.builders import tiny_config

    out = []
    for layer in ("none", "auto"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = tiny_config(Path(tmp), n_per_class=n_per_class, lrp={"concept_layer": layer})
            cfg = cfg.model_copy(
                update={
                    "model": cfg.model.model_copy(
                        update={"factory_kwargs": {"in_channels": 3, "num_classes": 2, "width": 32}}
                    ),
                    "data": cfg.data.model_copy(
                        update={"transform": cfg.data.transform.model_copy(update={"resize": size})}
                    ),
                    "batch": cfg.batch.model_copy(update={"grid": 28, "thumbnail_size": 64}),
                }
            )
            report = audit(cfg, progress=False)
            run = Path(report.run_dir)
            cache = Path(cfg.output.runs_dir) / ".cache"
            out.append(
                {
                    "concept_layer": layer,
                    "n": report.n_samples,
                    "run_bytes": _bytes(run),
                    "concepts_bytes": (run / "concepts.npy").stat().st_size
                    if (run / "concepts.npy").exists()
                    else 0,
                    "cache_bytes": _bytes(cache),
                }
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["small_cnn", "resnet18"], choices=list(MODELS))
    p.add_argument("--size", type=int, default=64, help="input side for the torchvision models")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-disk", action="store_true")
    p.add_argument("--n-per-class", type=int, default=100, help="images per class of the disk audit")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    result["time"] = [time_model(m, args.size, args.batch, args.rounds, args.repeats) for m in args.models]
    if not args.skip_disk:
        result["disk"] = disk(args.n_per_class, 28)
        plain, with_c = result["disk"]
        result["disk_overhead_run"] = with_c["run_bytes"] / plain["run_bytes"] - 1.0
        result["disk_overhead_cache"] = with_c["cache_bytes"] / plain["cache_bytes"] - 1.0
    text = json.dumps(result, indent=1)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
