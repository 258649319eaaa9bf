"""Named records passed between stages.

Stages take and return these dataclasses, never bare tuples. Sample ids (``str``) travel with every
array so that each heatmap leads back to its image.

Array shape conventions used in docstrings: ``N`` samples, ``C`` channels, ``H×W`` input size,
``h×w`` analysis grid, ``n`` samples of one class, ``d`` reduced dimension, ``m`` eigenpairs,
``K`` classes of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SkippedSample:
    """A sample that could not be read or explained; the run goes on without it."""

    sample_id: str
    reason: str


@dataclass
class AttributionBatch:
    """Output of the batch stage for a set of samples (one shard, or the merged dataset).

    Attributes
    ----------
    sample_ids : list[str]
        Stable ids, length ``N``.
    labels : np.ndarray
        ``(N,)`` int64 true labels.
    predictions : np.ndarray
        ``(N,)`` int64 argmax of the logits.
    probabilities : np.ndarray
        ``(N, K)`` float32 softmax outputs.
    relevance : np.ndarray
        ``(N, h, w)`` float16 relevance, channel-summed and sum-pooled to the analysis grid.
    targets : np.ndarray
        ``(N,)`` int64 class whose logit was explained.
    content_hashes : list[str]
        Hash of each sample's input tensor, length ``N`` (used by the incremental cache).
    concepts : np.ndarray or None
        ``(N, C)`` float32 concept relevance (per channel of ``lrp.concept_layer``, summed over
        positions); None when ``lrp.concept_layer`` is ``none``.
    """

    sample_ids: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    relevance: np.ndarray
    targets: np.ndarray
    content_hashes: list[str] = field(default_factory=list)
    concepts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)


@dataclass
class SpectralResult:
    """Spectral embedding of one class.

    Attributes
    ----------
    eigenvalues : np.ndarray
        ``(m,)`` float64 leading eigenvalues of ``D^-1/2 A D^-1/2``, descending (1.0 first).
    eigenvectors : np.ndarray
        ``(n, m)`` float32 corresponding eigenvectors (columns).
    knn_indices : np.ndarray
        ``(n, k_nn)`` int64 neighbour indices (row-local, into this class).
    knn_distances : np.ndarray
        ``(n, k_nn)`` float32 neighbour distances (the distance of ``knn_indices[i, j]`` to ``i``).
    n_components : int
        Number of connected components of the symmetric kNN graph.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    knn_indices: np.ndarray
    knn_distances: np.ndarray
    n_components: int


@dataclass
class ClusteringResult:
    """All k-means labellings of one class and the chosen k.

    Attributes
    ----------
    labellings : dict[int, np.ndarray]
        ``k -> (n,)`` int32 cluster labels, for every k in ``2..k_max``.
    chosen_k : int
        k picked by combining the eigengap with seed stability / silhouette.
    eigengap_k : int
        k suggested by the eigengap alone (kept for the evidence; not trusted on its own).
    scores : dict[int, dict[str, float]]
        ``k -> {"silhouette": ..., "stability": ..., ...}`` diagnostic scores.
    """

    labellings: dict[int, np.ndarray]
    chosen_k: int
    eigengap_k: int
    scores: dict[int, dict[str, float]]


