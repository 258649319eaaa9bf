"""Thread-count hygiene between torch and the numba libraries (UMAP, pynndescent).

UMAP and pynndescent end every fit with ``numba.set_num_threads(<numba's default: every core>)``. With
numba's OpenMP threading layer that is ``omp_set_num_threads`` on the OpenMP runtime torch shares, so
every later torch op (the paste test's forward passes, thumbnails) silently runs on all cores and
ignores ``OMP_NUM_THREADS`` / ``torch.set_num_threads``. On a busy 2-core machine that made small ops
10-40x slower (measured: the paste test of a 10k-image audit went from 2 s to 30 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block, whatever the block did to OpenMP."""
    import torch

    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)
