"""Re-evaluation: the same measurements on the audited and on the corrected model (Reveal to Revise).

For each model:

- **clean accuracy** on held-out samples without the artifact (``correction.test_data``, or the part of
  the audited data kept out of fine-tuning, minus flagged samples), overall and on the artifact class's
  own images (a model that stops answering the class flips nothing either);
- **paste test** on held-out images of other classes: the flagged samples' pixels in the artifact region
  are stamped in; *flip rate* = share of the images not predicted as the artifact class before that are
  after; the *null* stamps the same region from reference samples of the class (what pasting any of its
  pixels there does); *pasted accuracy* = accuracy on the stamped images;
- **relevance share** on the artifact region, ``Σ|R·mask| / Σ|R|`` of the flagged samples' LRP maps
  (true class, the audit's composite), averaged;
- **sensitivity** along the direction: the derivative of the artifact class's logit with respect to the
  layer's activation, along the direction (applied at every position for a pooled one), over the class's
  held-out samples: its mean, its mean absolute value, and the share where it is positive (the TCAV
  score). For P-ClArC it is taken at the user's layer, before the projection, where it is zero by
  construction (the projection removes what arrives along the direction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from spray.config import AuditConfig
from spray.correct.activations import tap
from spray.correct.cav import ArtifactDirection
from spray.correct.lookalikes import Lookalikes
from spray.correct.pclarc import original_layer
from spray.correct.region import ArtifactRegion, paste
from spray.correct.relevance import composite_kwargs, region_share, relevance_maps
from spray.correct.samples import SampleSet, seeded_subset

log = logging.getLogger(__name__)


@dataclass
class ModelScores:
    """One model's measurements (see the module docstring).

    Attributes
    ----------
    clean_accuracy : float
        Accuracy on held-out samples without the artifact.
    pasted_accuracy : float
        Accuracy on held-out other-class images with the artifact stamped in.
    flip_rate : float
        Share of those images flipped to the artifact class by the stamp.
    flip_null : float
        The same with the region's pixels taken from reference samples.
    relevance_share : float
        Mean share of |relevance| on the artifact region, flagged samples.
    sensitivity : float
        Mean derivative of the artifact class's logit along the direction at the layer.
    sensitivity_abs : float
        Mean absolute derivative (how strongly the logit responds along the direction at all).
    tcav : float
        Share of the class's samples with a positive derivative (noise when every derivative is ~0).
    class_accuracy : float or None
        Accuracy on the clean samples of the artifact class (None without any, or in records written before
        it was kept): a model that stops answering the class has no flips left either.
    flip_moved : float or None
        ``flip_rate`` with the region and its pixels moved to the opposite place of the image (its box
        reflected through the centre: a top-right stamp to the bottom left): a shortcut that moves acts
        there too, and a correction of one place only leaves it there. None for a centred region (or in
        records written before it was kept).
    """

    clean_accuracy: float
    pasted_accuracy: float
    flip_rate: float
    flip_null: float
    relevance_share: float
    sensitivity: float
    sensitivity_abs: float
    tcav: float
    class_accuracy: float | None = None
    flip_moved: float | None = None


@dataclass
class EvaluationSets:
    """The rows each measurement uses.

    Attributes
    ----------
    clean : np.ndarray
        Rows (of ``clean_samples``) for the clean accuracy.
    paste_targets : np.ndarray
        Rows (of ``clean_samples``) of other-class images to stamp.
    donors : np.ndarray
        Flagged rows (of the audited data) whose pixels are stamped.
    null_donors : np.ndarray
        Reference rows (of the audited data) for the null.
    relevance : np.ndarray
        Flagged rows whose relevance share is measured.
    sensitivity : np.ndarray
        Held-out rows of the artifact class (both groups) for the sensitivity.
    split : str
        ``"test_data"`` or ``"held-out part of the audited data"``.
    """

    clean: np.ndarray
    paste_targets: np.ndarray
    donors: np.ndarray
    null_donors: np.ndarray
    relevance: np.ndarray
    sensitivity: np.ndarray
    split: str


@dataclass
class CleanChanges:
    """How the answers on the clean samples changed: the same images, before and after (paired).

    Attributes
    ----------
    n : int
        Clean samples.
    gained : int
        Images only the corrected model classifies right.
    lost : int
        Images only the audited model classifies right.
    """

    n: int
    gained: int
    lost: int

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """The accuracy change's 95 % interval (normal approximation of the paired difference), so that a
        change of a point on 2,000 images can be told from the noise of which images flipped."""
        if self.n == 0:
            return float("nan"), float("nan")
        d = (self.gained - self.lost) / self.n
        var = max(0.0, (self.gained + self.lost) / self.n - d * d) / self.n
        half = z * var**0.5
        return d - half, d + half


@dataclass
class Evaluation:
    """Before and after, with the sets and the region they were measured on.

    Attributes
    ----------
    before, after : ModelScores
        The audited and the corrected model.
    split : str
        Where the clean accuracy and paste targets come from.
    n_clean, n_paste, n_relevance, n_sensitivity : int
        Samples per measurement.
    region_source : str
        ``"box"``, ``"stamp"`` or ``"relevance"``.
    region_box : list[int]
        ``[top, left, height, width]`` around the region.
    region_pixels : int
        Pixels in the region.
    clean_changes : CleanChanges or None
        Images of the clean accuracy that changed answer (None in records written before it was kept).
    lookalikes : Lookalikes or None
        Test images of the artifact class that project along the artifact direction as the flagged ones do
        (with ``test_data`` only; None otherwise and in records written before 6 Dec 2026).
    """

    before: ModelScores
    after: ModelScores
    split: str
    n_clean: int
    n_paste: int
    n_relevance: int
    n_sensitivity: int
    region_source: str
    region_box: list[int]
    region_pixels: int
    clean_changes: CleanChanges | None = None
    lookalikes: Lookalikes | None = None

    def split_text(self) -> str:
        """Where the clean accuracy was measured, in words: a held-out part of the audited data says that the
        audited model may have been trained on it."""
        if self.split == "test_data":
            return self.split
        return f"{self.split} (the audited model may have been trained on it, so optimistic; give correction.test_data)"


def relative_drop(before: float, after: float) -> float | None:
    """``(before − after) / before`` (None when ``before`` is 0)."""
    return None if before <= 0 else (before - after) / before


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: torch.device, bs: int) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [model(x[s : s + bs].to(device)).argmax(1).cpu().numpy() for s in range(0, len(x), bs)]
    )


def _paste_scores(
    model: nn.Module, targets: torch.Tensor, labels: np.ndarray, donors: torch.Tensor, null: torch.Tensor,
    mask: np.ndarray, artifact_class: int, device: torch.device, bs: int,
) -> tuple[float, float, float, float | None]:  # fmt: skip
    """Accuracy with the stamp pasted, its flip rate, the null's, and the flip rate with the stamp pasted at
    the opposite place (:func:`opposite_shift`; None for a centred region)."""
    clean = _predict(model, targets, device, bs)
    stamped = _predict(model, paste(targets, donors, mask), device, bs)
    nulled = _predict(model, paste(targets, null, mask), device, bs)
    base = clean != artifact_class
    n = max(1, int(base.sum()))
    flip = float(((stamped == artifact_class) & base).sum() / n)
    flip_null = float(((nulled == artifact_class) & base).sum() / n)
    moved = None
    if (shift := opposite_shift(mask)) is not None:
        # the box lies inside the image at both places, so a roll moves the stamp without wrapping it
        there = paste(targets, torch.roll(donors, shift, dims=(-2, -1)), np.roll(mask, shift, axis=(0, 1)))
        moved = float(((_predict(model, there, device, bs) == artifact_class) & base).sum() / n)
    return float((stamped == labels).mean()), flip, flip_null, moved


def opposite_shift(mask: np.ndarray) -> tuple[int, int] | None:
    """The ``(dy, dx)`` that moves ``mask``'s bounding box to its reflection through the image's centre
    (None when that is where it is: a centred region)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    h, w = mask.shape
    dy = (h - 1 - int(ys.max())) - int(ys.min())
    dx = (w - 1 - int(xs.max())) - int(xs.min())
    return None if dy == 0 and dx == 0 else (dy, dx)