@dataclass
class ClusterFinding:
    """One cluster of one class with its suspicion score and human-checkable evidence.

    Attributes
    ----------
    class_index : int
        Class the cluster belongs to.
    class_name : str
        Human-readable class name.
    cluster_id : int
        Label of the cluster in ``labellings[k]``.
    k : int
        The labelling this cluster comes from.
    size : int
        Number of members.
    fraction : float
        ``size / n`` within the class.
    score : float
        Suspicion score; higher is more suspicious. Comparable across classes of one run.
    suspicious : bool
        Calibrated alarm flag.
    evidence : list[str]
        Sentences a person can check (e.g. "71 % of its relevance lies in a 4×4 region at the top left").
    signals : dict[str, float]
        Raw signal values behind the score.
    member_ids : list[str]
        Sample ids of the members.
    mean_heatmap : np.ndarray
        ``(h, w)`` float32 mean normalised relevance of the members.
    carrier_ids : list[str]
        Flagged findings only: ids of other samples of the class that repeat the members' pixels where
        the members' relevance is (the same stamp, found outside the cluster). Empty otherwise.
    space : str
        Where the group was found: ``"pixel"`` (the heatmaps), ``"concept"`` (the concept-relevance
        vectors only; ``k`` and ``cluster_id`` then refer to the class's concept labellings) or
        ``"both"`` (a pixel candidate that a concept cluster matches; it carries both evidences).
    channels : list[int]
        Characteristic channels of the concept layer (``"concept"`` and ``"both"``; empty for
        ``"pixel"``), most characteristic first.
    """

    class_index: int
    class_name: str
    cluster_id: int
    k: int
    size: int
    fraction: float
    score: float
    suspicious: bool
    evidence: list[str]
    signals: dict[str, float]
    member_ids: list[str]
    mean_heatmap: np.ndarray
    carrier_ids: list[str] = field(default_factory=list)
    space: str = "pixel"
    channels: list[int] = field(default_factory=list)
    #: with ``scoring.graded_suspicion``: other samples' affinity in (0, 0.5) to a flagged stamp (not written)
    carrier_affinity: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """Stable key used in URLs and summaries: ``"<class>/k<k>/c<cluster>"``, and for a concept-only
        finding ``"<class>/concept/k<k>/c<cluster>"`` (a cluster of the concept labellings)."""
        return cluster_key(self.class_index, self.k, self.cluster_id, self.space)


#: The spaces a finding can come from (:attr:`ClusterFinding.space`).
SPACES = ("pixel", "concept", "both")


def score_text(score: float) -> str:
    """A finding's suspicion score for people: three decimals, or three significant digits below 0.1 so that
    small scores ranked apart do not print alike ("0.004" six times)."""
    return f"{score:.3f}" if score == 0 or abs(score) >= 0.1 else f"{score:.3g}"


def cluster_key(class_index: int, k: int, cluster_id: int, space: str = "pixel") -> str:
    """``"<class>/k<k>/c<cluster>"`` (pixel labellings) or ``"<class>/concept/k<k>/c<cluster>"``."""
    middle = "concept/" if space == "concept" else ""
    return f"{class_index}/{middle}k{k}/c{cluster_id}"


@dataclass
class ClassAnalysis:
    """Everything the analysis computed for one class.

    Attributes
    ----------
    class_index, class_name
        The class.
    sample_ids : list[str]
        Members in row order, length ``n``.
    spectral : SpectralResult
        Eigenpairs and kNN graph.
    clustering : ClusteringResult
        All labellings and the chosen k.
    embedding : np.ndarray
        ``(n, 2)`` float32 seeded 2-D map for display.
    embedding_method : str
        ``"umap"``, ``"tsne"`` or ``"spectral"`` (first two non-trivial eigenvectors).
    clusters : list[ClusterFinding]
        Scored candidates (clusters of every k and hot-spot groups, one per pattern), most suspicious
        first; they may overlap.
    sample_suspicion : np.ndarray
        ``(n,)`` float32 per-sample suspicion in row order, consistent with ``clusters``
        (:func:`spray.analysis.scoring.sample_suspicion`); what ``samples.parquet``'s ``score`` holds.
    concept_labellings : dict[int, np.ndarray]
        ``k -> (n,)`` int32 labels of the concept-space k-means sweep (empty when the class was not
        analysed in concept space); the members of concept-only findings.
    """

    class_index: int
    class_name: str
    sample_ids: list[str]
    spectral: SpectralResult
    clustering: ClusteringResult
    embedding: np.ndarray
    embedding_method: str
    clusters: list[ClusterFinding]
    sample_suspicion: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    concept_labellings: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class ConditionalMaps:
    """Concept-conditional heatmaps of some members of one concept finding (``concept_maps.npz``).

    Attributes
    ----------
    key : str
        The finding (``space`` ``concept`` or ``both``).
    sample_ids : list[str]
        The ``m`` members explained, highest share of concept relevance in the finding's channels first.
    maps : np.ndarray
        ``(m, h, w)`` float16 relevance of the finding's channels only, propagated to the input and
        pooled like the heatmaps.
    """

    key: str
    sample_ids: list[str]
    maps: np.ndarray


