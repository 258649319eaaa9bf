"""The ``spray`` command: a thin shell over the library, one module per command.

Every command turns a :class:`~spray.errors.SprayError` into a short message and an exit code
(2 for config errors, 75 when locked, 1 otherwise), never a traceback dump. Command modules import
nothing heavy at module level, so ``spray --help`` and config errors answer in well under a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import NoReturn

from spray.cli import audit, correct, dashboard, demo, export, flags, init, run
from spray.cli.logs import log_unraisable, setup_logging
from spray.errors import SprayError
from spray.exit_codes import EXIT_INTERRUPTED, EXIT_TERMINATED

#: What a stopped command leaves for the next one (said when it is stopped).
_KEPT = {
    "audit": "; finished shards are kept and the next run resumes from them",
    "correct": "; its training checkpoints are kept and the next spray correct resumes from them",
}

log = logging.getLogger("spray")

# Each module adds its sub-parser with ``register(subparsers)``; the order is the order of ``--help``.
COMMANDS = (init, audit, run, demo, dashboard, flags, export, correct)


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
    for command in COMMANDS:
        command.register(sub)
    # abbreviations refused: `spray flags export --run X` was taken as `--runs-dir X` (argparse completes a unique
    # prefix), and the error then named another option
    p.allow_abbrev = False
    for parser in _subparsers(p):
        parser.allow_abbrev = False
        # -v after the command too (`spray run -v` was refused); absent there, the value given before it stands
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
    return p


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every command's and action's parser below ``parser``, each once (an alias maps to the same parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(q): q for q in action.choices.values()}.values():
                yield sub
                yield from _subparsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spray`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        if stop.code == 2:
            run.usage_error_status(list(argv) if argv is not None else sys.argv[1:])
        raise
    global _LAST_COMMAND
    _LAST_COMMAND = getattr(args, "command", None)
    setup_logging(args.verbose, args.log_json)
    if getattr(args, "quiet", False) and not args.verbose:
        # -q: warnings, errors and the command's results only (progress bars are off as well).
        logging.getLogger().setLevel(logging.WARNING)
    previous_hook, sys.unraisablehook = sys.unraisablehook, log_unraisable
    # SIGTERM (a scheduler's stop) unwinds like Ctrl-C: logged, exit 143 (it ended the process unsaid)
    own_term = threading.current_thread() is threading.main_thread()
    previous_term = signal.signal(signal.SIGTERM, run._on_sigterm) if own_term else None
    kept = _KEPT.get(str(_LAST_COMMAND), "")
    try:
        return int(args.func(args))
    except SprayError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted (SIGINT)%s", kept)
        return EXIT_INTERRUPTED
    except run.Terminated:
        log.error("terminated (SIGTERM)%s", kept)
        return EXIT_TERMINATED
    except BrokenPipeError:
        return _closed_pipe()
    finally:
        sys.unraisablehook = previous_hook
        if own_term and previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


#: The exit code of a command whose reader closed its output (``spray flags list | head``), as a shell
#: reports a process stopped by SIGPIPE.
EXIT_CLOSED_PIPE = 141


def _closed_pipe() -> int:
    """The reader of stdout went away: no traceback, and nothing more written there (the interpreter's
    final flush would raise again)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


#: The subcommand the last :func:`main` call ran (``"run"``, ``"audit"``, ...).
_LAST_COMMAND: str | None = None


def entry() -> NoReturn:
    """The ``spray`` console script and ``python -m spray.cli``: :func:`main`, then exit with its code.

    ``spray run`` leaves at once (``os._exit`` after flushing) instead of through the interpreter's shutdown:
    that takes most of a second, and a job killed in it has already removed its marker of an unreported
    exit 10 while its scheduler sees the kill, not the 10.
    """
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _closed_pipe()
    if _LAST_COMMAND == "run":
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


__all__ = ["COMMANDS", "EXIT_CLOSED_PIPE", "build_parser", "entry", "main"]
