"""Human-readable renderings of a report: the ranked findings table printed by the CLI."""

from __future__ import annotations

from typing import Protocol

from spray.records import AuditReport, ClusterFinding, score_text


class _Clustered(Protocol):
    """A finding as the report or ``summary.json`` holds it (what the cluster column needs)."""

    @property
    def k(self) -> int: ...
    @property
    def cluster_id(self) -> int: ...
    @property
    def space(self) -> str: ...


def findings_table(findings: list[ClusterFinding], *, top: int = 10, width: int = 100) -> str:
    """A fixed-width ranked table of findings with their one-line evidence.

    Parameters
    ----------
    findings : list[ClusterFinding]
        Ranked, most suspicious first.
    top : int
        Rows to show.
    """
    header = f"{'#':>2}  {'class':<14} {'cluster':<9} {'size':>6} {'share':>6} {'score':>7}  {'alarm':<5}  evidence"
    lines = [header, "-" * min(width + 40, len(header) + 60)]
    for i, f in enumerate(findings[:top], start=1):
        ev = f.evidence[0] if f.evidence else ""
        lines.append(
            f"{i:>2}  {f.class_name[:14]:<14} {cluster_label(f):<9} {f.size:>6} {f.fraction:>6.1%} "
            f"{score_text(f.score):>7}  {'YES' if f.suspicious else 'no':<5}  {ev}"
        )
        for extra in f.evidence[1:]:
            lines.append(" " * 62 + extra)
    if not findings:
        lines.append("(no clusters)")
    if any(f.space != "pixel" for f in findings[:top]):
        lines.append(
            "(C:k<k>/c<id>: found in concept space only; k<k>/c<id>+C: found in pixel and concept space)"
        )
    return "\n".join(lines)


def cluster_label(f: _Clustered) -> str:
    """The cluster column: ``k3/c2``, ``C:k6/c2`` (concept space only) or ``k3/c2+C`` (both spaces)."""
    label = f"k{f.k}/c{f.cluster_id}"
    return {"concept": f"C:{label}", "both": f"{label}+C"}.get(f.space, label)


def report_header(report: AuditReport) -> str:
    """Two lines: run id, sample counts, skipped samples and timing."""
    n = report.n_samples
    state = " (up to date: reused the published run)" if report.up_to_date else ""
    n_susp = sum(f.suspicious for f in report.findings)
    total = report.timings.get("total_s")
    took = f" in {total:.1f} s" if isinstance(total, float) else ""
    left = report.classes_skipped
    named = ", ".join(c.class_name for c in left[:3]) + (", ..." if len(left) > 3 else "")
    not_analysed = f" ({len(left)} not analysed: {named}; why: summary.json, classes_skipped)" if left else ""
    return (
        f"run {report.run_id[:12]}{state}: {n} samples, {len(report.classes)} classes analysed{not_analysed}"
        f"{took}, {len(report.skipped)} samples skipped, {n_susp} suspicious cluster{'' if n_susp == 1 else 's'}\n"
        f"run directory: {report.run_dir}"
    )