#: Why a class is left out: too few samples (the reason of runs written before reasons were kept).
TOO_FEW_SAMPLES = "fewer than analysis.min_class_size samples"


def skipped_size(n: int, reason: str) -> str:
    """``"12 samples: <reason>"``, ``"1 sample: ..."``; an empty class's reason alone (``"no samples"``)."""
    return reason if n == 0 and reason == NO_SAMPLES else f"{n:,} sample{'' if n == 1 else 's'}: {reason}"


#: The reason of a class without any sample.
NO_SAMPLES = "no samples"
#: Why a class is left out: nothing to analyse.
ZERO_HEATMAPS = "every heatmap is zero: the class's logit does not depend on the input"
UNNAMED_OUTPUT = "a model output the dataset names no class for (analysis.group_by: prediction)"


@dataclass(frozen=True)
class ClassSkipped:
    """A class left out of the analysis: fewer than ``analysis.min_class_size`` samples, or every heatmap zero
    (``reason``)."""

    class_index: int
    class_name: str
    n: int
    reason: str = TOO_FEW_SAMPLES


@dataclass(frozen=True)
class ChangeRule:
    """When a cluster of this run is the same as one of the previous run, and when it has grown.

    Two clusters of the same class match when the Jaccard index of their member ids reaches
    ``jaccard_min`` or the Pearson correlation of their mean heatmaps reaches ``correlation_min`` (a
    cluster whose members were replaced is still recognised by what the model looks at). A matched
    cluster has *grown* when it gained at least one member and at least ``grow_min`` of its previous size.
    A suspicious cluster left without a match is part of one on the other side when at least
    ``contained_min`` of its members are in it (a cluster that split, or two that merged): persisting, not
    new or resolved. The values come from the ``nightly`` config section (``match_jaccard``,
    ``match_correlation``, ``grown_min``, ``match_contained``), the one place that defines them.
    """

    jaccard_min: float
    correlation_min: float
    grow_min: float
    contained_min: float = 0.8


@dataclass(frozen=True)
class ClusterChange:
    """One entry of a :class:`ChangeSet`: a suspicious cluster that is new, grown, persisting or resolved.

    Attributes
    ----------
    key : str or None
        The cluster in this run (None for a resolved cluster that matches nothing now).
    class_index, class_name
        Its class.
    size, score, rank : optional
        In this run (rank: position in the run's ranked findings, from 1).
    previous_key, previous_size, previous_score : optional
        The matched cluster of the previous run.
    jaccard, correlation : float or None
        The match: member-id Jaccard and mean-heatmap correlation (None: no comparable heatmap).
    note : str
        Why a new cluster was known before, or what became of a resolved one ("" when nothing to add).
    """

    key: str | None
    class_index: int
    class_name: str
    size: int | None = None
    score: float | None = None
    rank: int | None = None
    previous_key: str | None = None
    previous_size: int | None = None
    previous_score: float | None = None
    jaccard: float | None = None
    correlation: float | None = None
    note: str = ""


@dataclass(frozen=True)
class UnreadableRun:
    """A published run that could not be read (skipped when looking for the previous run)."""

    run: str
    reason: str


