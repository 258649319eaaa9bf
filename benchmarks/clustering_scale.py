"""Clustering at scale: spray vs scikit-learn SpectralClustering vs CoRelAy 1.0 (issue "Performance at scale").

Every measurement runs in a fresh single-threaded subprocess so that its peak RSS (VmHWM) is its own.
Input: synthetic 32×32 heatmaps (:func:`spray.lab.synthetic.make_heatmaps`, 5 clusters, one 3 % watermark
cluster). Time excludes data generation and includes everything after it (normalisation onwards).

    .venv/bin/python benchmarks/clustering_scale.py --write-docs

Runs (in this order) spray, sklearn and CoRelAy at N <= 20k, spray at 50k and 100k, the kNN libraries
(``--knn``: pynndescent, hnswlib, faiss against exact kNN, recall@10 and time, after the same PCA), the
2-D maps (spray's numpy UMAP layout, and umap-learn for comparison with ``--umap-learn``), then spray at
1M. ``--merge`` re-runs only the given jobs and keeps the other results of ``--out``. pynndescent,
hnswlib and umap-learn are bench-only comparisons (``pip install pynndescent hnswlib umap-learn``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # must happen before numpy / numba are imported

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FASHION = Path("/usr/share/datasets/fashion-mnist")

CHUNK = 100_000
N_CLUSTERS = 5


def _peak_rss_gb() -> float:
    """Peak resident set size of this process (VmHWM) in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Normalised features ``(n, 1024)`` float32 generated chunk-wise (no second n×1024 copy), labels."""
    from spray.analysis.preprocess import normalize_heatmaps
    from spray.lab.synthetic import make_heatmaps

    feats = np.empty((n, 1024), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    small = N_CLUSTERS - 1
    for i, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        heat, lab, small = make_heatmaps(stop - start, n_clusters=N_CLUSTERS, seed=seed * 1000 + i)
        feats[start:stop] = normalize_heatmaps(heat)
        labels[start:stop] = lab
    return feats, labels, small


def _f1_small(pred: np.ndarray, labels: np.ndarray, small: int) -> float:
    truth = labels == small
    best = 0.0
    for c in np.unique(pred):
        p = pred == c
        tp = float(np.sum(p & truth))
        best = max(best, 2 * tp / (p.sum() + truth.sum()) if tp else 0.0)
    return best


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact k nearest neighbours found: ``(n, k)`` x2 -> recall@k."""
    return float((approx[:, :, None] == exact[:, None, :]).any(axis=2).mean())


