"""The analysis split over torchrun ranks (spray/analysis_shards.py, spray/analysis_stage.py, PasteCache).

The end-to-end check (a real ``torchrun --nproc_per_node=2`` run equal to the single-process run, and a
failing rank) is in tests/test_torchrun.py; these are the parts: the balanced class assignment, what the
ranks exchange through the process group (rank 0's inputs and heatmaps out, the analysed classes back,
exactly), and the paste cache under concurrent writers and on another node.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spray.analysis_shards import (
    AnalysisInputs,
    assign_classes,
    class_rows,
    gather_classes,
    send_heatmaps,
    share_inputs,
)
from spray.analysis_stage import _open_paste_cache
from spray.config import AuditConfig
from spray.distributed import DistContext
from spray.records import ClassAnalysis, ClusteringResult, SpectralResult
from spray.runs.cache import PasteCache

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
# What the ranks exchange (three real gloo processes)


def _same(a: object, b: object) -> bool:
    """Equal values of equal types (arrays: dtype, shape and bytes; NaN equals NaN)."""
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
    return type(a) is type(b) and bool(a == b)


def _class(c: int, n: int) -> ClassAnalysis:
    """A small class record with every field set (the transport must not care what is in it)."""
    rng = np.random.default_rng(c)
    return ClassAnalysis(
        c,
        f"class {c} é",
        [f"{c}/{i}" for i in range(n)],
        SpectralResult(
            rng.random(4),
            rng.random((n, 4)).astype(np.float32),
            np.zeros((n, 2), np.int64),
            rng.random((n, 2)).astype(np.float32),
            1,
        ),
        ClusteringResult({2: (np.arange(n) % 2).astype(np.int32)}, 2, 2, {2: {"silhouette": float("nan")}}),
        rng.random((n, 2)).astype(np.float32),
        "spectral",
        [],
    )


def _exchange_worker(rank: int, world: int, init: str, out: str) -> None:
    """One rank: share inputs, send heatmaps, analyse (here: build) its classes, gather them."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    ctx = DistContext(rank, world)
    report: dict[str, object] = {}
    for name, sizes in (("uneven", {0: 12, 1: 8, 2: 6, 3: 4}), ("empty", {0: 10, 1: 4})):
        labels = np.concatenate([np.full(n, c, np.int64) for c, n in sizes.items()])
        rel = np.arange(len(labels) * 4, dtype=np.float16).reshape(-1, 2, 2)
        con = np.arange(len(labels) * 3, dtype=np.float32).reshape(-1, 3)
        full = AnalysisInputs(
            [f"s{i}" for i in range(len(labels))],
            [
                f"h{(7 * i) % len(labels):03d}" for i in range(len(labels))
            ],  # content order is not dataset order
            labels,
            labels[::-1].copy(),
            rel,
            con,
        )
        shared = share_inputs(ctx, full if rank == 0 else None)
        assert shared.sample_ids == full.sample_ids and np.array_equal(shared.predictions, full.predictions)
        assert (shared.relevance is None) == (rank != 0) and (shared.concepts is None) == (rank != 0)
        plan = assign_classes(sizes, world)
        heat = send_heatmaps(ctx, shared, labels, plan)
        assert sorted(heat) == ([] if rank == 0 else plan[rank])
        # in the order the class is analysed in (class_rows), which a rank's analysis takes them in
        assert all(
            np.array_equal(heat[c][0], rel[class_rows(full, labels, c)]) and heat[c][0].dtype == np.float16
            for c in heat
        )
        assert all(np.array_equal(heat[c][1], con[class_rows(full, labels, c)]) for c in heat)
        assert any(
            not np.array_equal(class_rows(full, labels, c), np.flatnonzero(labels == c)) for c in heat
        ) or (rank == 0 or not heat)
        every = gather_classes(ctx, {c: _class(c, sizes[c]) for c in plan[rank]})
        if rank == 0:
            assert sorted(every) == sorted(sizes)
            assert all(_same(every[c], _class(c, sizes[c])) for c in sizes)
        else:
            assert every == {}
        report[name] = plan[rank]
    Path(out, f"{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def test_ranks_exchange_inputs_heatmaps_and_classes_exactly(tmp_path: Path) -> None:
    """Three gloo ranks: rank 1 and 2 get exactly their classes' heatmaps, rank 0 gets every class back
    exactly (uneven numbers of classes per rank, and a rank without any)."""
    import torch.multiprocessing as tmp_mp

    tmp_mp.spawn(_exchange_worker, args=(3, str(tmp_path / "pg"), str(tmp_path)), nprocs=3, join=True)
    plans = {r: json.loads((tmp_path / f"{r}.json").read_text()) for r in range(3)}
    assert [plans[r]["uneven"] for r in range(3)] == [[0], [1], [2, 3]]
    assert [plans[r]["empty"] for r in range(3)] == [[0], [1], []]


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
