"""The cost of a correction in CPU seconds, on cells that ``benchmarks/correction.py`` left behind.

On a shared machine the wall-clock ratio of ``benchmarks/correction.py`` (the correction's seconds over
one epoch of the original training, timed right after it) moves with the other jobs' load (0.36 to 1.98
epochs for the same RR-ClArC work on the demo). A one-thread process's CPU seconds hardly do. For each
cell folder (``<work-dir>/<artifact>-<seed>``, audited and flagged), this runs
``spray correct --method M --no-reaudit`` (another correction id than the benchmark's, which re-audits;
the same direction, region and method) and one epoch of the original training, both on one thread, and
reports ``correction_cpu_s / ref_epoch_cpu_s``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/correction_cost.py /tmp/spray-correction-bench/demo-0 --method rrclarc
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from correction import reference_epoch, spray

from spray.data import read_idx


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cells", nargs="+", type=Path, help="cell folders of benchmarks/correction.py")
    ap.add_argument("--method", default="rrclarc", choices=("pclarc", "rrclarc", "retrain"))
    ap.add_argument("--out", type=Path, default=None, help="append one JSON line per cell")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for cell in args.cells:
        _wall, stdout = spray(
            ["correct", "--config", "cell.yaml", "--method", args.method, "--no-reaudit", "-q"], cell
        )
        folder = Path(stdout.splitlines()[1].strip())
        timings = json.loads((folder / "correction.json").read_text())["timings"]
        images = np.array(read_idx(cell / "images.idx"))
        labels = np.asarray(read_idx(cell / "labels.idx")).astype(np.int64)
        seed = int(cell.name.rsplit("-", 1)[1])
        ref_wall, ref_cpu = reference_epoch(images, labels, seed)
        row = {
            "cell": cell.name, "method": args.method, "correction_s": timings["correction_s"],
            "correction_cpu_s": timings.get("correction_cpu_s"), "ref_epoch_s": ref_wall, "ref_epoch_cpu_s": ref_cpu,
            "cost_epochs": timings["correction_s"] / ref_wall,
            "cost_epochs_cpu": timings["correction_cpu_s"] / ref_cpu, "correction": folder.name,
        }  # fmt: skip
        print(json.dumps(row))
        if args.out is not None:
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
