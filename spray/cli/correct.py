"""``spray correct``: unlearn the flagged shortcut, re-evaluate, re-audit, publish (docs/correction.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from spray.cli.options import class_index, positive_int

log = logging.getLogger("spray.correct")

#: command-line option → ``correction`` field it overrides
_OVERRIDES = {
    "method": "method",
    "layer": "layer",
    "rr_lambda": "rr_lambda",
    "flags_db": "flags_db",
    "artifact_class": "artifact_class",
    "cluster_key": "cluster_key",
    "source_run": "source_run",
    "epochs": "epochs",
}


def _config(args: argparse.Namespace) -> Any:
    """The audit config with the command line's overrides, paths of the correction section resolved."""
    from pydantic import ValidationError

    from spray.config import load_config
    from spray.config.correction import CorrectionConfig
    from spray.errors import ConfigError

    cfg = load_config(args.config)
    base = Path(args.config).resolve().parent
    if args.runs_dir:
        cfg.output.runs_dir = Path(args.runs_dir).resolve()
    raw = cfg.correction.model_dump(
        exclude_unset=True
    )  # unset stays unset (test_data inherits the transform)
    for opt, key in _OVERRIDES.items():
        value = getattr(args, opt, None)
        if value is not None:
            raw[key] = value
    if args.no_reaudit:
        raw["reaudit"] = False
    try:
        correction = CorrectionConfig.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"- correction.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        ]
        raise ConfigError("Invalid correction settings:\n" + "\n".join(lines)) from None
    if args.flags_db:
        correction.flags_db = Path(args.flags_db).resolve()
    elif correction.flags_db is not None and not correction.flags_db.is_absolute():
        correction.flags_db = base / correction.flags_db
    if correction.test_data is not None:
        _resolve_test_paths(correction.test_data, base)
    cfg.correction = correction
    _resolve_cluster_key(cfg)
    return cfg


def _resolve_cluster_key(cfg: Any) -> None:
    """``correction.cluster_key`` as the findings table shows it → the finding's key, as ``spray flags set
    --finding`` takes it (the same resolver): the key (``6/k3/c2``), the class and cluster columns
    (``dog/k3/c2``), or the cluster column alone (``k3/c2``) when one class has it.

    A key is taken as it is (the flags hold the key of the run they were set on, which need not be the
    newest); the other forms are read from the run the flags refer to: ``correction.source_run``, else the
    newest run of the dataset.

    Raises
    ------
    ConfigError
        No finding, or several, go by that name (the message lists them with their keys), or no run to
        read the name from.
    """
    from spray.runs.keys import KEY_PREFIX, finding_key, parse_cluster_key

    text = cfg.correction.cluster_key
    if text is None:
        return
    if text.strip().startswith(KEY_PREFIX):
        cfg.correction.cluster_key = text.strip()[len(KEY_PREFIX) :].strip()
        parse_cluster_key(cfg.correction.cluster_key)  # a malformed key is refused with its form
        return
    try:
        parse_cluster_key(text)
    except ValueError:
        pass
    else:
        _refuse_numbered_class_clash(cfg, text)
        return
    reader, run = _flags_run(cfg, text)
    cfg.correction.cluster_key = finding_key(
        reader.summary.findings, text, run, "--cluster-key", reader.summary.classes_skipped
    )
    log.info("--cluster-key %s is finding %s of run %s", text, cfg.correction.cluster_key, run.name)


