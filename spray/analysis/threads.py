"""Thread limits for the small matrices of one class's analysis.

On small inputs a threaded library only adds barrier waits, and when the other cores are busy (a shared
machine, a DataLoader, other jobs) each call can slow down many times over (k-means on 300 rows: 2 ms on
one thread, 75 ms on two; a randomized PCA's QR of a 400 × 138 matrix, 0.5 s). Below
:data:`SINGLE_THREAD_BELOW` rows one thread is as fast as many, and immune to that.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Literal

from threadpoolctl import ThreadpoolController

#: Below this many rows the analysis's k-means (OpenMP) and linear algebra (BLAS) run on one thread.
SINGLE_THREAD_BELOW = 20_000


@functools.lru_cache(maxsize=1)
def _controller(n_modules: int) -> ThreadpoolController:
    """A controller of the libraries loaded when ``n_modules`` Python modules were: building one scans
    them (~5 ms, and the sweep limits threads hundreds of times per run), and a library loaded since (faiss
    brings its own BLAS) needs a new one."""
    return ThreadpoolController()


def limit_for_rows(n: int, user_api: Literal["openmp", "blas"]) -> Any:
    """A context manager that runs ``user_api``'s libraries on one thread when ``n`` rows are few (below
    :data:`SINGLE_THREAD_BELOW`), and leaves them as they are otherwise."""
    return _controller(len(sys.modules)).limit(
        limits=1 if n < SINGLE_THREAD_BELOW else None, user_api=user_api
    )
