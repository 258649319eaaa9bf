"""The flag's operating curve on the held-out protocol's tuning split, and the rule that picks its default.

The ``suspicious`` flag needs alike pixels (``scoring.flag_min_appearance``, and relative to the class's
own typical appearance ``scoring.flag_min_relative_appearance``) and one intervention that clears its
margins against the same-class null. The appearance thresholds also gate which candidates are run through
the model at all, so a run with the default thresholds says nothing about lower ones. The curve therefore
comes from a tuning run with the gates open, in which every appraised candidate gets the interventions::

    export PYTHONPATH=$PWD OMP_NUM_THREADS=1
    G="--set scoring.flag_min_appearance=0 --set scoring.flag_min_relative_appearance=0 \\
       --set scoring.intervention_candidates=8"
    for ds in fashion digits; do
      python benchmarks/detection_heldout.py --split tuning --datasets $ds --seeds 0 1 2 3 4 5 6 7 8 9 $G \\
          --out curve_$ds.jsonl &
    done; wait
    python benchmarks/flag_curve.py curve_fashion.jsonl curve_digits.jsonl
    python benchmarks/flag_curve.py benchmarks/results/flag_curve_tuning_open_2026-12-03.jsonl.gz \
        --removal-margin 1.0 --removal-aurocs 0.8 0.9 0.95 0.98   # the rows of 3 Dec 2026, the extended grid
    python benchmarks/flag_curve.py benchmarks/results/flag_curve_tuning_open_2026-12-03.jsonl.gz \
        --removal-margin 1.0 --appearances 0.5 --relatives 0.65 --removal-aurocs 0.98 \
        --two-routes 0.3 0.35 0.4 0.45 0.5 0.55 0.6 0.65      # the second rule's grid

The curves of 3-4 Dec 2026 were drawn at ``removal_margin`` 1.0 (the default until analysis version 10):
replay them with ``--removal-margin 1.0``.

For every pair of thresholds (appearance, relative appearance) this replays the verdict offline: per
class, the candidates whose appearance reaches both thresholds are the eligible ones, the first
``intervention_candidates`` of them (leading map score first, hot-spot groups last, as the audit orders
them) are judged with spray's own :func:`~spray.analysis.scoring.verdict.judge` and their recorded
intervention outcomes. A candidate without recorded interventions (beyond the open run's cap) cannot be
flagged. A flag *hits* when it is in the poisoned class and at least half its members are planted.

**The rule, fixed before the curve run's results were read** (3 Dec 2026): among the threshold pairs
at which the tuning split raises no false alarm on a clean model and at most 2 % of the poisoned models
raise another alarm, *and* so does the pair one relative-appearance step (0.05) lower (a margin for
data it was not tuned on), take the one with the highest flag recall on learned shortcuts at p ≥ 0.1;
ties go to the higher recall at p = 0.05, then to the higher relative-appearance threshold, then to the
higher appearance threshold.

**The second rule, for ``flag_min_relative_appearance_two_routes``, fixed before its grid was evaluated**
(3 Dec 2026, third session): the tuning split's missed planted groups were looked at first (many cleared
both the paste and the removal test with removal AUROC 1.0 at relative appearance 0.56-0.64, while every
natural group clearing both stayed at or below 0.49). The grid adds ``--two-routes`` values (0.30 to 0.65)
at the first rule's choice (appearance 0.5, relative 0.65, removal AUROC 0.98); the same rule picks among
them, the margin step lowering both relative thresholds, ties to the higher (stricter) two-route value.

**Development rows of the moving families** (5 Dec 2026, protocol
``benchmarks/results/two_routes_recheck_protocol_2026-12-05.md``): rows of the ``moving`` split may be given
beside the tuning split's and are pooled with them (flag recall, clean models, other alarms), since the
tuning split holds no shortcut that moves; rows of any held-out split are refused.

The curve run of 3 Dec 2026 covers the tuning split's p = 0.1 and 0.2 cells (3 seeds) and its 20 clean
models in full; of its p = 0.05 cells only those run before the session's time made the lead narrow the
run (decided before any result was read) are in it.
"""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from spray.analysis.scoring import HOTSPOT_K
from spray.analysis.scoring.intervention import InterventionTest, Removal
from spray.analysis.scoring.verdict import judge
from spray.config import ScoringConfig

