"""The batch stage of the first-run case, A/B between checkouts: CPU seconds, interleaved, a process each.

The image folder of ``benchmarks/first_run.py`` (the first 4,000 Fashion-MNIST training images as 28×28
grey PNGs in ``train/<class>/``) and spray's small CNN with seeded random weights, audited with the config
``spray init`` writes for it (``batch_size`` given per variant). Each run is a new process that imports
the checkout's spray, builds the dataset and the model, and runs the batch stage into an empty runs
folder (every heatmap computed, shards written); it reports the batch stage's CPU seconds (its own
process time: loading, LRP, the first batch's checks, the writer thread) and wall seconds. Variants run
interleaved, ``--repeats`` rounds, so that a shared machine's load hits them alike.

    OMP_NUM_THREADS=1 python benchmarks/batch_stage_ab.py --variant main=/work/main:256 \\
        --variant branch=.:256 --variant branch_init=.:128 --repeats 3

Heatmaps do not depend on the checkout or the batch size here (the shards are compared: ``identical``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from first_run import _image_folder  # noqa: E402

_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from spray import audit as A
    from spray.config import load_config
    from spray.distributed import dist_context
    cfg = load_config(sys.argv[1])
    dev = A.resolve_device("cpu")
    cfg = A._with_decoder(cfg, dev)
    ctx = dist_context(dev, 60)
    clock = A._Clock()
    setup = A._setup(cfg, dev, ctx, clock)
    t, c = time.perf_counter(), time.process_time()
    batched = A._batch_stage(cfg, setup, dev, ctx, clock, False)
    out = {"batch_wall_s": time.perf_counter() - t, "batch_cpu_s": time.process_time() - c}
    A._merge(batched, ctx)
    out["spray"] = os.path.dirname(A.__file__)
    print(json.dumps(out))
    """
)

_CONFIG = """name: train
seed: 0
model:
  factory: spray.lab.cnn:small_cnn
  factory_kwargs: {{in_channels: 1, num_classes: 10}}
  checkpoint: small_cnn.pt
data:
  kind: image_folder
  path: train
  name: train
batch:
  batch_size: {batch}
output:
  runs_dir: runs
"""


def _shards_digest(runs: Path) -> str:
    """SHA-256 over every cached shard's arrays (in name order): equal digests, equal heatmaps."""
    import numpy as np

    h = hashlib.sha256()
    for f in sorted(runs.glob(".cache/*/shard-*.npz")):
        with np.load(f) as z:
            for k in sorted(z.files):
                h.update(k.encode() + z[k].tobytes())
    return h.hexdigest()[:16]


def _run(work: Path, label: str, checkout: Path, batch: int) -> dict[str, Any]:
    cfg = work / f"{label}.yaml"
    cfg.write_text(_CONFIG.format(batch=batch))
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cfg)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(variant=label, batch=batch, load_1min=os.getloadavg()[0], shards=_shards_digest(runs))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="LABEL=CHECKOUT:BATCH_SIZE")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--out", help="result JSON (default benchmarks/results/batch_stage_ab_<date>.json)")
    args = ap.parse_args()
    variants = []
    for v in args.variant:
        label, rest = v.split("=", 1)
        checkout, batch = rest.rsplit(":", 1)
        variants.append((label, Path(checkout).resolve(), int(batch)))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="spray-batch-ab-") as tmp:
        work = Path(tmp)
        _image_folder(work / "train", args.images)
        seed = (
            "import torch; from spray.lab.cnn import small_cnn; torch.manual_seed(0); "
            "torch.save(small_cnn(in_channels=1, num_classes=10).state_dict(), 'small_cnn.pt')"
        )
        subprocess.run(
            [sys.executable, "-c", seed], cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True
        )
        for r in range(args.repeats):
            for label, checkout, batch in variants:
                rows.append({"round": r, **_run(work, label, checkout, batch)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {
        label: sorted(round(x["batch_cpu_s"], 2) for x in rows if x["variant"] == label)
        for label, _, _ in variants
    }
    res = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpus": os.cpu_count(),
        "batch_cpu_s": summary,
        "identical": len({x["shards"] for x in rows}) == 1,
        "rows": rows,
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"batch_stage_ab_{res['date'][:10]}.json")
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({"batch_cpu_s": summary, "identical": res["identical"]}))


if __name__ == "__main__":
    main()
