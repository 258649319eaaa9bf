"""The removal-AUROC rule fixed before the replay (docs/detection.md, "The removal AUROC at the new margin"),
replayed on the version-10 tuning rows with the flag curve's verdict replay.

PYTHONPATH=. python benchmarks/results/removal_auroc_rule_2026-12-04.py
"""

import json
from pathlib import Path

from benchmarks.flag_curve import _read, choose_along, describe, evaluate

ROWS = Path(__file__).parent / "detection_heldout_tuning_removal_margin0.5_2026-12-04.jsonl.gz"
GRID = (0.98, 0.97, 0.96, 0.95, 0.94, 0.93)  # 0.93: only the margin neighbour of 0.94

rows = [json.loads(li) for li in _read(ROWS).splitlines() if li.strip()]
# Version 10's other thresholds: appearance 0.5, relative 0.65, two routes 0.55, removal margin 0.5.
points = {a: evaluate(rows, 0.5, 0.65, removal_auroc=a, two_routes=0.55, removal_margin=0.5) for a in GRID}
for a, p in points.items():
    print(f"removal AUROC {a:.2f}: {describe(p)}")
best = choose_along(points, GRID)
print("rule -> removal_min_auroc", 0.98 if best is None else best)