#: A flagged candidate counts for the planted artifact when at least this share of its members is planted.
FLAG_PRECISION = 0.5
APPEARANCES = (0.2, 0.3, 0.4, 0.5)
RELATIVES = tuple(round(0.05 * i, 2) for i in range(17))  # 0.0 .. 0.8
REMOVAL_AUROCS = (0.8, 0.9, 0.95, 0.98)
#: The splits a default may be chosen on: the tuning split of the fixed artifacts and the development split
#: of the moving families (``moving``, which the tuning split has none of); every other split is held out.
DEVELOPMENT_SPLITS = ("tuning", "moving")
#: The rule's false-alarm budget on the tuning split.
MAX_CLEAN_ALARMS = 0
MAX_OTHER_ALARM_RATE = 0.02
STEP = 0.05


@dataclass(frozen=True)
class Point:
    """The tuning split's outcome at one pair of thresholds."""

    appearance: float
    relative: float
    removal_auroc: float
    two_routes: float  # flag_min_relative_appearance_two_routes
    recall: float  # learned, p >= 0.1
    recall_rare: float  # learned, p = 0.05
    clean_alarms: int
    clean_models: int
    other_alarm_rate: float  # poisoned models with a flag that is not a hit
    agreement: float  # cells (all but the seed) whose seeds agree on the flag, p >= 0.1


def _test(sig: dict[str, Any]) -> InterventionTest | None:
    """The recorded interventions of a candidate as spray's record (None when none ran)."""
    if sig.get("flip_rate") is None and sig.get("removal_drop") is None:
        return None
    removal = None
    if sig.get("removal_drop") is not None:
        removal = Removal(sig["removal_drop"], sig["removal_null"], sig["removal_p"], sig["removal_auroc"],
                          sig.get("removal_spread", 0.0))  # fmt: skip
    return InterventionTest(
        appearance=sig["appearance"], aligned=bool(sig.get("aligned", 0.0)),
        appearance_null=sig.get("appearance_null", 0.0), flip_rate=sig.get("flip_rate"),
        flip_null=sig.get("flip_null"), flip_p=sig.get("flip_p", 1.0), removal=removal,
        paste_gain=sig.get("paste_gain"), paste_gain_null=sig.get("paste_gain_null"),
        paste_gain_p=sig.get("paste_gain_p", 1.0),
    )  # fmt: skip


def _k(cand: dict[str, Any]) -> int:
    """The candidate's k, from its key ``"<class>/k<k>/c<id>"``."""
    return int(cand["key"].split("/")[1][1:])


def flags(row: dict[str, Any], config: ScoringConfig) -> list[dict[str, Any]]:
    """The candidates of one open-gate row that the audit would flag under ``config``'s thresholds."""
    by_class: dict[int, list[dict[str, Any]]] = {}
    for cand in row["tested"]:
        by_class.setdefault(cand["class"], []).append(cand)
    out = []
    for cands in by_class.values():
        cands.sort(key=lambda c: (_k(c) == HOTSPOT_K, -c.get("map_score", 0.0)))
        run = 0
        for cand in cands:
            test = _test(cand)
            if test is None or run >= config.intervention_candidates:
                continue
            if cand["appearance"] < config.flag_min_appearance:
                continue
            if test.relative_appearance < config.gate_relative_appearance:
                continue
            run += 1
            shell = SimpleNamespace(map_score=cand.get("map_score", 0.0), signals=cand)
            if judge(shell, test, config, use_probe=True).suspicious:  # type: ignore[arg-type]
                out.append(cand)
    return out


