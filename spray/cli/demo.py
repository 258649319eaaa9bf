"""``spray demo``: plant a Clever Hans in Fashion-MNIST, train (a CNN or a ViT), audit, and score the top finding."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spray.cli.options import positive_int


def run_command(args: argparse.Namespace) -> int:
    """``spray demo``: plant a Clever Hans in Fashion-MNIST, train, audit, and score the top finding."""
    from spray.config import load_config
    from spray.lab.demo import GroundTruth, prepare_demo, score_against_truth
    from spray.nightly import audit_owing_alert
    from spray.report import findings_table, report_header

    work, runs = demo_folders(args)
    _check_work_dir(work)
    cfg_path = prepare_demo(
        work, runs, per_class=args.per_class, epochs=args.epochs, arch=args.arch, progress=not args.quiet
    )
    cfg = load_config(cfg_path)
    # as spray audit does: the run's changes section, and the alert it owes the next `spray run` of demo.yaml
    report = audit_owing_alert(
        cfg,
        by="spray demo",
        device=args.device,
        progress=not args.quiet,
    )
    truth = GroundTruth.load(work)
    score = score_against_truth(report, truth)
    sys.stdout.write(report_header(report) + "\n\n" + findings_table(report.findings, top=args.top) + "\n\n")
    verdict = "FOUND" if score.top_is_planted_class and score.f1 >= 0.5 else "MISSED"
    sys.stdout.write(
        f"Planted Clever Hans ({truth.artifact}, {score.n_planted} samples of class "
        f"{cfg.data.class_names[truth.planted_class] if cfg.data.class_names else truth.planted_class}): "
        f"{verdict} as finding #1 — precision {score.precision:.2f}, recall {score.recall:.2f}, "
        f"F1 {score.f1:.2f}\n"
    )
    spray_cmd = Path(sys.executable).parent / "spray"  # the venv's command, even when not on PATH
    cmd = spray_cmd if spray_cmd.exists() else "spray"
    top = report.findings[0].key if report.findings else "KEY"
    sys.stdout.write(
        f"\nExplore it: {cmd} dashboard --runs-dir {runs}\n"
        # the run itself, not runs/latest: a finding's key names other images once a later run is published
        f"Flag and remove it: {cmd} flags set --run {report.run_dir} --finding {top}\n"
        f"                    {cmd} correct --config {cfg_path} --runs-dir {runs}\n"
    )
    return 0 if verdict == "FOUND" or not args.strict else 1


def _check_work_dir(work: Path) -> None:
    """Make ``--work-dir`` (when missing) and make sure the demo can write there.

    Raises
    ------
    ConfigError
        When it is a file, or cannot be created or written (naming the folder and what to pass).
    """
    import tempfile

    from spray.errors import ConfigError

    if work.exists() and not work.is_dir():
        raise ConfigError(f"--work-dir {work} is a file: give a folder (it is created when missing).")
    try:
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=work):  # writable: the data, model and config go there
            pass
    except OSError as err:
        raise ConfigError(
            f"--work-dir {work}: cannot write there ({err.strerror or err}); give a folder you can write to."
        ) from None


def demo_folders(args: argparse.Namespace) -> tuple[Path, Path]:
    """The work folder and the runs folder: ``runs/`` in the work folder unless ``--runs-dir`` says otherwise."""
    work = Path(args.work_dir).resolve()
    return work, Path(args.runs_dir).resolve() if args.runs_dir is not None else work / "runs"


def register(subparsers: Any) -> None:
    """Add ``spray demo``."""
    d = subparsers.add_parser(
        "demo",
        help="the embedded demo: planted Clever Hans in Fashion-MNIST",
        description=run_command.__doc__,
    )
    d.add_argument(
        "--work-dir", default="spray-demo", help="where data, model and config go (default ./spray-demo)"
    )
    d.add_argument("--runs-dir", default=None, help="runs directory (default: runs/ in the work folder)")
    d.add_argument(
        "--per-class", type=positive_int, default=1000, help="training images per class (default 1000)"
    )
    d.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="training epochs (default 3 for the CNN, 6 for the ViT)",
    )
    d.add_argument(
        "--arch",
        choices=["cnn", "vit"],
        default="cnn",
        help="the model to train: the small CNN (default) or a tiny vision transformer (4x4 patches)",
    )
    d.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="where the audit computes its heatmaps (default auto: the GPU when there is one)",
    )
    d.add_argument(
        "--top", type=positive_int, default=10, help="rows of the findings table printed (default 10)"
    )
    d.add_argument("--strict", action="store_true", help="exit 1 if the planted cluster is not finding #1")
    d.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and results only: no progress, no INFO lines"
    )
    d.set_defaults(func=run_command)
