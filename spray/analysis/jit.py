"""Living with the numba-compiled libraries (UMAP, pynndescent): compile once per machine, and keep
torch's thread count.

**Compile cost.** UMAP and pynndescent compile most of their numba functions on first use in every
process, because only some are declared with ``cache=True``: about 5 s for UMAP and 24 s for
pynndescent on this project's 2-core CPU, paid by every nightly run. :func:`enable_disk_cache` turns on
numba's own on-disk cache for the rest, before they are compiled. numba keys each cache entry by the
function's source file (its modification time and size), signature and CPU, so an upgrade of either
library or a different machine compiles afresh. The entries go where numba puts them by default: next
to the library (``__pycache__``) when that is writable, else a per-user cache directory
(``NUMBA_CACHE_DIR`` overrides). Functions numba cannot cache (closures built at run time) still compile
per process. Measured (second process onward): UMAP's warm-up 5 s → 1.5 s, pynndescent's 29 s → 12 s.

**Threads.** UMAP and pynndescent end every fit with ``numba.set_num_threads(<numba's default: every
core>)``. With numba's OpenMP threading layer that is ``omp_set_num_threads`` on the OpenMP runtime
torch shares, so every later torch op (the paste test's forward passes, thumbnails) silently runs on
all cores and ignores ``OMP_NUM_THREADS`` / ``torch.set_num_threads``. On a busy 2-core machine that
made small ops 10-40x slower (the paste test of a 10k-image audit went from 2 s to 30 s).
:func:`keep_torch_threads` puts the count back.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: Modules whose numba functions the analysis uses (importing them defines, not compiles, the functions).
_MODULES = (
    "umap.umap_",
    "umap.layouts",
    "umap.utils",
    "umap.spectral",
    "umap.distances",
    "umap.sparse",
    "pynndescent.pynndescent_",
    "pynndescent.utils",
    "pynndescent.rp_trees",
    "pynndescent.distances",
    "pynndescent.sparse",
    "pynndescent.graph_utils",
)

_enabled = False


def enable_disk_cache() -> int:
    """Turn on numba's on-disk cache for every not-yet-cached function of UMAP and pynndescent.

    Idempotent; call it before the first fit (compiled code that already exists in this process is not
    affected). Does nothing if numba's cache is unusable here: the functions then compile as before.

    Returns
    -------
    int
        How many functions it enabled (0 on later calls).
    """
    global _enabled
    if _enabled:
        return 0
    _enabled = True
    from numba.core.registry import CPUDispatcher

    for name in _MODULES:
        importlib.import_module(name)
    n = 0
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith(("umap", "pynndescent")) or mod is None:
            continue
        for obj in vars(mod).values():
            # NullCache: declared without cache=True. Functions already compiled keep working either way.
            if isinstance(obj, CPUDispatcher) and type(getattr(obj, "_cache", None)).__name__ == "NullCache":
                try:
                    obj.enable_caching()
                except Exception as err:  # no writable cache location: compile per process, as before
                    logger.debug("numba cache unavailable for %s: %s", getattr(obj, "py_func", obj), err)
                    continue
                n += 1
    logger.debug("numba disk cache enabled for %d functions", n)
    return n


@contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block, whatever the block did to OpenMP."""
    import torch

    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)
