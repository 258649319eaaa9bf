"""Small classes run numpy's linear algebra and k-means on one thread; large ones keep their threads."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from spray.analysis.threads import SINGLE_THREAD_BELOW, limit_for_rows


def _threads(user_api: str) -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == user_api}


def test_a_small_class_runs_blas_on_one_thread_and_a_large_one_as_configured() -> None:
    np.linalg.qr(np.ones((4, 2)))  # numpy's BLAS is loaded
    before = _threads("blas")
    with limit_for_rows(SINGLE_THREAD_BELOW - 1, "blas"):
        assert _threads("blas") == {1}
    assert _threads("blas") == before
    with limit_for_rows(SINGLE_THREAD_BELOW, "blas"):
        assert _threads("blas") == before
