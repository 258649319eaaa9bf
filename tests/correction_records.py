"""A whole :class:`~spray.correct.record.CorrectionRecord` built in memory, for tests of what the report and
the command line say about it (no model, no data, no correction run)."""

from __future__ import annotations

from typing import Any

from spray.correct.cav import Separation
from spray.correct.evaluate import CleanChanges, Evaluation, ModelScores
from spray.correct.groups import FlagSelection
from spray.correct.reaudit import Reaudit
from spray.correct.record import CorrectionRecord, DirectionSummary, GroupSummary
from spray.correct.source import FindingMatch


def scores(clean: float = 0.829, flip: float = 0.6, share: float = 0.4) -> ModelScores:
    """One model's measurements (accuracy, paste flip rate, relevance share; the rest fixed)."""
    return ModelScores(clean, 0.5, flip, 0.05, share, 0.1, 0.2, 0.6, class_accuracy=0.8)


def finding(suspicious: bool, key: str = "6/k3/c2") -> FindingMatch:
    """A matched finding of rank 1."""
    return FindingMatch(key, 1, 2.5, suspicious, 0.9, 0.6, 40)


def reaudit(before: bool, after: bool, doubts: list[str] | None = None) -> Reaudit:
    """A re-audit: the source run flagged the finding (``before``), the re-audit does (``after``)."""
    return Reaudit("r" * 40, "reaudit/latest", finding(before), finding(after), after, [], doubts or [])


def record(
    method: str = "rrclarc",
    before: ModelScores | None = None,
    after: ModelScores | None = None,
    rea: Reaudit | None = None,
    parameters: dict[str, Any] | None = None,
    **extra: Any,
) -> CorrectionRecord:
    """A record of ``method`` at layer ``blocks.11`` (``extra``: subspace, footprint, training ...)."""
    b, a = before or scores(), after or scores(flip=0.05, share=0.05)
    n = 200
    changes = CleanChanges(n, 0, max(0, round((b.clean_accuracy - a.clean_accuracy) * n)))
    evaluation = Evaluation(b, a, "held-out 20 %", n, 100, 32, 32, "stamp", [0, 0, 16, 16], 256, changes)
    params = {"rr_lambda": 1000.0, "rr_directions": 1, "rr_region_weight": 30.0, "lr": 0.001, "epochs": 3}
    return CorrectionRecord(
        correction_id="c" * 64,
        method=method,
        dataset="demo",
        created_at="2026-12-06T00:00:00Z",
        spray_version="0",
        correction_version=16,
        source_run_id="s" * 40,
        source_run_dir="runs/latest",
        flags=FlagSelection("flags.sqlite", "demo", "unlearn", ["6/k3/c2"], ["a", "b"], "d" * 64),
        group=GroupSummary(6, "shirt", 40, 30, 10, 30, 10, {}, []),
        direction=DirectionSummary(
            "blocks.11", "mean", 192, Separation(0.99, 0.95, 30, 30, 1.0, 0.0), {"mean": 0.99}
        ),
        parameters={**params, **(parameters or {})},
        evaluation=evaluation,
        reaudit=rea,
        **extra,
    )
