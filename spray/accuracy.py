"""The audited model's accuracy on the audited samples: a check that the inputs and labels are the model's.

A model that does not recognise its own data explains nothing about its shortcuts: its heatmaps show no
Clever Hans and the audit looks clean for the wrong reason. Two checks, both warnings (the audit goes on):

- **near chance**: the accuracy averaged over the classes (each class's share of images given its own label)
  closes less than :data:`NEAR_CHANCE` of the gap from guessing to 100 %: the inputs differ from training
  (size, mean/std, channels, normalised twice) or the weights are not the trained ones. Averaged over
  classes, so that data where one class holds most images is judged as fairly as balanced data;
- **another class's label**: most images of a class (:data:`SHIFTED_SHARE`) are predicted as one other
  class: the class folders and the model's classes are not in the same order (folders renamed, swapped,
  one missing), so every such class is explained for the wrong logit; once one class is, also a class
  predicted as one other class half the time (:data:`SHIFTED_ALSO_SHARE`) and rarely as its own;
- **a class it does not answer**: the images of a class get their own label less than
  :data:`UNRECOGNISED_SHARE` of the time, spread over other classes (a model that gave the class up, e.g.
  after a correction): its heatmaps explain a logit the model does not act on;
- **bounded outputs**: a model well above chance whose outputs lie within :data:`BOUNDED_SPAN` of each other
  on every audited image ends in a sigmoid or the like, not in logits, which spray explains and tests.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Fewer audited samples than this say too little about the model's accuracy to warn about it.
ACCURACY_MIN_SAMPLES = 20
#: Warn when the accuracy averaged over classes closes less than this share of the gap from guessing to 100 %.
NEAR_CHANCE = 0.25
#: A class whose images are predicted as one other class this often is labelled as that class in training.
SHIFTED_SHARE = 0.8
#: With one class shifted, a class whose images are predicted as one other class this often, and as their
#: own less often than :data:`SHIFTED_ALSO_OWN`, is named as shifted too.
SHIFTED_ALSO_SHARE = 0.5
SHIFTED_ALSO_OWN = 0.25
#: Classes with fewer samples than this are not judged by the shifted-label check.
SHIFTED_MIN_SAMPLES = 10
#: A class whose images get their own label less often than this is one the model does not answer.
UNRECOGNISED_SHARE = 0.05
#: Outputs of one image that all lie within this of each other are bounded (a sigmoid's lie in [0, 1]).
BOUNDED_SPAN = 1.0


@dataclass(frozen=True)
class ModelAccuracy:
    """How often the audited model gives the true label on the audited samples.

    Attributes
    ----------
    accuracy : float
        Share of samples whose prediction is their label.
    majority_share : float
        Share of the largest class: the accuracy of always answering it.
    n_samples : int
        Samples counted.
    near_chance : bool
        ``balanced_accuracy`` is within :data:`NEAR_CHANCE` of the gap above guessing (and enough samples):
        ``1 / classes_present``, or with one class audited ``accuracy`` above ``1 / n_classes``, since always
        answering the only class would be right every time.
    shifted : dict[str, str]
        Class name → the other class name its images are mostly (:data:`SHIFTED_SHARE`) predicted as.
    unrecognised : dict[str, float]
        Class name → the share of its images that get their own label, for classes below
        :data:`UNRECOGNISED_SHARE` that are not ``shifted`` (their images spread over other classes).
    """

    accuracy: float
    majority_share: float
    n_samples: int
    near_chance: bool
    shifted: dict[str, str] = field(default_factory=dict)
    unrecognised: dict[str, float] = field(default_factory=dict)
    #: Classes among the audited labels, and the model's classes: one of many is a one-class audit.
    classes_present: int = 0
    n_classes: int = 0
    #: The mean over the classes present of the share of a class's images given its own label (None: a run
    #: recorded before it was).
    balanced_accuracy: float | None = None
    #: Every audited image's outputs lie within :data:`BOUNDED_SPAN` of each other while the model is well above
    #: chance: outputs of a sigmoid, not logits.
    bounded_outputs: bool = False


def _name(names: list[str], i: int) -> str:
    return names[i] if i < len(names) else str(i)


def _shifted(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict[str, str]:
    found: list[tuple[str, str, bool]] = []
    for c in np.unique(labels):
        pred = predictions[labels == c]
        if len(pred) < SHIFTED_MIN_SAMPLES:
            continue
        counts = np.bincount(pred, minlength=int(pred.max()) + 1)
        top, own = int(counts.argmax()), counts[c] if c < len(counts) else 0
        if top != c and counts[top] >= SHIFTED_ALSO_SHARE * len(pred) and own < SHIFTED_ALSO_OWN * len(pred):
            found.append((_name(names, int(c)), _name(names, top), counts[top] >= SHIFTED_SHARE * len(pred)))
    # once one class is clearly shifted the order is off, and a class mostly predicted as another is named too
    # (an outside check: Coat, 69 % predicted as Pullover, was left out of a warning naming five swapped classes)
    if not any(f[2] for f in found):
        return {}
    return {name: other for name, other, _ in found}


def _unrecognised(
    labels: np.ndarray, predictions: np.ndarray, names: list[str], shifted: dict[str, str]
) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in np.unique(labels):
        pred = predictions[labels == c]
        name = _name(names, int(c))
        if len(pred) >= SHIFTED_MIN_SAMPLES and name not in shifted:
            own = float(np.mean(pred == c))
            if own < UNRECOGNISED_SHARE:
                out[name] = own
    return out


def model_accuracy(
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: list[str],
    *,
    corrected: bool = False,
    probabilities: np.ndarray | None = None,
) -> ModelAccuracy | None:
    """The model's accuracy on the audited samples; warns when it is near chance or a class's images are
    mostly predicted as another class (module docstring).

    Parameters
    ----------
    labels, predictions : np.ndarray
        ``(N,)`` true labels and predicted classes.
    class_names : list[str]
        Names in label order (for the messages).
    corrected : bool
        The model is a correction's corrected model (its re-audit): a collapse is the correction's
        (:func:`problems`).
    probabilities : np.ndarray, optional
        ``(N, K)`` softmax of the outputs: the bounded-outputs check (their log-ratios are the outputs' spans).

    Returns
    -------
    ModelAccuracy or None
        None when there are no samples.
    """
    n = len(labels)
    if n == 0:
        return None
    labels, predictions = labels.astype(np.int64), predictions.astype(np.int64)
    acc = float(np.mean(labels == predictions))
    majority = float(np.bincount(labels).max() / n)
    classes = np.unique(labels)
    present, k = len(classes), max(len(class_names), 1)
    balanced = float(np.mean([np.mean(predictions[labels == c] == c) for c in classes]))
    # one class: its own recall is the accuracy, and guessing among the model's classes is the trivial answer
    judged, chance = (balanced, 1.0 / present) if present > 1 else (acc, 1.0 / k)
    near = n >= ACCURACY_MIN_SAMPLES and judged < chance + NEAR_CHANCE * (1.0 - chance)
    shifted = _shifted(labels, predictions, class_names)
    lost = _unrecognised(labels, predictions, class_names, shifted)
    bounded = not near and n >= ACCURACY_MIN_SAMPLES and _bounded(probabilities)
    got = ModelAccuracy(acc, majority, n, near, shifted, lost, present, k, balanced, bounded)
    # Said even when nothing is wrong: only the user knows the accuracy the model was trained to.
    log.info("%s", accuracy_sentence(asdict(got)))
    for problem in problems(asdict(got), corrected=corrected):
        log.warning("%s", problem)
    return got


def _bounded(probabilities: np.ndarray | None) -> bool:
    """Whether every row's outputs lie within :data:`BOUNDED_SPAN` of each other (from their softmax)."""
    if (
        probabilities is None
        or probabilities.ndim != 2
        or probabilities.shape[1] < 2
        or not len(probabilities)
    ):
        return False
    p = np.asarray(probabilities, dtype=np.float64)
    # a softmax's log-ratio is the outputs' difference (a probability that underflowed to 0: no bound)
    with np.errstate(divide="ignore"):
        span = np.log(p.max(axis=1)) - np.log(p.min(axis=1))
    return bool(np.all(span <= BOUNDED_SPAN + 1e-4))


def _trivial(acc: dict[str, Any]) -> str:
    """What the trivial answer would score, in words (a one-class audit: guessing among the classes)."""
    if acc.get("classes_present") == 1 and int(acc.get("n_classes") or 0) > 1:
        return f"guessing among its {int(acc['n_classes'])} classes gives {1 / int(acc['n_classes']):.0%}"
    return f"always answering the largest class gives {acc['majority_share']:.0%}"


def _uneven(acc: dict[str, Any]) -> bool:
    """Whether the recorded check averaged over classes that hold very different shares of the images (the
    largest class at least 5 points above an even share), so that the average over classes is worth saying."""
    present = int(acc.get("classes_present") or 0)
    return (
        acc.get("balanced_accuracy") is not None
        and present > 1
        and float(acc["majority_share"]) >= 1 / present + 0.05
    )


def accuracy_sentence(acc: dict[str, Any]) -> str:
    """``the model gives the true label for 89.4 % of the 10000 audited images (the largest class: 10.0 %)``."""
    per_class = (
        f"; {100 * float(acc['balanced_accuracy']):.1f} % averaged over its {int(acc['classes_present'])} classes"
        if _uneven(acc)
        else ""
    )
    return (
        f"the model gives the true label for {100 * float(acc['accuracy']):.1f} % of the {int(acc['n_samples'])} "
        f"audited images (the largest class: {100 * float(acc['majority_share']):.1f} %{per_class})"
    )


def recorded_accuracy(extra: object) -> dict[str, Any] | None:
    """The accuracy check a run recorded (``summary.json`` ``extra.model_accuracy``: the fields of
    :class:`ModelAccuracy`), or None for runs without one."""
    acc = extra.get("model_accuracy") if isinstance(extra, dict) else None
    return acc if isinstance(acc, dict) else None


def recorded_problems(extra: object, *, corrected: bool = False) -> list[str]:
    """What a run's recorded checks found (:func:`model_problems`, then copies of one image under two
    labels, :mod:`spray.label_conflicts`), as sentences for the report, the dashboard, the nightly status
    and a reused run; empty for runs without a record. ``corrected``: the run is a correction's re-audit
    (:func:`spray.export.source.corrected_from`; see :func:`problems`)."""
    from spray import label_conflicts

    rec = extra.get("label_conflicts") if isinstance(extra, dict) else None
    found = model_problems(extra, corrected=corrected)
    return found + (label_conflicts.problems(rec) if isinstance(rec, dict) else [])


def data_notes(extra: object) -> list[str]:
    """The run's notes on its data: how its files were read (16-bit, .gif, EXIF orientation, frames,
    transparency: :func:`spray.data.folder.loader_differences`) and copies of one image within a class
    (:mod:`spray.copies`), for the report, the dashboard and the nightly status, apart from the checks of the
    model; empty for runs without them."""
    from spray import copies

    notes = extra.get("loader_differences") if isinstance(extra, dict) else None
    copied = extra.get("copies") if isinstance(extra, dict) else None
    return ([str(s) for s in notes] if isinstance(notes, list) else []) + (
        copies.notes(copied) if isinstance(copied, dict) else []
    )


def model_problems(extra: object, *, corrected: bool = False) -> list[str]:
    """What a run's recorded checks of the model found, each a reason its heatmaps may show no shortcut:
    its accuracy, the heatmaps' contrast (:mod:`spray.heatmap_contrast`) and the logit share they carry
    (:mod:`spray.conservation`); empty for runs without a record. ``corrected``: the run is a correction's
    re-audit (see :func:`problems`)."""
    return [s for found in model_problems_by_check(extra, corrected=corrected).values() for s in found]


def model_problems_by_check(extra: object, *, corrected: bool = False) -> dict[str, list[str]]:
    """:func:`model_problems` per check: ``{"model_accuracy": [...], "heatmap_contrast": [...],
    "conservation": [...]}`` (each list empty when that check found nothing or was not recorded)."""
    from spray import conservation, heatmap_contrast

    acc = recorded_accuracy(extra)
    out = {"model_accuracy": [] if acc is None else problems(acc, corrected=corrected)}
    # Each check records its fields under its key in ``extra`` and words them with its own problems().
    for key, sentences in (
        ("heatmap_contrast", heatmap_contrast.problems),
        ("conservation", conservation.problems),
    ):
        rec = extra.get(key) if isinstance(extra, dict) else None
        out[key] = sentences(rec) if isinstance(rec, dict) else []
    return out


#: Why a corrected model answers at chance, in a correction's re-audit: it was audited with the source run's
#: data, transform and config, so the correction collapsed it, not the inputs or the checkpoint.
CORRECTION_COLLAPSED = (
    "the corrected model collapsed: its re-audit read the source run's data with the same data.transform, so "
    "the correction itself did this, not the inputs or model.checkpoint (the correction's warnings say what to "
    "try)"
)


def problems(acc: dict[str, Any], *, corrected: bool = False) -> list[str]:
    """The sentences for one check (the fields of :class:`ModelAccuracy`): the log's, and every output's.
    ``corrected``: the check is of a corrected model in its re-audit, whose collapse is the correction's
    (:data:`CORRECTION_COLLAPSED`), not a sign of inputs that differ from training."""
    out = []
    shifted = acc.get("shifted") or {}
    targets = set(shifted.values())
    if len(shifted) >= 2 and len(targets) == 1 and acc.get("near_chance"):
        # Every such class goes to the same one: a model that answers one class, not classes out of order.
        (one,) = targets
        out.append(
            f"The model predicts the images of {len(shifted)} other classes mostly as {one} "
            f"({', '.join(list(shifted)[:6])}): it answers {one} for nearly everything. That is what a model "
            "that does not tell the classes apart does ("
            + (
                CORRECTION_COLLAPSED
                if corrected
                else "weights that are not the trained ones, a training that collapsed, inputs it cannot read: "
                "check data.transform"
            )
            + "), more likely than classes out of order."
        )
    elif shifted and corrected:
        # the re-audit read the source run's data in the same order: classes out of order would show there too
        pairs = ", ".join(f"{a} as {b}" for a, b in list(shifted.items())[:6])
        out.append(
            f"The corrected model predicts the images of {len(shifted)} class(es) mostly as one other class "
            f"({pairs}): its re-audit read the source run's data in the same class order, so unless the source "
            "run's report says the same, the correction moved those classes to another class's logit (not the "
            "class order, the inputs or model.checkpoint); those classes are explained for a logit the model "
            "no longer answers them with (the correction's warnings say what to try)."
        )
    elif shifted:
        pairs = ", ".join(f"{a} as {b}" for a, b in list(shifted.items())[:6])
        out.append(
            f"The model predicts the images of {len(shifted)} class(es) mostly as one other class ({pairs}): "
            "the data's classes and the model's are probably not in the same order (class folders renamed, "
            "swapped or missing: labels are folder positions in name order; data.class_names only renames), "
            "so those classes are explained for another class's logit; or those classes' images carry nothing the "
            "model can read (blank or constant images)."
        )
    lost = acc.get("unrecognised") or {}
    if lost and not acc.get("near_chance"):
        listed = ", ".join(f"{name} ({100 * share:.0f} %)" for name, share in list(lost.items())[:6])
        out.append(
            f"The model gives {len(lost)} class(es) their own label for almost none of their images ({listed}; "
            "the images go to other classes): it does not answer those classes, so their heatmaps explain a logit "
            "the model does not act on (a model that gave the class up, e.g. after a correction, or a class it "
            "was never trained on)."
        )
    if acc.get("bounded_outputs"):
        out.append(
            f"Every audited image's outputs lie within {BOUNDED_SPAN:g} of each other although the model is well "
            "above chance: it probably ends in a sigmoid (or another bounded function), not in logits. spray "
            "explains and tests logits (the paste and removal margins are in logit units, the confidences a "
            "softmax of the outputs), so its tests can hardly flag a shortcut here: give the model without its "
            "final sigmoid (a model.factory that returns the network up to the logits)."
        )
    if acc.get("near_chance"):
        cause = (
            CORRECTION_COLLAPSED
            if corrected
            else "its inputs probably differ from training (data.transform: resize, center_crop, interpolation, "
            "mean/std, channels; a dataset that normalises its images itself), the classes are in another order, "
            "or the weights are not the trained ones (model.checkpoint)"
        )
        how_often = (
            f"only {float(acc['balanced_accuracy']):.0%} of a class's images, averaged over its "
            f"{int(acc['classes_present'])} classes (guessing gives {1 / int(acc['classes_present']):.0%}; "
            f"{acc['accuracy']:.0%} of all {acc['n_samples']:,} audited images)"
            if _uneven(acc)
            else f"only {acc['accuracy']:.0%} of the {acc['n_samples']:,} audited images ({_trivial(acc)})"
        )
        out.append(
            f"The model gives the true label for {how_often}: {cause}. Its heatmaps show no shortcut: no finding "
            "here does not mean a clean model."
        )
    return out
