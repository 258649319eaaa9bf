"""Cost of an incremental nightly run (5 % new samples) as a fraction of a full run.

Builds the demo (planted Fashion-MNIST, ``--per-class`` images per class, a trained small CNN), then
times three real ``spray run`` processes on the same runs directory:

1. **full**: empty cache, every sample explained;
2. **incremental**: the same data plus ``--new-fraction`` new images (unused Fashion-MNIST training
   images of every class), so only those are explained and everything else comes from the cache;
3. **no-op**: the incremental run again (already published: exits at once).

Reports wall-clock seconds (process start to exit, imports included, as a scheduler sees it) and the
stage timings from the run's summary, as a table and as JSON::

    .venv/bin/python benchmarks/incremental.py --per-class 1000 --out benchmarks/results/incremental.json

The goal is incremental ≤ 10 % of full. What an incremental run still pays for regardless of how few
samples are new: reading and content-hashing every sample (``hash_read_s``, inside the batch stage),
re-running the per-class analysis on all samples (``analysis_s``), and process start-up (imports).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spray.runs.reader import RunReader

log = logging.getLogger("benchmarks.incremental")

REPO = Path(__file__).resolve().parents[1]


def _run(cfg: Path, runs: Path, threads: int) -> dict[str, Any]:
    """One ``spray run`` process; returns wall time, exit code, status and the parsed log lines."""
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(
        [sys.executable, "-m", "spray.cli", "run", "--config", str(cfg), "--runs-dir", str(runs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        # A fixed thread count: on a shared machine, torch's default (all cores) oversubscribes them and
        # turns a few seconds of LRP into a minute of spin-waiting.
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)},
    )
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the child: on a machine shared with other jobs, wall time swings with their load,
    # the work done does not.
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode not in (0, 10):
        raise RuntimeError(f"spray run failed ({p.returncode}):\n{p.stderr[-4000:]}")
    status = json.loads(p.stdout.strip().splitlines()[-1])
    logs = [json.loads(x) for x in p.stderr.splitlines() if x.startswith("{")]
    timings = RunReader.open(status["run_dir"]).summary.timings
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "exit_code": p.returncode,
        "status": status["status"],
        "timings": timings,
        "logs": logs,
    }


def _stage_seconds(logs: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds between the first log line of each stage and the next stage's (from the JSON logs)."""
    import datetime as dt

    def ts(r: dict[str, Any]) -> float:
        return dt.datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()

    marks: list[tuple[str, float]] = []
    for r in logs:
        st = r.get("stage")
        if st and (not marks or marks[-1][0] != st):
            marks.append((st, ts(r)))
    out: dict[str, float] = {}
    for (st, t), (_, t_next) in itertools.pairwise(marks):
        out[st] = round(out.get(st, 0.0) + t_next - t, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--per-class", type=int, default=1000, help="demo images per class (default 1000: 10k images)"
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--new-fraction", type=float, default=0.05)
    ap.add_argument("--embedding", choices=["umap", "tsne", "spectral"], help="override analysis.embedding")
    ap.add_argument(
        "--model",
        choices=["demo", "resnet18", "resnet50"],
        default="demo",
        help="demo: the demo's trained small CNN on 28x28. resnet18/resnet50: a torchvision model (seeded "
        "random weights: the cost of LRP does not depend on them) on the same images resized to --size "
        "and repeated to RGB, i.e. a batch stage with the cost of a real model.",
    )
    ap.add_argument("--size", type=int, default=112, help="input size for --model resnet18/resnet50")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the spray runs (default 1)")
    ap.add_argument("--work-dir", default="/tmp/spray-bench-incremental")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from spray.data import read_idx, write_idx
    from spray.lab.demo import FASHION_DIR, _find_fashion, prepare_demo

    work = Path(args.work_dir).resolve()
    runs = work / "runs"
    if runs.exists():
        import shutil

        shutil.rmtree(runs)
    t0 = time.perf_counter()
    cfg_path = prepare_demo(work, runs, per_class=args.per_class, epochs=args.epochs)
    log.info("demo prepared in %.1f s", time.perf_counter() - t0)
    raw = yaml.safe_load(cfg_path.read_text())
    if args.embedding:
        raw["analysis"]["embedding"] = args.embedding
    raw["output"]["keep_runs"] = 10
    if args.model != "demo":
        import torch
        import torchvision

        torch.manual_seed(0)
        net = getattr(torchvision.models, args.model)(num_classes=10)
        torch.save(net.state_dict(), work / f"{args.model}.pt")
        raw["model"] = {"architecture": args.model, "num_classes": 10, "checkpoint": f"{args.model}.pt"}
        t = raw["data"]["transform"]
        raw["data"]["transform"] = {
            "resize": args.size,
            "grayscale_to_rgb": True,
            "mean": list(t.get("mean", [0.0])) * 3,
            "std": list(t.get("std", [1.0])) * 3,
        }
        raw["batch"]["batch_size"] = 32
    base_cfg = work / "bench-full.yaml"
    base_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))

    # New samples: training images of Fashion-MNIST that the demo subset does not contain (compared by
    # content), about new_fraction of the demo's size, all classes alike.
    images = read_idx(work / raw["data"]["images"])
    labels = read_idx(work / raw["data"]["labels"])
    found = _find_fashion(FASHION_DIR)
    if found is None:
        raise SystemExit("this benchmark needs Fashion-MNIST (Debian package dataset-fashion-mnist)")
    all_img, all_lab = read_idx(found[0]), read_idx(found[1])
    have = {im.tobytes() for im in images}
    n_new = round(args.new_fraction * len(images))
    rng = np.random.default_rng(1)
    pick: list[int] = []
    for i in rng.permutation(len(all_img)):
        if all_img[i].tobytes() not in have:
            pick.append(int(i))
            if len(pick) == n_new:
                break
    write_idx(work / "more-images.gz", np.concatenate([images, all_img[pick]]))
    write_idx(work / "more-labels.gz", np.concatenate([labels, all_lab[pick]]).astype(np.uint8))
    raw["data"]["images"] = "more-images.gz"
    raw["data"]["labels"] = "more-labels.gz"
    more_cfg = work / "bench-more.yaml"
    more_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))

    log.info("full run: %d samples, empty cache", len(images))
    full = _run(base_cfg, runs, args.threads)
    log.info("full run: %.1f s", full["wall_s"])
    log.info("incremental run: %d samples, %d of them new", len(images) + n_new, n_new)
    inc = _run(more_cfg, runs, args.threads)
    log.info("incremental run: %.1f s", inc["wall_s"])
    noop = _run(more_cfg, runs, args.threads)
    log.info("no-op run: %.1f s", noop["wall_s"])

    result: dict[str, Any] = {
        "command": " ".join(
            ["python", "benchmarks/incremental.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "n_samples": len(images),
        "n_new": n_new,
        "embedding": raw["analysis"]["embedding"],
        "model": args.model if args.model == "demo" else f"{args.model} at {args.size}x{args.size}",
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "full": {k: v for k, v in full.items() if k != "logs"} | {"stages_s": _stage_seconds(full["logs"])},
        "incremental": {k: v for k, v in inc.items() if k != "logs"}
        | {"stages_s": _stage_seconds(inc["logs"])},
        "noop": {"wall_s": noop["wall_s"], "status": noop["status"], "exit_code": noop["exit_code"]},
    }
    result["incremental_fraction_wall"] = round(inc["wall_s"] / full["wall_s"], 4)
    result["incremental_fraction_cpu"] = round(inc["cpu_s"] / full["cpu_s"], 4)
    ft, it = full["timings"], inc["timings"]
    result["incremental_fraction_pipeline"] = round(it["total_s"] / ft["total_s"], 4)
    rows = [("stage", "full s", "incremental s")]
    for key in ("setup_s", "batch_s", "analysis_s", "total_s"):
        rows.append((key, f"{ft.get(key, 0):.1f}", f"{it.get(key, 0):.1f}"))
    for name, res in (("full", full), ("incremental", inc)):
        paste = next((r for r in res["logs"] if "n_paste_computed" in r), {})
        result[name]["paste"] = {k: paste.get(k) for k in ("n_paste_computed", "n_paste_cached")}
    rows.append(
        (
            "pasted computed / cached",
            "{n_paste_computed} / {n_paste_cached}".format(**result["full"]["paste"]),
            "{n_paste_computed} / {n_paste_cached}".format(**result["incremental"]["paste"]),
        )
    )
    rows.append(("process wall", f"{full['wall_s']:.1f}", f"{inc['wall_s']:.1f}"))
    rows.append(("process CPU", f"{full['cpu_s']:.1f}", f"{inc['cpu_s']:.1f}"))
    rows.append(
        (
            "computed / cached",
            f"{ft['n_computed']} / {ft['n_cached']}",
            f"{it['n_computed']} / {it['n_cached']}",
        )
    )
    text = "\n".join(f"{a:<26} {b:>14} {c:>16}" for a, b, c in rows)
    text += (
        f"\nincremental / full: {result['incremental_fraction_cpu']:.1%} of the CPU time, "
        f"{result['incremental_fraction_wall']:.1%} of the wall time, "
        f"{result['incremental_fraction_pipeline']:.1%} of the pipeline time (total_s); no-op: {noop['wall_s']:.1f} s"
    )
    sys.stdout.write(text + "\n")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
