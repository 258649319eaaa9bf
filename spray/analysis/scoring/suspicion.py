"""Per-sample suspicion of one class, consistent with its ranked candidates across every k."""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring.geometry import Region, box_sums, integral
from spray.records import ClusterFinding


def _shares(p: np.ndarray, f: ClusterFinding) -> np.ndarray:
    """``(len(p),)`` each map's share of positive relevance in the candidate's hot region (or, for a
    moving pattern, in its own best window of that size)."""
    sig = f.signals
    n, h, w = p.shape
    if sig.get("moving", 0.0) > 0:
        s = int(sig["moving_size"])
        return box_sums(integral(p), s).reshape(n, -1).max(axis=1)
    if "region_size" in sig:
        kind = "frame" if sig["region_frame"] > 0 else "window"
        region = Region(kind, int(sig["region_size"]), int(sig["region_row"]), int(sig["region_col"]))
        return p[:, region.mask(h, w)].sum(axis=1)
    return np.zeros(n)


def sample_suspicion(
    maps: np.ndarray, findings: list[ClusterFinding], sample_ids: list[str], tie_break: float
) -> np.ndarray:
    """Per-sample suspicion of one class: the highest score of the candidates that hold the sample.

    A sample scores as the most suspicious candidate it belongs to, as a member or as a carrier, at any
    ``k`` (candidates may be nested or overlap), so ranking samples and ranking candidates agree: the
    members of the top finding come first. Members get a tie-break of at most ``tie_break``, their
    own share of relevance in the candidate's hot region, so that inside a candidate the samples that
    carry the pattern most strongly come first. A flagged candidate's ``carrier_affinity`` (with
    ``scoring.graded_suspicion``) gives the class's other samples at least its score × their affinity (under
    0.5), which can exceed every candidate that holds them.

    Parameters
    ----------
    maps : np.ndarray
        ``(n, h, w)`` the maps given to :func:`~spray.analysis.scoring.score_class`.
    findings : list[ClusterFinding]
        Its candidates for this class.
    sample_ids : list[str]
        Row ids of ``maps``.
    tie_break : float
        Weight of a member's own share of relevance in the candidate's hot region
        (``ScoringConfig.suspicion_tie_break``).

    Returns
    -------
    np.ndarray
        ``(n,)`` float64; samples in no candidate get 0.
    """
    maps = np.asarray(maps, dtype=np.float64)
    n = maps.shape[0]
    pos = np.clip(maps, 0.0, None)
    mass = pos.reshape(n, -1).sum(axis=1)
    p = pos / np.where(mass > 0, mass, 1.0)[:, None, None]
    row = {sid: i for i, sid in enumerate(sample_ids)}
    out = np.zeros(n)
    for f in findings:
        idx = np.array([row[s] for s in f.member_ids], dtype=np.int64)
        if idx.size:
            out[idx] = np.maximum(out[idx], f.score + tie_break * _shares(p[idx], f))
        if f.carrier_ids:
            # Carriers repeat the flagged pattern outside the candidate: as suspicious as its members.
            cidx = np.array([row[c] for c in f.carrier_ids if c in row], dtype=np.int64)
            out[cidx] = np.maximum(out[cidx], f.score)
        if f.carrier_affinity:  # scoring.graded_suspicion: the rest of the class by its likeness to the stamp
            gidx = np.array([row[s] for s in f.carrier_affinity if s in row], dtype=np.int64)
            vals = np.array([f.carrier_affinity[s] for s in f.carrier_affinity if s in row])
            out[gidx] = np.maximum(out[gidx], f.score * vals)
    return out