def _exact_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Exact kNN (faiss brute force), self excluded: ``(n, d)`` -> ``(n, k)`` indices."""
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, nb = index.search(x, k + 1)
    is_self = nb == np.arange(x.shape[0])[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # duplicates: self may be missing, drop the farthest then
    keep = np.ones_like(is_self)
    keep[np.arange(x.shape[0]), is_self.argmax(axis=1)] = False
    return nb[keep].reshape(-1, k)


def _spray(res: dict[str, Any], box: list[np.ndarray], seed: int, opts: dict[str, Any]) -> Any:
    """spray's clustering of one class (features in ``box``, freed after PCA); returns the ClusteringResult."""
    from spray.analysis.clustering import cluster_sweep
    from spray.analysis.preprocess import reduce_dimension
    from spray.analysis.spectral import knn_graph, spectral_embedding
    from spray.config.analysis import KnnSearchConfig

    n = box[0].shape[0]
    if n >= 5000:  # faiss from 5,000 rows on (exact kNN below)
        t = time.perf_counter()
        # Start-up of the approximate kNN (import + a tiny search; was ~25 s of numba JIT), excluded.
        knn_graph(
            np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32),
            search=KnnSearchConfig(exact_below=0),
        )
        res["t_jit"] = time.perf_counter() - t
    t0, c0 = time.perf_counter(), time.process_time()
    red = reduce_dimension(box.pop(), n_components=128, seed=seed)  # the input is freed here (1M: 4 GB)
    res["t_pca"] = time.perf_counter() - t0
    t, c = time.perf_counter(), time.process_time()
    knn = knn_graph(red, n_neighbors=10, seed=seed)
    res["t_knn"], res["cpu_knn"] = time.perf_counter() - t, time.process_time() - c
    t = time.perf_counter()
    spec = spectral_embedding(red, n_eigenvectors=32, seed=seed, knn=knn)
    res["t_eigsh"] = time.perf_counter() - t
    res["t_spectral"] = res["t_knn"] + res["t_eigsh"]
    t = time.perf_counter()
    clus = cluster_sweep(spec, k_max=8, seed=seed)
    res["t_sweep"] = time.perf_counter() - t
    res["seconds"], res["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    if not knn.exact and n <= opts.get("recall_max", 50_000):
        res["knn_recall"] = _recall(knn.indices, _exact_knn(red, 10))  # not timed
    return clus


def _map_quality(res: dict[str, Any], red: np.ndarray, emb: np.ndarray, knn_indices: np.ndarray) -> None:
    """Trustworthiness@10 and kNN preservation@10 of a 2-D map on a seeded 3,000-row sample."""
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import NearestNeighbors

    n = red.shape[0]
    sub = np.sort(np.random.default_rng(1).choice(n, size=min(n, 3000), replace=False))
    res["trustworthiness"] = float(trustworthiness(red[sub], emb[sub], n_neighbors=10))
    # kNN preservation: share of each sampled row's 10 graph neighbours among its 10 nearest in 2-D.
    nb2 = NearestNeighbors(n_neighbors=11).fit(emb).kneighbors(emb[sub], return_distance=False)[:, 1:]
    res["knn_preserved"] = _recall(nb2, knn_indices[sub])


def _spray_map(res: dict[str, Any], feats: np.ndarray, seed: int, opts: dict[str, Any]) -> None:
    """spray's 2-D map (numpy UMAP layout) or umap-learn's on the same graph and init (``opts["umap_learn"]``)."""
    from spray.analysis.embedding import embed_2d
    from spray.analysis.preprocess import reduce_dimension
    from spray.analysis.spectral import spectral_embedding

    red = reduce_dimension(feats, n_components=128, seed=seed)
    spec = spectral_embedding(red, seed=seed)
    epochs = opts.get("n_epochs") or 200
    if opts.get("umap_learn"):
        t = time.perf_counter()
        _umap_learn(red[:64], spectral_embedding(red[:64], n_eigenvectors=4), seed, epochs)
        res["t_jit"] = time.perf_counter() - t  # import + numba compilation (its disk cache as installed)
        t0, c0 = time.perf_counter(), time.process_time()
        emb = _umap_learn(red, spec, seed, epochs)
    else:
        t = time.perf_counter()
        embed_2d(red[:64], spectral_embedding(red[:64], n_eigenvectors=4), method="umap", seed=seed)
        res["t_jit"] = time.perf_counter() - t  # nothing to compile: the first tiny map
        t0, c0 = time.perf_counter(), time.process_time()
        emb = embed_2d(red, spec, method="umap", seed=seed, max_fit=opts["max_fit"], n_epochs=epochs)
    res["seconds"], res["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    # Two more classes (3k rows each) in the same process: equal times mean nothing is compiled again.
    for key, rows in (("t_class2_3k", slice(0, 3000)), ("t_class3_3k", slice(3000, 6000))):
        t = time.perf_counter()
        part = spectral_embedding(red[rows], seed=seed)
        if opts.get("umap_learn"):
            _umap_learn(red[rows], part, seed, epochs)
        else:
            embed_2d(red[rows], part, method="umap", seed=seed, n_epochs=epochs)
        res[key] = time.perf_counter() - t
    _map_quality(res, red, emb, spec.knn_indices)


def _umap_learn(x: np.ndarray, spec: Any, seed: int, n_epochs: int) -> np.ndarray:
    """umap-learn on spray's kNN graph and spectral init (what spray ran before its own layout)."""
    import warnings

    import umap

    from spray.analysis.embedding import _spectral_map

    n = x.shape[0]
    idx = np.hstack([np.arange(n)[:, None], spec.knn_indices]).astype(np.int32)
    dist = np.hstack([np.zeros((n, 1), np.float32), spec.knn_distances]).astype(np.float32)
    init = _spectral_map(spec).astype(np.float64)
    init = init / (np.abs(init).max() or 1.0) * 10.0 + np.random.default_rng(seed).normal(0, 1e-4, init.shape)
    reducer = umap.UMAP(
        n_neighbors=idx.shape[1], random_state=seed, n_jobs=1, init=init, n_epochs=n_epochs,
        precomputed_knn=(idx, dist, None),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _knn_libraries(red: np.ndarray, seed: int) -> list[tuple[str, Any]]:
    """The approximate kNN searches compared: name -> callable returning ``(n, k+1)`` neighbour indices."""
    k1 = 11
    n, d = red.shape

    def pynndescent() -> np.ndarray:
        from pynndescent import NNDescent

        index = NNDescent(red, n_neighbors=k1, random_state=seed, n_jobs=1, low_memory=True, n_trees=8)
        return index.neighbor_graph[0]

    def hnswlib() -> np.ndarray:
        import hnswlib

        index = hnswlib.Index(space="l2", dim=d)
        index.init_index(max_elements=n, ef_construction=32, M=16, random_seed=seed)
        index.add_items(red, np.arange(n), num_threads=1)  # one thread: deterministic insertion order
        index.set_ef(16)
        return index.knn_query(red, k=k1, num_threads=1)[0]

    def faiss_hnsw() -> np.ndarray:
        import faiss

        index = faiss.IndexHNSWFlat(d, 16)
        index.hnsw.efConstruction = 24
        index.add(red)
        index.hnsw.efSearch = 16
        return index.search(red, k1)[1]

    def faiss_ivf() -> np.ndarray:
        import faiss

        cells = round(np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, cells)
        index.cp.seed, index.cp.niter, index.cp.max_points_per_centroid = seed, 10, 64
        index.train(red)
        index.add(red)
        index.nprobe = 4
        return index.search(red, k1)[1]

    def faiss_ivf_refine() -> np.ndarray:
        """spray's search until 3 Dec 2026 (faiss's per-query IVF scan), for comparison."""
        import faiss

        cells = round(2 * np.sqrt(n))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(64), 64, cells)
        ivf.cp.seed, ivf.cp.niter, ivf.cp.max_points_per_centroid = seed, 10, 64
        ivf.cp.min_points_per_centroid = 1
        ivf.nprobe = 8
        pca = faiss.PCAMatrix(d, 64)
        index = faiss.IndexRefineFlat(faiss.IndexPreTransform(pca, ivf))
        index.k_factor = 4.0
        index.train(red)
        index.add(red)
        _, cell = ivf.quantizer.search(pca.apply(red), 1)
        order = np.argsort(cell[:, 0], kind="stable")
        nb = np.empty((n, k1), np.int64)
        nb[order] = index.search(red[order], k1)[1]
        return nb

    def spray() -> np.ndarray:
        from spray.analysis.spectral import knn_graph
        from spray.config.analysis import KnnSearchConfig

        g = knn_graph(red, n_neighbors=10, seed=seed, search=KnnSearchConfig(exact_below=0))
        return np.hstack([np.arange(n)[:, None], g.indices])

    return [
        ("pynndescent (n_trees=8; first call, then warm)", pynndescent),
        ("pynndescent warm", pynndescent),
        ("hnswlib HNSW M=16 efC=32 ef=16", hnswlib),
        ("faiss HNSW M=16 efC=24 ef=16", faiss_hnsw),
        ("faiss IVF-Flat √n cells, 4 probes, 128 dims", faiss_ivf),
        (
            "spray until 3 Dec: faiss IVF, 64 principal dims, 2√n cells, 8 probes, re-rank of 44",
            faiss_ivf_refine,
        ),
        ("spray: cell-by-cell matrix products, 48 principal dims, 2√n cells, 9 probes", spray),
        ("pynndescent warm, again", pynndescent),
        ("spray, again", spray),
    ]


def _knn_compare(res: dict[str, Any], feats: np.ndarray, seed: int) -> None:
    """recall@10 against exact kNN and time of each library, in this one process (1 thread)."""
    import faiss

    from spray.analysis.preprocess import reduce_dimension

    faiss.omp_set_num_threads(1)
    red = reduce_dimension(feats, n_components=128, seed=seed)
    t = time.perf_counter()
    exact = _exact_knn(red, 10)
    res["t_exact"] = time.perf_counter() - t
    res["libraries"] = []
    for name, search in _knn_libraries(red, seed):
        try:
            t, c = time.perf_counter(), time.process_time()
            nb = np.asarray(search(), dtype=np.int64)
            row = {"name": name, "seconds": time.perf_counter() - t, "cpu": time.process_time() - c}
            is_self = nb == np.arange(nb.shape[0])[:, None]
            is_self[~is_self.any(axis=1), -1] = True
            keep = np.ones_like(is_self)
            keep[np.arange(nb.shape[0]), is_self.argmax(axis=1)] = False
            row["recall"] = _recall(nb[keep].reshape(-1, 10), exact)
        except ImportError as err:
            row = {"name": name, "error": f"not installed: {err.name}"}
        res["libraries"].append(row)


def _real_data(source: str, n: int) -> np.ndarray:
    """``(n, D)`` float32 features of real data for the kNN comparison.

    ``fashion``: Fashion-MNIST training pixels in [0, 1] (784 dims; a spectrum that decays slowly).
    ``heatmaps:PATH``: relevance maps saved by a run (e.g. ``runs/latest/heatmaps.npy`` of the demo),
    normalised as spray does.
    """
    import gzip

    from spray.analysis.preprocess import normalize_heatmaps

    if source == "fashion":
        with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
            pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
        return pixels[:n].astype(np.float32) / 255.0
    if source.startswith("heatmaps:"):
        return normalize_heatmaps(np.load(source.split(":", 1)[1])[:n].astype(np.float32))
    raise SystemExit(f"unknown kNN data {source!r}: use fashion or heatmaps:PATH")


def worker(method: str, n: int, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    from sklearn.metrics import adjusted_rand_score

    if opts.get("data", "synthetic") != "synthetic":
        feats = _real_data(opts["data"], n)
        n = feats.shape[0]
    else:
        feats, labels, small = _data(n, seed)
    res: dict[str, Any] = {
        "method": method,
        "n": n,
        "rss_after_data_gb": _rss_gb(),
        "load_1min": os.getloadavg()[0],
    }
    if method in ("spray-map", "knn"):
        if method == "spray-map":
            _spray_map(res, feats, seed, opts)
        else:
            _knn_compare(res, feats, seed)
        res.update({k: v for k, v in opts.items() if k not in res})
        res["peak_rss_gb"] = _peak_rss_gb()
        return res
    t0 = time.perf_counter()
    if method == "spray":
        box = [feats]
        del feats
        clus = _spray(res, box, seed, opts)
        pred = clus.labellings[clus.chosen_k]
        res["chosen_k"] = clus.chosen_k
        res["ari_k5"] = float(adjusted_rand_score(labels, clus.labellings[5]))
        res["f1_small_best_k"] = max(_f1_small(p, labels, small) for p in clus.labellings.values())
    elif method == "sklearn":
        from sklearn.cluster import SpectralClustering

        pred = SpectralClustering(
            n_clusters=N_CLUSTERS, affinity="nearest_neighbors", n_neighbors=10, random_state=seed
        ).fit_predict(feats)
    elif method == "corelay":
        pred = _corelay(feats, seed)
    else:
        raise SystemExit(f"unknown method {method}")
    if method != "spray":
        res["seconds"] = time.perf_counter() - t0
    res["peak_rss_gb"] = _peak_rss_gb()
    res["ari"] = float(adjusted_rand_score(labels, pred))
    res["f1_small"] = _f1_small(pred, labels, small)
    return res


def _corelay(feats: np.ndarray, seed: int) -> np.ndarray:
    """CoRelAy 1.0 default SpRAy chain, called (never copied): pdist -> kNN -> normalised -> eigsh -> k-means."""
    from corelay.processor.affinity import SparseKNN
    from corelay.processor.clustering import KMeans
    from corelay.processor.distance import SciPyPDist
    from corelay.processor.embedding import EigenDecomposition
    from corelay.processor.flow import Sequential
    from corelay.processor.laplacian import SymmetricNormalLaplacian

    pipe = Sequential(
        [
            SciPyPDist(metric="sqeuclidean"),
            SparseKNN(n_neighbors=10, symmetric=True),
            SymmetricNormalLaplacian(),
            EigenDecomposition(n_eigval=32, is_output=True),
        ]
    )
    _, vecs = pipe(feats)
    return np.asarray(KMeans(n_clusters=N_CLUSTERS, kwargs={"random_state": seed})(vecs))


def run_one(method: str, n: int, seed: int, timeout: float, **opts: Any) -> dict[str, Any]:
    """Run :func:`worker` in a fresh subprocess; returns its JSON (or an error record)."""
    env = dict(os.environ)
    cmd = [sys.executable, __file__, "--worker", method, str(n), str(seed), json.dumps(opts)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"method": method, "n": n, "error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(lines[-1])


def _fmt(x: Any, spec: str = ".2f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "—"


def _ratio(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.1f}×" if x < 10 else f"{x:.0f}×"


def _secs(r: dict[str, Any]) -> str:
    return r["error"] if "error" in r else _fmt(r.get("seconds"))


def _stage_table(by: dict[tuple[str, int], dict[str, Any]], sizes: list[int]) -> list[str]:
    rows = [
        "| N | PCA s | kNN s | kNN CPU s | kNN recall@10 | eigsh s | k-means sweep s | total s | total CPU s | "
        "start-up s (once per process, excluded) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        s = by.get(("spray", n), {})
        rows.append(
            f"| {n:,} | {_fmt(s.get('t_pca'))} | {_fmt(s.get('t_knn'))} | {_fmt(s.get('cpu_knn'))} | "
            f"{_fmt(s.get('knn_recall'), '.4f') if 'knn_recall' in s else ('exact' if n < 5000 else '—')} | "
            f"{_fmt(s.get('t_eigsh'))} | {_fmt(s.get('t_sweep'))} | {_fmt(s.get('seconds'))} | "
            f"{_fmt(s.get('cpu_seconds'))} | {_fmt(s.get('t_jit'))} | {_fmt(s.get('load_1min'), '.1f')} |"
        )
    return rows


def _map_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| N | map | fitted rows (max_fit) | epochs | 2-D map s | CPU s | trustworthiness@10 | kNN preserved@10 | "
        "2nd / 3rd class (3k rows each) s | start-up s (first tiny map) | peak GB | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["method"] != "spray-map":
            continue
        fitted = r["n"] if r.get("umap_learn") else min(r["n"], r.get("max_fit", r["n"]))
        rows.append(
            f"| {r['n']:,} | {'umap-learn 0.5' if r.get('umap_learn') else 'spray (numpy UMAP layout)'} | "
            f"{fitted:,} | {r.get('n_epochs') or 200} | {_secs(r)} | {_fmt(r.get('cpu_seconds'))} | "
            f"{_fmt(r.get('trustworthiness'), '.3f')} | {_fmt(r.get('knn_preserved'), '.3f')} | "
            f"{_fmt(r.get('t_class2_3k'))} / {_fmt(r.get('t_class3_3k'))} | {_fmt(r.get('t_jit'))} | "
            f"{_fmt(r.get('peak_rss_gb'))} | {_fmt(r.get('load_1min'), '.1f')} |"
        )
    return rows


def _knn_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| data | N | kNN search (k=10, 1 thread) | s | CPU s | recall@10 vs exact | load (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    knn = [r for r in results if r["method"] == "knn"]
    for r in sorted(
        knn, key=lambda r: (r.get("data", "synthetic") != "synthetic", str(r.get("data")), r["n"])
    ):
        data = str(r.get("data", "synthetic"))
        data = "demo heatmaps (Fashion-MNIST, LRP)" if data.startswith("heatmaps:") else data
        data = "Fashion-MNIST pixels" if data == "fashion" else data
        head = f"| {data} | {r['n']:,} |"
        load = _fmt(r.get("load_1min"), ".1f")
        rows.append(f"{head} exact (faiss brute force) | {_fmt(r.get('t_exact'))} | — | 1 | {load} |")
        for lib in r.get("libraries", []):
            cpu, rec = _fmt(lib.get("cpu")), _fmt(lib.get("recall"), ".4f")
            rows.append(f"{head} {lib['name']} | {_secs(lib)} | {cpu} | {rec} | |")
    return rows


def table(results: list[dict[str, Any]]) -> str:
    """Markdown tables: clustering per N, spray's stages per N, kNN libraries, 2-D maps."""
    by = {(r["method"], r["n"]): r for r in results if r["method"] in ("spray", "sklearn", "corelay")}
    sizes = sorted({r["n"] for r in results if r["method"] == "spray"})
    rows = [
        "| N | spray s | spray peak GB | chosen k | spray ARI (chosen k) | spray F1 small (chosen / best k) | "
        "sklearn s | sklearn GB | sklearn ARI | CoRelAy s | CoRelAy GB | CoRelAy ARI | CoRelAy F1 small | "
        "sklearn/spray | CoRelAy/spray |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        s, k, c = by.get(("spray", n), {}), by.get(("sklearn", n), {}), by.get(("corelay", n), {})
        ratio_k = k["seconds"] / s["seconds"] if "seconds" in k and "seconds" in s else None
        ratio_c = c["seconds"] / s["seconds"] if "seconds" in c and "seconds" in s else None
        rows.append(
            f"| {n:,} | {_secs(s)} | {_fmt(s.get('peak_rss_gb'))} | {s.get('chosen_k', '—')} | "
            f"{_fmt(s.get('ari'), '.3f')} | {_fmt(s.get('f1_small'), '.3f')} / {_fmt(s.get('f1_small_best_k'), '.3f')} | "
            f"{_secs(k) if k else '—'} | {_fmt(k.get('peak_rss_gb'))} | {_fmt(k.get('ari'), '.3f')} | "
            f"{_secs(c) if c else '—'} | {_fmt(c.get('peak_rss_gb'))} | {_fmt(c.get('ari'), '.3f')} | "
            f"{_fmt(c.get('f1_small'), '.3f')} | {_ratio(ratio_k)} | {_ratio(ratio_c)} |"
        )
    loads = [r["load_1min"] for r in results if "load_1min" in r]
    load = (
        f"1-minute load average at the start of the measurements: {min(loads):.1f}–{max(loads):.1f} "
        f"(2-core machine; each measurement uses 1 thread).\n\n"
        if loads
        else ""
    )
    blocks = [rows, _stage_table(by, sizes), _knn_table(results), _map_table(results)]
    return load + "\n\n".join("\n".join(b) for b in blocks if len(b) > 2) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Log-log seconds vs N per method, with an N¹ reference through spray's largest N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    series = [
        ("spray", "spray (PCA → kNN → eigsh → k-means sweep k=2..8)", "o"),
        ("sklearn", "scikit-learn SpectralClustering (k=5 given)", "s"),
        ("corelay", "CoRelAy 1.0 SpRAy (k=5 given)", "^"),
    ]
    for method, label, marker in series:
        pts = sorted((r["n"], r["seconds"]) for r in results if r["method"] == method and "seconds" in r)
        if pts:
            ax.loglog(*zip(*pts, strict=True), marker=marker, label=label)
    maps = sorted(
        (r["n"], r["seconds"])
        for r in results
        if r["method"] == "spray-map"
        and "seconds" in r
        and r.get("max_fit") == 20000
        and not r.get("umap_learn")
        and not r.get("n_epochs")
    )
    if maps:
        ax.loglog(
            *zip(*maps, strict=True),
            marker="D",
            linestyle="--",
            label="spray 2-D map (UMAP layout, ≤ 20k fitted)",
        )
    spray = sorted((r["n"], r["seconds"]) for r in results if r["method"] == "spray" and "seconds" in r)
    if spray:
        n_max, t_max = spray[-1]
        xs = np.array([spray[0][0], n_max], dtype=float)
        ax.loglog(xs, t_max * xs / n_max, color="grey", linestyle=":", label="∝ N (reference)")
    ax.set_xlabel("samples N (one class)")
    ax.set_ylabel("seconds, 1 thread")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        r["method"],
        r["n"],
        r.get("max_fit"),
        r.get("n_epochs"),
        bool(r.get("umap_learn")),
        r.get("data"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="1000,5000,20000,50000,100000,1000000")
    ap.add_argument("--sklearn-max", type=int, default=20000, help="largest N for sklearn SpectralClustering")
    ap.add_argument(
        "--corelay-max", type=int, default=20000, help="largest N for CoRelAy (dense pdist: 20k needs ~7 GB)"
    )
    ap.add_argument(
        "--maps",
        default="20000:20000,20000:5000,100000:20000",
        help="2-D map runs N:max_fit[:n_epochs], comma-separated",
    )
    ap.add_argument(
        "--umap-learn",
        default="20000:20000",
        help="the same 2-D map runs with umap-learn (bench-only comparison), N:N[:n_epochs]; '' for none",
    )
    ap.add_argument(
        "--knn",
        default="10000,50000,fashion@50000",
        help="kNN library comparison runs [DATA@]N: synthetic by default, DATA = fashion (Fashion-MNIST "
        "pixels) or heatmaps:PATH (a run's heatmaps.npy); '' for none",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "clustering_scale.json"))
    ap.add_argument("--merge", action="store_true", help="keep other results already in --out")
    ap.add_argument("--write-docs", action="store_true", help="write the tables into docs/clustering.md")
    args = ap.parse_args()
    if args.worker:
        method, n, seed, opts_json = args.worker
        print(json.dumps(worker(method, int(n), int(seed), json.loads(opts_json))))
        return
    try:
        import corelay  # noqa: F401

        have_corelay = True
    except ImportError:
        have_corelay = False
    sizes = [int(s) for s in args.sizes.split(",") if s]
    jobs: list[tuple[str, int, dict[str, Any]]] = []
    for n in (s for s in sizes if s <= 100_000):
        jobs.append(("spray", n, {}))
        if n <= args.sklearn_max:
            jobs.append(("sklearn", n, {}))
        if have_corelay and n <= args.corelay_max:
            jobs.append(("corelay", n, {}))
    for spec in (s for s in args.knn.split(",") if s):
        source, _, size = spec.rpartition("@")
        jobs.append(("knn", int(size), {"data": source or "synthetic"}))
    for learn, specs in ((False, args.maps), (True, args.umap_learn)):
        for spec in (m for m in specs.split(",") if m):
            parts = [int(v) for v in spec.split(":")]
            opts: dict[str, Any] = {"max_fit": parts[1]}
            if len(parts) > 2:
                opts["n_epochs"] = parts[2]
            if learn:
                opts["umap_learn"] = True
            jobs.append(("spray-map", parts[0], opts))
    jobs += [("spray", n, {}) for n in sizes if n > 100_000]  # the largest last
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = json.loads(out.read_text()) if args.merge and out.exists() else []
    for method, n, opts in jobs:
        r = run_one(method, n, args.seed, args.timeout, **opts)
        r.update({k: v for k, v in opts.items() if k not in r})
        results = [x for x in results if _key(x) != _key(r)] + [r]
        print(json.dumps(r), flush=True)
        out.write_text(json.dumps(results, indent=1))
    plot(results, out.with_suffix(".png"))
    md = table(results)
    print(md)
    if args.write_docs:
        plot(results, ROOT / "docs" / "clustering_scale.png")
        doc = ROOT / "docs" / "clustering.md"
        text = doc.read_text() if doc.exists() else ""
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        argv = " ".join(a for a in sys.argv[1:])
        block = (
            f"{start}\nCommand: `.venv/bin/python benchmarks/clustering_scale.py {argv}`\n\n"
            f"![seconds vs N, log-log](clustering_scale.png)\n\n{md}{end}"
        )
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
        else:
            text += "\n" + block + "\n"
        doc.write_text(text)


if __name__ == "__main__":
    main()