def is_relabel(was: tuple[int | None, str], now: tuple[int, str]) -> bool:
    """Whether a sample's class went from ``was`` (label, name; the label None where it was not recorded) to
    another class ``now``: renamed classes keep their labels and an inserted class folder shifts them under
    the same names, so a relabelled image changes both."""
    return was[1] != now[1] and was[0] != now[0]


@dataclass(frozen=True)
class DataChanges:
    """What changed in the data between two runs, by sample id and content hash.

    Attributes
    ----------
    added : int
        Samples whose content is new (not in the previous run under any id).
    removed : int
        Previous samples whose content is gone (not in this run under any id).
    modified : int
        Ids in both runs whose content changed (a file replaced in place).
    moved : int
        New ids whose content the previous run held under another id that this run no longer has (a renamed
        file, a reordered record).
    copied : int
        New ids whose content the previous run held under an id this run still has (a duplicate added).
    relabelled : int
        Ids in both runs with the same content whose class changed (label and name: a label fixed in the
        labels file or an image moved to another class folder under the same id).
    unreadable : int
        Previous samples whose id is still in the dataset but that this run skipped with a reason (a
        truncated or damaged file, another size than the dataset's inputs), not counted as removed.
    """

    added: int
    removed: int
    modified: int
    moved: int
    copied: int = 0
    relabelled: int = 0
    unreadable: int = 0

    def sentence(self) -> str:
        """The changes in one sentence (the nightly log line, report.html); an image moved into another
        class folder is both moved and relabelled, and the sentence says so."""
        copies = (
            "1 copy of a kept image under a new id"
            if self.copied == 1
            else f"{self.copied} copies of kept images under new ids"
        )
        return (
            f"{self.added} image{'' if self.added == 1 else 's'} added, {self.removed} removed, "
            f"{self.modified} modified in place, {self.moved} moved to another id, {copies}, {self.relabelled} "
            "relabelled (same image, another class; an image moved into another class folder counts as moved "
            f"and relabelled), {self.unreadable} skipped now (unreadable or another size: listed with the reason)"
        )


#: What the changes say when the previous run explained another model (``model_changed`` True).
MODEL_CHANGED = (
    "The model changed since the previous run (other weights or model code): its clusters are matched across two "
    "models, so a new and a resolved entry may be one shortcut learned again."
)
#: What the changes say before their ``config_changed`` list (settings, and spray's code version after an upgrade).
SETTINGS_CHANGED = (
    "Settings or spray's own versions changed since the previous run, so a cluster may come or go by them"
)
#: What the changes say when the previous run's model fingerprint is another spray version's (``model_changed`` None).
MODEL_UNKNOWN = (
    "Whether the model changed since the previous run cannot be told: that run's model fingerprint was made by "
    "another spray version, so a new and a resolved entry may be one shortcut of other weights."
)


@dataclass
class ChangeSet:
    """What changed since the previous run of the same audit (``summary.json`` → ``changes``).

    Attributes
    ----------
    previous_run_id, previous_run : str or None
        The run compared with (its id and folder name); None when there is none.
    new, grown, persisting : list[ClusterChange]
        This run's suspicious clusters, by how they relate to the previous run's.
    resolved : list[ClusterChange]
        The previous run's suspicious clusters with no suspicious match now.
    n_suspicious : int
        Suspicious clusters in this run.
    rule : ChangeRule
        The matching thresholds used.
    unreadable : list[UnreadableRun]
        Newer published runs of the same audit that could not be read and were passed over.
    not_analysed : list[ClusterChange]
        The previous run's suspicious clusters whose class this run did not analyse (too few readable
        samples): no verdict, neither resolved nor still there.
    model_changed : bool or None
        The previous run explained other weights or model code (a retrained model, an edited forward): its
        clusters are matched across two models, so a "new" and a "resolved" entry may be one shortcut learned
        again. None: not known.
    data : DataChanges or None
        What changed in the data since the previous run; None when either run lacks content hashes.
    config_changed : list[str]
        The result-relevant settings that differ from the previous run's (``"scoring.flag_max_fraction:
        0.6 → 0.1"``, ``"seed: 0 → 1"``, the code version), so that a finding resolved by a setting is not
        read as a shortcut gone.
    """

    previous_run_id: str | None
    previous_run: str | None
    new: list[ClusterChange]
    grown: list[ClusterChange]
    persisting: list[ClusterChange]
    resolved: list[ClusterChange]
    n_suspicious: int
    rule: ChangeRule
    unreadable: list[UnreadableRun] = field(default_factory=list)
    not_analysed: list[ClusterChange] = field(default_factory=list)
    model_changed: bool | None = None
    data: DataChanges | None = None
    config_changed: list[str] = field(default_factory=list)

    @property
    def n_new(self) -> int:
        return len(self.new)

    @property
    def n_grown(self) -> int:
        return len(self.grown)

    @property
    def n_resolved(self) -> int:
        return len(self.resolved)