#: A directional derivative below this fraction of ``|gradient| · |direction|`` is rounding, not a sign.
TCAV_ROUNDING = 1e-5


def _sensitivity(
    model: nn.Module, x: torch.Tensor, direction: ArtifactDirection, artifact_class: int, device: torch.device,
    bs: int,
) -> tuple[float, float, float]:  # fmt: skip
    model.eval()
    layer = original_layer(model, direction.layer)
    v = torch.from_numpy(direction.vector).to(device)
    out: list[torch.Tensor] = []
    scale: list[torch.Tensor] = []
    for s in range(0, len(x), bs):
        with tap(model, layer, replace=lambda a: a.detach().requires_grad_(True)) as got:
            logit = model(x[s : s + bs].to(device))[:, artifact_class]
        (g,) = torch.autograd.grad(logit.sum(), got[0])
        g = g.flatten(1) if v.numel() == g[0].numel() else g.flatten(2).sum(2)
        out.append((g @ v).detach().cpu())
        scale.append((g.norm(dim=1) * v.norm()).detach().cpu())
    d = torch.cat(out)
    # After P-ClArC the derivative along the direction is zero up to rounding: its sign would be noise,
    # so only a derivative above that rounding level counts as positive (the TCAV score).
    positive = d > TCAV_ROUNDING * torch.cat(scale)
    return float(d.mean()), float(d.abs().mean()), float(positive.float().mean())


