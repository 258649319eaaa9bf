"""The ``correction`` section: unlearning a flagged shortcut (``spray correct``, see docs/correction.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from spray.config.data import DataConfig
from spray.config.section import Section

#: Largest accepted ``rr_lambda``: the published sweeps stop at 1e7 and the benchmark's models are best near
#: 1e2 (docs/correction.md); a larger value is a unit mistake, not a setting.
MAX_RR_LAMBDA = 1e7


class CorrectionConfig(Section):
    """Correcting a flagged shortcut: the artifact group, its direction, the method and its evaluation."""

    # nan passes no bound check's wording ("should be ≤ 1e7 (got nan)"): refuse it, and inf, as not finite
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    method: Literal["pclarc", "rrclarc", "retrain"] = Field(
        "rrclarc",
        description="'pclarc': project the artifact direction out at the layer (no training); 'rrclarc': "
        "fine-tune with cross-entropy + rr_lambda x (output gradient along the direction)^2; 'retrain': "
        "the baseline, train without the flagged samples (or with their artifact region masked).",
    )
    layer: str = Field(
        "auto",
        description="Module path (as in model.named_modules()) whose output carries the artifact "
        "direction; 'auto' takes, for a transformer (a ViT, DeiT), its last block, whose output is (B, tokens, D) "
        "with no spatial grid; else the last module with a (B, C, H, W) output with H·W > 1 (e.g. 'features', "
        "'layer4'; in a Swin, the last such map after its attention, e.g. torchvision's 'permute'; a 1×1 layer "
        "such as ResNet's avgpool is warned about). Refused: a channels-last (B, H, W, C) output (timm's Swin has "
        "no other), a module returning no single tensor, the model's output (the logits).",
    )
    flags_db: Path | None = Field(
        None,
        description="Flag database (SQLite); default <output.runs_dir>/flags.sqlite. A relative path is "
        "relative to the config's folder (for every command), ~ and environment variables expanded.",
    )
    flag_status: Literal["unlearn", "investigate"] = Field(
        "unlearn", description="Which flags form the artifact group."
    )
    cluster_key: str | None = Field(
        None,
        description="Only the flags set from this finding: its key (e.g. '6/k3/c2'; 'key:6/k3/c2' is the key "
        "alone, for classes named by numbers), or the report's class and cluster columns ('dog/k3/c2', or 'k3/c2' when one class has it), read from correction.source_run "
        "or the newest run of the dataset; default: every flag.",
    )
    artifact_class: int | None = Field(
        None,
        ge=0,
        description="Class whose flagged samples are the artifact group and whose other samples are the "
        "reference; default: the one class that holds flags (an error when several do).",
    )
    source_run: str | None = Field(
        None,
        description="Published run the flags refer to (run id prefix or folder name); default: the newest "
        "run of this dataset made with this model.",
    )
    min_group_size: int = Field(
        10, ge=4, description="Fewest samples in the artifact group and in the reference (each)."
    )
    holdout_fraction: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="Share of each group held out of the direction's fit to score its separation.",
    )
    max_reference: int = Field(
        2000, ge=10, description="Most reference samples used for the direction (a seeded subset)."
    )
    pooling: Literal["auto", "none", "max", "mean"] = Field(
        "auto",
        description="Activations the direction is fitted on: per channel and position ('none': an artifact "
        "at a fixed place), spatially max- or mean-pooled per channel (an artifact that moves; applied at "
        "every position), or 'auto': 'none' unless 'max' separates the held-out groups better.",
    )
    pooling_margin: float = Field(
        0.01,
        ge=0.0,
        le=0.5,
        description="With pooling 'auto', 'max' replaces 'none' only when its held-out AUROC is higher by more "
        "than this (a fixed-position artifact is best removed where it sits).",
    )
    min_flip_over_null: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="The paste flip rate's margin over its null (the same region's pixels from reference "
        "samples). Before the correction, a margin below it is warned of: the flagged pixels act no more than "
        "any pixels there, and the flags may not mark a shortcut. After it, a margin of at least this with the "
        "flip-rate goal missed means the shortcut still acts: the finding is not cleared even when the "
        "re-audit no longer flags it (exit 10 with --fail-if-not-cleared).",
    )
    lookalike_alpha: float = Field(
        0.001,
        gt=0.0,
        lt=1.0,
        description="Warn that correction.test_data seems to carry the shortcut when its images of the artifact "
        "class project along the artifact direction as the flagged images do more often than the held-out "
        "unflagged ones (one-sided binomial test at this level): its clean accuracy then counts what the "
        "shortcut gave (docs/correction.md).",
    )
    min_separation: float = Field(
        0.6,
        ge=0.5,
        le=1.0,
        description="Refuse a direction whose held-out AUROC (artifact vs reference) is below this: "
        "correcting along a direction that does not tell the groups apart only damages the model.",
    )
    region_mass: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Artifact region (for pasting, masking and the relevance share), step 1: the fewest "
        "pixels holding this share of the flagged samples' excess relevance over the reference, grown by "
        "one pixel: where the artifact can be.",
    )
    region_max_fraction: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="The relevance zone of step 1 covers at most this share of the image before its "
        "one-pixel growth; step 3 extends a stamp only while it stays within it.",
    )
    stamp_contrast: float = Field(
        1.0,
        gt=0.0,
        description="Step 2, inside that zone: a pixel is the artifact's when the flagged samples' mean "
        "differs from the reference's by at least this many reference standard deviations...",
    )
    stamp_consistency: float = Field(
        0.5,
        gt=0.0,
        description="... and the flagged samples vary there at most this share of the reference's standard "
        "deviation (a stamp repeats its pixels). No such pixel: the zone itself is the region.",
    )
    stamp_quantile: float = Field(
        0.9,
        gt=0.5,
        le=1.0,
        description="Step 2 first reads the flagged samples robustly: their value at a pixel is the median, "
        "and how much they vary is this quantile of their distances from it, so up to 1 - stamp_quantile "
        "of them may be wrongly flagged without hiding the stamp.",
    )
    stamp_carrier_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Step 2 then keeps the flagged samples that match that stamp on this share of its pixels "
        "(its carriers) and reads the stamp again from them alone, each carrier within stamp_consistency at "
        "every pixel, so pixels that most of a look-alike group share are not taken for the stamp.",
    )
    stamp_std_floor: float = Field(
        0.1,
        ge=0.0,
        description="Floor of the reference's per-pixel standard deviation in step 2, as a share of its "
        "overall pixel standard deviation (on a constant background any difference would count).",
    )
    stamp_extend: bool = Field(
        True,
        description="Step 3: extend the stamp found in the zone to every pixel connected to it (8 neighbours) "
        "that passes the same test anywhere in the image, up to region_max_fraction: a frame, line or "
        "tag whose relevance sits on only part of it is taken whole.",
    )
    region_samples: int = Field(
        256,
        ge=4,
        description="Samples of each group whose relevance and pixels locate the region (and whose mean "
        "input fills it in the masked baseline).",
    )
    artifact_box: list[int] | None = Field(
        None,
        description="[top, left, height, width] of the artifact in model-input pixels, when known; "
        "replaces the region estimated from relevance.",
    )
    rr_lambda: float = Field(
        30000.0,
        gt=0.0,
        le=MAX_RR_LAMBDA,
        description="Weight of the right-reason penalty (RR-ClArC) against the cross-entropy "
        "(docs/correction.md: chosen on tuning cells, 1e3 left a frame's shortcut in place).",
    )
    rr_target: Literal["random_sign", "artifact_class", "label"] = Field(
        "random_sign",
        description="Output whose gradient is penalised: a random-sign sum of all logits (every class, "
        "in expectation), the artifact class's logit, or the true class's logit.",
    )
    rr_aggregation: Literal["position", "whole"] = Field(
        "position",
        description="Penalise the gradient's component along the direction at every position, squared and "
        "summed ('position': no position can cancel another), or of the whole gradient ('whole').",
    )
    rr_directions: int = Field(
        1,
        ge=1,
        le=64,
        description="Directions along which RR-ClArC penalises the gradient's component (each squared, "
        "summed): the CAV, plus this many minus one leading directions of the artifact's paired effect (the "
        "activation change when the flagged pixels are pasted into reference samples) orthogonal to it; 1 is "
        "plain RR-ClArC. Only method rrclarc reads it.",
    )
    rr_direction_samples: int = Field(
        512,
        ge=16,
        description="Most reference samples (a seeded subset of those the direction is fitted on, so at most "
        "that many) the flagged pixels are pasted into to measure the paired effect; the record keeps the "
        "count and the subspace's share of the effect, also with rr_directions 1.",
    )
    rr_region_weight: float = Field(
        30.0,
        ge=0.0,
        le=1e4,
        description="Weight of RR-ClArC's region term: the share of the layer's relevance (activation x gradient "
        "of a logit, see rr_region_target, summed over channels) at the positions whose relevance LRP carries "
        "into the artifact region, each weighted by how much of it gets there (docs/correction.md, 'The region "
        "term'; 30 chosen on tuning cells); 0 turns it off (plain RR-ClArC). Needs a layer with a (B, C, H, W) "
        "output.",
    )
    rr_region_target: Literal["label", "artifact_class"] = Field(
        "artifact_class",
        description="Whose relevance the region term takes off the region: the artifact class's logit of "
        "every sample ('artifact_class': the other classes keep drawing on those positions; chosen on tuning "
        "cells), or the true class's logit of each sample ('label').",
    )
    rr_region_scope: Literal["all", "flagged"] = Field(
        "all",
        description="Samples on which the region term is taken: every fine-tuning sample ('all'), or only "
        "the flagged samples of a batch, those that carry the artifact ('flagged': the artifact class keeps "
        "drawing on those positions where the artifact is absent; a batch without one adds nothing).",
    )
    rr_region_samples: int = Field(
        16,
        ge=1,
        le=4096,
        description="Flagged samples on which the region's footprint at the layer is measured (one LRP pass "
        "per tile of the layer's grid, at most 8 x 8 tiles). Only read when rr_region_weight > 0.",
    )
    train_scope: Literal["after_layer", "all"] = Field(
        "after_layer",
        description="Parameters fine-tuned: only those of the modules after the layer (the direction stays "
        "valid and the layer's activations are computed once; a parameter the model holds itself and adds in "
        "forward(), such as a ViT's pos_embed, is not one), or all (BatchNorm statistics frozen).",
    )
    epochs: int = Field(3, ge=1, le=1000, description="Passes over the fine-tuning set.")
    finetune_samples: int = Field(
        5000,
        ge=10,
        description="Most training samples used for fine-tuning (a seeded subset that always holds the "
        "artifact group).",
    )
    activation_cache_mb: int = Field(
        2048,
        ge=0,
        description="With train_scope 'after_layer', keep the layer's activations of the fine-tuning set in "
        "memory up to this size and train the rest of the model on them (the frozen part runs once, not "
        "every epoch); 0 turns it off.",
    )
    batch_size: int = Field(128, ge=1, description="Fine-tuning / retraining batch size.")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="Fine-tuning optimiser.")
    lr: float = Field(
        2e-3,
        gt=0.0,
        le=1.0,
        description="Learning rate (of the part after the layer, by default; docs/correction.md has the "
        "measurements behind 2e-3 with Adam, chosen on tuning cells).",
    )
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="Learning rate over the training steps: down to 0 along a half cosine (the last steps "
        "settle instead of ending on a large step), or constant.",
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay.")
    checkpoint_every: int = Field(
        50, ge=1, description="Optimiser steps between resume checkpoints of a training correction."
    )
    retrain_mode: Literal["drop", "mask"] = Field(
        "drop",
        description="Baseline: drop the flagged samples, or keep them with their artifact region filled "
        "with the reference's mean pixels.",
    )
    retrain_init: Literal["scratch", "checkpoint"] = Field(
        "scratch",
        description="Baseline: train a freshly initialised model for retrain_epochs, or fine-tune the "
        "audited one (epochs, train_scope).",
    )
    retrain_epochs: int = Field(3, ge=1, le=1000, description="Baseline from scratch: training epochs.")
    retrain_lr: float = Field(2e-3, gt=0.0, le=1.0, description="Baseline from scratch: learning rate.")
    test_data: DataConfig | None = Field(
        None,
        description="Held-out data for the clean accuracy and the paste test (same format as 'data'; each "
        "data.transform field it does not set, and (no class folders) data.class_names unless it names its own, come "
        "from 'data'; "
        "refused when its labels name other classes or its images another input size; relative paths resolve "
        "against the config's folder). Without it a seeded part of the audited "
        "data, kept out of fine-tuning, is used (the original model saw it in training).",
    )
    eval_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Without test_data: share of the audited data kept out of fine-tuning for evaluation.",
    )
    eval_max_samples: int = Field(
        2000, ge=10, description="Most samples per evaluation (clean accuracy, paste test, relevance)."
    )
    max_class_accuracy_drop: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Warn when the corrected model's accuracy on the artifact class's own clean images falls by "
        "more than this (absolute): a model that stops answering the class also stops flipping other images "
        "to it, so the flip rate alone would call that a success.",
    )
    reaudit: bool = Field(
        True, description="Audit the corrected model with the same config (is the finding still there?)."
    )
    reaudit_min_jaccard: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="A re-audit cluster is the flagged finding again when its members overlap the flagged "
        "samples by at least this Jaccard index.",
    )
    reaudit_min_contained: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="A suspicious re-audit cluster also keeps the flag when at least this share of the flagged "
        "samples are among its members and carriers: flags set on part of a group (one of a shortcut's "
        "findings, without its carriers) overlap the whole group by a small Jaccard index.",
    )
    reaudit_min_enrichment: float = Field(
        2.0,
        ge=1.0,
        description="With reaudit_min_contained: the finding must hold the flagged samples at least this many "
        "times as densely as their class does (its members and carriers against the class), so that a large "
        "finding holding most of the class does not keep the flag by size alone.",
    )
    reaudit_no_worse: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="A heatmap problem the re-audit's checks find (heatmaps carrying little of the logit, nearly "
        "flat heatmaps) is no doubt on its verdict when the source run had it too, with the re-audit's measure "
        "(logit share, contrast) at least this share of the source run's: the finding was found under the "
        "same condition. A collapse of the corrected model's accuracy always is a doubt. Not part of the "
        "correction's id: a published correction keeps the value it was made with.",
    )

    @field_validator("artifact_box")
    @classmethod
    def _box_ok(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if len(v) != 4 or v[0] < 0 or v[1] < 0 or v[2] < 1 or v[3] < 1:
            raise ValueError("must be [top, left, height, width] with top, left >= 0 and height, width >= 1")
        return v

    @field_validator("layer")
    @classmethod
    def _layer_ok(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a module (see model.named_modules()) or be 'auto'")
        return v.strip()
