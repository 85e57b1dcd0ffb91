"""`auto`: pick the index kind and its parameters by measuring them on the user's own vectors.

Like autofaiss, but the choice is measured, not only looked up: candidates that fit the memory
budget are built on the collection, their search-time knob (rerank candidates, efSearch, nprobe)
is raised until recall@k against exact search on calibration queries reaches `target_recall`,
and the candidate with the lowest median single-query latency wins. If no candidate reaches the
target within `max_latency_ms`, the most accurate one within it wins (and if none is that fast,
the most accurate one). The choice, every candidate's measured recall and latency, and the
queries used are recorded in `params()` (the catalog stores them).

When it measures
----------------
`auto` needs the vectors. It decides on the first `add` (or `fit`), on all vectors given then:
build from the whole collection with `build_index("auto", dim, ids, vectors, queries=...)`.
Collections of at most `exact_max` vectors get exact flat search (nothing to measure but speed),
and while the chosen index is that exact flat one, growing past `exact_max` by later adds triggers
the measurement automatically (the vectors are still there). After an approximate choice, later
adds go to the chosen index; once the collection has grown 4x since the choice, `needs_rebuild`
turns True and the caller should rebuild (`pixquery reindex`).

Calibration queries
-------------------
Text-to-image queries behave unlike image vectors (the modality gap), and each kind reacts to
that differently (docs/indexes.md). Pass real text query vectors as `queries`, or set
`calibration_queries` on the index (an array, or a function returning one, called only when a
measurement happens: the library gives its text tower's embeddings of `pixquery.query_sample`).
Without them, auto uses random unit directions: harder than text queries for hnsw and ivf, but
easier for the pq4 scan, so it then takes one more step of its knob than the random directions
needed (docs/indexes.md shows both variants against real text queries).

Candidates (see docs/indexes.md for the measurements behind these rules)
------------------------------------------------------------------------
* n <= exact_max (4096): flat float32, exact.
* n <= 500k: flat pq4 + exact re-rank (tuning the number of re-ranked candidates).
* 8k <= n <= hnsw_max (100k, build time): hnsw M=32 (tuning efSearch), on hnswlib where it can be
  imported (the optional `ann` extra), else on faiss's HNSW (always installed).
* n >= 50k: ivf with float16 cells if they fit the budget, else int8, else pq (tuning nprobe).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pixquery.indexes.base import as_ids, as_vectors, dedupe_last, read_bundle, write_bundle

EXACT_MAX = 4096


@dataclass
class Config:
    target_recall: float = 0.99
    k: int = 10  # the k that recall is measured at
    max_latency_ms: float = 2.0
    memory_mb: float = 0.0  # budget for the index in RAM; 0 = half of this machine's RAM
    sample: int = 200  # calibration queries
    exact_max: int = EXACT_MAX
    hnsw_max: int = 100_000
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.target_recall <= 1:
            raise ValueError("target_recall must be in (0, 1]")
        if self.k < 1 or self.sample < 1:
            raise ValueError("k and sample must be >= 1")


def _ram_mb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError):
        return 16384.0


def estimate_mb(kind: str, n: int, dim: int, params: dict) -> float:
    """Approximate RAM of an index of n vectors (for the memory budget)."""
    per = {"float32": 4 * dim, "float16": 2 * dim, "int8": dim}
    if kind == "flat":
        s = params.get("storage", "float32")
        b = per.get(s, (params.get("pq_m") or dim) / 2)
        if s != "float32" and params.get("rerank", 2.0 if s == "pq4" else 0):
            b += 4 * dim
        b += 8
    elif kind == "hnsw":
        b = 4 * dim + params.get("M", 32) * 2 * 4 * 1.1 + 16
    elif kind == "ivf":
        s = params.get("storage", "float16")
        b = per.get(s, params.get("pq_m") or dim / 8) + 16
        if params.get("rerank"):
            b += per[params.get("rerank_storage", "float32")]
    elif kind == "annoy":
        b = 4 * dim * 2 + params.get("n_trees", 100) * 16
    else:
        b = 4 * dim
    return n * b / 2**20


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found (rows of ids; -1 never counts)."""
    k = truth.shape[1]
    hits = 0
    for f, t in zip(found, truth):
        hits += len(np.intersect1d(f[f >= 0], t[t >= 0], assume_unique=False))
    return hits / (len(truth) * k)


