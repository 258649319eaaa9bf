"""The rule fixed before the tuning run (docs/detection.md), applied to the two tuning-split results files.

python benchmarks/results/appearance_trim_rule_2026-12-04.py
"""

import gzip
import json
from pathlib import Path

HERE = Path(__file__).parent


def rows(name: str) -> dict[tuple, dict]:
    text = gzip.decompress((HERE / name).read_bytes()).decode()
    out = {}
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            out[(r["dataset"], r["family"], r["fraction"], r["target"], r["seed"])] = r
    return out


a = rows("detection_heldout_tuning_trim0_2026-12-04.jsonl.gz")
b = rows("detection_heldout_tuning_trim0.1_2026-12-04.jsonl.gz")
keys = sorted(set(a) & set(b))
print("paired cells", len(keys), "of", len(a), len(b))


def stats(d: dict) -> dict:
    learned = [d[k] for k in keys if k[1] != "none" and d[k]["learned"] and k[2] >= 0.1]
    clean = [d[k] for k in keys if k[1] == "none"]
    poisoned = [d[k] for k in keys if k[1] != "none"]
    return {
        "recall": sum(r["flagged"] for r in learned) / max(1, len(learned)),
        "flagged": sum(r["flagged"] for r in learned),
        "n_learned": len(learned),
        "hit1": sum(r.get("hit1", False) for r in learned) / max(1, len(learned)),
        "clean_fa": sum(r["false_alarm"] for r in clean),
        "n_clean": len(clean),
        "other_alarms": sum(len(r["other_alarms"]) for r in poisoned),
    }


sa, sb = stats(a), stats(b)
print("trim 0  ", sa)
print("trim 0.1", sb)
ok = (
    sb["recall"] > sa["recall"]
    and sb["clean_fa"] <= sa["clean_fa"]
    and sb["other_alarms"] <= sa["other_alarms"] + 1
)
print("rule ->", "appearance_trim 0.1" if ok else "keep 0")
for k in keys:
    if a[k]["flagged"] != b[k]["flagged"] or a[k]["other_alarms"] != b[k]["other_alarms"]:
        print(k, "learned" if a[k]["learned"] else "not learned", a[k]["flagged"], "->", b[k]["flagged"],
              a[k]["other_alarms"], "->", b[k]["other_alarms"])  # fmt: skip
