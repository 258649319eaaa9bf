"""The ``concepts`` section: spectral relevance analysis in concept space, beside the pixel space."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spray.config.section import Section


class ConceptsConfig(Section):
    """Concept-space analysis: each class's concept-relevance vectors (``lrp.concept_layer``) clustered
    with the pixel stage's spectral settings (``analysis``); see ``docs/concepts.md``."""

    enabled: bool = Field(
        True,
        description="Analyse every class in concept space too, beside the pixel space (needs concept vectors: "
        "lrp.concept_layer; with lrp.concept_layer none, or a model where 'auto' finds no layer, the run is "
        "analysed in pixel space only; so is one with scoring.removal false, which the flag rule needs: the default "
        "yields to both and the run records false). false is the cheap way to turn it off: lrp.concept_layer "
        "is part of the heatmap cache key, so changing it recomputes every heatmap. Concept-only findings are tested by intervention at each image's "
        "concept-conditional hot pixels (intervention) and, on colour images, by their colour statistics "
        "(colour_test). On by default since its protocol's conditions were met on the held-out splits; it "
        "costs about 2.5x the CPU time of an audit whose heatmaps are cached, and 3.6-6x the analysis stage "
        "alone (mostly the interventions of concept-only findings and the concept-space clustering); false: pixel space only, exactly as "
        "before. See docs/concepts.md.",
    )
    intervention: bool = Field(
        True,
        description="Test each concept-only finding as the pixel candidates are tested, at each image's "
        "own hot pixels in its concept-conditional heatmap (a pattern that moves is found wherever it "
        "sits): paste them into other-class images and remove them from the members, each against the "
        "same test on non-members of the class. Needs the model's logits and a concept layer.",
    )
    colour_test: bool = Field(
        True,
        description="On colour inputs, also test each concept-only finding by its images' colour statistics "
        "(a colour cast is not a region): give the members the class's typical per-channel mean and spread "
        "(the non-members' median) and measure the class logit's drop, and give other-class images a member's "
        "and measure its gain, each against the same on non-members. Judged by flag_rule and flag_gain_ratio "
        "as the hot-pixel test is; either test can flag. A finding flagged with its colour removal lists as "
        "carriers the class's images whose logit the typical colour lowers as the members'. Classes whose "
        "images are grey (channels alike up to one scale and offset) are not tested. Needs intervention.",
    )
    colour_min_auroc: float | None = Field(
        0.9,
        ge=0.5,
        le=1.0,
        description="The colour test's removal must separate the members' logit drops from the non-members' "
        "with at least this AUROC (its other margins are scoring's); null: scoring.removal_min_auroc. Giving "
        "an image the class's typical colour moves every image's logit a little, so a colour removal "
        "separates less sharply than removing a local stamp. 0.9 was chosen on the development moving splits "
        "by a rule fixed before, together with colour_gain_margin (docs/concepts.md).",
    )
    colour_gain_margin: bool = Field(
        True,
        description="The colour test's paste must also raise the class logit by scoring.paste_gain_margin more "
        "than a non-member's colour does (the gain ratio alone passes a tiny gain over a null at or below 0).",
    )
    flag_rule: Literal["both", "removal", "any"] = Field(
        "removal",
        description="Which interventions must clear the scoring section's margins for a concept-only finding "
        "to be flagged: both (paste and removal), removal (the removal test, and the paste gain ratio of "
        "flag_gain_ratio) or any (either; the paste clears by flips or by logit gain). A concept finding has "
        "no appearance gate (its members' hot pixels sit at different places). removal with flag_gain_ratio "
        "1.5 was chosen on the tuning split by a rule fixed before (docs/concepts.md).",
    )
    flag_gain_ratio: float = Field(
        1.5,
        ge=0.0,
        description="With flag_rule removal: the members' paste gain must also reach this multiple of the "
        "non-members', smoothed as (gain + scoring.gain_eps) / (max(null, 0) + scoring.gain_eps); 0: not "
        "needed. 1.5 chosen with flag_rule on the tuning split.",
    )
    max_typicality: float | None = Field(
        1.25,
        gt=0.0,
        description="A concept-only finding's hot-pixel test counts toward a flag only when its members' hot "
        "pixels lie off the places where the rest of the class puts the finding's channels' relevance: the "
        "typicality (the non-members' mean concept-conditional share at each member's hot cells over its "
        "grid mean, median over members; above 1 on the object's usual parts) is at most this. None: not "
        "needed. The colour test is not affected. 1.25 was chosen on the tuning split and the development "
        "moving splits by a rule fixed before (docs/concepts.md).",
    )
    channels: int = Field(
        3,
        ge=1,
        le=64,
        description="Characteristic channels of a concept cluster: at most this many, those whose share "
        "of positive concept relevance its members hold most above the rest of the class.",
    )
    candidates: int = Field(
        3,
        ge=0,
        le=64,
        description="Concept-only findings kept per class: the highest-scoring concept clusters that "
        "match no pixel finding and do not repeat a kept one (nest_overlap).",
    )
    min_cluster_size: int = Field(
        5, ge=1, description="Concept clusters smaller than this are not reported or merged."
    )
    nest_overlap: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="A concept cluster whose member Jaccard with a higher-scoring kept one reaches this is "
        "the same group at another k, and is not reported again.",
    )
    merge_jaccard: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="A concept cluster and a pixel candidate of the same class whose member Jaccard reaches "
        "this are one group found in both spaces: one finding (the pixel one) carrying both evidences.",
    )
    score_weight: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Weight of the concept score in a concept-only finding's score: suspicion(score_weight x "
        "concept score x (0.5 + the stronger intervention's strength), flagged) once tested, as a pixel "
        "candidate's map score is weighted (a tested finding whose interventions show nothing scores half "
        "of an untested one); suspicion(score_weight x concept score, not flagged) when untested. It puts "
        "the concept score on the pixel candidates' scale, so an unflagged concept group of a clean class "
        "does not outrank a class's best pixel candidate (flags do not depend on it). 0.1 chosen on the "
        "tuning and development moving splits (docs/concepts.md).",
    )
    conditional_members: int = Field(
        64,
        ge=0,
        le=100_000,
        description="Members per concept finding whose concept-conditional heatmap (the relevance of its "
        "characteristic channels only, propagated to the input) is computed and stored in the run; the "
        "members with the highest share in those channels first.",
    )
    references: int = Field(
        8,
        ge=1,
        le=256,
        description="Reference samples per characteristic channel shown on the dashboard's cluster page "
        "(the samples of the run with the highest relevance of that channel).",
    )
