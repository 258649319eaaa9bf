"""The re-audit: the corrected model audited with the same config. Is the flagged finding still there?

The corrected model's ``config.yaml`` (see :mod:`spray.correct.checkpoint`) is audited like any config,
into its own runs folder (``reaudit/`` inside the correction), so a re-audit never enters the user's
runs folder, its retention or the nightly job's "what is new" comparison. The finding of the artifact class
that best overlaps the flagged samples is compared with the one of the source run.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spray.accuracy import model_problems_by_check
from spray.config import load_config
from spray.correct.source import FindingMatch, match_finding
from spray.records import ClusterFinding, score_text
from spray.runs.layout import CACHE_DIR, LOCK, STAGING_DIR

log = logging.getLogger(__name__)


@dataclass
class Reaudit:
    """The re-audit's verdict on the flagged finding.

    Attributes
    ----------
    run_id : str
        The re-audit run's id.
    run_dir : str
        Its folder, relative to the correction folder.
    before : FindingMatch
        The source run's finding that matches the flagged samples.
    after : FindingMatch
        The re-audit's finding that matches them best.
    still_flagged : bool
        Some suspicious finding of the class overlaps the flagged samples by at least
        ``reaudit_min_jaccard``, or holds ``reaudit_min_contained`` of them (members and carriers).
    suspicious_in_class : list[str]
        Keys of every suspicious finding of the class in the re-audit.
    doubts : list[str]
        What the re-audit's own checks of the corrected model found (near chance, flat heatmaps, heatmaps
        that carry little of the logit): its heatmaps may then show no shortcut at all, so a finding no
        longer flagged proves nothing.
    """

    run_id: str
    run_dir: str
    before: FindingMatch
    after: FindingMatch
    still_flagged: bool
    suspicious_in_class: list[str]
    doubts: list[str] = field(default_factory=list)

    @property
    def cleared(self) -> bool | None:
        """True: the source run flagged the finding and the re-audit does not; False: the re-audit flags
        it; None: flagged neither before nor after, or the re-audit's own checks doubt its heatmaps, so
        the flag cannot tell whether the shortcut is gone."""
        if self.still_flagged:
            return False
        return True if self.before.suspicious and not self.doubts else None

    @property
    def outcome(self) -> str:
        """The verdict in a few words (the CLI, the report, the dashboard's table)."""
        if self.still_flagged:
            return "still flagged" if self.before.suspicious else "flagged now (it was not before)"
        if self.doubts:
            return "not judged: the re-audit's heatmaps of the corrected model may show no shortcut at all"
        return (
            "no longer flagged" if self.before.suspicious else "not judged: it was not flagged before either"
        )

    def describe(self) -> str:
        """The outcome with the best match before and after (rank and score), in one line."""
        b, a = self.before, self.after
        moved = (
            f"best match {b.key} rank {b.rank} score {_score(b)}, {b.size} members → {a.key} rank {a.rank} "
            f"score {_score(a)}, {a.size} members"
        )
        line = f"{self.outcome}; {moved} (overlap {b.jaccard:.2f} → {a.jaccard:.2f})"
        if self.doubts and not self.still_flagged:
            line += ". The re-audit's own checks: " + " ".join(self.doubts)
        elif self.cleared is None:
            line += (
                ". The source run did not flag this finding, so the re-audit's flag cannot show the shortcut "
                "gone: judge by the paste flip rate and the relevance share, and by the rank and score above"
            )
        return line


def _score(f: FindingMatch) -> str:
    return "–" if f.score is None else score_text(f.score)


def keeps_flag(f: ClusterFinding, flagged: set[str], same: tuple[float, float, float], n_class: int) -> bool:
    """Whether the suspicious finding ``f`` is the flagged finding again: its members and carriers overlap the
    flagged samples by the Jaccard index ``same[0]``, or hold the share ``same[1]`` of them (flags set on part
    of a group overlap the whole group by a small Jaccard index) at least ``same[2]`` times as densely as
    the class of ``n_class`` samples holds them (not a finding that holds most of the class)."""
    held = set(f.member_ids) | set(f.carrier_ids)
    common = len(held & flagged)
    if common / max(1, len(held | flagged)) >= same[0]:
        return True
    dense = common / max(1, len(held)) >= same[2] * len(flagged) / max(1, n_class)
    return common / max(1, len(flagged)) >= same[1] and dense


def run_reaudit(
    config_path: Path,
    before: FindingMatch,
    class_index: int,
    flagged_ids: list[str],
    same: tuple[float, float, float],
    *,
    device: str | None,
    progress: bool,
    source_extra: dict[str, Any] | None = None,
    no_worse: float = 0.5,
) -> Reaudit:
    """Audit the corrected model's config and match its findings to the flagged samples.

    Parameters
    ----------
    config_path : Path
        The corrected model's ``config.yaml`` (its ``output.runs_dir`` is where the run is published).
    before : FindingMatch
        The source run's matching finding.
    class_index : int
        The artifact class.
    flagged_ids : list[str]
        The flagged samples.
    same : tuple of float
        ``(reaudit_min_jaccard, reaudit_min_contained, reaudit_min_enrichment)``: what makes a suspicious
        finding "the same finding" (:func:`keeps_flag`).
    device : str, optional
        Overrides ``batch.device``.
    progress : bool
        Progress bars.
    source_extra : dict, optional
        The source run's recorded checks (``summary.extra``): a heatmap problem it had as badly is no doubt on
        the verdict (:func:`shared_problems`).
    no_worse : float
        ``correction.reaudit_no_worse``.
    """
    from spray.audit import audit

    cfg = load_config(config_path)
    report = audit(cfg, device=device, progress=progress)
    flagged = set(flagged_ids)
    suspicious = [f for f in report.findings if f.class_index == class_index and f.suspicious]
    n_class = sum(len(c.sample_ids) for c in report.classes if c.class_index == class_index)
    keepers = {f.key for f in suspicious if keeps_flag(f, flagged, same, n_class)}
    still = bool(keepers)
    # still flagged: name a suspicious finding that keeps the flag, not another one that overlaps more
    after = match_finding(report.findings, class_index, flagged_ids, among=keepers if still else None)
    log.info(
        "re-audit %s: best match %s (Jaccard %.2f, suspicious %s)",
        report.run_id[:12],
        after.key,
        after.jaccard,
        after.suspicious,
    )
    # resolved both: a runs folder behind a symlink gives the run's folder resolved, the config's path not
    rel = Path(report.run_dir).resolve().relative_to(config_path.parent.resolve())
    keys = [f.key for f in suspicious]
    doubts = _doubts(report.run_id, report.extra, source_extra, no_worse)
    return Reaudit(report.run_id, str(rel), before, after, still, keys, doubts)


def _doubts(
    run_id: str, extra: dict[str, Any], source_extra: dict[str, Any] | None, no_worse: float
) -> list[str]:
    """The re-audit's checks of the corrected model that make its verdict doubtful, said in the log (those the
    source run had as badly are left out: :func:`shared_problems`)."""
    found = model_problems_by_check(extra, corrected=True)
    shared = shared_problems(found, extra, source_extra, no_worse)
    doubts = [s for k, said in found.items() if k not in shared for s in said]
    if shared:
        log.info(
            "re-audit %s: the source run's %s check found the same problem, no smaller, and its finding was "
            "found regardless: not counted against the verdict",
            run_id[:12],
            " and ".join(shared),
        )
    if found["model_accuracy"]:
        # the re-audit read the source run's data and transform: a collapse there is the correction's; the
        # audit's own warnings above name the inputs and weights, which it shares with the source run
        log.warning(
            "re-audit %s: its checks of the model (above) are of the corrected model, audited with the source "
            "run's data and data.transform: the correction collapsed it, not the inputs or model.checkpoint",
            run_id[:12],
        )
    elif doubts:
        log.warning(
            "re-audit %s: its heatmaps of the corrected model may show no shortcut at all (its checks above, "
            "which the source run passed): a finding it does not flag proves nothing",
            run_id[:12],
        )
    return doubts


#: The measure each heatmap check records (larger is better).
_MEASURES = {"conservation": "median_share", "heatmap_contrast": "median_cv"}


def shared_problems(
    found: dict[str, list[str]], extra: dict[str, Any], source_extra: dict[str, Any] | None, no_worse: float
) -> list[str]:
    """The heatmap checks (``conservation``, ``heatmap_contrast``) that found a problem in the re-audit and in
    the source run, where the re-audit's measure is at least ``no_worse`` times the source run's: the source
    run found its finding under the same condition, so it is no doubt on the verdict. The model's accuracy is
    never among them (a collapse of the corrected model stays a doubt).

    Parameters
    ----------
    found : dict
        The re-audit's problems per check (:func:`spray.accuracy.model_problems_by_check`).
    extra, source_extra : dict
        The re-audit's and the source run's recorded checks (``summary.extra``; None: not known).
    no_worse : float
        ``correction.reaudit_no_worse``.
    """
    if source_extra is None:
        return []
    had = model_problems_by_check(source_extra)
    shared = []
    for key, measure in _MEASURES.items():
        after, before = ((e.get(key) or {}).get(measure) for e in (extra, source_extra))
        if not (isinstance(after, (int, float)) and isinstance(before, (int, float))):
            continue
        if found.get(key) and had.get(key) and after >= no_worse * before:
            shared.append(key)
    return shared


def slim_runs_dir(runs_dir: Path) -> None:
    """Drop a re-audit runs folder's cache, staging area and lock file (the published run stays)."""
    for sub in (CACHE_DIR, STAGING_DIR):
        shutil.rmtree(runs_dir / sub, ignore_errors=True)
    (runs_dir / LOCK).unlink(missing_ok=True)
