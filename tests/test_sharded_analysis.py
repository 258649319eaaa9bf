"""The analysis split over torchrun ranks (spray/analysis_shards.py, spray/analysis_stage.py, PasteCache).

The end-to-end check (a real ``torchrun --nproc_per_node=2`` run equal to the single-process run, and a
failing rank) is in tests/test_torchrun.py; these are the parts: the balanced class assignment, the class
files that carry a rank's result to rank 0 exactly, the analysis inputs rank 0 hands to the others, and
the paste cache under concurrent writers.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spray.analysis.classes import analyze_class
from spray.analysis_shards import (
    AnalysisInputs,
    assign_classes,
    class_file,
    load_class,
    read_inputs,
    save_class,
    write_inputs,
)
from spray.analysis_stage import _open_paste_cache
from spray.config import AuditConfig
from spray.distributed import DistContext
from spray.lab.synthetic import make_heatmaps
from spray.records import ClassAnalysis
from spray.runs.cache import PasteCache
from spray.runs.writer import class_arrays, class_entry, finding_entry

# ---------------------------------------------------------------------------------------------------------
# Class assignment


@given(
    sizes=st.dictionaries(st.integers(0, 2000), st.integers(1, 100_000), min_size=0, max_size=60),
    world=st.integers(1, 9),
)
@settings(max_examples=200, deadline=None)
def test_assignment_covers_every_class_once_and_is_balanced(sizes: dict[int, int], world: int) -> None:
    plan = assign_classes(sizes, world)
    assert len(plan) == world
    flat = [c for cs in plan for c in cs]
    assert sorted(flat) == sorted(sizes)
    assert all(cs == sorted(cs) for cs in plan)
    # Greedy LPT: no rank ends more than the largest class above the least loaded rank, and the plan
    # does not depend on the order the sizes are given in.
    loads = [sum(sizes[c] for c in cs) for cs in plan]
    if sizes:
        assert max(loads) - min(loads) <= max(sizes.values())
    assert assign_classes(dict(reversed(list(sizes.items()))), world) == plan


def test_assignment_of_equal_classes_alternates_and_large_ones_stand_alone() -> None:
    assert assign_classes(dict.fromkeys(range(6), 1300), 2) == [[0, 2, 4], [1, 3, 5]]
    # One class as large as the rest together: it gets a rank to itself.
    assert assign_classes({0: 100, 1: 100, 2: 100, 3: 300}, 2) == [[3], [0, 1, 2]]
    assert assign_classes({0: 5}, 3) == [[0], [], []]


# ---------------------------------------------------------------------------------------------------------
# Class files


@pytest.fixture(scope="module")
def analysed() -> ClassAnalysis:
    """A real analysis of 300 synthetic heatmaps with a 5 % corner cluster (a flagged finding)."""
    heat, _, _ = make_heatmaps(300, n_clusters=4, small_fraction=0.05, size=16, seed=3)
    cfg = AuditConfig.model_validate(
        {
            "model": {"architecture": "resnet18", "num_classes": 10},
            "data": {"kind": "idx", "images": "x", "labels": "y"},
            "analysis": {"embedding": "spectral", "k_max": 6, "n_eigenvectors": 8},
        }
    )
    ids = [f"s{i:04d}/é" for i in range(len(heat))]
    return analyze_class(3, "Shirt", ids, heat.astype(np.float16), cfg)


def _same(a: object, b: object) -> bool:
    """Equal values of equal types (arrays: dtype, shape and bytes)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(_same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a):
        return bool(np.isnan(b))
    return bool(a == b)


def test_class_file_gives_back_the_same_analysis(analysed: ClassAnalysis, tmp_path: Path) -> None:
    assert analysed.clusters and len(analysed.clustering.labellings) == 5
    path = class_file(tmp_path, analysed.class_index)
    save_class(path, analysed)
    back = load_class(path)
    assert _same(analysed, back)
    # What the run writer makes of it is identical too (summary entries and class arrays).
    assert class_entry(back) == class_entry(analysed)
    assert [finding_entry(f, 1) for f in back.clusters] == [finding_entry(f, 1) for f in analysed.clusters]
    rows = np.arange(len(analysed.sample_ids))
    a, b = class_arrays(analysed, rows, (16, 16)), class_arrays(back, rows, (16, 16))
    assert _same(a, b)


