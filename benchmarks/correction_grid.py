"""Variants of the correction settings on cells that ``benchmarks/correction.py`` already prepared.

Each cell folder (``<work-dir>/<artifact>-<seed>``) holds a trained model, its published audit and the
flags of its top finding. For every variant, a copy of ``cell.yaml`` with the variant's ``correction``
fields is corrected with ``spray correct --no-reaudit`` (the command a user runs), and the record's
flip-rate drop, relevance-share drop, clean-accuracy change and CPU seconds are printed as one JSON
line. The protocol that chose ``rr_lambda`` with it is
``benchmarks/results/correction_tuning_protocol_2026-12-03.md``.

    OMP_NUM_THREADS=1 python benchmarks/correction_grid.py --work-dir /tmp/corr-tune \\
        --cells frame-10 glyph-10 frame-11 glyph-11 \\
        --variant default= --variant lam1e4=rr_lambda=1e4 --variant ep5=epochs=5
    python benchmarks/correction_grid.py --summary ROWS.jsonl     # goals met per variant, worst margin

``--test-samples 10000`` also measures each variant's clean-accuracy change on the 10,000 Fashion-MNIST
test images, paired (``acc_test``; the rule of the seventh and eighth tuning rounds uses it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from correction import (  # benchmarks/correction.py
    model_inputs,
    paired_changes,
    read_test_split,
    spray,  # one spray command of this checkout
)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=key=value,key=value`` → (name, correction fields); values parsed as YAML scalars."""
    name, _, rest = text.partition("=")
    fields = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        fields[key] = yaml.safe_load(value)
    return name, fields


def run_variant(
    work: Path, name: str, fields: dict[str, Any], method: str, test: tuple[torch.Tensor, np.ndarray] | None
) -> dict[str, Any]:
    """Correct one cell with one variant; the record's figures as a row (with ``test``, inputs
    ``(n, 1, 28, 28)`` and labels ``(n,)``, also the clean-accuracy change on those images, paired)."""
    base = yaml.safe_load((work / "cell.yaml").read_text())
    cfg = {**base, "correction": {**base.get("correction", {}), **fields}}
    path = work / f"grid-{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    row: dict[str, Any] = {"cell": work.name, "variant": name, "fields": fields}
    try:
        _, stdout = spray(["correct", "--config", path.name, "--method", method, "-q", "--no-reaudit"], work)
    except RuntimeError as err:
        return {**row, "error": str(err)[-500:]}
    folder = Path(stdout.splitlines()[1].strip())
    folder = folder if folder.is_absolute() else work / folder
    rec = json.loads((folder / "correction.json").read_text())
    ev, verdict = rec["evaluation"], rec["verdict"]
    if test is not None:
        ch = paired_changes(work / "cell.yaml", folder / "config.yaml", *test)
        row["acc_test"] = (ch.gained - ch.lost) / ch.n
        row["acc_test_interval"] = list(ch.interval())
        row["test_samples"] = ch.n
    return {
        **row,
        "flip": [ev["before"]["flip_rate"], ev["after"]["flip_rate"]],
        "flip_drop": verdict["flip_drop"],
        "share_drop": verdict["relevance_drop"],
        "acc": verdict["accuracy_change"],
        "cpu_s": rec["timings"].get("correction_cpu_s"),
    }


def summary(rows: list[dict[str, Any]]) -> None:
    """Goals met per variant (flip ↓ ≥ 90 %, share ↓ ≥ 80 %, accuracy change within ±1 point / ≥ −1 point)
    and the worst margin: over the cells, the smallest of (share drop − 80) and (accuracy change + 1), in
    points. The accuracy is the test images' (``acc_test``) where a row has it, else the record's."""
    agg: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0, float("inf")])
    for r in rows:
        if "error" in r:
            continue
        a = agg[r["variant"]]
        acc = r.get("acc_test", r["acc"])
        both = (r["flip_drop"] >= 0.9) + (r["share_drop"] >= 0.8)
        a[0] += both + (abs(acc) <= 0.01)
        a[1] += both + (acc >= -0.01)
        a[2] += r["cpu_s"] or 0.0
        a[3] += 1
        a[4] = min(a[4], 100 * (r["share_drop"] - 0.8), 100 * (acc + 0.01))
    print(
        "variant | goals met (acc within ±1 pt) | goals met (acc ≥ −1 pt) | worst margin (pt) | CPU s | cells"
    )
    for name, (g1, g2, cpu, n, worst) in sorted(agg.items(), key=lambda kv: (-kv[1][1], -kv[1][4])):
        print(f"{name} | {g1:.0f} | {g2:.0f} | {worst:.2f} | {cpu:.1f} | {n:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/spray-correction-bench"))
    ap.add_argument("--cells", nargs="+", default=[])
    ap.add_argument(
        "--variant", action="append", default=[], help="NAME=key=value,key=value (empty: defaults)"
    )
    ap.add_argument("--method", default="rrclarc")
    ap.add_argument(
        "--test-samples", type=int, default=0,
        help="also measure the accuracy change on this many Fashion-MNIST test images (paired; 0: off)",
    )  # fmt: skip
    ap.add_argument("--summary", type=Path, help="only summarise a rows file")
    args = ap.parse_args()
    if args.summary:
        summary([json.loads(line) for line in args.summary.read_text().splitlines() if line.strip()])
        return
    test = None
    if args.test_samples:
        x, y = read_test_split(args.test_samples)
        test = (model_inputs(x), y)
    for cell in args.cells:
        for name, fields in map(parse_variant, args.variant):
            print(json.dumps(run_variant(args.work_dir / cell, name, fields, args.method, test)), flush=True)


if __name__ == "__main__":
    main()
