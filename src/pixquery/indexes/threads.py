"""faiss thread policy.

Measured here: with 2 OpenMP threads a single 20k-vector query is ~5x slower than with one
(thread start-up dominates), while batches of queries do gain from threads. So online single
queries run on one thread and batches on all cores.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import faiss

_BATCH_MIN = 16


@contextmanager
def faiss_threads_for(n_queries: int):
    before = faiss.omp_get_max_threads()
    want = 1 if n_queries < _BATCH_MIN else (os.cpu_count() or 1)
    faiss.omp_set_num_threads(want)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
