"""The ``spray`` command: a thin shell over the library.

Every command turns a :class:`~spray.errors.SprayError` into a short message and an exit code
(2 for config errors, 75 when locked, 1 otherwise), never a traceback dump.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from spray.errors import SprayError

log = logging.getLogger("spray")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus run id and stage when set."""

    context: ClassVar[dict[str, Any]] = {}

    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.context,
        }
        for key in ("stage", "run_id"):
            if hasattr(record, key):
                d[key] = getattr(record, key)
        return json.dumps(d)


def setup_logging(verbose: bool = False, json_logs: bool = False) -> None:
    """Log to stderr: human-readable by default, JSON lines with ``--log-json``."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("numba", "matplotlib", "PIL", "urllib3", "streamlit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> Any:
    from spray.config import load_config

    cfg = load_config(args.config)
    if getattr(args, "runs_dir", None):
        cfg.output.runs_dir = Path(args.runs_dir).resolve()
    return cfg


def cmd_audit(args: argparse.Namespace) -> int:
    """``spray audit``: run the audit and print the ranked findings."""
    from spray.audit import audit
    from spray.report import findings_table, report_header

    cfg = _load(args)
    report = audit(cfg, device=args.device, progress=not args.quiet, force=args.force)
    sys.stdout.write(report_header(report) + "\n\n" + findings_table(report.findings, top=args.top) + "\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``spray demo``: plant a Clever Hans in Fashion-MNIST, train, audit, and score the top finding."""
    from spray.audit import audit
    from spray.config import load_config
    from spray.lab.demo import prepare_demo, score_against_truth
    from spray.report import findings_table, report_header

    work = Path(args.work_dir).resolve()
    runs = Path(args.runs_dir).resolve()
    cfg_path = prepare_demo(work, runs, per_class=args.per_class, epochs=args.epochs)
    cfg = load_config(cfg_path)
    report = audit(cfg, device=args.device, progress=not args.quiet)
    truth = json.loads((work / "ground_truth.json").read_text())
    score = score_against_truth(report, truth)
    sys.stdout.write(report_header(report) + "\n\n" + findings_table(report.findings, top=args.top) + "\n\n")
    verdict = "FOUND" if score["top_is_planted_class"] and score["f1"] >= 0.5 else "MISSED"
    sys.stdout.write(
        f"Planted Clever Hans ({truth['artifact']}, {score['n_planted']} samples of class "
        f"{cfg.data.class_names[truth['planted_class']] if cfg.data.class_names else truth['planted_class']}): "
        f"{verdict} as finding #1 — precision {score['precision']:.2f}, recall {score['recall']:.2f}, "
        f"F1 {score['f1']:.2f}\n"
    )
    spray_cmd = Path(sys.executable).parent / "spray"  # the venv's command, even when not on PATH
    sys.stdout.write(
        f"\nExplore it: {spray_cmd if spray_cmd.exists() else 'spray'} dashboard --runs-dir {runs}\n"
    )
    return 0 if verdict == "FOUND" or not args.strict else 1


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``spray audit`` and ``spray run``: config, runs dir, device, force."""
    p.add_argument("--config", required=True, help="audit config (YAML), see docs/config.md")
    p.add_argument("--runs-dir", help="override output.runs_dir")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override batch.device")
    p.add_argument(
        "--force", action="store_true", help="recompute the analysis even if this run is published"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``spray --help`` documents every command)."""
    p = argparse.ArgumentParser(
        prog="spray",
        description="spray: find Clever-Hans shortcuts in PyTorch image classifiers with LRP + spectral "
        "relevance analysis (SpRAy).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-json", action="store_true", help="JSON-lines logs on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser(
        "audit", help="audit a model on a dataset and publish a run", description=cmd_audit.__doc__
    )
    add_audit_arguments(a)
    a.add_argument("--top", type=int, default=10, help="rows of the findings table (default 10)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=cmd_audit)

    d = sub.add_parser(
        "demo", help="the embedded demo: planted Clever Hans in Fashion-MNIST", description=cmd_demo.__doc__
    )
    d.add_argument(
        "--work-dir", default="spray-demo", help="where data, model and config go (default ./spray-demo)"
    )
    d.add_argument("--runs-dir", default="spray-demo/runs", help="runs directory (default ./spray-demo/runs)")
    d.add_argument("--per-class", type=int, default=1000, help="training images per class (default 1000)")
    d.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    d.add_argument("--device", choices=["auto", "cpu", "cuda"])
    d.add_argument("--top", type=int, default=10)
    d.add_argument("--strict", action="store_true", help="exit 1 if the planted cluster is not finding #1")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    for register in _optional_commands():
        register(sub)
    return p


def _optional_commands() -> list[Callable[[Any], None]]:
    """Commands contributed by other modules (nightly run, dashboard, flags): each adds its sub-parser."""
    import importlib

    found = []
    for mod in ("spray.nightly", "spray.flags", "spray.serve"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
            continue
        found.append(m.register_cli)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spray`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_json)
    try:
        return int(args.func(args))
    except SprayError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; finished shards are kept and the next run resumes from them")
        return 130


if __name__ == "__main__":
    sys.exit(main())