def evaluate(
    rows: list[dict[str, Any]],
    appearance: float,
    relative: float,
    removal_auroc: float = 0.8,
    two_routes: float | None = None,
    removal_margin: float | None = None,
    gain_ratio: float | None = None,
) -> Point:
    """Flag recall, false alarms and seed agreement of the rows at one set of thresholds (``two_routes``
    None: the same relative threshold whatever the routes; ``removal_margin`` and ``gain_ratio`` None: the
    default)."""
    two_routes = relative if two_routes is None else two_routes
    given = {"removal_margin": removal_margin, "gain_ratio": gain_ratio}
    margin = {name: value for name, value in given.items() if value is not None}
    config = ScoringConfig(
        flag_min_appearance=appearance, flag_min_relative_appearance=relative, removal_min_auroc=removal_auroc,
        flag_min_relative_appearance_two_routes=two_routes, **margin,
    )  # fmt: skip
    hits: dict[int, bool] = {}
    other: dict[int, bool] = {}
    for i, row in enumerate(rows):
        flagged = flags(row, config)
        good = [f for f in flagged if f["class"] == row["target"] and f["precision"] >= FLAG_PRECISION]
        hits[i] = bool(good) and row["family"] != "none"
        other[i] = len(flagged) > len(good) or (row["family"] == "none" and bool(flagged))
    poisoned = [i for i, r in enumerate(rows) if r["family"] != "none"]
    learned = [i for i in poisoned if rows[i]["learned"]]
    big = [i for i in learned if rows[i]["fraction"] >= 0.1]
    rare = [i for i in learned if rows[i]["fraction"] < 0.1]
    clean = [i for i, r in enumerate(rows) if r["family"] == "none"]
    groups: dict[tuple[Any, ...], list[bool]] = {}
    for i in poisoned:
        r = rows[i]
        if r["fraction"] >= 0.1:
            groups.setdefault((r["dataset"], r["family"], r["fraction"]), []).append(hits[i])
    full = [v for v in groups.values() if len(v) >= 2]
    return Point(
        appearance, relative, removal_auroc, two_routes,
        recall=float(np.mean([hits[i] for i in big])) if big else float("nan"),
        recall_rare=float(np.mean([hits[i] for i in rare])) if rare else float("nan"),
        clean_alarms=sum(other[i] for i in clean), clean_models=len(clean),
        other_alarm_rate=float(np.mean([other[i] for i in poisoned])) if poisoned else 0.0,
        agreement=float(np.mean([len(set(v)) == 1 for v in full])) if full else float("nan"),
    )  # fmt: skip


def _safe(point: Point) -> bool:
    return point.clean_alarms <= MAX_CLEAN_ALARMS and point.other_alarm_rate <= MAX_OTHER_ALARM_RATE


def choose(points: list[Point], among: list[Point] | None = None) -> Point | None:
    """The rule of the module docstring (None when no pair is safe): the choice is made from ``among``
    (default: every point), the margin neighbours looked up in ``points``."""
    at = {(p.appearance, p.relative, p.removal_auroc, p.two_routes): p for p in points}
    ok = []
    for p in points if among is None else among:
        below = at.get(
            (p.appearance, round(p.relative - STEP, 2), p.removal_auroc, round(p.two_routes - STEP, 2))
        )
        if _safe(p) and (below is None or _safe(below)):
            ok.append(p)
    if not ok:
        return None

    def rank(p: Point) -> tuple[float, ...]:
        recall, rare = (-1.0 if np.isnan(v) else v for v in (p.recall, p.recall_rare))
        return (recall, rare, p.relative, p.two_routes, p.appearance, p.removal_auroc)

    return max(ok, key=rank)


def choose_along(points: dict[float, Point], grid: tuple[float, ...]) -> float | None:
    """The rule for one threshold (docs/detection.md: the removal margin and the removal AUROC): ``grid``
    runs from the strictest value down, its last value only the margin neighbour of the one before; a value
    is safe (:func:`_safe`) with its next lower one, and the highest flag recall at p ≥ 0.1 wins, then at
    p = 0.05, then the stricter (higher) value. None when no value is safe."""
    ok = [v for v, below in pairwise(grid) if _safe(points[v]) and _safe(points[below])]
    return max(ok, key=lambda v: (points[v].recall, points[v].recall_rare, v)) if ok else None


def describe(point: Point) -> str:
    """One line of a one-threshold grid."""
    return (
        f"recall p>=0.1 {point.recall:.3f}, p=0.05 {point.recall_rare:.3f}, clean alarms {point.clean_alarms}/"
        f"{point.clean_models}, other alarms {point.other_alarm_rate:.1%}, seed agreement {point.agreement:.2f}, "
        f"safe {_safe(point)}"
    )


