"""Tests of spray.analysis.jit: numba's disk cache for UMAP/pynndescent, and torch's thread count."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from spray.analysis.embedding import embed_2d
from spray.analysis.jit import enable_disk_cache
from spray.analysis.spectral import knn_graph, spectral_embedding


def test_disk_cache_enabled_for_uncached_functions() -> None:
    import umap.layouts

    enable_disk_cache()
    # Declared without cache=True upstream: spray turns numba's cache on for it.
    assert type(umap.layouts._nb_optimize_layout_euclidean_single_epoch._cache).__name__ != "NullCache"
    assert enable_disk_cache() == 0  # idempotent


def test_numba_fits_keep_torch_thread_count() -> None:
    """UMAP and pynndescent reset OpenMP's thread count; torch's setting must survive them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    spec = spectral_embedding(x, n_eigenvectors=4)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embed_2d(x, spec, method="umap", seed=2, n_epochs=10)
        assert torch.get_num_threads() == 1
        knn_graph(x, n_neighbors=5, exact_below=0)  # pynndescent
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cached_code_gives_the_same_map_in_a_fresh_process() -> None:
    """A map computed with code loaded from the disk cache equals one compiled in this process."""
    code = (
        "import numpy as np, hashlib\n"
        "from spray.analysis.spectral import spectral_embedding\n"
        "from spray.analysis.embedding import embed_2d\n"
        "x = np.random.default_rng(1).normal(size=(150, 6)).astype(np.float32)\n"
        "s = spectral_embedding(x, n_eigenvectors=4)\n"
        "print(hashlib.sha1(embed_2d(x, s, method='umap', seed=3, n_epochs=20).tobytes()).hexdigest())\n"
    )
    x = np.random.default_rng(1).normal(size=(150, 6)).astype(np.float32)
    here = embed_2d(x, spectral_embedding(x, n_eigenvectors=4), method="umap", seed=3, n_epochs=20)
    import hashlib

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha1(here.tobytes()).hexdigest()