@dataclass
class AuditReport:
    """The result of one audit run (what a run folder stores; see ``docs/run_layout.md``).

    Attributes
    ----------
    run_id : str
        Content hash of model, data, config and code versions.
    run_dir : str
        Published run directory ("" when not written to disk).
    hashes : dict[str, str]
        ``{"model": ..., "data": ..., "config": ..., "code": ...}``.
    timings : dict[str, Any]
        Seconds per stage, plus what varies between identical runs (device, cache hits).
    skipped : list[SkippedSample]
        Samples that could not be read.
    classes : list[ClassAnalysis]
        Per-class analysis.
    findings : list[ClusterFinding]
        All clusters of all classes ranked by suspicion, most suspicious first.
    extra : dict[str, Any]
        Free-form additions a caller wants stored in ``summary.json`` under ``extra``.
    name : str
        The audit's ``name``.
    dataset : str
        The dataset key (flags are stored under it; previous runs are matched by it).
    class_names : list[str]
        Names in label order.
    n_samples : int
        Samples analysed (readable ones).
    classes_skipped : list[ClassSkipped]
        Classes too small to analyse.
    config : dict[str, Any]
        The full resolved config (every section), as JSON values.
    cache : str
        Name of the cache directory the heatmaps came from ("" when unknown).
    versions : dict[str, Any]
        ``{"spray", "lrp", "analysis", "layout"}`` (:func:`spray.versions.version_stamp`).
    changes : ChangeSet or None
        Changes since the previous run (the nightly job).
    up_to_date : bool
        True when an identical published run was reused instead of computed.
    rank : int
        Process rank under torchrun (ranks other than 0 return an empty report after the batch stage).
    conditional_maps : list[ConditionalMaps]
        Concept-conditional heatmaps of the concept findings' members (``concept_maps.npz``).
    content_hashes : dict[str, str]
        ``sample_id -> content hash`` of every analysed sample (``samples.parquet``; empty for runs of
        layout < 5): change detection matches clusters by content, so renamed files keep their cluster.
    labels : dict[str, int]
        ``sample_id -> true label`` of every analysed sample, also in classes too small to analyse (empty for a
        run read back from disk): the data changes count an image moved into such a class as relabelled.
    """

    run_id: str
    run_dir: str
    hashes: dict[str, str]
    timings: dict[str, Any]
    skipped: list[SkippedSample]
    classes: list[ClassAnalysis]
    findings: list[ClusterFinding]
    extra: dict[str, Any] = field(default_factory=dict)
    name: str = "audit"
    dataset: str = ""
    class_names: list[str] = field(default_factory=list)
    n_samples: int = 0
    classes_skipped: list[ClassSkipped] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    cache: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    changes: ChangeSet | None = None
    up_to_date: bool = False
    rank: int = 0
    conditional_maps: list[ConditionalMaps] = field(default_factory=list)
    content_hashes: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