def table(points: list[Point], chosen: Point | None, default: tuple[float, float, float, float]) -> str:
    """Markdown: one row per threshold set, the chosen and the current default marked."""
    out = ["| appearance | relative | relative, two routes | removal AUROC | flag recall p ≥ 0.1 | flag recall p = 0.05 "
           "| clean alarms | other alarms | seed agreement | |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in points:
        mark = []
        if p == chosen:
            mark.append("**chosen**")
        if (p.appearance, p.relative, p.removal_auroc, p.two_routes) == default:
            mark.append("current default")
        out.append(
            f"| {p.appearance:.2f} | {p.relative:.2f} | {p.two_routes:.2f} | {p.removal_auroc:.2f} | {p.recall:.2f} "
            f"| {p.recall_rare:.2f} | "
            f"{p.clean_alarms} of {p.clean_models} | {p.other_alarm_rate:.1%} | {p.agreement:.2f} | {', '.join(mark)} |"
        )
    return "\n".join(out)


def _read(path: Path) -> str:
    """A results file, gzipped or not."""
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", type=Path, nargs="+", help="results files of an open-gate tuning run")
    ap.add_argument("--all", action="store_true", help="every threshold set, not only the two curves")
    ap.add_argument(
        "--removal-aurocs", type=float, nargs="+", default=[0.8],
        help=f"removal_min_auroc values of the grid (the first curve: 0.8 alone; extended: {REMOVAL_AUROCS})",
    )  # fmt: skip
    ap.add_argument(
        "--two-routes", type=float, nargs="+", default=None,
        help="flag_min_relative_appearance_two_routes values (default: the relative threshold itself); "
        "values above a set's relative threshold are skipped",
    )  # fmt: skip
    ap.add_argument("--appearances", type=float, nargs="+", default=None, help="flag_min_appearance values")
    ap.add_argument(
        "--relatives", type=float, nargs="+", default=None, help="flag_min_relative_appearance values"
    )
    ap.add_argument(
        "--removal-margin", type=float, default=None,
        help="removal_margin of the replay (default: the current default; the rows of 3-4 Dec 2026 ran at 1.0)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    rows = [json.loads(li) for p in args.rows for li in _read(p).splitlines() if li.strip()]
    held_out = sorted({r.get("split", "tuning") for r in rows} - set(DEVELOPMENT_SPLITS))
    if held_out:
        raise SystemExit(
            f"flag_curve: rows of the held-out split(s) {', '.join(held_out)}; defaults are chosen on the "
            f"development splits only ({', '.join(DEVELOPMENT_SPLITS)})"
        )
    appearances = args.appearances or APPEARANCES
    relatives = args.relatives or RELATIVES
    # The margin neighbours (both relative thresholds one step lower) are evaluated even outside the grid.
    wanted = {
        (a, r, ra, r if t is None else t)
        for a in appearances
        for r in relatives
        for ra in args.removal_aurocs
        for t in (args.two_routes or [None])
        if t is None or t <= r
    }
    near = {(a, round(r - STEP, 2), ra, round(t - STEP, 2)) for a, r, ra, t in wanted if r - STEP >= -1e-9}
    points = [evaluate(rows, *g, removal_margin=args.removal_margin) for g in sorted(wanted | near)]
    chosen = choose(
        points, [p for p in points if (p.appearance, p.relative, p.removal_auroc, p.two_routes) in wanted]
    )
    now = ScoringConfig()
    default = (
        now.flag_min_appearance, now.flag_min_relative_appearance, now.removal_min_auroc,
        now.flag_min_relative_appearance_two_routes,
    )  # fmt: skip
    curves = {(default[0], default[2])} | ({(chosen.appearance, chosen.removal_auroc)} if chosen else set())
    shown = points if args.all else [p for p in points if (p.appearance, p.removal_auroc) in curves]
    if args.two_routes and not args.all:
        # The curve along the two-route threshold at the chosen relative one, and the first rule's curve.
        at = chosen.relative if chosen else default[1]
        shown = [p for p in shown if p.two_routes == p.relative or p.relative == at]
    n_big = sum(r["family"] != "none" and r["learned"] and r["fraction"] >= 0.1 for r in rows)
    print(f"{len(rows)} rows; learned p ≥ 0.1: {n_big}\n")
    print(table(shown, chosen, default))
    if chosen is None:
        print("\nNo threshold set meets the false-alarm budget.")
    else:
        print(
            f"\nChosen: flag_min_appearance {chosen.appearance}, flag_min_relative_appearance {chosen.relative}, "
            f"removal_min_auroc {chosen.removal_auroc}, flag_min_relative_appearance_two_routes {chosen.two_routes}"
        )


if __name__ == "__main__":
    main()
