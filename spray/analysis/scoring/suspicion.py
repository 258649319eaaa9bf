"""Per-sample suspicion of one class, consistent with its findings."""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring.geometry import Region, box_sums, integral
from spray.records import ClusterFinding

#: Weight of a sample's own share in its finding's region: a tie-break within a finding, below any
#: difference of finding scores that matters.
TIE_BREAK = 0.01


def sample_suspicion(maps: np.ndarray, findings: list[ClusterFinding], sample_ids: list[str]) -> np.ndarray:
    """Per-sample suspicion of one class: its cluster's score plus a within-cluster tie-break.

    The tie-break (at most 0.01) is the sample's own share of positive relevance in its cluster's hot
    region (or, for a moving artifact, its own best window of that size), so that inside a cluster
    the samples that carry the pattern most strongly come first.

    Parameters
    ----------
    maps : np.ndarray
        ``(n, h, w)`` the maps given to :func:`~spray.analysis.scoring.score_class`.
    findings : list[ClusterFinding]
        Its output for this class.
    sample_ids : list[str]
        Row ids of ``maps``.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64; samples in no finding get 0.
    """
    maps = np.asarray(maps, dtype=np.float64)
    n, h, w = maps.shape
    pos = np.clip(maps, 0.0, None)
    mass = pos.reshape(n, -1).sum(axis=1)
    p = pos / np.where(mass > 0, mass, 1.0)[:, None, None]
    row = {sid: i for i, sid in enumerate(sample_ids)}
    out = np.zeros(n)
    for f in findings:
        idx = np.array([row[s] for s in f.member_ids], dtype=np.int64)
        if idx.size == 0:
            continue
        sig = f.signals
        if sig.get("moving", 0.0) > 0:
            s = int(sig["moving_size"])
            share = box_sums(integral(p[idx]), s).reshape(idx.size, -1).max(axis=1)
        elif "region_size" in sig:
            kind = "frame" if sig["region_frame"] > 0 else "window"
            region = Region(kind, int(sig["region_size"]), int(sig["region_row"]), int(sig["region_col"]))
            share = p[idx][:, region.mask(h, w)].sum(axis=1)
        else:
            share = np.zeros(idx.size)
        out[idx] = np.maximum(out[idx], f.score + TIE_BREAK * share)
        if f.carrier_ids:
            # Carriers repeat the flagged pattern outside the cluster: as suspicious as its members.
            cidx = np.array([row[c] for c in f.carrier_ids if c in row], dtype=np.int64)
            out[cidx] = np.maximum(out[cidx], f.score)
    return out
