"""A/B of one class's analysis between two spray checkouts, in CPU seconds (fair on a shared machine).

Loads one synthetic class (``clustering_scale._data``), pays the first approximate kNN search of the
process on 64 rows (start-up: imports, and numba compilation for versions that use pynndescent), then runs
PCA → kNN → eigenvectors → k-means sweep twice and prints one JSON line with the CPU seconds of each stage.
Run it alternately for the two checkouts so that both see the same load::

    for n in 50000 100000; do for src in /tmp/mainsrc . /tmp/mainsrc .; do
        python benchmarks/clustering_ab.py $src $n; done; done >> benchmarks/results/clustering_ab.jsonl

(``/tmp/mainsrc``: ``git archive main | tar -x -C /tmp/mainsrc``.) Single-threaded, like clustering_scale.py.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    src, n = str(Path(sys.argv[1]).resolve()), int(sys.argv[2])
    sys.path[:0] = [src, str(Path(__file__).resolve().parent)]  # spray from SRC, the data from here
    import numpy as np
    from clustering_scale import _data  # type: ignore[import-not-found]

    from spray.analysis.clustering import cluster_sweep
    from spray.analysis.preprocess import reduce_dimension
    from spray.analysis.spectral import knn_graph, spectral_embedding
    from spray.config.analysis import KnnSearchConfig

    feats, _, _ = _data(n, 0)
    t, c = time.perf_counter(), time.process_time()
    knn_graph(
        np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32),
        search=KnnSearchConfig(exact_below=0),
    )
    res = {
        "src": src,
        "n": n,
        "startup_wall": time.perf_counter() - t,
        "startup_cpu": time.process_time() - c,
    }
    res["load"] = os.getloadavg()[0]
    for rep in range(2):
        c0 = time.process_time()
        red = reduce_dimension(feats, n_components=128, seed=0)
        c1 = time.process_time()
        graph = knn_graph(red, n_neighbors=10, seed=0)
        c2 = time.process_time()
        spec = spectral_embedding(red, n_eigenvectors=32, seed=0, knn=graph)
        c3 = time.process_time()
        clus = cluster_sweep(spec, k_max=8, seed=0)
        c4 = time.process_time()
        res[f"rep{rep}"] = {
            "pca": c1 - c0, "knn": c2 - c1, "eigsh": c3 - c2, "sweep": c4 - c3, "total": c4 - c0,
            "chosen_k": clus.chosen_k,
        }  # fmt: skip
    print(json.dumps(res))


if __name__ == "__main__":
    main()
