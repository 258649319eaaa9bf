"""The correction record (``correction.json``): typed, written and read back as the same dataclasses.

A correction run's folder (``<runs_dir>/corrections/<UTC time>-<correction id 12>/``)::

    correction.json   this record: id, source run, flags, group, direction, subspace, parameters, training,
                      before/after evaluation, re-audit verdict, timings
    model.pt          the corrected model's state dict
    config.yaml       the audit config of the corrected model (model.factory rebuilds it)
    cav.npz           the artifact direction (vector, reference_mean), the region mask and, for
                      RR-ClArC, the penalised subspace (n, D)
    report.html       the before/after comparison as a page
    reaudit/          runs folder of the re-audit (one published run)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from spray.config.correction import CorrectionConfig
from spray.correct.cav import Separation
from spray.correct.evaluate import Evaluation, relative_drop
from spray.correct.footprint import FootprintSummary
from spray.correct.groups import FlagSelection
from spray.correct.lookalikes import LOOKALIKE_ADVICE
from spray.correct.reaudit import Reaudit
from spray.correct.subspace import SubspaceSummary
from spray.correct.training import TrainingLog
from spray.records import score_text
from spray.runs.atomic import atomic_write_bytes
from spray.runs.layout import CORRECTION_RECORD

#: Bump when a change alters what a correction computes (it is part of the correction id).
CORRECTION_VERSION = 18
#: The record's file name in a correction folder (the run layout owns it).
RECORD_NAME = CORRECTION_RECORD
#: A re-audit cluster overlapping the flagged samples this much (Jaccard) holds most of them together.
LINGER_JACCARD = 0.5
#: A corrected model whose stamp, pasted at the opposite place, still flips at least this share of what it
#: flipped in place before the correction (over the null) is warned of: the shortcut was removed at one place.
MOVED_KEPT_WARN = 0.5
#: The goals of issue 18 that the headline is checked against (docs/correction.md).
GOAL_FLIP_DROP = 0.9
#: A flip-rate drop below this, with the shortcut still acting and no re-audit verdict, is warned of.
LITTLE_EFFECT = 0.5
GOAL_RELEVANCE_DROP = 0.8
GOAL_ACCURACY_LOSS = 0.01
#: A relative rise of the paste flip rate or relevance share under this is unchanged, not "rose" (a share of
#: 40.33 % before and after was reported as risen, "up 0.0 %").
ROSE_BY = 0.01

#: A subspace holding less of the paste's effect than this leaves much of the artifact's effect unpenalised, so
#: the advice names correction.rr_directions (the CAV held 84 % on the benchmark's frame, where 1 was kept).
LOW_HELD_SHARE = 0.6

T = TypeVar("T")


@dataclass
class GroupSummary:
    """Sizes of the artifact group and the reference (see :class:`~spray.correct.groups.ArtifactGroup`)."""

    class_index: int
    class_name: str
    n_flagged: int
    n_fit_artifact: int
    n_held_artifact: int
    n_fit_reference: int
    n_held_reference: int
    other_class_flags: dict[str, int]
    missing_ids: list[str]


@dataclass
class DirectionSummary:
    """The artifact direction without its arrays (those are in ``cav.npz``)."""

    layer: str
    pooling: str
    dimension: int
    separation: Separation
    candidates: dict[str, float]


def change_words(drop: float | None) -> str:
    """A relative drop in words with its direction: ``"down 94.3 %"``, ``"up 20.0 %"`` (never "down
    -20 %"), ``"not measured"`` for None."""
    if drop is None:
        return "not measured"
    if round(100 * abs(drop), 1) == 0:  # "up 0.0 %" read as a rise
        return "unchanged (0.0 %)"
    return f"{'down' if drop >= 0 else 'up'} {100 * abs(drop):.1f} %"


def change_between(before: float, after: float) -> str:
    """A measure's change in words: :func:`change_words` of its relative drop, or, where it was 0 before (no
    relative drop), what it did from 0: "0 before and after: nothing to remove" (measured, not missing)."""
    drop = relative_drop(before, after)
    if drop is not None:
        return change_words(drop)
    if after <= 0:
        return "0 before and after: nothing to remove"
    return f"up from 0 to {100 * after:.1f} %"


@dataclass
class Verdict:
    """The headline numbers (relative drops are ``(before − after) / before``; None when before is 0).

    Attributes
    ----------
    flip_drop : float or None
        Relative drop of the paste flip rate.
    relevance_drop : float or None
        Relative drop of the relevance share on the artifact region.
    accuracy_change : float
        Clean accuracy after minus before (accuracy units; 0.01 is one point).
    finding_cleared : bool or None
        The source run flagged the finding and the re-audit does not (False: the re-audit flags it; None:
        no re-audit, or the finding was flagged neither before nor after, which the flag cannot judge).
    accuracy_interval : list of float or None
        ``[low, high]``, the 95 % interval of ``accuracy_change`` over the same images (None for records
        written before it was kept).
    """

    flip_drop: float | None
    relevance_drop: float | None
    accuracy_change: float
    finding_cleared: bool | None
    accuracy_interval: list[float] | None = None

    def accuracy_text(self) -> str:
        """``"-1.32 points (95 % interval -2.10 to -0.54)"``: the change with its interval, where kept."""
        text = f"{round(100 * self.accuracy_change, 2) + 0.0:+.2f} points"
        if self.accuracy_interval is None:
            return text
        low, high = self.accuracy_interval
        # rounded first, so that a bound a hair below 0 prints as +0.00, not -0.00
        low, high = (round(100 * x, 2) + 0.0 for x in (low, high))
        return f"{text} (95 % interval {low:+.2f} to {high:+.2f})"


@dataclass
class CorrectionRecord:
    """Everything about one correction run (``correction.json``)."""

    correction_id: str
    method: str
    dataset: str
    created_at: str
    spray_version: str
    correction_version: int
    source_run_id: str
    source_run_dir: str
    flags: FlagSelection
    group: GroupSummary
    direction: DirectionSummary
    parameters: dict[str, Any]
    evaluation: Evaluation
    reaudit: Reaudit | None
    training: TrainingLog | None = None
    trained_modules: list[str] = field(default_factory=list)
    subspace: SubspaceSummary | None = None
    footprint: FootprintSummary | None = None
    files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # warnings about the runs the flags were set on (other or unknown weights), made when the plan was checked
    flag_notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        """The headline numbers."""
        b, a, changes = self.evaluation.before, self.evaluation.after, self.evaluation.clean_changes
        return Verdict(
            flip_drop=relative_drop(b.flip_rate, a.flip_rate),
            relevance_drop=relative_drop(b.relevance_share, a.relevance_share),
            accuracy_change=a.clean_accuracy - b.clean_accuracy,
            finding_cleared=None if self.reaudit is None else self.reaudit.cleared,
            accuracy_interval=None if changes is None else list(changes.interval()),
        )

    def class_accuracy_warning(self) -> str:
        """Why the verdict may be hollow: the corrected model answers the artifact class for far fewer of its
        own clean images (``correction.max_class_accuracy_drop``); empty when not, or not measured."""
        b, a = self.evaluation.before.class_accuracy, self.evaluation.after.class_accuracy
        default = CorrectionConfig.model_fields["max_class_accuracy_drop"].default
        limit = float(self.parameters.get("max_class_accuracy_drop", default))
        if b is None or a is None or b - a <= limit:
            return ""
        name = self.group.class_name
        advice = {
            # the fine-tuning itself can cost a class, whatever the penalty's weight
            "rrclarc": "try fewer correction.epochs or a smaller lr, a smaller rr_lambda, or P-ClArC",
            "pclarc": "try a later layer (--layer) or RR-ClArC",
        }
        if self.method == "rrclarc" and self.kept_shortcut():
            advice["rrclarc"] = (
                "try P-ClArC (a smaller lambda would keep the shortcut, which is not gone either)"
            )
        if self.lookalike_warning():
            advice[self.method] = LOOKALIKE_ADVICE
        return (
            f"the corrected model gets {100 * a:.1f} % of the class {name}'s own clean images right, against "
            f"{100 * b:.1f} % before: the flip rate may have fallen because it answers {name} less, not only "
            f"because it ignores the artifact; {advice.get(self.method, 'try another --method')}"
        )

    def kept_shortcut(self) -> bool:
        """Whether the shortcut acts on after the correction: its paste flip rate or relevance share rose, or
        the finding is not cleared (:meth:`cleared`: still flagged, or still acting; what a larger rr_lambda would
        address)."""
        v = self.verdict
        rose = any(d is not None and d < -ROSE_BY for d in (v.flip_drop, v.relevance_drop))
        return rose or self.cleared() is False

    def lost_accuracy(self) -> bool:
        """Whether clean accuracy fell by more than the goal (a point) and, where the record has its 95 %
        interval, one that excludes 0 (a loss the noise of which images flipped cannot explain)."""
        v = self.verdict
        if v.accuracy_change >= -GOAL_ACCURACY_LOSS:
            return False
        return v.accuracy_interval is None or v.accuracy_interval[1] < 0

    def more_directions(self) -> list[str]:
        """RR-ClArC's advice to penalise more directions, where its subspace held under ``LOW_HELD_SHARE``
        of the paste's effect (empty otherwise, and for the other methods)."""
        sub = self.subspace
        if self.method != "rrclarc" or sub is None or sub.captured >= LOW_HELD_SHARE:
            return []
        held = "the CAV holds" if sub.n_directions == 1 else f"its {sub.n_directions} directions hold"
        return [
            f"more directions (correction.rr_directions, now {sub.n_directions}: {held} only "
            f"{100 * sub.captured:.0f} % of the paste's effect at the layer)"
        ]

    def larger_lambda(self) -> list[str]:
        """``["a larger correction.rr_lambda"]`` for RR-ClArC when the shortcut stayed and nothing says the
        correction already cost too much (clean accuracy, the class's own images); empty otherwise, so the
        advice never asks for a larger and a lower lambda at once."""
        if self.method != "rrclarc" or self.lost_accuracy() or self.class_accuracy_warning():
            return []
        return ["a larger correction.rr_lambda"]

    def warnings(self) -> list[str]:
        """What the record's own checks say is wrong, in the order the CLI and report.html show them: flags
        set on runs of other or unknown weights, flags that mark no shortcut, clean
        accuracy lost, a shortcut made stronger, a finding still flagged or its samples still one cluster, a
        class given up, a moving shortcut's one region, test data that carries the shortcut."""
        found = (
            *self.flag_notes,
            self.weak_shortcut_warning(),
            self.accuracy_warning(),
            self.stronger_warning(),
            self.not_cleared_advice(),
            self.hidden_warning(),
            self.little_effect_warning(),
            self.lingering_warning(),
            self.class_accuracy_warning(),
            self.region_warning(),
            self.moved_warning(),
            self.lookalike_warning(),
        )
        return [w for w in found if w]

    def weak_shortcut_warning(self) -> str:
        """When, before the correction, pasting the flagged pixels flipped hardly more images than pasting the
        reference's pixels there (``correction.min_flip_over_null``): the flags may mark no shortcut; empty
        otherwise or when not measured."""
        b = self.evaluation.before
        if b.flip_rate - b.flip_null >= _min_flip_over_null(self.parameters):
            return ""
        return (
            f"before the correction, pasting the flagged pixels flips {_pct(b.flip_rate)} of the other classes' "
            f"images and pasting the reference's pixels there {_pct(b.flip_null)}: the flagged region acts no more "
            "than any pixels; check that the flags mark a shortcut (spray flags list, the dashboard)"
        )

    def accuracy_warning(self) -> str:
        """The warning of a corrected model that lost clean accuracy (:meth:`lost_accuracy`), with the
        method's own remedy; empty otherwise."""
        v, p = self.verdict, self.parameters
        if not self.lost_accuracy():
            return ""
        if self.lookalike_warning():
            fix = LOOKALIKE_ADVICE
        elif self.method == "pclarc":
            fix = (
                "P-ClArC trains nothing: it projects the direction out at inference, and that projection is what "
                "costs the accuracy; compare --method rrclarc (fine-tuning) or --method retrain"
            )
        elif self.method == "retrain":
            more = "retrain_epochs" if p.get("retrain_init", "scratch") == "scratch" else "epochs"
            fix = f"the retrained model may be undertrained; try more correction.{more}"
        elif self.kept_shortcut():
            # a lower lambda would keep the shortcut, a larger one cost more: no lambda helps both
            tries = [
                *self.more_directions(),
                "another layer (correction.layer)",
                "--method pclarc or retrain",
            ]
            fix = f"the shortcut is not gone either, so no correction.rr_lambda helps both; try {', or '.join(tries)}"
        else:
            fix = (
                "try a lower correction.rr_lambda (--lambda) or correction.lr"
                + (" or correction.rr_directions 1" if int(p.get("rr_directions", 1)) > 1 else "")
                + (" or a lower correction.rr_region_weight" if self.footprint is not None else "")
            )
        return f"the corrected model lost {-100 * v.accuracy_change:.2f} points of clean accuracy; {fix} before using it"

    def stronger_warning(self) -> str:
        """What to try when the correction made the shortcut act more, not less (its paste flip rate or
        relevance share rose); empty otherwise."""
        v = self.verdict
        rose = [
            name
            for name, drop in (("paste flip rate", v.flip_drop), ("relevance share", v.relevance_drop))
            if drop is not None and drop < -ROSE_BY
        ]
        if not rose:
            return ""
        tried = f"{self.method} at {self.direction.layer}"
        others = " or ".join(m for m in ("pclarc", "rrclarc", "retrain") if m != self.method)
        tries = ["an earlier layer (correction.layer)", f"another method (--method {others})"]
        tries += self.more_directions() + self.larger_lambda()
        return (
            f"the {' and the '.join(rose)} rose: {tried} did not remove the shortcut. Try {', or '.join(tries)} "
            "(docs/correction.md)"
        )

    def not_cleared_advice(self) -> str:
        """What to try when the re-audit still flags the finding, by the method that was run; empty
        otherwise."""
        if self.reaudit is None or self.reaudit.cleared is not False:
            return ""
        rr = ["--method pclarc (no training)", *self.more_directions()]
        larger = self.larger_lambda()
        if larger:  # more training is more correction: not where accuracy was already lost
            rr += ["more epochs (correction.epochs)", *larger]
        tries = {
            "rrclarc": ", ".join(rr[:-1]) + (" or " if len(rr) > 1 else "") + rr[-1],
            "pclarc": "--method rrclarc, or an earlier layer (correction.layer)",
            "retrain": "masking the artifact region (correction.retrain_mode: mask) or --method rrclarc",
        }
        advice = tries.get(self.method, "another --method")
        return f"the re-audit still flags the finding after {self.method}: try {advice} (docs/correction.md)"

    def acts_still(self) -> bool:
        """Whether pasting the flagged pixels still flips the corrected model beyond the null by the margin
        ``correction.min_flip_over_null`` while the flip-rate goal is missed: the shortcut still acts,
        whatever the re-audit's heatmaps show."""
        drop = self.verdict.flip_drop
        if drop is None or drop >= GOAL_FLIP_DROP:
            return False
        a = self.evaluation.after
        return a.flip_rate - a.flip_null >= _min_flip_over_null(self.parameters)

    def cleared(self) -> bool | None:
        """The correction's verdict on the finding: the re-audit's flag (None: not judged, or not run), except
        that a finding the re-audit no longer flags is not cleared while the shortcut still acts, in place
        (:meth:`acts_still`; P-ClArC's projection also takes the direction out of the re-audit's heatmaps) or
        pasted at the opposite place (:meth:`moved_warning`)."""
        flag = self.verdict.finding_cleared
        return False if flag is True and (self.acts_still() or bool(self.moved_warning())) else flag

    def little_effect_warning(self) -> str:
        """When the re-audit cannot judge (or did not run) and the paste flip rate fell by less than half
        while the shortcut still acts (:meth:`acts_still`): no other warning says the correction did little."""
        drop = self.verdict.flip_drop
        # a rise is stronger_warning's to say
        if (
            self.cleared() is not None
            or drop is None
            or not 0 <= drop < LITTLE_EFFECT
            or not self.acts_still()
        ):
            return ""
        a = self.evaluation.after
        return (
            f"the paste flip rate fell by {100 * drop:.0f} % only (goal: {100 * GOAL_FLIP_DROP:.0f} %), and pasting "
            f"the flagged pixels still turns {100 * a.flip_rate:.1f} % of the other classes' images into "
            f"{self.group.class_name}: the correction did little; try another correction.layer or --method, or "
            "(RR-ClArC) a larger rr_lambda or more epochs (docs/correction.md)"
        )

    def hidden_warning(self) -> str:
        """When the re-audit no longer flags the finding but the shortcut still acts (:meth:`acts_still`);
        empty otherwise."""
        if self.verdict.finding_cleared is not True or not self.acts_still():
            return ""
        a = self.evaluation.after
        why = (
            "P-ClArC projects the direction out of the heatmaps too, so the re-audit cannot see it"
            if self.method == "pclarc"
            else "the re-audit's heatmaps do not show what the model still uses"
        )
        return (
            f"the re-audit no longer flags the finding, but pasting the flagged pixels still turns "
            f"{100 * a.flip_rate:.1f} % of the other classes' images into {self.group.class_name} (null "
            f"{100 * a.flip_null:.1f} %): the shortcut still acts and the finding is not cleared ({why}); judge "
            "by the paste flip rate"
        )

    def lingering_warning(self) -> str:
        """When the re-audit no longer flags the finding but the flagged samples still form one cluster of
        their own (the flag's overlap, unflagged): the model may still single them out by the artifact."""
        r, v = self.reaudit, self.verdict
        # a finding the source run did not flag either is "not judged", not "no longer flagged"; one whose
        # shortcut still acts is hidden_warning's to say
        if (
            r is None
            or r.still_flagged
            or r.after.key is None
            or not r.before.suspicious
            or self.acts_still()
        ):
            return ""
        # most of the group still together, and the behaviour not gone by the paste test or the relevance share
        if r.after.jaccard < max(LINGER_JACCARD, float(self.parameters.get("reaudit_min_jaccard", 0.3))):
            return ""
        flips = v.flip_drop is not None and v.flip_drop < GOAL_FLIP_DROP
        if not flips and not (v.relevance_drop is not None and v.relevance_drop < GOAL_RELEVANCE_DROP):
            return ""
        return (
            f"the re-audit no longer flags the finding, but the flagged samples still form cluster {r.after.key} "
            f"(overlap {r.after.jaccard:.2f}, rank {r.after.rank}, score {score_text(r.after.score or 0.0)}): the "
            "corrected model may still single them out by the artifact; judge by the paste flip rate and the "
            "relevance share, not by the flag alone"
        )

    def moved_warning(self) -> str:
        """When the stamp pasted at the opposite place still flips the corrected model (a shortcut that
        moves, corrected where the flagged images carry it only); empty otherwise or when not measured."""
        b, a = self.evaluation.before, self.evaluation.after
        if a.flip_moved is None:
            return ""
        in_place = b.flip_rate - b.flip_null
        # a region that acted no more than any pixels had no shortcut to move (weak_shortcut_warning says so)
        if (
            in_place < _min_flip_over_null(self.parameters)
            or a.flip_moved - a.flip_null < MOVED_KEPT_WARN * in_place
            # not removed in place either: a shortcut that stayed, not one that moves
            or a.flip_rate - a.flip_null > MOVED_KEPT_WARN * in_place
        ):
            return ""
        return (
            f"pasted at the opposite place of the image, the stamp still turns {100 * a.flip_moved:.0f} % of "
            f"the images into {self.group.class_name} (in place: {100 * a.flip_rate:.0f} %, {100 * b.flip_rate:.0f} "
            "% before): the shortcut acts wherever it sits and the correction removed it at one place (not "
            "cleared, whatever the re-audit says); flag its "
            "images at every place (the finding's carriers: --with-carriers, unless they are flagged already) "
            + (
                "or take a direction that ignores where it sits (correction.pooling: max) "
                if self.method != "retrain"
                and self.direction.pooling != "max"
                and "max" in self.direction.candidates
                else ""
            )
            + "and read the re-audit (docs/correction.md)"
        )

    def lookalike_warning(self) -> str:
        """When the test data's images of the artifact class project along the artifact direction as the
        flagged ones do, more often than held-out unflagged ones (``correction.lookalike_alpha``): the test
        data may carry the shortcut; empty otherwise or when not measured."""
        like = self.evaluation.lookalikes
        default = CorrectionConfig.model_fields["lookalike_alpha"].default
        if (
            like is None
            or like.n_like == 0
            or like.p_value() >= float(self.parameters.get("lookalike_alpha", default))
        ):
            return ""
        name = self.group.class_name
        return (
            f"{like.n_like} of the test data's {like.n_checked} {name} images project along the artifact direction "
            f"as the flagged images do ({100 * like.n_like / like.n_checked:.0f} %, against "
            f"{100 * like.reference_rate:.0f} % of the held-out unflagged {name} images): the test data seems to "
            "carry the shortcut, and its clean accuracy then counts what the shortcut gave; look at them "
            "(correction.json: evaluation.lookalikes.sample_ids) before reading the accuracy change"
        )

    def region_warning(self) -> str:
        """Why the region's measures may miss the shortcut: the flags come from a concept-only finding, whose
        members' shortcut can sit at different places, while a correction uses one fixed region; empty
        otherwise."""
        from spray.runs.keys import key_space

        concept = [k for k in self.flags.cluster_keys if key_space(k) == "concept"]
        if not concept:
            return ""
        e = self.evaluation
        return (
            f"the flags come from the concept-only finding {concept[0]}, whose members' shortcut may sit at "
            f"different places, but the correction pastes, masks and measures one fixed region ({e.region_source}, "
            f"{e.region_pixels} pixels in the box {e.region_box}): the flip rate and relevance share describe "
            "that region; look at it in the report before trusting them (docs/correction.md)"
        )

    def region_term_skipped(self) -> str:
        """Why RR-ClArC's region term did not run although ``parameters`` keep its weight: the default
        ``rr_region_weight`` at a layer without a (h, w) grid (a transformer's tokens, a pooled output), where
        the correction runs as plain RR-ClArC and records no footprint; empty when it ran, was off, or for the
        other methods."""
        weight = float(self.parameters.get("rr_region_weight", 0) or 0)
        if self.method != "rrclarc" or weight <= 0 or self.footprint is not None:
            return ""
        return (
            f"the region term (correction.rr_region_weight {weight:g}) did not run: layer {self.direction.layer} "
            "has no (h, w) grid of positions (a transformer's tokens, or a pooled output), so the region has no "
            "footprint there and this is plain RR-ClArC"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the verdict included, and whether RR-ClArC's region term ran, for readers that do
        not rebuild the record)."""
        # "cleared": the flag's verdict corrected by the paste test (cleared()), for scripts that read the file
        verdict = {**dataclasses.asdict(self.verdict), "cleared": self.cleared()}
        out = {**dataclasses.asdict(self), "verdict": verdict}
        if self.method == "rrclarc":
            # parameters keep rr_region_weight as configured; a reader of the JSON learns here whether it acted
            out["region_term_ran"] = self.footprint is not None
        return out

    def write(self, folder: Path) -> Path:
        """Write ``correction.json`` into ``folder`` (atomically)."""
        path = folder / RECORD_NAME
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n").encode())
        return path

    @classmethod
    def read(cls, folder: Path) -> CorrectionRecord:
        """Read ``folder/correction.json`` back into the record."""
        raw = json.loads((Path(folder) / RECORD_NAME).read_text())
        raw.pop("verdict", None)
        raw.pop("region_term_ran", None)
        return from_dict(cls, raw)


def from_dict(cls: type[T], data: Any) -> T:
    """Rebuild dataclass ``cls`` (nested dataclasses, lists, dicts, optionals) from its ``asdict`` form."""
    return typing.cast(T, _build(cls, data))


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: _build(hints[k], v) for k, v in value.items() if k in names})
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return [_build(arg, v) for v in value]
    if origin is dict:
        _, arg = typing.get_args(tp) or (Any, Any)
        return {k: _build(arg, v) for k, v in value.items()}
    return value


#: The parameters that tell two corrections of one method apart, per method (the record keeps every one).
_SETTINGS = {
    "rrclarc": ("rr_lambda", "rr_region_weight", "lr", "epochs"),
    "retrain": ("retrain_mode", "retrain_init", "retrain_epochs", "retrain_lr"),
    "pclarc": (),
}


def settings_text(method: str, parameters: dict[str, Any]) -> str:
    """``"rr_lambda 3000, lr 0.003, epochs 3"``: the settings a correction's method read ("–" for none)."""
    keys = _SETTINGS.get(method, ())
    if method == "retrain" and parameters.get("retrain_init") == "checkpoint":
        keys = ("retrain_mode", "retrain_init", "epochs", "lr")  # it fine-tunes like RR-ClArC
    return ", ".join(f"{k} {_setting(parameters[k])}" for k in keys if k in parameters) or "–"


def _pct(x: float) -> str:
    """``"0.35 %"``, ``"99.6 %"``: two decimals below 1 %, one above."""
    return f"{100 * x:.2f} %" if abs(x) < 0.01 else f"{100 * x:.1f} %"


def _min_flip_over_null(parameters: dict[str, Any]) -> float:
    """The record's ``correction.min_flip_over_null`` (its default for records written before it)."""
    return float(
        parameters.get("min_flip_over_null", CorrectionConfig.model_fields["min_flip_over_null"].default)
    )


def _setting(value: Any) -> str:
    """A setting as a person writes it: ``1e+07`` for 10000000.0, ``0.003``, ``3``."""
    return f"{value:g}" if isinstance(value, float) else str(value)
