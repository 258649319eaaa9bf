"""The published audit run a correction starts from, and matching its findings to the flagged samples.

Every read of the runs folder by the correction package goes through here (one place to switch when the
runs folder's typed reader changes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spray.errors import ConfigError, SprayError
from spray.records import ClusterFinding
from spray.runs.reader import scan_runs

log = logging.getLogger(__name__)


@dataclass
class SourceRun:
    """A published audit run.

    Attributes
    ----------
    run_id : str
        Its id.
    path : Path
        Its folder.
    model_hash : str
        Hash of the model it audited.
    skipped_ids : list[str]
        Samples it could not read.
    findings : list[ClusterFinding]
        Its findings with their members, ranked (most suspicious first).
    sample_ids : list[str]
        Every sample it analysed.
    run_models : dict[str, str]
        ``run_id -> model hash`` of every readable run in the runs folder (to tell which weights a flag's
        run audited).
    run_paths : dict[str, Path]
        ``run_id -> folder`` of every readable run (the newest folder of a run published twice).
    transform : dict or None
        Its recorded ``data.transform`` (None for a run that recorded no config).
    run_hash_versions : dict[str, str]
        ``run_id -> how its model hash was computed`` (``hashes.model_hash_version``; "1" before it was
        recorded), for every readable run.
    extra : dict
        The run's recorded checks (``summary.extra``): the re-audit's are read against them.
    """

    run_id: str
    path: Path
    model_hash: str
    skipped_ids: list[str]
    findings: list[ClusterFinding]
    sample_ids: list[str] = field(default_factory=list)
    run_models: dict[str, str] = field(default_factory=dict)
    run_paths: dict[str, Path] = field(default_factory=dict)
    transform: dict[str, Any] | None = None
    run_hash_versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _named_runs(
    readable: list[tuple[Path, Any]], names: list[str], wanted: str, dataset: str, runs_dir: Path
) -> list[tuple[Path, Any]]:
    """The runs ``wanted`` names (a folder name, or a prefix of one or of a run id): one run id, maybe published
    in several folders.

    Raises
    ------
    SprayError
        It names no run, or several.
    """
    from spray.runs.publish import runs_named

    named = set(runs_named([(p, r.summary) for p, r in readable], wanted, dataset))
    hits = [(p, r) for p, r in readable if p in named]
    if not hits:
        listed = ", ".join(names[:10]) or "none"
        raise ConfigError(
            f"correction.source_run: no published run {wanted!r} in {runs_dir}. Runs there: {listed}."
        )
    if len({r.summary.run_id for _, r in hits}) > 1:
        listed = ", ".join(p.name for p, _ in hits[:10])
        raise ConfigError(
            f"correction.source_run {wanted!r} names several runs in {runs_dir} ({listed}); give more of a "
            "folder name or run id."
        )
    return hits


def find_source_run(
    runs_dir: Path, dataset: str, model_hash: str, wanted: str | None, audit_name: str | None = None
) -> SourceRun:
    """The run to correct from: ``wanted`` (a folder name, or a prefix of one or of a run id), or the newest run of this
    dataset made with this model, a run of the audit named ``audit_name`` first (a trial with ``data.limit`` is
    another audit: its subset would become the correction's reference and evaluation data).

    Raises
    ------
    SprayError
        No such run (the message lists the runs there are, or says to run the audit first), ``wanted``
        names several, or a run of another dataset.
    """
    entries = scan_runs(runs_dir)
    for e in entries:
        if e.error is not None:
            log.warning("run %s cannot be read (%s); ignored", e.name, e.error)
    readable = [(e.path, e.reader) for e in entries if e.reader is not None]
    if wanted is not None and "/" in wanted.rstrip("/"):
        wanted = Path(wanted.rstrip("/")).name  # a run folder's path (as spray flags set --run takes it)
    if wanted is not None:
        hits = _named_runs(readable, [e.name for e in entries], wanted, dataset, runs_dir)
    else:
        hits = [
            (p, r)
            for p, r in readable
            if r.summary.dataset == dataset and r.summary.hashes.get("model") == model_hash
        ]
        hits.sort(key=lambda hit: hit[1].summary.name != audit_name)  # stable: newest first within each
        if not hits:
            raise SprayError(
                f"No published run of dataset {dataset!r} with this model in {runs_dir}: the correction compares "
                "against the audit the flags were set on. The model's fingerprint covers its weights and code (an "
                "edit of its factory module or a project module it imports is a new model, a comment is not; runs "
                "of an older spray carry an older fingerprint): run `spray audit --config ...` (or `spray run`) "
                "first (the flags carry over to the new run)."
            )
    path, reader = hits[0]
    s = reader.summary
    if s.dataset != dataset:
        raise ConfigError(
            f"correction.source_run {wanted!r} is run {path.name} of dataset {s.dataset!r}, not of this config's "
            f"dataset {dataset!r}: its findings and sample ids belong to other data. Name a run of {dataset!r} "
            "(or leave correction.source_run unset for the newest)."
        )
    twins = [p.name for p, r in hits[1:] if r.summary.run_id == s.run_id]
    if twins:
        # A forced rerun publishes the same run id again; the newest folder is the one taken.
        log.warning(
            "run %s is published more than once (a --force rerun, or a run made again after a newer run of "
            "other inputs, a config or spray version between): correcting from the newest, %s (also: %s); "
            "name a folder in correction.source_run (--source-run) to choose another",
            s.run_id[:12], path.name, ", ".join(twins),
        )  # fmt: skip
    return SourceRun(
        run_id=s.run_id,
        path=path,
        model_hash=str(s.hashes.get("model", "")),
        skipped_ids=[x.sample_id for x in s.skipped],
        findings=reader.findings(),
        sample_ids=reader.sample_ids(),
        run_models={r.summary.run_id: str(r.summary.hashes.get("model", "")) for _, r in readable},
        # scan_runs lists the newest first: keep the first folder of each run id
        run_paths={r.summary.run_id: p for p, r in reversed(readable)},
        transform=(s.config.get("data") or {}).get("transform") if s.config else None,
        run_hash_versions={
            r.summary.run_id: str(r.summary.hashes.get("model_hash_version", "1")) for _, r in readable
        },
        extra=dict(s.extra),
    )


@dataclass
class FindingMatch:
    """The finding of a run that best matches the flagged samples (None fields: no finding in the class).

    Attributes
    ----------
    key : str or None
        Finding key (``"<class>/k<k>/c<cluster>"``).
    rank : int or None
        1-based rank among all findings of its run.
    score : float or None
        Suspicion score.
    suspicious : bool
        Whether its run flagged it.
    jaccard : float
        Jaccard index of its members (and carriers) with the flagged samples.
    flip_rate : float or None
        Its paste test's flip rate, when it was tested.
    size : int
        Members.
    """

    key: str | None
    rank: int | None
    score: float | None
    suspicious: bool
    jaccard: float
    flip_rate: float | None
    size: int


def match_finding(
    findings: list[ClusterFinding],
    class_index: int,
    flagged_ids: list[str],
    *,
    prefer: str | None = None,
    among: set[str] | None = None,
) -> FindingMatch:
    """The finding of ``class_index`` whose members (with carriers) overlap the flagged ids most: the one
    keyed ``prefer`` when the run has it (the finding the flags were set from), and only among the keys
    ``among`` when given (the findings that keep a re-audit's flag)."""
    flagged = set(flagged_ids)
    best: tuple[float, int, ClusterFinding] | None = None
    for rank, f in enumerate(findings, start=1):
        if f.class_index != class_index or (among is not None and f.key not in among):
            continue
        members = set(f.member_ids) | set(f.carrier_ids)
        jac = len(members & flagged) / max(1, len(members | flagged))
        if f.key == prefer:
            best = (jac, rank, f)
            break
        if best is None or jac > best[0]:
            best = (jac, rank, f)
    if best is None:
        return FindingMatch(None, None, None, False, 0.0, None, 0)
    jac, rank, f = best
    flip = f.signals.get("flip_rate") if f.signals.get("tested") else None
    return FindingMatch(f.key, rank, float(f.score), bool(f.suspicious), round(jac, 6),
                        None if flip is None else float(flip), int(f.size))  # fmt: skip
