"""A new user's first run, measured: fresh virtual environment and fresh caches, install -> first audit.

Steps (each a new process, wall and CPU time each; every cache a new user would lack starts empty:
``HOME``, ``XDG_CACHE_HOME``, pip's cache and ``NUMBA_CACHE_DIR`` point into the scratch folder; only
pip's configuration file is kept, so that torch comes from this machine's local wheel index):

1. ``python -m venv`` + ``pip install -e ".[dashboard]"`` in a copy of the checkout (the README's command);
2. ``spray init --data train --model spray.lab.cnn:small_cnn --checkpoint small_cnn.pt -o spray.yaml``
   on an image folder of the first 4,000 Fashion-MNIST training images (PNGs in ``train/<class>/``) and
   a state dict of spray's small CNN (seeded random weights: the time, not the findings, is measured);
   it writes the config every audit below uses and checks it on one batch;
3. ``spray audit --config spray.yaml -q`` (the first audit, fresh caches), then a second
   ``spray audit --force`` in a new process (heatmaps come from the run cache, the analysis reruns),
   then a third audit into an empty runs folder (everything recomputed, in the now warm environment:
   the same work as the first);
4. ``import spray.audit`` in two new processes;
5. the analysis start-up probe: in one process, the first and the second analysis of the same
   6,000-row synthetic class (approximate kNN, eigenvectors, k-means sweep, 2-D map). The first minus
   the second is what the first call pays on top (compilation, lazy imports): the "compilation per
   process" figure; done in two processes in a row.

    nice -n 5 python benchmarks/first_run.py --write-docs     # ~10 min; ~6 GB in the scratch folder, deleted

The scratch folder (default ``/tmp/spray-first-run``) is deleted at the end unless ``--keep``; the log of
every command goes beside it (``/tmp/spray-first-run.log``). ``--write-docs`` puts the table in
docs/first_run.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]

_PROBE = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import numpy as np
    from spray.analysis.clustering import cluster_sweep
    from spray.analysis.embedding import embed_2d
    from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
    from spray.analysis.spectral import spectral_embedding
    from spray.lab.synthetic import make_heatmaps
    t_import = time.perf_counter() - t0
    heat, _, _ = make_heatmaps(6000, seed=0)
    red = reduce_dimension(normalize_heatmaps(heat), n_components=128, seed=0)
    calls = []
    for _ in range(2):
        t = time.perf_counter()
        spec = spectral_embedding(red, seed=0)
        cluster_sweep(spec, k_max=8, seed=0)
        embed_2d(red, spec, method="umap", seed=0)
        calls.append(time.perf_counter() - t)
    print(json.dumps({"import_s": t_import, "first_call_s": calls[0], "second_call_s": calls[1]}))
    """
)


