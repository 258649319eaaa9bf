"""Replay of concept_score_weight_protocol_2026-12-05.md: hit@1 per concepts.score_weight from stored rows.

Usage::

    python benchmarks/results/concept_score_weight_2026-12-05.py ROWS.jsonl[.gz] ...
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

WEIGHTS = (1.0, 0.5, 0.25, 0.1, 0.05)


def rows(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        opener = gzip.open if p.endswith(".gz") else open
        with opener(Path(p), "rt") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


def top_class(row: dict[str, Any], w: float) -> int | None:
    """Class of the top finding with unflagged concept-only scores multiplied by ``w``."""
    found: dict[str, tuple[float, int]] = {}
    for f in row.get("tested") or []:
        scale = w if f["space"] == "concept" and not f["suspicious"] else 1.0
        found[f["key"]] = (f["score"] * scale, int(f["class"]))
    for f in row.get("top") or []:
        if f["key"] not in found:
            concept = "/concept/" in f["key"]
            scale = w if concept and not f["suspicious"] else 1.0
            found[f["key"]] = (f["score"] * scale, int(f["key"].split("/")[0]))
    if not found:
        return None
    return max(found.values())[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("rows", nargs="+")
    args = ap.parse_args()
    table: dict[tuple[str, str], dict[float, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in rows(args.rows):
        if r["family"] == "none" or not r.get("learned"):
            continue
        group = (r["split"], "p>=0.1" if r["fraction"] >= 0.1 else "p=0.05")
        for w in WEIGHTS:
            table[group][w].append(int(top_class(r, w) == r["target"]))
    print("| split | p | cells | " + " | ".join(f"w={w:g}" for w in WEIGHTS) + " |")
    print("|---|---|---|" + "---|" * len(WEIGHTS))
    for (split, p), by_w in sorted(table.items()):
        n = len(by_w[1.0])
        print(f"| {split} | {p} | {n} | " + " | ".join(str(sum(by_w[w])) for w in WEIGHTS) + " |")


if __name__ == "__main__":
    main()
