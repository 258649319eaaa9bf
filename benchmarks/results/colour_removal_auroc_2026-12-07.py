"""Replay of the colour removal's AUROC margin on the development moving splits (protocol:
colour_removal_auroc_protocol_2026-12-07.md). Run from the repository root: python benchmarks/results/colour_removal_auroc_2026-12-07.py"""

import gzip
import json
from pathlib import Path

HERE = Path(__file__).parent
#: one row set per development split (the latest audit of each; check7's three sets share models)
FILES = [
    "detection_heldout_moving_dev_concepts_typicality_2026-12-05.jsonl.gz",  # moving, moving_check, moving_check2
    "detection_heldout_moving_check4_concepts_colour_2026-12-05.jsonl.gz",
    "detection_heldout_moving_check5_concepts_on_2026-12-05.jsonl.gz",
    "detection_heldout_moving_check6_concepts_w0.1_2026-12-05.jsonl.gz",
    "detection_heldout_moving_check7_graded_suspicion_2026-12-05.jsonl.gz",
    "detection_heldout_moving_check8_analysis18_2026-12-05.jsonl.gz",
]
VALUES = (0.94, 0.90, 0.85, 0.80, 0.75)
ALPHA, MARGIN, GAIN_RATIO, EPS, PRECISION = 0.01, 0.5, 1.5, 0.25, 0.5
PASTE_GAIN_MARGIN = 0.5  # scoring.paste_gain_margin


def colour_met(t: dict, auroc: float, gain_margin: float | None = None) -> bool:
    """The concept flag rule (removal + paste gain ratio) on the colour test's signals at one AUROC margin,
    and (amendment) a paste gain excess of at least ``gain_margin``."""
    if "colour_removal_auroc" not in t or not t.get("concept_flag_eligible"):
        return False
    excess = t["colour_removal_drop"] - t["colour_removal_null"]
    ratio = (t["colour_paste_gain"] + EPS) / (max(t["colour_paste_gain_null"], 0.0) + EPS)
    gain_ok = gain_margin is None or t["colour_paste_gain"] - t["colour_paste_gain_null"] >= gain_margin
    removal_ok = t["colour_removal_p"] < ALPHA and excess >= MARGIN and t["colour_removal_auroc"] >= auroc
    return removal_ok and ratio >= GAIN_RATIO and gain_ok


def main() -> None:
    rows = []
    for name in FILES:
        with gzip.open(HERE / name, "rt") as fh:
            rows += [json.loads(line) for line in fh]
    # exactness: at the current margin the replay gives the recorded colour verdicts
    mism = [(r["split"], r["family"], r["seed"], t["key"]) for r in rows for t in r["tested"]
            if "concept_colour_met" in t and colour_met(t, 0.94) != bool(t["concept_colour_met"])]  # fmt: skip
    print(f"{len(rows)} rows; replay mismatches at 0.94: {len(mism)} {mism[:5]}")
    print(
        "| colour_min_auroc | learned cells flagged | colour casts flagged | clean models alarmed | other-group flags |"
    )
    print("|---|---|---|---|---|")
    for value, gain_margin in [(0.94, None)] + [(v, PASTE_GAIN_MARGIN) for v in VALUES]:
        flagged = casts = clean = other = 0
        learned = [r for r in rows if r["family"] != "none" and r["learned"]]
        for r in rows:
            flags = [t for t in r["tested"] if t["suspicious"] or colour_met(t, value, gain_margin)]
            if r["family"] == "none":
                clean += bool(flags)
                continue
            hit = [t for t in flags if t["class"] == r["target"] and t["precision"] >= PRECISION]
            other += len([t for t in flags if t not in hit])
            if r["learned"] and hit:
                flagged += 1
                casts += r["family"] == "colour_cast"
        n_casts = len([r for r in learned if r["family"] == "colour_cast"])
        print(f"| {value}{'' if gain_margin is None else ' + gain margin'} | {flagged} of {len(learned)} | {casts} of {n_casts} | {clean} of "
              f"{len([r for r in rows if r['family'] == 'none'])} | {other} |")  # fmt: skip


if __name__ == "__main__":
    main()
