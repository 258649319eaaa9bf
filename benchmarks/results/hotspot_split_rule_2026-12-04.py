"""The rule fixed before the tuning runs (docs/detection.md, "The hot-spot split on log shares"), applied to two
tuning-split results files: by default ``share`` against ``log_share`` (floor 0.05, ratio ≥ 11.5); the
same five conditions decided ``hotspot_distinct`` 45 against ``log_share``.

python benchmarks/results/hotspot_split_rule_2026-12-04.py
python benchmarks/results/hotspot_split_rule_2026-12-04.py \
    detection_heldout_tuning_hotspot_log_share_2026-12-04.jsonl.gz detection_heldout_tuning_hotspot_distinct45_2026-12-04.jsonl.gz
"""

import gzip
import json
import sys
from pathlib import Path
from statistics import mean

HERE = Path(__file__).parent


def rows(name: str) -> dict[tuple, dict]:
    text = gzip.decompress((HERE / name).read_bytes()).decode()
    out = {}
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            out[(r["dataset"], r["family"], r["fraction"], r["target"], r["seed"])] = r
    return out


names = sys.argv[1:3] or [
    "detection_heldout_tuning_hotspot_share_2026-12-04.jsonl.gz",
    "detection_heldout_tuning_hotspot_log_share_2026-12-04.jsonl.gz",
]
a, b = rows(names[0]), rows(names[1])
keys = sorted(set(a) & set(b))
print("paired cells", len(keys), "of", len(a), len(b))


def stats(d: dict) -> dict:
    learned = [d[k] for k in keys if k[1] != "none" and d[k]["learned"]]
    rare = [r for r in learned if r["fraction"] == 0.05]
    common = [r for r in learned if r["fraction"] >= 0.1]
    clean = [d[k] for k in keys if k[1] == "none"]
    poisoned = [d[k] for k in keys if k[1] != "none"]
    return {
        "p0.05_hit1": sum(r["hit1"] for r in rare) / max(1, len(rare)),
        "p0.05_auroc": mean(r["auroc"] for r in rare),
        "p0.05_flag_recall": sum(r["flagged"] for r in rare) / max(1, len(rare)),
        "n_p0.05": len(rare),
        "p>=0.1_flag_recall": sum(r["flagged"] for r in common) / max(1, len(common)),
        "p>=0.1_hit1": sum(r["hit1"] for r in common) / max(1, len(common)),
        "n_p>=0.1": len(common),
        "clean_fa": sum(r["false_alarm"] for r in clean),
        "n_clean": len(clean),
        "other_alarms": sum(len(r["other_alarms"]) for r in poisoned),
    }


sa, sb = stats(a), stats(b)
print("before", sa)
print("after ", sb)
ok = (
    sb["p0.05_hit1"] > sa["p0.05_hit1"]
    and sb["p0.05_auroc"] > sa["p0.05_auroc"]
    and sb["p>=0.1_flag_recall"] >= sa["p>=0.1_flag_recall"]
    and sb["clean_fa"] <= sa["clean_fa"]
    and sb["other_alarms"] <= sa["other_alarms"] + 1
)
print("rule ->", f"take {names[1]}" if ok else f"keep {names[0]}")
for k in keys:
    ra, rb = a[k], b[k]
    if (ra["flagged"], ra.get("hit1"), ra["other_alarms"]) != (
        rb["flagged"],
        rb.get("hit1"),
        rb["other_alarms"],
    ):
        print(k, "learned" if ra["learned"] else "not learned", "flag", ra["flagged"], "->", rb["flagged"],
              "hit1", ra.get("hit1"), "->", rb.get("hit1"), "alarms", ra["other_alarms"], "->", rb["other_alarms"])  # fmt: skip
