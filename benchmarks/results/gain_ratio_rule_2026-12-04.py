"""The paste-gain-ratio rule fixed before the replay (docs/detection.md, "The paste gain ratio"), replayed on
the version-11 tuning rows with the flag curve's verdict replay.

PYTHONPATH=. python benchmarks/results/gain_ratio_rule_2026-12-04.py
"""

import json
from pathlib import Path

from benchmarks.flag_curve import _read, choose_along, describe, evaluate

ROWS = Path(__file__).parent / "detection_heldout_tuning_removal_auroc0.94_2026-12-04.jsonl.gz"
GRID = (4.5, 4.0, 3.5, 3.0, 2.5)  # 2.5: only the margin neighbour of 3.0

rows = [json.loads(li) for li in _read(ROWS).splitlines() if li.strip()]
# Version 11's other thresholds: appearance 0.5, relative 0.65, two routes 0.55, removal margin 0.5, AUROC 0.94.
points = {
    g: evaluate(rows, 0.5, 0.65, removal_auroc=0.94, two_routes=0.55, removal_margin=0.5, gain_ratio=g)
    for g in GRID
}
for g, p in points.items():
    print(f"gain ratio {g:.1f}: {describe(p)}")
best = choose_along(points, GRID)
print("rule -> gain_ratio", 4.5 if best is None else best)
