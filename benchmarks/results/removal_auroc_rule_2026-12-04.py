"""The removal-AUROC rule fixed before the replay (docs/detection.md, "The removal AUROC at the new margin"),
replayed on the version-10 tuning rows with the flag curve's verdict replay.

PYTHONPATH=. python benchmarks/results/removal_auroc_rule_2026-12-04.py
"""

import gzip
import json
from pathlib import Path

from benchmarks.flag_curve import Point, evaluate

HERE = Path(__file__).parent
ROWS = "detection_heldout_tuning_removal_margin0.5_2026-12-04.jsonl.gz"
GRID = (0.98, 0.97, 0.96, 0.95, 0.94)
MAX_OTHER_ALARM_RATE = 0.02

rows = [
    json.loads(li) for li in gzip.decompress((HERE / ROWS).read_bytes()).decode().splitlines() if li.strip()
]


def at(auroc: float) -> Point:
    # Version 10's other thresholds: appearance 0.5, relative 0.65, two routes 0.55, removal margin 0.5.
    return evaluate(rows, 0.5, 0.65, removal_auroc=auroc, two_routes=0.55, removal_margin=0.5)


def safe(p: Point) -> bool:
    return p.clean_alarms == 0 and p.other_alarm_rate <= MAX_OTHER_ALARM_RATE


points = {a: at(a) for a in (*GRID, 0.93)}
for a, p in points.items():
    print(f"removal AUROC {a:.2f}: recall p>=0.1 {p.recall:.3f}, p=0.05 {p.recall_rare:.3f}, clean alarms "
          f"{p.clean_alarms}/{p.clean_models}, other alarms {p.other_alarm_rate:.1%}, seed agreement {p.agreement:.2f}, "
          f"safe {safe(p)}")  # fmt: skip
lower = dict(zip(GRID, (*GRID[1:], 0.93), strict=True))
ok = [a for a in GRID if safe(points[a]) and safe(points[lower[a]])]
best = max(ok, key=lambda a: (points[a].recall, points[a].recall_rare, a)) if ok else 0.98
print("rule -> removal_min_auroc", best)
