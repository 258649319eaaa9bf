"""The reader of a run folder: typed, read-only, sample ids everywhere, one clear error per damaged file.

This is the only module of spray that reads ``summary.json`` or loads the arrays of a run; the
dashboard, the HTML report, the nightly job and ``spray.load_report`` all go through it::

    from spray.runs.reader import RunReader
    run = RunReader.open("runs/latest")
    run.summary.findings[0].key                 # cheap: summary.json only
    top = run.finding(run.summary.findings[0].key)   # members, mean heatmap, carriers
    run.heatmaps(top.member_ids)                # (n, h, w) float16, in the order asked for
    report = run.report()                       # the whole AuditReport (spray.load_report)

Row positions stay inside: every array that has one row per sample is asked for by sample id. A file
that is missing, truncated or damaged raises :class:`~spray.runs.errors.RunReadError` naming it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spray.records import (
    AuditReport,
    ChangeSet,
    ClassAnalysis,
    ClusterFinding,
    ClusteringResult,
    ConditionalMaps,
    SpectralResult,
)
from spray.runs.errors import RunReadError
from spray.runs.keys import key_space as key_space
from spray.runs.keys import parse_cluster_key as parse_cluster_key
from spray.runs.layout import CORRECTION_DIRECTION, SAMPLE_ORDER, RunFiles, check_sample_order
from spray.runs.summary import FindingSummary, RunSummary, parse_changes, parse_summary

#: Arrays every class file holds (``knn_distances`` from layout 2 on; ``labels_k<k>`` for each k).
CLASS_ARRAYS = (
    "rows",
    "eigenvalues",
    "eigenvectors",
    "embedding",
    "knn_indices",
    "cluster_keys",
    "mean_heatmaps",
)


@dataclass(frozen=True)
class ClassData:
    """The analysis arrays of one class, by sample id.

    Attributes
    ----------
    class_index, class_name
        The class.
    sample_ids : list[str]
        Its ``n`` members; every array below has one row per entry, in this order.
    eigenvalues : np.ndarray
        ``(m,)`` float64, descending.
    eigenvectors : np.ndarray
        ``(n, m)`` float32.
    embedding : np.ndarray
        ``(n, 2)`` float32 2-D map.
    knn_indices : np.ndarray
        ``(n, k_nn)`` int64 neighbours, as positions into ``sample_ids``.
    knn_distances : np.ndarray or None
        ``(n, k_nn)`` float32 (None for layout-1 runs, which did not store them).
    labellings : dict[int, np.ndarray]
        ``k -> (n,)`` int32 cluster labels for every stored k.
    mean_heatmaps : dict[str, np.ndarray]
        Cluster key → ``(h, w)`` float32 mean normalised relevance, for every scored cluster.
    concept_labellings : dict[int, np.ndarray]
        ``k -> (n,)`` int32 labels of the concept-space sweep (layout 4; empty when the class was not
        analysed in concept space).
    """

    class_index: int
    class_name: str
    sample_ids: list[str]
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    embedding: np.ndarray
    knn_indices: np.ndarray
    knn_distances: np.ndarray | None
    labellings: dict[int, np.ndarray]
    mean_heatmaps: dict[str, np.ndarray]
    concept_labellings: dict[int, np.ndarray] = field(default_factory=dict)

    def labelling(self, k: int, space: str = "pixel") -> np.ndarray | None:
        """``(n,)`` int32 labels of labelling ``k`` in ``space`` (``"concept"``: the concept-space sweep's;
        else the pixel one's); None when it is not stored."""
        return (self.concept_labellings if space == "concept" else self.labellings).get(int(k))

    def members(self, k: int, cluster_id: int, space: str = "pixel") -> list[str]:
        """Sample ids of cluster ``cluster_id`` of labelling ``k`` in ``space``; empty when there is none."""
        lab = self.labelling(k, space)
        if lab is None or cluster_id < 0:  # -1 marks the samples in no hot-spot group (k = 0)
            return []
        return [self.sample_ids[i] for i in np.flatnonzero(lab == int(cluster_id))]


def read_json(file: Path) -> Any:
    """A run file's JSON document, untyped (:func:`read_summary` types ``summary.json``)."""
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise RunReadError(file, "missing: not a run folder, or the run was not written completely") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunReadError(file, f"cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise RunReadError(file, f"damaged or truncated JSON ({err})") from None


def read_summary(run_dir: str | Path) -> RunSummary:
    """The typed ``summary.json`` of a run folder.

    Raises
    ------
    RunReadError
        Missing, truncated, damaged, incomplete or written by a newer spray.
    """
    files = RunFiles(Path(run_dir))
    return parse_summary(read_json(files.summary), files.summary)


class RunReader:
    """A run folder opened read-only (published, or in staging).

    Open with :meth:`open`; every method returns typed records or arrays and loads its files once.

    Parameters
    ----------
    path : str or Path
        The run folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.files = RunFiles(Path(path))
        self._raw = read_json(self.files.summary)
        #: The typed ``summary.json``.
        self.summary: RunSummary = parse_summary(self._raw, self.files.summary)
        self._ids: list[str] | None = None
        self._row_of: dict[str, int] | None = None
        self._classes: dict[int, ClassData] = {}
        self._rows: dict[int, np.ndarray] = {}
        self._heat: np.ndarray | None = None
        self._thumbs: np.ndarray | None = None
        self._cmaps: dict[str, np.ndarray] | None = None

    @classmethod
    def open(cls, path: str | Path) -> RunReader:
        """Open a run folder (reads and checks ``summary.json`` only).

        Raises
        ------
        RunReadError
            Its ``summary.json`` is missing, damaged, incomplete or too new.
        """
        return cls(path)

    @property
    def path(self) -> Path:
        """The run folder."""
        return self.files.path

    # ------------------------------------------------------------------------------------------------
    # Samples

    def sample_ids(self) -> list[str]:
        """Every sample of the run, in storage order (which the other per-sample arrays follow)."""
        if self._ids is None:
            import pandas as pd

            f = self.files.samples
            try:
                sample_ids = pd.read_parquet(f, columns=["sample_id"])["sample_id"].astype(str).tolist()
            except FileNotFoundError:
                raise RunReadError(f, "missing") from None
            except Exception as err:  # pyarrow raises its own types for a damaged file
                raise RunReadError(f, f"damaged or truncated ({type(err).__name__}: {err})") from None
            if len(sample_ids) != self.summary.n_samples:
                raise RunReadError(
                    f, f"holds {len(sample_ids)} samples but summary.json says {self.summary.n_samples}"
                )
            check_sample_order(f, self.summary.extra.get(SAMPLE_ORDER), sample_ids)
            self._ids = sample_ids
        return self._ids

    def _positions(self, sample_ids: Sequence[str] | None) -> np.ndarray | None:
        if sample_ids is None:
            return None
        if self._row_of is None:
            self._row_of = {s: i for i, s in enumerate(self.sample_ids())}
        try:
            return np.fromiter((self._row_of[s] for s in sample_ids), dtype=np.int64, count=len(sample_ids))
        except KeyError as err:
            raise KeyError(f"sample {err.args[0]!r} is not in run {self.path.name}") from None

    def samples(self) -> Any:
        """The per-sample table: a pandas DataFrame indexed by ``sample_id`` with ``label``,
        ``label_name``, ``prediction``, ``prediction_name``, ``confidence``, ``target`` and ``score``
        (the sample's suspicion: the highest score of the candidates that hold it, at any k; layout 2
        runs of analysis version 1: its cluster's score at the chosen k)."""
        import pandas as pd

        f = self.files.samples
        try:
            table = pd.read_parquet(f)
        except FileNotFoundError:
            raise RunReadError(f, "missing") from None
        except Exception as err:
            raise RunReadError(f, f"damaged or truncated ({type(err).__name__}: {err})") from None
        table = table.drop(columns=[c for c in ("row", "cluster", "x", "y") if c in table])
        # a group left out of the analysis is not analysed (NaN); runs before 6 Dec 2026 stored 0.0 for it
        grouped = self.summary.config.get("analysis", {}).get("group_by") == "prediction"
        by = "prediction" if grouped else "label"
        skipped = [c.class_index for c in self.summary.classes_skipped]
        if skipped and {"score", by} <= set(table):
            table.loc[table[by].isin(skipped) & (table["score"] == 0.0), "score"] = float("nan")
        return table.set_index("sample_id", drop=False).rename_axis(None)

    def content_hashes(self) -> dict[str, str] | None:
        """``sample_id -> content hash`` of every sample (layout 5), or None for an older run."""
        import pandas as pd

        f = self.files.samples
        try:
            table = pd.read_parquet(f, columns=["sample_id", "content_hash"])
        except FileNotFoundError:
            raise RunReadError(f, "missing") from None
        except Exception:  # pyarrow's own error for a column that is not there (layout < 5), or damage
            self.sample_ids()  # a damaged file raises here with its reason; an older layout passes
            return None
        if table["content_hash"].isna().any():
            return None
        return dict(zip(table["sample_id"].astype(str), table["content_hash"].astype(str), strict=True))

    def _array(self, f: Path, name: str, *, optional: bool = False) -> np.ndarray | None:
        if optional and not f.exists():
            return None
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise RunReadError(f, "missing") from None
        except (ValueError, OSError, EOFError) as err:
            raise RunReadError(f, f"damaged or truncated ({err})") from None
        if arr.shape[0] != self.summary.n_samples:
            raise RunReadError(
                f, f"holds {arr.shape[0]} {name} but the run has {self.summary.n_samples} samples"
            )
        return arr

    def heatmaps(self, sample_ids: Sequence[str] | None = None) -> np.ndarray:
        """Pooled relevance ``(n, h, w)`` float16 of the given samples, in that order (all samples in
        storage order, memory-mapped, when None)."""
        if self._heat is None:
            self._heat = self._array(self.files.heatmaps, "heatmaps")
        assert self._heat is not None
        return _take(self._heat, self._positions(sample_ids))

    def thumbs(self, sample_ids: Sequence[str] | None = None) -> np.ndarray | None:
        """Thumbnails ``(n, t, t, 3)`` uint8 of the given samples (all when None), or None when the run
        stored none."""
        if self._thumbs is None:
            self._thumbs = self._array(self.files.thumbs, "thumbnails", optional=True)
            if self._thumbs is None:
                return None
        return _take(self._thumbs, self._positions(sample_ids))

    def full_relevance(self, sample_ids: Sequence[str] | None = None) -> np.ndarray | None:
        """Full-resolution relevance ``(n, C, H, W)`` float16 of the given samples (all when None), or None
        when the run stored none (``batch.store_full_relevance``)."""
        full = self._array(self.files.full_relevance, "relevance maps", optional=True)
        return None if full is None else _take(full, self._positions(sample_ids))

    def concepts(self, sample_ids: Sequence[str] | None = None) -> np.ndarray | None:
        """Concept relevance ``(n, C)`` float16 (float32 when a value exceeds float16's range) of the given samples (all when None): per channel of the
        layer ``summary.extra["concept_layer"]``, summed over positions; None when the run stored none
        (``lrp.concept_layer: none``, or a run written before concepts existed)."""
        concepts = self._array(self.files.concepts, "concept vectors", optional=True)
        return None if concepts is None else _take(concepts, self._positions(sample_ids))

    def _concept_map_file(self) -> dict[str, np.ndarray] | None:
        if self._cmaps is None:
            self._cmaps = load_concept_maps(self.files.concept_maps, self.summary.n_samples)
        return self._cmaps

    def conditional_maps(self, key: str) -> ConditionalMaps | None:
        """The concept-conditional heatmaps of concept finding ``key``'s members (``(m, h, w)`` float16,
        the members with the highest share in its channels first), or None when the run stored none for
        it (a pixel finding, a run before layout 4, ``concepts.conditional_members: 0``)."""
        a = self._concept_map_file()
        keys = [] if a is None else [str(k) for k in a["keys"].tolist()]
        if a is None or key not in keys:
            return None
        i = keys.index(key)
        lo, hi = int(a["offsets"][i]), int(a["offsets"][i + 1])
        ids = self.sample_ids()
        return ConditionalMaps(key, [ids[r] for r in a["rows"][lo:hi]], np.asarray(a["maps"][lo:hi]))

    def concept_references(self, channel: int, n: int) -> list[str]:
        """The ``n`` samples of the run with the highest relevance of concept channel ``channel`` (most
        first): reference images of what that channel detects. Empty when the run stored no concepts.

        Raises
        ------
        ValueError
            ``channel`` is not a channel of ``concepts.npy``.
        """
        concepts = self.concepts()
        if concepts is not None and not 0 <= int(channel) < concepts.shape[1]:
            raise ValueError(f"channel {channel} is not one of the {concepts.shape[1]} concept channels")
        col = np.zeros(0) if concepts is None else np.asarray(concepts[:, int(channel)], dtype=np.float32)
        return [self.sample_ids()[i] for i in np.argsort(-col, kind="stable")[: max(int(n), 0)]]

    # ------------------------------------------------------------------------------------------------
    # Classes and clusters

    def _class_file(self, class_index: int) -> dict[str, np.ndarray]:
        f = self.files.class_file(class_index)
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise RunReadError(
                f, f"missing: summary.json lists class {class_index} but its file is not there"
            ) from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
            raise RunReadError(f, f"damaged or truncated ({type(err).__name__}: {err})") from None
        lacking = [k for k in CLASS_ARRAYS if k not in arrays]
        if lacking:
            raise RunReadError(f, f"lacks the arrays {lacking}")
        return arrays

    def class_data(self, class_index: int) -> ClassData:
        """The arrays of an analysed class.

        Raises
        ------
        KeyError
            The class was not analysed in this run.
        RunReadError
            Its file is missing or damaged.
        """
        c = int(class_index)
        if c in self._classes:
            return self._classes[c]
        entry = self.summary.class_summary(c)
        if entry is None:
            raise KeyError(f"class {c} was not analysed in run {self.path.name}")
        a = self._class_file(c)
        f = self.files.class_file(c)
        rows = a["rows"].astype(np.int64)
        all_ids = self.sample_ids()
        if len(rows) != entry.n or (len(rows) and (rows.min() < 0 or rows.max() >= len(all_ids))):
            raise RunReadError(f, f"its rows do not fit the run ({len(rows)} rows, class of {entry.n})")
        keys = [str(k) for k in a["cluster_keys"].tolist()]
        data = ClassData(
            class_index=c,
            class_name=entry.class_name,
            sample_ids=[all_ids[i] for i in rows],
            eigenvalues=a["eigenvalues"],
            eigenvectors=a["eigenvectors"],
            embedding=a["embedding"],
            knn_indices=a["knn_indices"].astype(np.int64),
            knn_distances=a.get("knn_distances"),
            labellings={int(k[len("labels_k") :]): v for k, v in a.items() if k.startswith("labels_k")},
            concept_labellings={
                int(k[len("concept_labels_k") :]): v for k, v in a.items() if k.startswith("concept_labels_k")
            },
            mean_heatmaps={
                k: np.asarray(m, dtype=np.float32) for k, m in zip(keys, a["mean_heatmaps"], strict=True)
            },
        )
        self._classes[c] = data
        self._rows[c] = rows
        return data

    def members(self, key: str) -> list[str] | None:
        """Sample ids of any stored cluster ``"<class>/k<k>/c<id>"`` (scored or not), or None when the run
        has no such cluster (class not analysed, k not stored, no sample with that label, bad key)."""
        try:
            c, k, cid = parse_cluster_key(key)
        except ValueError:
            return None
        if self.summary.class_summary(c) is None:
            return None
        found = self.class_data(c).members(k, cid, key_space(key))
        return found or None

    def mean_heatmap(self, key: str) -> np.ndarray | None:
        """``(h, w)`` float32 mean heatmap of a scored cluster, or None when ``key`` was not scored."""
        f = self.summary.finding(key)
        return None if f is None else self.class_data(f.class_index).mean_heatmaps.get(key)

    def _full(self, f: FindingSummary) -> ClusterFinding:
        data = self.class_data(f.class_index)
        if f.key not in data.mean_heatmaps:
            raise RunReadError(
                self.files.class_file(f.class_index), f"has no mean heatmap of cluster {f.key}"
            )
        return ClusterFinding(
            class_index=f.class_index,
            class_name=f.class_name,
            cluster_id=f.cluster_id,
            k=f.k,
            size=f.size,
            fraction=f.fraction,
            score=f.score,
            suspicious=f.suspicious,
            evidence=list(f.evidence),
            signals=dict(f.signals),
            member_ids=data.members(f.k, f.cluster_id, "concept" if f.space == "concept" else "pixel"),
            mean_heatmap=data.mean_heatmaps[f.key],
            carrier_ids=list(f.carrier_ids),
            space=f.space,
            channels=list(f.channels),
        )

    def finding(self, key: str) -> ClusterFinding | None:
        """The whole scored cluster ``key`` (members, mean heatmap, carriers), or None when not scored."""
        f = self.summary.finding(key)
        return None if f is None else self._full(f)

    def findings(self) -> list[ClusterFinding]:
        """Every scored cluster with its members and mean heatmap, most suspicious first."""
        return [self._full(f) for f in self.summary.findings]

    def changes(self) -> ChangeSet | None:
        """The changes since the previous run, as recorded by the nightly job (None for ``spray audit``)."""
        return parse_changes(self._raw.get("changes"), self.files.summary)

    # ------------------------------------------------------------------------------------------------
    # The whole report

    def report(self) -> AuditReport:
        """The typed report the run was written from (``write → read`` gives it back unchanged).

        Raises
        ------
        RunReadError
            A file is missing or damaged, or the run is of layout 1 (which lacks the kNN distances).
        """
        s = self.summary
        if s.layout_version < 2:
            raise RunReadError(
                self.files.summary,
                "layout 1 runs do not store the kNN distances a whole report holds; rerun the audit "
                "(the summary, findings, members and arrays are readable)",
            )
        by_key = {f.key: self._full(f) for f in s.findings}
        classes = [self._class_analysis(c.class_index, by_key) for c in s.classes]
        return AuditReport(
            run_id=s.run_id,
            run_dir=str(self.path),
            hashes=dict(s.hashes),
            timings=dict(s.timings),
            skipped=list(s.skipped),
            classes=classes,
            findings=[by_key[f.key] for f in s.findings],
            extra=dict(s.extra),
            name=s.name,
            dataset=s.dataset,
            class_names=list(s.class_names),
            n_samples=s.n_samples,
            classes_skipped=list(s.classes_skipped),
            config=s.config,
            cache=s.cache,
            versions=dict(s.versions),
            changes=self.changes(),
            conditional_maps=self._all_conditional_maps(),
            content_hashes=self.content_hashes() or {},
        )

    def _all_conditional_maps(self) -> list[ConditionalMaps]:
        keys = [] if (a := self._concept_map_file()) is None else a["keys"].tolist()
        return [m for k in keys if (m := self.conditional_maps(str(k))) is not None]

    def _class_analysis(self, c: int, by_key: dict[str, ClusterFinding]) -> ClassAnalysis:
        entry = self.summary.class_summary(c)
        assert entry is not None
        data = self.class_data(c)
        missing = [k for k in entry.cluster_keys if k not in by_key]
        if missing:
            raise RunReadError(
                self.files.summary, f"class {c} lists clusters {missing} that are not findings"
            )
        assert data.knn_distances is not None
        return ClassAnalysis(
            class_index=c,
            class_name=entry.class_name,
            sample_ids=list(data.sample_ids),
            spectral=SpectralResult(
                eigenvalues=data.eigenvalues,
                eigenvectors=data.eigenvectors,
                knn_indices=data.knn_indices,
                knn_distances=data.knn_distances,
                n_components=entry.n_components,
            ),
            clustering=ClusteringResult(
                labellings=dict(data.labellings),
                chosen_k=entry.chosen_k,
                eigengap_k=entry.eigengap_k,
                scores={k: dict(v) for k, v in entry.k_scores.items()},
            ),
            embedding=data.embedding,
            embedding_method=entry.embedding_method,
            clusters=[by_key[k] for k in entry.cluster_keys],
            sample_suspicion=self.samples()["score"].to_numpy(np.float32)[self._rows[c]],
            concept_labellings=dict(data.concept_labellings),
        )


def _take(arr: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    """Rows ``positions`` of a memory-mapped array, read in ascending order, returned in the order asked."""
    if positions is None:
        return arr
    order = np.argsort(positions, kind="stable")
    out = np.empty((len(positions), *arr.shape[1:]), dtype=arr.dtype)
    out[order] = arr[positions[order]]
    return out


def load_concept_maps(f: Path, n_samples: int) -> dict[str, np.ndarray] | None:
    """The arrays of ``concept_maps.npz`` (``keys``, ``offsets``, ``rows``, ``maps``), or None without it."""
    if not f.exists():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise RunReadError(f, f"damaged or truncated ({type(err).__name__}: {err})") from None
    if lacking := [k for k in ("keys", "offsets", "rows", "maps") if k not in a]:
        raise RunReadError(f, f"lacks the arrays {lacking}")
    off, rows = a["offsets"], a["rows"]
    if len(off) != len(a["keys"]) + 1 or off[-1] != len(rows) or len(rows) != len(a["maps"]):
        raise RunReadError(f, "its keys, offsets, rows and maps do not fit together")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_samples):
        raise RunReadError(f, f"its rows do not fit the run's {n_samples} samples")
    return a


def read_report(run_dir: str | Path) -> AuditReport:
    """The typed report of a run folder (what ``spray.load_report`` returns)."""
    return RunReader.open(run_dir).report()


@dataclass(frozen=True)
class RunEntry:
    """One published run of a runs directory: readable (``reader``) or not (``error`` says why)."""

    path: Path
    reader: RunReader | None
    error: RunReadError | None

    @property
    def name(self) -> str:
        return self.path.name


def read_correction_arrays(folder: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a correction folder's direction file (``vector`` ``(D,)``, ``reference_mean``, ``region``
    ``(H, W)`` bool), loaded into memory.

    Raises
    ------
    RunReadError
        The file is missing, damaged or truncated.
    """
    f = Path(folder) / CORRECTION_DIRECTION
    try:
        with np.load(f, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except FileNotFoundError:
        raise RunReadError(f, "missing") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise RunReadError(f, f"damaged or truncated ({type(err).__name__}: {err})") from None


def scan_runs(runs_dir: str | Path) -> list[RunEntry]:
    """Every published run of ``runs_dir``, newest first, each opened or with the reason it cannot be.

    Only ``summary.json`` is read here; a damaged array file shows when it is first asked for.
    """
    from spray.runs.publish import list_runs

    out = []
    for p in list_runs(runs_dir):
        try:
            out.append(RunEntry(p, RunReader.open(p), None))
        except RunReadError as err:
            out.append(RunEntry(p, None, err))
    return out