def score_model(
    model: nn.Module,
    cfg: AuditConfig,
    samples: SampleSet,
    clean_samples: SampleSet,
    sets: EvaluationSets,
    direction: ArtifactDirection,
    region: ArtifactRegion,
    artifact_class: int,
    device: torch.device,
    clean_right: np.ndarray,
) -> ModelScores:
    """Every measurement of the module docstring for one model; ``clean_right`` ``(n_clean,)`` bool says
    which clean samples (``sets.clean``) it classifies right."""
    bs = cfg.batch.batch_size
    clean_acc = float(clean_right.mean())
    of_class = clean_samples.labels[sets.clean] == artifact_class
    class_acc = float(clean_right[of_class].mean()) if of_class.any() else None
    targets = clean_samples.inputs(sets.paste_targets)
    pasted_acc, flip, flip_null, flip_moved = _paste_scores(
        model, targets, clean_samples.labels[sets.paste_targets], samples.inputs(sets.donors),
        samples.inputs(sets.null_donors), region.mask, artifact_class, device, bs,
    )  # fmt: skip
    maps = relevance_maps(
        model,
        samples.batches(sets.relevance, bs),
        samples.labels[sets.relevance],
        cfg.lrp,
        device,
        composite_kwargs(cfg.lrp, samples.input_bounds()),
    )
    share = float(region_share(maps, region.mask).mean())
    sens, sens_abs, tcav = _sensitivity(
        model, samples.inputs(sets.sensitivity), direction, artifact_class, device, bs
    )
    return ModelScores(
        clean_acc, pasted_acc, flip, flip_null, share, sens, sens_abs, tcav, class_acc, flip_moved
    )


def evaluation_sets(
    samples: SampleSet, clean_samples: SampleSet, clean_rows: np.ndarray, flagged: np.ndarray,
    reference: np.ndarray, held: np.ndarray, artifact_class: int, cfg: AuditConfig, split: str,
) -> EvaluationSets:  # fmt: skip
    """Choose (seeded, at most ``eval_max_samples`` each) the rows of every measurement."""
    n, seed = cfg.correction.eval_max_samples, cfg.seed
    others = clean_rows[clean_samples.labels[clean_rows] != artifact_class]
    return EvaluationSets(
        clean=seeded_subset(clean_rows, n, seed, "eval-clean"),
        paste_targets=seeded_subset(others, n, seed, "eval-paste"),
        donors=seeded_subset(flagged, n, seed, "eval-donors"),
        null_donors=seeded_subset(reference, n, seed, "eval-null"),
        relevance=seeded_subset(flagged, n, seed, "eval-relevance"),
        sensitivity=seeded_subset(held, n, seed, "eval-sensitivity"),
        split=split,
    )


def evaluate(
    before: nn.Module, after: nn.Module, cfg: AuditConfig, samples: SampleSet, clean_samples: SampleSet,
    sets: EvaluationSets, direction: ArtifactDirection, region: ArtifactRegion, artifact_class: int,
    device: torch.device,
) -> Evaluation:  # fmt: skip
    """Measure both models on the same sets."""
    args = (cfg, samples, clean_samples, sets, direction, region, artifact_class, device)
    # the clean images are read once for both models: which of them each gets right
    xc, yc, bs = clean_samples.inputs(sets.clean), clean_samples.labels[sets.clean], cfg.batch.batch_size
    right_b = np.asarray(_predict(before, xc, device, bs) == yc)
    right_a = np.asarray(_predict(after, xc, device, bs) == yc)
    b = score_model(before, *args, right_b)
    a = score_model(after, *args, right_a)
    log.info("evaluation: flip rate %.3f -> %.3f, relevance share %.3f -> %.3f, clean accuracy %.4f -> %.4f",
             b.flip_rate, a.flip_rate, b.relevance_share, a.relevance_share, b.clean_accuracy, a.clean_accuracy)  # fmt: skip
    return Evaluation(
        before=b,
        after=a,
        split=sets.split,
        n_clean=len(sets.clean),
        n_paste=len(sets.paste_targets),
        n_relevance=len(sets.relevance),
        n_sensitivity=len(sets.sensitivity),
        region_source=region.source,
        region_box=region.bounding_box(),
        region_pixels=int(region.mask.sum()),
        clean_changes=CleanChanges(
            n=len(sets.clean), gained=int((right_a & ~right_b).sum()), lost=int((right_b & ~right_a).sum())
        ),
    )