def _refuse_numbered_class_clash(cfg: Any, key: str) -> None:
    """Refuse a key whose class index is also the *name* of another class of the dataset's run (class
    folders named by numbers: "2/k3/c1" is class index 2's cluster, and what the table shows for class "2"
    at index 1); nothing to check without a run to read the class names from."""
    from spray.errors import ConfigError, SprayError
    from spray.runs.keys import KEY_PREFIX, named_by

    try:
        reader, _ = _flags_run(cfg, key)
    except SprayError:
        return
    # ambiguous only where a finding of the class *named* so has that cluster, as the findings table shows it
    clash = [f for f in named_by(reader.summary.findings, key) if f.key != key]
    if clash:
        first = key.split("/", 1)[0]
        names = reader.summary.class_names
        index = int(first)
        named = f"class {names[index]!r}" if index < len(names) else "no class"
        raise ConfigError(
            f"--cluster-key (correction.cluster_key) {key!r} is ambiguous: as a key it is a cluster of class index "
            f"{first} ({named}), but class {first!r} is index {clash[0].class_index}, whose cluster the findings "
            f"table shows as {key!r} too. Write {KEY_PREFIX}{key} for the key, or {KEY_PREFIX}{clash[0].key} for "
            f"class {first!r}'s cluster."
        )


def _flags_run(cfg: Any, text: str) -> tuple[Any, Path]:
    """``(reader, folder)`` of ``correction.source_run``, else of the newest run of the dataset.

    Raises
    ------
    SprayError
        ``correction.source_run`` names no run (from :func:`~spray.correct.source.find_source_run`).
    ConfigError
        No run of the dataset is published.
    """
    from spray.correct.source import find_source_run
    from spray.errors import ConfigError
    from spray.runs.reader import RunReader, scan_runs

    runs_dir = Path(cfg.output.runs_dir)
    wanted = cfg.correction.source_run
    if wanted is not None:
        run = find_source_run(runs_dir, cfg.dataset_key(), "", wanted).path
        return RunReader.open(run), run
    runs = [
        (e.reader, e.path)
        for e in scan_runs(runs_dir)
        if e.reader is not None and e.reader.summary.dataset == cfg.dataset_key()
    ]
    runs.sort(key=lambda run: run[0].summary.name != cfg.audit_name())  # this audit's first, newest first
    if runs:
        return runs[0]
    raise ConfigError(
        f"--cluster-key (correction.cluster_key) {text!r} names a finding by the report's columns, which are read from the audit run "
        f"the flags were set on, and {runs_dir} has no published run of dataset {cfg.dataset_key()!r}. Give "
        "the finding's key (e.g. 6/k3/c2), or run `spray audit --config ...` first."
    )


def _resolve_test_paths(data: Any, base: Path) -> None:
    """Relative ``correction.test_data`` paths resolve against the config's folder, and must exist."""
    from spray.errors import ConfigError

    for attr in ("path", "images", "labels"):
        value = getattr(data, attr)
        if value is None:
            continue
        p = value if value.is_absolute() else base / value
        if not p.exists():
            raise ConfigError(
                f"correction.test_data.{attr}: file or folder {str(p)!r} does not exist. Fix the path (relative "
                f"paths resolve against the config's folder {str(base)!r})."
            )
        setattr(data, attr, p)


