"""The removal-margin rule fixed before the replay (docs/detection.md, "The removal margin"), replayed on the
version-9 tuning rows with the flag curve's verdict replay.

PYTHONPATH=. python benchmarks/results/removal_margin_rule_2026-12-04.py
"""

import json
from pathlib import Path

from benchmarks.flag_curve import _read, choose_along, describe, evaluate

ROWS = Path(__file__).parent / "detection_heldout_tuning_hotspot_distinct45_2026-12-04.jsonl.gz"
GRID = (1.0, 0.75, 0.5, 0.25, 0.0)  # 0.0: only the margin neighbour of 0.25

rows = [json.loads(li) for li in _read(ROWS).splitlines() if li.strip()]
# The current defaults of the other thresholds (appearance 0.5, relative 0.65, two routes 0.55, AUROC 0.98).
points = {m: evaluate(rows, 0.5, 0.65, removal_auroc=0.98, two_routes=0.55, removal_margin=m) for m in GRID}
for m, p in points.items():
    print(f"margin {m:.2f}: {describe(p)}")
best = choose_along(points, GRID)
print("rule -> removal_margin", 1.0 if best is None else best)
