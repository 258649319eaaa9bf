"""The removal-margin rule fixed before the replay (docs/detection.md, "The removal margin"), replayed on the
version-9 tuning rows with the flag curve's verdict replay.

PYTHONPATH=. python benchmarks/results/removal_margin_rule_2026-12-04.py
"""

import gzip
import json
from pathlib import Path

from benchmarks.flag_curve import Point, evaluate

HERE = Path(__file__).parent
ROWS = "detection_heldout_tuning_hotspot_distinct45_2026-12-04.jsonl.gz"
GRID = (1.0, 0.75, 0.5, 0.25)
MAX_OTHER_ALARM_RATE = 0.02

rows = [
    json.loads(li) for li in gzip.decompress((HERE / ROWS).read_bytes()).decode().splitlines() if li.strip()
]


def at(margin: float) -> Point:
    # The current defaults of the other thresholds (appearance 0.5, relative 0.65, two routes 0.55, AUROC 0.98).
    return evaluate(rows, 0.5, 0.65, removal_auroc=0.98, two_routes=0.55, removal_margin=margin)


def safe(p: Point) -> bool:
    return p.clean_alarms == 0 and p.other_alarm_rate <= MAX_OTHER_ALARM_RATE


points = {m: at(m) for m in (*GRID, 0.0)}
for m, p in points.items():
    print(f"margin {m:.2f}: recall p>=0.1 {p.recall:.3f}, p=0.05 {p.recall_rare:.3f}, clean alarms "
          f"{p.clean_alarms}/{p.clean_models}, other alarms {p.other_alarm_rate:.1%}, seed agreement {p.agreement:.2f}, "
          f"safe {safe(p)}")  # fmt: skip
lower = dict(zip(GRID, (*GRID[1:], 0.0), strict=True))
ok = [m for m in GRID if safe(points[m]) and safe(points[lower[m]])]
best = max(ok, key=lambda m: (points[m].recall, points[m].recall_rare, m)) if ok else 1.0
print("rule -> removal_margin", best)