def _table(outcome: Any) -> str:
    from spray.correct.html import UNRELATED_DIRECTION, direction_unrelated
    from spray.correct.record import change_between

    rec = outcome.record
    unrelated = direction_unrelated(rec)
    b, a = rec.evaluation.before, rec.evaluation.after
    v = rec.verdict

    def pct(x: float | None) -> str:
        return "    –" if x is None else f"{100 * x:6.2f} %"

    state = "already published, nothing to do" if outcome.up_to_date else "published"
    lines = [
        f"Correction {rec.correction_id[:12]} ({rec.method}) of class {rec.group.class_name} at layer "
        f"{rec.direction.layer}: {state}",
        f"  {outcome.folder}",
        f"  direction: {rec.direction.pooling} pooling, held-out AUROC {rec.direction.separation.auroc:.3f}; region "
        f"({rec.evaluation.region_source}) {rec.evaluation.region_pixels} pixels in the box {rec.evaluation.region_box} "
        f"(top, left, height, width); evaluated on {rec.evaluation.split_text()}",
    ]
    if rec.subspace is not None:
        lines.append(f"  penalised: {rec.subspace.text()}")
    if rec.footprint is not None:
        lines.append(f"  and: {rec.footprint.text(rec.parameters)}")
    if rec.region_term_skipped():
        lines.append(f"  not penalised: {rec.region_term_skipped()}")
    lines.append(f"  {'':44s}{'before':>10s}{'after':>10s}")
    for name, x, y in (
        (f"clean accuracy (n={rec.evaluation.n_clean})", b.clean_accuracy, a.clean_accuracy),
        (f"  on the class {rec.group.class_name}'s own images", b.class_accuracy, a.class_accuracy),
        ("accuracy, artifact pasted", b.pasted_accuracy, a.pasted_accuracy),
        ("paste flip rate to the class", b.flip_rate, a.flip_rate),
        ("  null (clean pixels pasted)", b.flip_null, a.flip_null),
        ("  stamp pasted at the opposite place", b.flip_moved, a.flip_moved),
        ("relevance share on the artifact region", b.relevance_share, a.relevance_share),
    ):
        lines.append(f"  {name[:44]:44s}{pct(x):>10s}{pct(y):>10s}")
    after_tcav = "n/a" if unrelated else pct(a.tcav)
    after_sens = "n/a" if unrelated else f"{a.sensitivity_abs:.3g}"
    lines.append(f"  {'TCAV score along the direction':44s}{pct(b.tcav):>10s}{after_tcav:>10s}")
    lines.append(
        f"  {'mean |sensitivity| along the direction':44s}{b.sensitivity_abs:10.3g}{after_sens:>10s}"
    )
    if unrelated:
        lines.append(f"  n/a: {UNRELATED_DIRECTION}")
    lines.append(f"  flip rate {change_between(b.flip_rate, a.flip_rate)}, relevance share "
                 f"{change_between(b.relevance_share, a.relevance_share)}, clean accuracy {v.accuracy_text()}")  # fmt: skip
    lines += [f"  WARNING: {w}" for w in rec.warnings()]
    r = rec.reaudit
    if r is not None:
        lines.append(f"  re-audit: {r.describe()}")
    lines.append(f"  report: {outcome.folder / 'report.html'}")
    return "\n".join(lines)


def _refuse_another_keys_flags(cfg: Any) -> None:
    """With ``--if-flagged`` and no flags under the config's dataset key: refuse (exit 2) when most flags
    under another key name the images of this dataset's newest run (a misspelt ``data.name``, or a data
    folder moved without one, whose key is its path): a nightly job would otherwise exit 0 forever."""
    from spray.errors import ConfigError, SprayError
    from spray.flags import FlagStore
    from spray.flags.content import other_key_message
    from spray.runs.errors import RunReadError
    from spray.runs.publish import list_runs
    from spray.runs.reader import RunReader

    db, dataset = cfg.flags_db_path(), cfg.dataset_key()
    if not db.is_file():
        return
    for run in list_runs(cfg.output.runs_dir):
        try:
            reader = RunReader.open(run)
            if reader.summary.dataset != dataset:
                continue
            message = other_key_message(FlagStore(db, read_only=True), dataset, reader.content_hashes() or {})
        except (RunReadError, SprayError):
            continue
        if message:
            raise ConfigError(f"--if-flagged found no flags to correct, and {message}")
        return
    # no run of this key yet (a data folder moved without data.name and not audited since): nothing to compare
    store = FlagStore(db, read_only=True)
    others = [
        f"{len(store.current(k))} under {k!r}" for k in store.datasets() if k != dataset and store.current(k)
    ]
    if others:
        log.warning(
            "--if-flagged: no flags under this dataset's key %r, and no run of it to tell whether the flags "
            "under other keys name its images (%s); audit it (spray run) and correct again: if the key changed "
            "(without data.name it is the data folder's path) this command then says so",
            dataset,
            ", ".join(others),
        )