def latency_ms(index, queries: np.ndarray, k: int, repeat: int = 1) -> float:
    """Median wall time of single-query searches (ms)."""
    times = []
    for _ in range(repeat):
        for q in queries:
            t0 = time.perf_counter()
            index.search(q[None], k)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def random_queries(n: int, dim: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


class Index:
    kind = "auto"

    def __init__(self, dim: int, config: Config | None = None):
        self.dim = int(dim)
        self.config = config or Config()
        self._inner = None
        self._report: dict = {}
        self._n_decided = 0
        # Text query vectors for the next measurement, or a function that makes them (lazy: the
        # text tower runs only if a measurement happens). Not saved with the index.
        self.calibration_queries = None

    # ------------------------------------------------------------------ the decision
    def fit(self, ids, vectors, queries=None) -> None:
        """Choose and build the index for these vectors (replacing any previous content)."""
        from pixquery.indexes import build_index
        from pixquery.indexes.hnsw import hnswlib_available

        ids = as_ids(ids)
        vectors = as_vectors(vectors, self.dim, len(ids))
        ids, vectors = dedupe_last(ids, vectors)
        c = self.config
        n = len(ids)
        if n <= c.exact_max:
            self._inner = build_index("flat", self.dim, ids, vectors)
            self._report = {
                "kind": "flat",
                "params": self._inner.params(),
                "recall": 1.0,
                "n": n,
                "reason": f"n <= exact_max ({c.exact_max}): exact search",
            }
            self._n_decided = n
            return
        budget = c.memory_mb or _ram_mb() / 2
        if queries is None:
            queries = self.calibration_queries() if callable(self.calibration_queries) else self.calibration_queries
        proxy = queries is None or len(queries) == 0
        if proxy:
            source = "random directions, one knob step of margin (pass text query vectors for a better estimate)"
            queries = random_queries(c.sample, self.dim, c.seed)
        else:
            source = "text queries"
            queries = as_vectors(queries, self.dim)
            if len(queries) > c.sample:
                pick = np.random.default_rng(c.seed).choice(len(queries), c.sample, replace=False)
                queries = queries[np.sort(pick)]
        k = min(c.k, n)
        truth = ids[_exact_topk(vectors, queries, k)]
        lat_q = queries[: min(len(queries), 100)]

        candidates = []  # (kind, build params, knob name, knob values)
        if n <= 500_000:
            candidates.append(("flat", {"storage": "pq4"}, "rerank_min", [50, 100, 200, 400, 800, 1600, 3200]))
        if 2 * c.exact_max <= n <= c.hnsw_max:
            # only libraries that can be imported: hnswlib is optional, faiss always installed
            backend = "hnswlib" if hnswlib_available() else "faiss"
            candidates.append(
                (
                    "hnsw",
                    {"M": 32, "ef_construction": 200, "backend": backend},
                    "ef_search",
                    [32, 64, 128, 256, 512, 1024],
                )
            )
        if n >= 50_000:
            for storage in ("float16", "int8", "pq"):
                p = {"storage": storage}
                if estimate_mb("ivf", n, self.dim, p) <= budget:
                    nprobes = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
                    candidates.append(("ivf", p, "nprobe", nprobes))
                    break
        if not candidates:  # e.g. 500k < n < 50k cannot happen; keep a safe default
            candidates.append(("flat", {"storage": "float32"}, None, [None]))

        tried = []
        best = None  # (score tuple, kind, params, index, recall, ms)
        for kind, base, knob, values in candidates:
            if estimate_mb(kind, n, self.dim, base) > budget:
                tried.append({"kind": kind, "params": base, "skipped": "over the memory budget"})
                continue
            t0 = time.perf_counter()
            index = build_index(kind, self.dim, ids, vectors, **base)
            build_s = time.perf_counter() - t0
            seen = []  # (value, recall, ms) in order of rising cost
            meets = None
            for i, v in enumerate(values):
                if knob is not None:
                    setattr(index.config, knob, v)
                r = recall_at(index.search(queries, k)[1], truth)
                ms = latency_ms(index, lat_q, k)
                seen.append((v, r, ms))
                if r >= c.target_recall:
                    if proxy and i + 1 < len(values):
                        # proxy queries are easier than text for some kinds: one step of margin
                        v = values[i + 1]
                        setattr(index.config, knob, v)
                        r = recall_at(index.search(queries, k)[1], truth)
                        ms = latency_ms(index, lat_q, k)
                        seen.append((v, r, ms))
                    meets = (v, r, ms)
                    break
                if ms > 4 * c.max_latency_ms:
                    break
            fast = [e for e in seen if e[2] <= c.max_latency_ms]
            if meets is not None and meets[2] <= c.max_latency_ms:
                pick, score = meets, (2, 0.0, -meets[2])  # reaches the target in time: fastest wins
            elif fast:
                pick = max(fast, key=lambda e: (e[1], -e[2]))
                score = (1, pick[1], -pick[2])  # in time: most accurate wins
            else:
                pick = max(seen, key=lambda e: (e[1], -e[2]))
                score = (0, pick[1], -pick[2])
            v, r, ms = pick
            if knob is not None:
                setattr(index.config, knob, v)
            entry = {
                "kind": kind,
                "params": index.params(),
                "recall": round(r, 4),
                "p50_ms": round(ms, 4),
                "build_s": round(build_s, 2),
                "tried": [{"value": e[0], "recall": round(e[1], 4), "p50_ms": round(e[2], 4)} for e in seen],
            }
            tried.append(entry)
            if best is None or score > best[0]:
                best = (score, kind, index, r, ms)
            else:
                del index
        _, kind, index, r, ms = best
        self._inner = index
        self._n_decided = n
        self._report = {
            "kind": kind,
            "params": index.params(),
            "recall": round(r, 4),
            "p50_ms": round(ms, 4),
            "n": n,
            "k": k,
            "queries": source,
            "n_queries": int(len(queries)),
            "memory_budget_mb": round(budget, 1),
            "candidates": tried,
        }

    @property
    def chosen(self):
        """The index auto chose (None before the first add)."""
        return self._inner

    @property
    def needs_rebuild(self) -> bool:
        return self._n_decided > 0 and len(self) >= 4 * max(self._n_decided, self.config.exact_max)

    # ------------------------------------------------------------------ VectorIndex
    def __len__(self) -> int:
        return 0 if self._inner is None else len(self._inner)

    def params(self) -> dict:
        p = asdict(self.config)
        p["chosen"] = dict(self._report)
        p["measured_recall"] = self._report.get("recall")  # recall@k on the calibration queries
        return p

    def add(self, ids, vectors) -> None:
        if self._inner is None:
            self.fit(ids, vectors)
            return
        self._inner.add(ids, vectors)
        inner = self._inner
        if inner.kind == "flat" and inner.config.storage == "float32" and len(inner) > self.config.exact_max:
            all_ids = np.asarray(inner._ids)
            all_vectors = inner._fx.index.reconstruct_n(0, len(all_ids))
            self.fit(all_ids, all_vectors)

    def remove(self, ids) -> None:
        if self._inner is not None:
            self._inner.remove(ids)

    def search(self, queries, k: int):
        if self._inner is None:
            from pixquery.indexes.base import empty_results

            queries = as_vectors(queries, self.dim)
            return empty_results(len(queries), int(k))
        return self._inner.search(queries, k)

    def search_among(self, queries, k: int, allowed):
        """The chosen index's filtered search (indexes/filtered.py); None if it has none."""
        if self._inner is None or not hasattr(self._inner, "search_among"):
            return None
        return self._inner.search_among(queries, k, allowed)

    def save(self, path: Path) -> None:
        bundles = {}
        if self._inner is not None:
            bundles["chosen"] = self._inner.save
        state = {"report": self._report, "n_decided": self._n_decided}
        write_bundle(path, self.kind, self.dim, asdict(self.config), state, None, bundles)

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> Index:
        from pixquery.indexes import open_index

        b = read_bundle(path, cls.kind)
        self = cls(b.dim, Config(**b.params))
        self._report = b.state.get("report", {})
        self._n_decided = int(b.state.get("n_decided", 0))
        if "chosen" in b.bundle_names():
            self._inner = open_index(b.bundle("chosen"), mmap=mmap)
        return self


def _exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    from pixquery.indexes.threads import faiss_threads_for

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    with faiss_threads_for(len(queries)):
        _, pos = index.search(queries, k)
    return pos
