"""Options shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``spray audit`` and ``spray run``: config, runs dir, device, force."""
    p.add_argument("--config", required=True, help="audit config (YAML), see docs/config.md")
    p.add_argument("--runs-dir", type=_runs_dir, help="override output.runs_dir")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override batch.device")
    p.add_argument(
        "--force", action="store_true", help="recompute the analysis even if this run is published"
    )


def _runs_dir(text: str) -> str:
    """argparse type of ``--runs-dir``: a non-empty path (an empty one was ignored without a word)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty; give the runs folder, or leave --runs-dir out to use output.runs_dir"
        )
    return text


def load_audit_config(args: argparse.Namespace) -> Any:
    """The validated config of ``--config``, with ``--runs-dir`` applied."""
    from spray.config import load_config
    from spray.config.loading import check_runs_dir
    from spray.errors import ConfigError

    cfg = load_config(args.config)
    given = getattr(args, "runs_dir", None)
    if given is not None and not given.strip():
        # an empty --runs-dir would be ignored without a word, output.runs_dir used instead
        raise ConfigError(
            "--runs-dir is empty; give the runs folder, or leave --runs-dir out to use output.runs_dir"
        )
    if given:
        runs_dir = Path(args.runs_dir).resolve()
        check_runs_dir(runs_dir, "--runs-dir")
        cfg.output.runs_dir = runs_dir
    return cfg


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def class_index(text: str) -> int:
    """argparse type: a class's index, >= 0; a class name is answered with where its index is written."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no class index: give the class's number, which spray's messages write after its name "
            "('Shirt (class 6)' is 6)"
        ) from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"a class index is 0 or more, got {text!r}")
    return n


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535 (a larger one or a negative one gave an OverflowError)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return n
