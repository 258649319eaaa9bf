"""Replay of ``concepts.max_typicality`` on the development rows (protocol: concept_typicality_protocol_2026-12-05.md).

Run from the repository root, with the development rows the protocol names (``--concepts on``, the
signals ``concept_typicality``, ``concept_hot_met``, ``concept_colour_met`` and ``concept_flag_eligible``
kept per concept-tested candidate)::

    PYTHONPATH=. python benchmarks/results/concept_typicality_2026-12-05.py \
        --tuning tuning_0.jsonl tuning_1.jsonl --moving moving_0.jsonl ... moving_check2_1.jsonl

A concept-only candidate is flagged under threshold ``T`` when it may be flagged at all and its colour
test met the rule, or its hot-pixel test met it with a typicality of at most ``T``. Pixel findings keep
their recorded flags. Prints, per ``T``: clean models with any flag, tuning cells with a false concept-only
flag, development moving cells (learned) with their planted group flagged by any finding, and the choice
the protocol's rule makes.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

from benchmarks.detection_heldout import FLAG_PRECISION

THRESHOLDS: tuple[float | None, ...] = (None, 2.0, 1.5, 1.25, 1.0, 0.75)
MAX_FALSE_TUNING = 2


def read(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of the benchmark's JSONL files (gzipped or not)."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def concept_flag(t: dict[str, Any], limit: float | None) -> bool:
    """The flag of a concept-only candidate under ``concepts.max_typicality = limit``."""
    if not t.get("concept_flag_eligible"):
        return False
    hot = bool(t.get("concept_hot_met")) and (limit is None or t.get("concept_typicality", 0.0) <= limit)
    return hot or bool(t.get("concept_colour_met"))


def flags(row: dict[str, Any], limit: float | None) -> list[dict[str, Any]]:
    """The row's flagged candidates under ``limit`` (pixel and both-space ones as recorded)."""
    return [
        t
        for t in row.get("tested", [])
        if (concept_flag(t, limit) if t.get("space") == "concept" else t["suspicious"])
    ]


def true_flag(row: dict[str, Any], t: dict[str, Any]) -> bool:
    return row["family"] != "none" and t["class"] == row["target"] and t["precision"] >= FLAG_PRECISION


def count(tuning: list[dict[str, Any]], moving: list[dict[str, Any]], limit: float | None) -> dict[str, int]:
    """Clean models flagged, tuning cells with a false concept flag, learned moving cells flagged."""
    clean = [r for r in tuning + moving if r["family"] == "none"]
    false_tuning = [
        r
        for r in tuning
        if r["family"] != "none"
        and any(t.get("space") == "concept" and not true_flag(r, t) for t in flags(r, limit))
    ]
    learned = [r for r in moving if r["family"] != "none" and r["learned"]]
    return {
        "clean_flagged": sum(bool(flags(r, limit)) for r in clean),
        "clean": len(clean),
        "false_tuning": len(false_tuning),
        "tuning": sum(r["family"] != "none" for r in tuning),
        "moving_flagged": sum(any(true_flag(r, t) for t in flags(r, limit)) for r in learned),
        "moving": len(learned),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tuning", nargs="+", type=Path, required=True)
    ap.add_argument("--moving", nargs="+", type=Path, required=True)
    args = ap.parse_args()
    tuning, moving = read(args.tuning), read(args.moving)
    best = -1
    chosen: float | str | None = "nothing changes (no threshold qualifies)"
    print(
        "| T | clean models flagged | tuning cells with a false concept flag | learned moving cells flagged |"
    )
    print("|---|---|---|---|")
    for limit in THRESHOLDS:
        c = count(tuning, moving, limit)
        print(
            f"| {'none' if limit is None else limit} | {c['clean_flagged']} of {c['clean']} | "
            f"{c['false_tuning']} of {c['tuning']} | {c['moving_flagged']} of {c['moving']} |"
        )
        qualifies = c["clean_flagged"] == 0 and c["false_tuning"] <= MAX_FALSE_TUNING
        # ties go to the larger T: THRESHOLDS run from the largest down, so only a strict gain replaces
        if qualifies and c["moving_flagged"] > best:
            best, chosen = c["moving_flagged"], limit
    print(f"\nchosen: {chosen if chosen is not None else 'none (no typicality needed)'}")


if __name__ == "__main__":
    main()