def run_command(args: argparse.Namespace) -> int:
    """``spray correct``: unlearn the flagged shortcut, re-evaluate and re-audit (idempotent, resumable)."""
    from spray.correct.groups import NoFlagsError
    from spray.correct.run import correct
    from spray.errors import ConfigError
    from spray.exit_codes import EXIT_FINDINGS

    cfg = _config(args)
    if args.fail_if_not_cleared and not cfg.correction.reaudit:
        raise ConfigError(
            "--fail-if-not-cleared needs the re-audit, which is off (--no-reaudit or correction.reaudit: false): "
            "drop --fail-if-not-cleared, or let the re-audit run"
        )
    try:
        outcome = correct(cfg, device=args.device, progress=not args.quiet, force=args.force)
    except NoFlagsError as err:
        if not args.if_flagged:
            raise
        _refuse_another_keys_flags(cfg)
        log.info("nothing to correct: %s", err)
        return 0
    if args.if_flagged and outcome.up_to_date:
        # quiet, as documented: a nightly job's log would repeat the same table every night
        log.info("correction %s is already published: %s", outcome.record.correction_id[:12], outcome.folder)
    else:
        sys.stdout.write(_table(outcome) + "\n")
    cleared = outcome.record.cleared()
    if args.fail_if_not_cleared and cleared is False:
        still = (
            "the shortcut still acts"
            if outcome.record.acts_still()
            else "the re-audit still flags the finding"
        )
        log.warning("%s: exit %d (--fail-if-not-cleared)", still, EXIT_FINDINGS)
        return EXIT_FINDINGS
    doubted = outcome.record.reaudit is not None and outcome.record.reaudit.doubts
    if args.fail_if_not_cleared and cleared is None and doubted:
        log.warning(
            "the re-audit's own checks say its heatmaps of the corrected model may show no shortcut (above): "
            "exit %d (--fail-if-not-cleared)",
            EXIT_FINDINGS,
        )
        return EXIT_FINDINGS
    if args.fail_if_not_cleared and cleared is None:
        # The source run did not flag the group either, so the flag has nothing to clear: say so, exit 0.
        log.warning(
            "--fail-if-not-cleared: the flag cannot judge this correction (the source run did not flag the "
            "finding, nor does the re-audit); read the flip rate and relevance share above"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``spray correct``."""
    p = subparsers.add_parser(
        "correct",
        help="unlearn a flagged shortcut (P-ClArC, RR-ClArC or retraining) and prove it is gone",
        description=run_command.__doc__,
    )
    p.add_argument(
        "--config", required=True, help="the audit config (its correction section), see docs/correction.md"
    )
    p.add_argument("--runs-dir", help="override output.runs_dir")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override batch.device")
    p.add_argument("--method", choices=["pclarc", "rrclarc", "retrain"], help="override correction.method")
    p.add_argument("--layer", help="override correction.layer (a module path, or 'auto')")
    p.add_argument("--lambda", dest="rr_lambda", type=float, help="override correction.rr_lambda")
    p.add_argument("--epochs", type=positive_int, help="override correction.epochs")
    p.add_argument("--flags-db", help="flag database (default RUNS_DIR/flags.sqlite)")
    p.add_argument(
        "--class",
        dest="artifact_class",
        type=class_index,
        metavar="INDEX",
        help="override correction.artifact_class: the class's index (its position in the class list; a name "
        "is not taken here, --cluster-key takes class names)",
    )
    p.add_argument(
        "--cluster-key",
        help="only the flags set from this finding: its key (6/k3/c2), or the report's class and cluster "
        "columns (dog/k3/c2, or k3/c2 when one class has it), as spray flags set --finding takes them",
    )
    p.add_argument(
        "--source-run", help="the run the flags refer to (a folder name, or a prefix of one or of a run id)"
    )
    p.add_argument("--no-reaudit", action="store_true", help="skip the re-audit of the corrected model")
    p.add_argument(
        "--if-flagged", action="store_true", help="exit 0 quietly when there are no flags (nightly)"
    )
    p.add_argument(
        "--fail-if-not-cleared",
        action="store_true",
        help="exit 10 when the re-audit still flags the finding, or no longer flags it while pasting the "
        "flagged pixels still flips the corrected model (a nightly job then notices a correction that did not "
        "remove the shortcut)",
    )
    p.add_argument("--force", action="store_true", help="recompute even if this correction is published")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_command)