def test_class_file_keeps_odd_values(analysed: ClassAnalysis, tmp_path: Path) -> None:
    """NaN and infinite signals, numpy scalars and a class without clusters survive the round trip."""
    f = analysed.clusters[0]
    f.signals = {"nan": float("nan"), "inf": float("inf"), "np": np.float64(0.1) + np.float64(0.2)}
    f.score = np.float64(1 / 3)  # type: ignore[assignment]
    save_class(tmp_path / "a.npz", analysed)
    back = load_class(tmp_path / "a.npz")
    assert np.isnan(back.clusters[0].signals["nan"]) and back.clusters[0].signals["inf"] == float("inf")
    assert back.clusters[0].signals["np"] == 0.1 + 0.2 and back.clusters[0].score == 1 / 3
    analysed.clusters = []
    save_class(tmp_path / "b.npz", analysed)
    assert load_class(tmp_path / "b.npz").clusters == []


def test_analysis_inputs_are_handed_over_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 50
    inputs = AnalysisInputs(
        [f"img/{i}.png" for i in range(n)],
        [f"{i:032x}" for i in range(n)],
        rng.integers(0, 4, n),
        rng.integers(0, 4, n),
        rng.normal(size=(n, 8, 8)).astype(np.float16),
    )
    write_inputs(tmp_path, inputs)
    back = read_inputs(tmp_path)
    assert back.sample_ids == inputs.sample_ids and back.content_hashes == inputs.content_hashes
    assert _same(back.labels, inputs.labels.astype(np.int64))
    assert isinstance(back.relevance, np.memmap)  # each rank reads only the rows of its classes
    assert _same(np.asarray(back.relevance[[3, 7]]), inputs.relevance[[3, 7]])
    assert _same(back.groups("prediction"), inputs.predictions.astype(np.int64))


# ---------------------------------------------------------------------------------------------------------
# The paste cache with several writers (as the ranks of a torchrun job)


def _writer(directory: str, rank: int, n_rounds: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("spray.runs.cache").addHandler(Catch(logging.WARNING))
    cache = PasteCache(Path(directory))
    for r in range(n_rounds):
        # Overlapping keys: every writer also stores the keys of the "shared" targets.
        keys = [f"paste|r{rank}|{r}|{j}" for j in range(40)] + [f"plain|{j}" for j in range(r, r + 20)]
        found = cache.get_many(keys)
        cache.put_many(
            {k: int(k.split("|")[-1]) % 10 if k.startswith("plain") else rank for k in keys if k not in found}
        )
    cache.close()
    out.put((rank, warnings))


def test_paste_cache_with_concurrent_writers(tmp_path: Path) -> None:
    PasteCache(tmp_path).close()  # created before the others open it, as rank 0 does in the analysis
    n_writers, n_rounds = 3, 40
    ctx = mp.get_context("fork")  # no connection is open: each process opens its own
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), r, n_rounds, out)) for r in range(n_writers)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results == {r: [] for r in range(n_writers)}  # no write failed or waited out its timeout
    first = PasteCache(tmp_path)
    keys = [f"paste|r{r}|{i}|{j}" for r in range(n_writers) for i in range(n_rounds) for j in range(40)]
    got = first.get_many(keys)
    assert len(got) == len(keys) and all(got[k] == int(k.split("|")[1][1:]) for k in keys)
    plain = first.get_many([f"plain|{j}" for j in range(n_rounds + 19)])
    assert len(plain) == n_rounds + 19
    first.close()


class _OneProcess(DistContext):
    """A rank of a two-rank job whose collectives are no-ops (the other rank is imagined)."""

    def barrier(self) -> None:
        pass


def test_paste_cache_of_a_rank_on_another_node_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = AuditConfig.model_validate(
        {
            "model": {"architecture": "resnet18", "num_classes": 2},
            "data": {"kind": "idx", "images": "x", "labels": "y"},
        }
    )
    monkeypatch.setenv("GROUP_RANK", "0")
    same_host = _open_paste_cache(cfg, tmp_path, _OneProcess(rank=1, world_size=2))
    assert same_host is not None and same_host.path.parent == tmp_path
    same_host.put_many({"k": 3})
    same_host.close()
    monkeypatch.setenv("GROUP_RANK", "1")
    other = _open_paste_cache(cfg, tmp_path, _OneProcess(rank=1, world_size=2))
    assert other is not None and str(other.path) == ":memory:"
    assert other.get_many(["k"]) == {}  # not the shared file
    other.put_many({"j": 1})
    assert other.get_many(["j"]) == {"j": 1} and (other.hits, other.misses) == (1, 1)
    other.close()
    assert PasteCache(tmp_path).get_many(["k", "j"]) == {"k": 3}
