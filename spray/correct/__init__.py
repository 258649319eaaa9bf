"""From flag to fix: correct a flagged shortcut and prove it is gone (``spray correct``, docs/correction.md).

The flagged samples of one class are the artifact group, the class's other samples the reference
(:mod:`~spray.correct.groups`); a pattern CAV at a layer is the artifact direction
(:mod:`~spray.correct.cav`); the model is corrected by P-ClArC (:mod:`~spray.correct.pclarc`),
RR-ClArC (:mod:`~spray.correct.rrclarc`) or the retraining baseline (:mod:`~spray.correct.retrain`);
both models are measured (:mod:`~spray.correct.evaluate`) and the corrected one re-audited
(:mod:`~spray.correct.reaudit`); the run is published once per id (:mod:`~spray.correct.run`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spray.correct.record import CorrectionRecord
    from spray.correct.run import CorrectionOutcome, correct

__all__ = ["CorrectionOutcome", "CorrectionRecord", "correct"]


def __getattr__(name: str) -> Any:
    # imported on use: the command line answers --help and config errors without importing torch
    if name in ("correct", "CorrectionOutcome"):
        from spray.correct import run

        return getattr(run, name)
    if name == "CorrectionRecord":
        from spray.correct.record import CorrectionRecord

        return CorrectionRecord
    raise AttributeError(name)
