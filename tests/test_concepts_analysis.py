"""spray.analysis.concepts: concept-space SpRAy finds a group that leans on one detector."""

from __future__ import annotations

import numpy as np

from spray.analysis.concepts import analyze_concepts, concept_suspicion, normalize_concepts
from spray.config import config_from_dict


def _cfg() -> object:
    return config_from_dict(
        {
            "seed": 0,
            "model": {"factory": "spray.lab.cnn:small_cnn"},
            "data": {"kind": "idx", "images": "x", "labels": "y"},
            "analysis": {"embedding": "spectral", "k_max": 6, "n_eigenvectors": 8},
            "scoring": {"intervention": False},
        },
        check_files=False,
    )


def _vectors(
    n: int = 200, channels: int = 32, planted: int = 30, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Class members with relevance spread over natural channels 0..15; the planted ones put most of it
    on channel 27 (a tag detector), whatever else they show."""
    rng = np.random.default_rng(seed)
    v = np.zeros((n, channels), np.float32)
    v[:, :16] = rng.gamma(2.0, 1.0, (n, 16))
    v += rng.normal(0, 0.05, v.shape).astype(np.float32)
    truth = np.zeros(n, bool)
    truth[rng.choice(n, planted, replace=False)] = True
    v[truth, 27] = v[truth].sum(1) * rng.uniform(0.8, 1.2, planted)
    return v * rng.uniform(0.5, 3.0, (n, 1)).astype(np.float32), truth  # scale varies per sample


def test_the_planted_detector_is_the_top_cluster() -> None:
    v, truth = _vectors()
    ids = [f"s{i}" for i in range(len(v))]
    a = analyze_concepts(3, "c", ids, v, _cfg())  # type: ignore[arg-type]
    top = a.clusters[0]
    assert top.key.startswith("3/concept/k")
    assert top.channels[0] == 27
    members = np.isin(ids, top.member_ids)
    assert (members & truth).sum() / members.sum() >= 0.9 and (members & truth).sum() / truth.sum() >= 0.9
    s = concept_suspicion(a)
    order = np.argsort(-s)
    assert truth[order[: truth.sum()]].mean() >= 0.9
    assert all(f.score <= top.score for f in a.clusters)


def test_normalisation_removes_the_scale() -> None:
    v, _ = _vectors(n=20, planted=5)
    n = normalize_concepts(v)
    np.testing.assert_allclose(np.abs(n).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(normalize_concepts(v * 7.0), n, rtol=1e-5, atol=1e-7)
    assert not normalize_concepts(np.zeros((2, 4))).any()


def test_a_class_without_a_group_scores_low() -> None:
    v, _ = _vectors(planted=0)
    planted, _ = _vectors()
    ids = [f"s{i}" for i in range(len(v))]
    clean = analyze_concepts(0, "c", ids, v, _cfg())  # type: ignore[arg-type]
    poisoned = analyze_concepts(0, "c", ids, planted, _cfg())  # type: ignore[arg-type]
    assert clean.clusters[0].score < 0.5 * poisoned.clusters[0].score


def test_the_concept_separation_is_one_minus_the_symmetrised_conductance() -> None:
    """Checked against the dense symmetrised graph: the old count doubled the cut and went negative."""
    import scipy.sparse as sp

    from spray.analysis.concepts import _separation

    rng = np.random.default_rng(0)
    n, k = 300, 10
    knn = rng.integers(0, n, (n, k))
    a = sp.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), knn.ravel())), shape=(n, n))
    sym = ((a + a.T) / 2).toarray()
    deg = sym.sum(axis=1)
    for frac in (0.05, 0.2, 0.5, 0.8):
        member = np.zeros(n, bool)
        member[rng.choice(n, int(frac * n), replace=False)] = True
        x = member.astype(float)
        vol_in = deg @ x
        conductance = (vol_in - x @ sym @ x) / min(vol_in, deg.sum() - vol_in)
        assert abs(_separation(knn, member) - (1 - conductance)) < 1e-12
        assert 0.0 <= _separation(knn, member) <= 1.0
