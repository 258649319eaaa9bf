"""Batch-stage throughput: LRP compute-only vs end to end (load + LRP + pool + write), and training.

For ResNet-50 at 224² (random weights) on a folder of real JPEG files written by this script, it
measures, in one process:

- ``train``: forward + backward with weight gradients (no optimizer step) — the training-throughput anchor;
- ``lrp``: spray's EpsilonPlusFlat on batches already in device memory (compute only);
- ``end_to_end``: spray's batch stage over the image folder — DataLoader workers decode and transform,
  pinned memory and non-blocking copies, LRP, pooling on the device, a background shard writer — with an
  empty cache, so every image is explained and written.

Goals (issue "Performance at scale"): end to end ≥ 85 % of compute-only; LRP ≥ 0.7× training throughput.

Usage::

    .venv/bin/python benchmarks/batch_stage.py --device cpu --n 96 --batch 16 --workers 1
    .venv/bin/python benchmarks/batch_stage.py --device cuda --n 4096 --batch 128 --workers 8 --precision bf16
    .venv/bin/python benchmarks/batch_stage.py --device cuda --n 8192 --batch 128 --workers 12 --decode-device cuda

``--decode-device cuda`` decodes the JPEG files on the GPU in batches (the workers only read and hash them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spray.attribution import BatchStage, ShardPlan
from spray.config import config_from_dict
from spray.data import build_dataset
from spray.lrp import Explainer
from spray.runs.cache import ShardCache

log = logging.getLogger("batch_stage")


def write_folder(root: Path, n: int, size: int = 256, classes: int = 4) -> None:
    """``n`` random-texture JPEGs in ``classes`` class folders (decoding cost like real photos)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
        img.save(d / f"{i:06d}.jpg", quality=90)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=96, help="images in the folder")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument(
        "--decode-device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the JPEG files are decoded (data.transform.decode_device): Pillow in the workers, or "
        "batched on the GPU with torchvision/nvJPEG",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # The training anchor runs at the LRP's precision: PyTorch's default allows TF32 convolutions on
    # CUDA, which spray's "fp32" turns off.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=1000).eval().to(device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        write_folder(root, args.n)
        cfg = config_from_dict(
            {
                "model": {"architecture": "resnet50", "num_classes": 1000},
                "data": {
                    "kind": "image_folder",
                    "path": str(root),
                    "transform": {
                        "resize": 256,
                        "center_crop": 224,
                        "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225],
                        "decode_device": args.decode_device,
                    },
                },
                "lrp": {"precision": args.precision, "target": "pred"},
                "batch": {
                    "batch_size": args.batch,
                    "num_workers": args.workers,
                    "shard_size": args.batch * 4,
                },
                "output": {"runs_dir": str(Path(tmp) / "runs")},
            },
        )
        ds = build_dataset(cfg.data, jpeg_device=device if args.decode_device == "cuda" else None)
        explainer = Explainer(model, "EpsilonPlusFlat", device=device, precision=args.precision)
        x = torch.randn(args.batch, 3, 224, 224, device=device)
        n_batches = max(1, args.n // args.batch)

        # Warm-up (allocator, cuDNN autotune, first-call overheads).
        explainer(x, target="pred")
        results: dict[str, float] = {}

        # Training step without the optimizer: forward + backward with weight gradients.
        model.train(False)
        y = torch.randint(0, 1000, (args.batch,), device=device)
        loss_fn = torch.nn.CrossEntropyLoss()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = loss_fn(model(x), y)
            loss.backward()
            model.zero_grad(set_to_none=True)
        sync(device)
        results["train_img_s"] = n_batches * args.batch / (time.perf_counter() - t0)

        sync(device)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            explainer(x, target="pred")
        sync(device)
        results["lrp_img_s"] = n_batches * args.batch / (time.perf_counter() - t0)

        cache = ShardCache(Path(tmp) / "runs" / ".cache" / "bench", by_label=cfg.lrp.target == "label")
        stage = BatchStage(explainer, cfg, cache, Path(tmp) / "work", device)
        plan = ShardPlan.make(len(ds), cfg.batch.shard_size)

        # The input pipeline alone (same loader, workers and pinned memory; nothing explained): the
        # ceiling of the end-to-end figure when decoding, not the device, is the bottleneck.
        idx = list(range(len(ds)))
        t0 = time.perf_counter()
        seen = 0
        for b in stage._loader(ds, [idx[s : s + args.batch] for s in range(0, len(idx), args.batch)]):
            b = ds.finish_batch(b)  # the GPU decode, with --decode-device cuda
            seen += len(b.x) if b.x is not None else 0
        sync(device)
        results["loader_img_s"] = seen / (time.perf_counter() - t0)
        ds.n_device_decoded = 0
        t0 = time.perf_counter()
        computed = stage.run_shards(ds, plan.starts, plan, progress=False)
        sync(device)
        results["end_to_end_img_s"] = computed / (time.perf_counter() - t0)

    results["end_to_end_over_lrp"] = results["end_to_end_img_s"] / results["lrp_img_s"]
    results["lrp_over_train"] = results["lrp_img_s"] / results["train_img_s"]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    results_out = {
        "device": name,
        "decode_device": args.decode_device,
        "n_device_decoded": ds.n_device_decoded,
        "precision": args.precision,
        "batch": args.batch,
        "n": args.n,
        "workers": args.workers,
        **results,
    }
    log.info("%s", json.dumps(results_out, indent=2))
    log.info(
        "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.0f %% | %.2f× |",
        name,
        args.precision,
        results["train_img_s"],
        results["lrp_img_s"],
        results["loader_img_s"],
        results["end_to_end_img_s"],
        100 * results["end_to_end_over_lrp"],
        results["lrp_over_train"],
    )
    if args.json:
        args.json.write_text(json.dumps(results_out, indent=2))


if __name__ == "__main__":
    main()
