"""Which run a ``spray flags`` command acts on: the one ``--run`` names, or the newest of a dataset."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from spray.errors import ConfigError
from spray.runs.layout import RunFiles

log = logging.getLogger("spray.flags")


def _named(text: str, runs_dir: Path | None) -> Path:
    """The run folder ``--run`` names: a path, else (with ``--runs-dir``) a folder name in the runs folder or a
    prefix of one or of a run id. A path that is no folder is returned as given (the reader says what it is)."""
    from spray.runs.publish import runs_named
    from spray.runs.reader import scan_runs

    given = Path(text)
    if given.is_file():
        raise ConfigError(
            f"--run {text} is a file: --run takes a run's folder"
            + (f" ({given.parent})" if RunFiles(given.parent).summary.is_file() else "")
            + ", or with --runs-dir a run folder's name or run id."
        )
    if given.is_dir() or runs_dir is None or given.is_absolute() or len(given.parts) > 1:
        return given
    # an unreadable run is said where it is opened
    runs = [(e.path, e.reader.summary) for e in scan_runs(runs_dir) if e.reader is not None]
    hits = runs_named(runs, text)
    run_ids = {p: summary.run_id for p, summary in runs}
    if len({run_ids[p] for p in hits}) == 1:
        return hits[0]  # newest folder of one run id (a --force rerun publishes it again)
    if hits:
        raise ConfigError(
            f"--run {text!r} names {len(hits)} runs in {runs_dir} ({', '.join(r.name for r in hits[:5])}): give "
            "more of the folder name or run id."
        )
    names = ", ".join(r.name for r, _ in runs[:5]) or "none"
    raise ConfigError(
        f"--run {text!r} is neither a run folder nor the name or run id of a run in {runs_dir} (its newest: "
        f"{names}): give the run folder's path, or a name from that folder."
    )


def run_folder(args: argparse.Namespace, *, full_first: bool = False) -> Path:
    """The run a flags command acts on: ``--run`` (a run folder; or, with ``--runs-dir``, a folder name in it or
    a prefix of one or of a run id, as ``spray correct --source-run`` takes it), else the newest run of
    ``--dataset`` in ``--runs-dir`` (with ``full_first``, the newest that is no ``data.limit`` trial, if any:
    a trial lacks the samples it did not read, so it cannot tell which flags still name their images)."""
    if args.run:
        if getattr(args, "dataset", None) is not None:
            raise ConfigError(
                "--dataset chooses the newest run of a dataset in --runs-dir, and --run names the run itself: "
                "give one of them."
            )
        return _named(args.run, Path(args.runs_dir) if args.runs_dir else None)
    if args.runs_dir:
        return _newest_run(Path(args.runs_dir), getattr(args, "dataset", None), full_first)
    raise ConfigError("Give the run with --run RUN_FOLDER or --runs-dir DIR (for its newest run).")


def _newest_run(runs_dir: Path, dataset: str | None, full_first: bool) -> Path:
    """The newest run of ``dataset`` in ``runs_dir``; without one, of the folder's only dataset. A newer run
    that cannot be read is refused rather than passed over: its finding keys and ids may be what the
    user looked at, and an older run's name other images."""
    from spray.runs.publish import newest_runs

    damaged: list[tuple[Path, str]] = []
    newest = newest_runs(runs_dir, damaged, full_first=full_first)
    chosen = _chosen(runs_dir, newest, dataset)
    newer = [(r, why) for r, why in damaged if r.name > chosen.name]
    if newer:
        run, why = newer[0]
        raise ConfigError(
            f"{run} is newer than {chosen.name} and cannot be read ({why}): the flags would act on an older "
            f"run's images. Give the run with --run {chosen} to use the older one, or repair or remove {run.name}."
        )
    return chosen


def _chosen(runs_dir: Path, newest: dict[str, Path], dataset: str | None) -> Path:
    """The run :func:`_newest_run` takes from the newest readable run of each dataset."""
    if dataset is not None:
        if dataset not in newest:
            raise ConfigError(
                f"--dataset {dataset!r}: {runs_dir} holds no readable run of it"
                + (
                    f"; its datasets: {', '.join(sorted(newest))}."
                    if newest
                    else " (no readable runs at all)."
                )
            )
        return newest[dataset]
    if len(newest) > 1:
        raise ConfigError(
            f"{runs_dir} holds runs of {len(newest)} datasets ({', '.join(sorted(newest))}): give --dataset KEY "
            "to say whose flags, or --run RUN_FOLDER."
        )
    if not newest:
        raise ConfigError(
            f"{runs_dir} holds no readable run: give the run folder with --run RUN_FOLDER, or audit first."
        )
    return next(iter(newest.values()))


def export_left_out(
    db: Path, runs_dir: Path, datasets: list[str], status: str | None, *, say: bool = True
) -> set[tuple[str, str]]:
    """The ``(dataset, sample_id)`` of flags an export from ``runs_dir`` leaves out: those that no longer name
    the images they were set on in their dataset's newest full run, or in a ``data.limit`` trial newer than
    it (a trial reads the files as they are now; checked against the full run alone, flags on files replaced
    since were exported without a word)."""
    from spray.flags.left_out import left_out_of_export
    from spray.runs.publish import flag_check_runs

    runs = flag_check_runs(runs_dir)
    out: set[tuple[str, str]] = set()
    for ds in datasets:
        if ds not in runs:
            if say:
                log.warning(
                    "%s holds no run of dataset %r: its flags are exported without checking that their sample ids "
                    "still name the images they were set on", runs_dir, ds,
                )  # fmt: skip
            continue
        for i, run in enumerate(runs[ds]):
            out |= left_out_of_export(db, run, say=say, status=status, known=out, first=i == 0)
    return out


def trial_checks(run: Path, dataset: str, check: Callable[[Path], int]) -> int:
    """``check`` (which prints what it finds and returns an exit code) on each ``data.limit`` trial of
    ``dataset`` newer than ``run``, the full run a flags command checked; the worst exit code."""
    from spray.runs.publish import flag_check_runs

    trials = flag_check_runs(run.parent).get(dataset, [])[1:]
    return max((check(t) for t in trials if t.name > run.name), default=0)
