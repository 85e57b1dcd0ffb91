"""Filtered search: an index seen through an allow-list of ids, still returning k hits when k pass.

Two strategies, chosen per query from the selectivity s (allowed / all, known exactly: the catalog
lists the allowed ids):

* `prefilter`: the index searches among the allowed ids only (`index.search_among(queries, k,
  allowed)`: faiss's IDSelector in the search parameters; an IVF index probes nprobe / s cells, so
  as many allowed vectors are scanned as an unfiltered search scans). Kinds that cannot (annoy,
  hnswlib, Milvus) do not have the method.
* `postfilter` ("search wider"): ask the index for k / s hits (plus a margin) and keep the allowed
  ones, four times wider each round until k survive or the whole index was asked.

bench/filtered_search.py measured both at 1M vectors (bench/results/filtered-search.md). `auto`:
the prefilter below PREFILTER_BELOW; above it one postfilter search, which usually keeps k when most
ids pass, and the prefilter when it does not (the ids that pass lie away from the query: a date
range of other scenes), instead of widening again and again. Either way, when fewer than
min(k, allowed) hits come back (an approximate index that cannot reach them), `exact` (the allowed
ids' stored vectors, from the catalog) scores them all: a filter never hides a photo that passes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pixquery.indexes.base import as_vectors, empty_results, pad_results

STRATEGIES = ("auto", "prefilter", "postfilter")
# Selectivity below which the prefilter is used (when the index has one); measured, see above.
PREFILTER_BELOW = 0.5
# Stored vectors scored exactly when an index returns too few: at most this many allowed ids.
EXACT_MAX = 200_000


def allowed_mask(refs: np.ndarray, size: int | None = None) -> np.ndarray:
    """A boolean array by id (True = allowed) from a list of allowed ids."""
    refs = np.asarray(refs, np.int64)
    n = max(int(size or 0), int(refs.max()) + 1 if len(refs) else 0)
    mask = np.zeros(n, bool)
    mask[refs] = True
    return mask


def mask_of_labels(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which of `labels` (an index's caller ids by position; -1 removed) are allowed: a boolean
    array by position, what a faiss IDSelectorBitmap over positions needs."""
    labels = np.asarray(labels)
    ok = (labels >= 0) & (labels < len(mask))
    out = np.zeros(len(labels), bool)
    out[ok] = mask[labels[ok]]
    return out


def bitmap_selector(by_position: np.ndarray):
    """(a faiss IDSelectorBitmap over positions, the bits it reads: keep both alive while searching)."""
    import faiss

    bits = np.packbits(by_position, bitorder="little")
    return faiss.IDSelectorBitmap(len(by_position), faiss.swig_ptr(bits)), bits


class FilteredIndex:
    """`search(queries, k)` over the allowed ids of `index` only; `len()` is how many are allowed."""

    def __init__(
        self,
        index,
        allowed: np.ndarray,
        *,
        strategy: str = "auto",
        exact: Callable[[np.ndarray], np.ndarray] | None = None,
        expression: str = "",
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        self.index, self.mask = index, np.asarray(allowed, bool)
        self.allowed = int(self.mask.sum())
        self.dim = index.dim
        self.kind = index.kind
        self.strategy = strategy
        self.exact = exact  # allowed ids -> their vectors (n, dim), or None
        self.used: str | None = None  # the strategy the last search used (for benchmarks and tests)
        # An index that evaluates filter expressions itself (Milvus): the postfilter asks it for
        # hits passing `expression` (a part of the filter), then keeps the allowed ones.
        self.expression = expression if hasattr(index, "count") else ""
        self._expression_size = index.count(self.expression) if self.expression else len(index)

    def __len__(self) -> int:
        return self.allowed

    @property
    def selectivity(self) -> float:
        return self.allowed / max(1, len(self.index))

    def _search(self, queries: np.ndarray, k: int):
        if self.expression:
            return self.index.search(queries, k, filter=self.expression)
        return self.index.search(queries, k)

    def choose(self) -> str:
        if self.strategy != "auto":
            return self.strategy
        if not hasattr(self.index, "search_among"):
            return "postfilter"
        return "prefilter" if self.selectivity < PREFILTER_BELOW else "postfilter"

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        if not self.allowed or not len(queries):
            return empty_results(len(queries), k)
        used = self.choose()
        want = min(k, self.allowed)
        result = None
        if used == "postfilter" and self.strategy == "auto" and hasattr(self.index, "search_among"):
            # Most ids pass: one search a little wider usually keeps k (cheaper than a selector scan).
            # When the ids that pass are not where the query points (a date range of other scenes),
            # it does not: then the prefilter, instead of widening 4x again and again.
            result = self._postfilter(queries, k, rounds=1)
            if (result[1][:, :want] < 0).any():
                used, result = "prefilter", None
        if used == "prefilter" and hasattr(self.index, "search_among"):
            result = self.index.search_among(queries, k, self.mask)
            if result is None:  # this index's storage cannot take a selector (pq4 fast scan)
                used = "postfilter"
        if result is None:
            used, result = "postfilter", self._postfilter(queries, k)
        scores, ids = result
        short = (ids[:, :want] < 0).any(axis=1)
        if short.any() and self.exact is not None and self.allowed <= EXACT_MAX:
            s2, i2 = self._exact(queries[short], k)
            scores, ids = scores.copy(), ids.copy()
            scores[short], ids[short] = s2, i2
            used += "+exact"
        self.used = used
        return scores, ids

    def _postfilter(self, queries: np.ndarray, k: int, rounds: int = 1 << 30) -> tuple[np.ndarray, np.ndarray]:
        """Search wider until k allowed hits survive (or the index has no more to give, or after
        `rounds` searches)."""
        size = self._expression_size
        if size == 0:
            return empty_results(len(queries), k)
        fetch = min(size, math.ceil(k * size / max(self.allowed, 1) * 1.2) + 16)
        limit = getattr(self.index, "max_k", None)
        while True:
            if limit:
                fetch = min(fetch, limit)
            scores, ids = self._search(queries, fetch)
            ok = (ids >= 0) & (ids < len(self.mask))
            ok[ok] = self.mask[ids[ok]]
            enough = ok.sum(axis=1) >= min(k, self.allowed)
            rounds -= 1
            if enough.all() or fetch >= size or ((ids >= 0).sum(axis=1) < fetch).all() or fetch == limit or not rounds:
                break
            fetch = min(size, fetch * 4)
        out_s, out_i = empty_results(len(queries), k)
        for row in range(len(queries)):
            keep = np.flatnonzero(ok[row])[:k]
            out_s[row, : len(keep)] = scores[row, keep]
            out_i[row, : len(keep)] = ids[row, keep]
        return out_s, out_i

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        refs = np.flatnonzero(self.mask).astype(np.int64)
        vectors = np.asarray(self.exact(refs), np.float32)
        scores = queries @ vectors.T
        kk = min(k, len(refs))
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        return pad_results(np.take_along_axis(top_scores, order, 1), refs[top], k)
