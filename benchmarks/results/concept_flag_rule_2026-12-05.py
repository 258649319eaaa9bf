"""Replay of the concept flag rules on the tuning split (protocol: concept_flag_rule_protocol_2026-12-05.md).

Run from the repository root: ``PYTHONPATH=. python benchmarks/results/concept_flag_rule_2026-12-05.py``.
Each concept-tested candidate's flag is recomputed from the signals the row kept, with the default
``scoring`` margins; prints, per rule, the cells holding a true concept flag (planted class, precision ≥ 0.5),
the cells holding a false one, the clean models flagged, and for the chosen rule whether the run had
flagged the planted group already (pixel space).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spray.config import ScoringConfig

ROWS = Path(__file__).with_name("detection_heldout_tuning_concepts_tested_2026-12-05.jsonl.gz")
SC = ScoringConfig()


def routes(t: dict[str, Any]) -> set[str]:
    """The interventions that clear the scoring margins (as ``spray.analysis.scoring.verdict``)."""
    out = set()
    g, n = t.get("paste_gain"), t.get("paste_gain_null")
    gain_ok = (
        g is not None and n is not None and g - n >= SC.paste_gain_margin and gain_ratio(t) >= SC.gain_ratio
    )
    if gain_ok and t.get("paste_gain_p", 1.0) < SC.flip_alpha:
        out.add("paste")
    fr, fn = t.get("flip_rate"), t.get("flip_null")
    flips_ok = (
        fr is not None
        and fn is not None
        and fr - fn >= SC.flip_margin
        and (fr + SC.ratio_eps) / (fn + SC.ratio_eps) >= SC.flip_ratio
    )
    if flips_ok and t.get("flip_p", 1.0) < SC.flip_alpha:
        out.add("paste")
    removal_ok = "removal_drop" in t and (
        t["removal_drop"] - t["removal_null"] >= SC.removal_margin
        and t["removal_auroc"] >= SC.removal_min_auroc
    )
    if removal_ok and t["removal_p"] < SC.removal_alpha:
        out.add("removal")
    return out


def gain_ratio(t: dict[str, Any]) -> float:
    g, n = t.get("paste_gain"), t.get("paste_gain_null")
    if g is None or n is None:
        return 0.0
    return (g + SC.gain_eps) / (max(n, 0.0) + SC.gain_eps)


RULES: dict[str, Callable[[set[str], dict[str, Any]], bool]] = {
    "R0 both": lambda rs, t: len(rs) == 2,
    "R1 removal": lambda rs, t: "removal" in rs,
    "R2 removal, gain ratio 1.25": lambda rs, t: "removal" in rs and gain_ratio(t) >= 1.25,
    "R2 removal, gain ratio 1.5": lambda rs, t: "removal" in rs and gain_ratio(t) >= 1.5,
    "R2 removal, gain ratio 2.0": lambda rs, t: "removal" in rs and gain_ratio(t) >= 2.0,
    "R3 any": lambda rs, t: len(rs) >= 1,
}


def main() -> None:
    with gzip.open(ROWS, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    cands = []
    for r in rows:
        for t in r.get("tested", []):
            if t.get("space") == "concept":
                true = r["family"] != "none" and t["class"] == r["target"] and t["precision"] >= 0.5
                cands.append((r, t, routes(t), true))
    n_clean = sum(r["family"] == "none" for r in rows)
    print(f"{len(rows)} rows, {len(cands)} concept-tested candidates")
    for name, rule in RULES.items():
        hits = [c for c in cands if rule(c[2], c[1]) and c[1]["fraction"] <= SC.flag_max_fraction]
        cell = lambda r: (r["dataset"], r["family"], r["fraction"], r["seed"])  # noqa: E731
        true_cells = {cell(r) for r, _, _, ok in hits if ok}
        false_cells = {cell(r) for r, _, _, ok in hits if not ok}
        clean = {c for c in false_cells if c[1] == "none"}
        print(f"{name:30s} true-flag cells {len(true_cells):3d}; false-flag cells {len(false_cells):3d} of "
              f"{len(rows)}; clean models flagged {len(clean)} of {n_clean}")  # fmt: skip
        if name == "R2 removal, gain ratio 1.5":
            already = sum(1 for r in rows if cell(r) in true_cells and r.get("flagged"))
            print(f"    its true-flag cells whose planted group the run had flagged already: {already}")
            print(f"    its false-flag cells: {sorted(false_cells)}")


if __name__ == "__main__":
    main()