def _env(scratch: Path) -> dict[str, str]:
    """The environment of a new user: empty home, caches and numba cache under ``scratch``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "NUMBA"))}
    home = scratch / "home"
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        PIP_CACHE_DIR=str(home / ".cache" / "pip"),
        NUMBA_CACHE_DIR=str(home / ".cache" / "numba"),
    )
    # The user's pip configuration names this machine's local wheel index (torch); only it is kept.
    user_pip = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "pip" / "pip.conf"
    if user_pip.is_file() and "PIP_CONFIG_FILE" not in env:
        env["PIP_CONFIG_FILE"] = str(user_pip)
    return env


_CPU: dict[str, float] = {}


def _children_cpu() -> float:
    """CPU seconds (user + system) of all finished child processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, int, str]:
    """Run ``cmd``; wall seconds, exit code and stdout (stderr goes to ``log``).

    Its CPU seconds go to ``_CPU["last"]``: on a shared machine they are the steadier figure.
    """
    t, c = time.perf_counter(), _children_cpu()
    with log.open("a") as err:
        err.write(f"\n$ {' '.join(cmd)}\n")
        err.flush()
        out = subprocess.run(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    _CPU["last"] = _children_cpu() - c
    return time.perf_counter() - t, out.returncode, out.stdout


def _newest_timings(runs: Path) -> dict[str, Any]:
    """``timings`` of the most recently written summary.json under ``runs``."""
    found = sorted(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()).get("timings", {}) if found else {}


def _install(
    res: dict[str, Any], venv: Path, checkout: Path, env: dict[str, str], scratch: Path, log: Path
) -> Path:
    """Step 1: venv, pip install. Returns the venv's python."""
    t, rc, _ = _run([sys.executable, "-m", "venv", str(venv)], env, scratch, log)
    py = venv / "bin" / "python"
    # An editable install points into the tree it is made from: a copy, so that the checkout stays clean.
    src = scratch / "src"
    top = {".git", ".venv", "runs", "build"}  # only at the top: spray/runs is a package

    def skip(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n.endswith(".egg-info") or (Path(folder) == checkout and n in top)}

    shutil.copytree(checkout, src, ignore=skip)
    t_pip, rc_pip, _ = _run([str(py), "-m", "pip", "install", "-q", "-e", ".[dashboard]"], env, src, log)
    res["install_s"], res["install_cpu_s"] = t + t_pip, _CPU["last"]
    if rc or rc_pip:
        raise SystemExit(f"install failed (exit {rc or rc_pip}); see {log}")
    freeze = _run([str(py), "-m", "pip", "freeze"], env, scratch, log)[2].splitlines()
    res["packages"] = [p for p in freeze if p.split("==")[0].lower() in _WATCH]
    return py


def _imports(res: dict[str, Any], py: Path, env: dict[str, str], scratch: Path, log: Path) -> None:
    """``import spray.audit`` in two new processes (after the audits: they are the user's first processes)."""
    code = "import time; t = time.perf_counter(); import spray.audit; print(time.perf_counter() - t)"
    res["import_spray_audit_s"] = []
    for _ in range(2):
        _, rc, out = _run([str(py), "-c", code], env, scratch, log)
        if rc:
            raise SystemExit(f"import spray.audit failed (exit {rc}); see {log}")
        res["import_spray_audit_s"].append(float(out))


_WATCH = {"numba", "llvmlite", "umap-learn", "pynndescent", "faiss-cpu", "hnswlib", "torch", "numpy", "scipy"}


def _probe(res: dict[str, Any], py: Path, env: dict[str, str], scratch: Path, log: Path) -> None:
    """Step 5: first vs second analysis call in one process, in two processes in a row."""
    res["probe"] = []
    for _ in range(2):
        t, rc, out = _run([str(py), "-c", _PROBE], env, scratch, log)
        row: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {"error": f"exit {rc}"}
        row["process_s"], row["process_cpu_s"] = t, _CPU["last"]
        if rc == 0:
            row["first_call_extra_s"] = row["first_call_s"] - row["second_call_s"]
        res["probe"].append(row)


def _image_folder(root: Path, n: int) -> None:
    """The first ``n`` Fashion-MNIST training images as PNGs in ``root/<class>/``: a user's own image folder."""
    from PIL import Image

    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    for i in range(n):
        folder = root / _CLASSES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


def _audits(res: dict[str, Any], venv: Path, env: dict[str, str], scratch: Path, n: int, log: Path) -> None:
    """Steps 2 and 3: ``spray init`` writes the config, first audit, warm second audit, audit into empty runs."""
    spray, py = venv / "bin" / "spray", venv / "bin" / "python"
    work = scratch / "work"
    _image_folder(work / "train", n)
    ckpt = work / "small_cnn.pt"
    save = (
        "import torch; from spray.lab.cnn import small_cnn; torch.manual_seed(0); "
        f"torch.save(small_cnn(in_channels=1, num_classes=10).state_dict(), {str(ckpt)!r})"
    )
    _run([str(py), "-c", save], env, work, log)
    cfg = work / "spray.yaml"
    init = ["init", "--data", "train", "--model", "spray.lab.cnn:small_cnn", "--checkpoint", ckpt.name]
    t, rc, out = _run([str(spray), *init, "-o", cfg.name], env, work, log)
    res["init"] = {"wall_s": t, "cpu_s": _CPU["last"], "exit": rc, "command": "spray " + " ".join(init)}
    if rc:
        raise SystemExit(f"spray init failed (exit {rc}); see {log}")
    res["init"]["stdout"] = out
    res["config"] = cfg.read_text()
    base = [str(spray), "audit", "--config", cfg.name, "-q"]
    for key, extra, runs_dir in (
        ("first_audit", [], work / "runs"),
        ("second_audit_force", ["--force"], work / "runs"),
        ("third_audit_empty_runs", ["--runs-dir", "runs3"], work / "runs3"),
    ):
        t, rc, _ = _run(base + extra, env, work, log)
        res[key] = {"wall_s": t, "cpu_s": _CPU["last"], "exit": rc, "timings": _newest_timings(runs_dir)}


def measure(checkout: Path, scratch: Path, n: int) -> dict[str, Any]:
    """All steps in a fresh venv under ``scratch``; returns the measurements."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    env, log = _env(scratch), scratch.with_suffix(".log")  # beside the scratch folder: kept
    log.unlink(missing_ok=True)
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "checkout": str(checkout),
        "commit": subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "n_images": n,
        "cpus": os.cpu_count(),
        "load_1min_start": os.getloadavg()[0],
        "env_prefix": "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS",) if k in os.environ),
    }
    py = _install(res, scratch / "venv", checkout, env, scratch, log)
    # The user's path first (install, spray init, audit), so that the first audit is the user's first audit:
    # the import and analysis probes would otherwise warm its bytecode caches.
    _audits(res, scratch / "venv", env, scratch, n, log)
    _imports(res, py, env, scratch, log)
    _probe(res, py, env, scratch, log)
    res["load_1min_end"] = os.getloadavg()[0]
    first, second = res["first_audit"]["wall_s"], res["second_audit_force"]["wall_s"]
    res["first_over_second"] = first / second
    res["first_over_second_cpu"] = res["first_audit"]["cpu_s"] / res["second_audit_force"]["cpu_s"]
    res["first_over_third"] = first / res["third_audit_empty_runs"]["wall_s"]
    res["first_over_third_cpu"] = res["first_audit"]["cpu_s"] / res["third_audit_empty_runs"]["cpu_s"]
    res["log"] = str(log)
    return res


def _doc_block(res: dict[str, Any], argv: str) -> str:
    """Markdown for docs/first_run.md."""
    rows = [
        f"Command: `{res.get('env_prefix', '')}python benchmarks/first_run.py {argv}` ({res['date']}, "
        f"commit {res['commit']}, "
        f"{res['cpus']} CPUs, 1-minute load {res['load_1min_start']:.1f} at the start and "
        f"{res['load_1min_end']:.1f} at the end).",
        "",
        "| step | wall s | CPU s |",
        "|---|---|---|",
        f'| `pip install -e ".[dashboard]"` into a new venv (torch from local disk) | {res["install_s"]:.1f} '
        f"| {res['install_cpu_s']:.1f} |",
        f"| `import spray.audit`, two new processes after the audits | {res['import_spray_audit_s'][0]:.2f} / "
        f"{res['import_spray_audit_s'][1]:.2f} | |",
        f"| `{res['init']['command']}` ({res['n_images']:,} PNGs) | {res['init']['wall_s']:.1f} "
        f"| {res['init']['cpu_s']:.1f} |",
    ]
    for i, p in enumerate(res["probe"]):
        if "error" in p:
            rows.append(f"| analysis probe, process {i + 1} | {p['error']} | |")
            continue
        rows.append(
            f"| analysis of a 6,000-row class, process {i + 1}: import / 1st call / 2nd call / 1st − 2nd "
            f"(compilation, lazy imports) | {p['import_s']:.2f} / {p['first_call_s']:.2f} / "
            f"{p['second_call_s']:.2f} / {p['first_call_extra_s']:+.2f} | {p['process_cpu_s']:.1f} (whole process) |"
        )
    for key, label in (
        (
            "first_audit",
            f"1st `spray audit --config spray.yaml -q` ({res['n_images']:,} images, fresh caches)",
        ),
        ("second_audit_force", "2nd `spray audit --force` (new process; heatmaps from the run cache)"),
        (
            "third_audit_empty_runs",
            "3rd `spray audit --runs-dir runs3` into an empty runs folder (everything recomputed)",
        ),
    ):
        a = res[key]
        detail = ", ".join(f"{k} {v:.1f}" for k, v in a["timings"].items() if isinstance(v, float))
        if isinstance(a["timings"].get("total_s"), float):  # the process's start-up and exit
            detail += f"; outside the run {a['wall_s'] - a['timings']['total_s']:.1f}"
        rows.append(f"| {label} | {a['wall_s']:.1f} (exit {a['exit']}; {detail}) | {a['cpu_s']:.1f} |")
    rows.append(
        f"\n1st / 2nd audit: {res['first_over_second']:.2f}× (wall), {res['first_over_second_cpu']:.2f}× (CPU); "
        "1st / 3rd, the same work: "
        f"{res['first_over_third']:.2f}× (wall), {res['first_over_third_cpu']:.2f}× (CPU)."
    )
    return "\n".join(rows) + "\n"


def write_docs(block: str, doc: Path = ROOT / "docs" / "first_run.md") -> None:
    """Replace the measured block of ``doc`` (between its first-run markers; appended when absent)."""
    text = doc.read_text() if doc.exists() else ""
    start, end = "<!-- first-run:start -->", "<!-- first-run:end -->"
    new = f"{start}\n{block}{end}"
    if start in text:
        text = text[: text.index(start)] + new + text[text.index(end) + len(end) :]
    else:
        text += "\n" + new + "\n"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", default=str(ROOT), help="spray source to install (default: this checkout)")
    ap.add_argument("--scratch", default="/tmp/spray-first-run", help="venv, caches and runs go here")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--out", help="result JSON (default benchmarks/results/first_run_<date>.json)")
    ap.add_argument("--write-docs", action="store_true", help="write the table into docs/first_run.md")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    try:
        res = measure(Path(args.checkout).resolve(), scratch, args.images)
    finally:
        if not args.keep and scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"first_run_{res['date'][:10]}.json")
    out.write_text(json.dumps(res, indent=1))
    block = _doc_block(res, " ".join(sys.argv[1:]))
    print(block)
    if args.write_docs:
        write_docs(block)


if __name__ == "__main__":
    main()
