"""Run the study's evaluation on a dataset: embed, time, score, and measure the ANN indexes.

For each model (each measured the same way):

1. load the encoder (timed);
2. embed every image with the ingest pipeline (`pixquery.ingest.pipeline.embed_files`: decoding
   in worker processes beside batched encoding); images/s counts the encoder's own time, and the
   end-to-end rate includes decoding; unreadable files are skipped and listed;
3. for each prompt-template set, embed the class prompts (mean of the normalised embeddings of
   all templates, renormalised: CLIP's recipe), timed as texts/s;
4. score every image against every class (cosine) and compute zero-shot top-1/top-5, the ROC and
   AUC over the angular distance, precision/recall/F1 over the threshold with the best threshold,
   and text-to-image retrieval (one query per class present);
5. build each requested index kind on the image vectors and measure recall@k against exact
   search (numpy), build / save / load time, time per single query and size on disk.

Everything returned is plain JSON-able data (`evaluate` -> dict); `report.py` renders it.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixquery.encoders.base import Encoder, l2_normalize
from pixquery.errors import PixqueryError
from pixquery.evaluation import metrics as M
from pixquery.evaluation.datasets import Dataset, Templates

# progress(label, total) -> update(completed); the CLI turns it into a Rich progress bar.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda done: None


@dataclass
class EvalConfig:
    templates: list[Templates]
    indexes: list[str] = field(default_factory=lambda: ["flat"])
    # kind -> list of parameter sets to build (each one is a point on the recall/query-time plot)
    index_params: dict[str, list[dict]] = field(default_factory=dict)
    index_k: int = 10
    index_queries: int = 200
    retrieval_ks: tuple[int, ...] = (1, 5, 10)
    batch_size: int = 32
    text_batch_size: int = 128
    workers: int | None = None
    seed: int = 0
    curve_points: int = 400


# ----------------------------------------------------------------------------------------------
# embedding


@dataclass
class ImageEmbeddings:
    vectors: np.ndarray  # (n_ok, dim) in dataset order
    ok: np.ndarray  # (n_items,) bool: which dataset items were embedded
    failed: list[tuple[str, str]]  # (path, reason)
    encode_seconds: float
    wall_seconds: float


def embed_images(
    paths: Sequence[Path | str],
    encoder: Encoder,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: ProgressFactory | None = None,
) -> ImageEmbeddings:
    """Embed image files in order with the ingest pipeline; files that fail are skipped."""
    from pixquery.ingest.pipeline import embed_files
    from pixquery.ingest.scan import FileEntry

    progress = progress or _no_progress
    entries = []
    for p in paths:
        st = os.stat(p)
        entries.append(FileEntry(path=str(p), size=st.st_size, mtime_ns=st.st_mtime_ns))
    index = {e.path: i for i, e in enumerate(entries)}
    vecs = np.zeros((len(entries), encoder.dim), dtype=np.float32)
    ok = np.zeros(len(entries), dtype=bool)

    def write(batch):
        for emb in batch:
            i = index[emb.entry.path]
            vecs[i] = emb.vector
            ok[i] = True

    update = progress("embed images", len(entries))
    t0 = time.perf_counter()
    stats = embed_files(
        entries, encoder, write, batch_size=batch_size, workers=workers, on_progress=lambda done, failed: update(done)
    )
    wall = time.perf_counter() - t0
    update(len(entries))
    return ImageEmbeddings(
        vectors=l2_normalize(vecs[ok]),
        ok=ok,
        failed=list(stats.failed),
        encode_seconds=stats.encode_seconds,
        wall_seconds=wall,
    )


@dataclass
class TextEmbeddings:
    vectors: np.ndarray  # (n_classes, dim)
    n_texts: int
    seconds: float


def embed_class_prompts(
    encoder: Encoder,
    class_names: Sequence[str],
    templates: Templates,
    *,
    batch_size: int = 128,
    progress: ProgressFactory | None = None,
) -> TextEmbeddings:
    """Per class: mean of the normalised embeddings of its prompts, renormalised."""
    progress = progress or _no_progress
    t = len(templates.templates)
    texts = [p for name in class_names for p in templates.prompts(name)]
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    update = progress(f"embed prompts ({templates.name})", len(texts))
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch_size):
        out[s : s + batch_size] = encoder.encode_texts(texts[s : s + batch_size])
        update(min(s + batch_size, len(texts)))
    seconds = time.perf_counter() - t0
    per_class = l2_normalize(out).reshape(len(class_names), t, encoder.dim).mean(axis=1)
    return TextEmbeddings(vectors=l2_normalize(per_class), n_texts=len(texts), seconds=seconds)


# ----------------------------------------------------------------------------------------------
# scoring


def score_run(
    image_vectors: np.ndarray,
    class_vectors: np.ndarray,
    labels: np.ndarray,
    *,
    retrieval_ks: Sequence[int] = (1, 5, 10),
    curve_points: int = 400,
) -> dict:
    """All accuracy and threshold numbers for one (model, templates) pair.

    ``labels`` is the (n_images, n_classes) bool matrix of the embedded images.
    """
    cos = image_vectors @ class_vectors.T  # (n_images, n_classes)
    top = M.topk_accuracy(cos, labels, (1, 5))
    dist = M.angular_distance(cos)
    curve = M.threshold_curve(dist, labels)
    fpr, tpr = np.r_[0.0, curve.fpr], np.r_[0.0, curve.tpr]
    auc = M.auc(fpr, tpr) if 0 < curve.n_pos < dist.size else float("nan")
    best = M.best_f1_threshold(curve)
    # curves for plots, thinned to curve_points
    sel = M.downsample_curve(len(fpr), curve_points)
    roc_thr = np.r_[-np.inf, curve.thresholds]
    lo, hi = float(dist.min()), float(dist.max())
    grid = np.unique(np.r_[np.linspace(lo, hi, curve_points), best.at_observed, best.threshold])
    at = M.counts_at(dist, labels, grid)
    pos = dist[labels]
    neg = dist[~labels]
    retrieval = M.retrieval_metrics(cos.T, labels.T, retrieval_ks)
    return {
        "top1": top[1],
        "top5": top[5],
        "auc": auc,
        "best_threshold": {
            "angular": best.threshold,
            "cosine": float(M.cosine_from_angular(best.threshold)),
            "f1": best.f1,
            "precision": best.precision,
            "recall": best.recall,
            "at_observed_distance": best.at_observed,
        },
        "pairs": {
            "positive": curve.n_pos,
            "negative": curve.n_neg,
            "positive_distance_mean": float(pos.mean()) if pos.size else None,
            "negative_distance_mean": float(neg.mean()) if neg.size else None,
        },
        "retrieval": retrieval,
        "curves": {
            "roc": {
                "fpr": fpr[sel].tolist(),
                "tpr": tpr[sel].tolist(),
                "threshold": [None if not np.isfinite(x) else float(x) for x in roc_thr[sel]],
            },
            "threshold": {k: v.tolist() for k, v in at.items()},
        },
    }


# ----------------------------------------------------------------------------------------------
# indexes


def _dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compact_params(kind: str, full: dict, requested: dict) -> dict:
    """The parameters worth a table column: the requested ones, those that differ from the kind's
    defaults (e.g. a derived ``nlist``), and for a nested choice (``auto``) the chosen kind."""
    import dataclasses

    from pixquery.indexes import config_class

    defaults = {
        f.name: f.default for f in dataclasses.fields(config_class(kind)) if f.default is not dataclasses.MISSING
    }
    out = {}
    for k, v in full.items():
        if isinstance(v, dict):
            if "kind" in v:
                out[k] = v["kind"]
            continue
        if k in requested or (k in defaults and defaults[k] is not None and v != defaults[k]):
            out[k] = v
    return out


def measure_index(
    kind: str,
    params: dict,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    calibration_queries: np.ndarray | None = None,
) -> dict:
    """Build one index on `vectors`, save, load, query one at a time; recall@k against exact.

    Build time covers adding every vector and any lazy build step (an index's optional
    ``build()``, e.g. Annoy's forest); ``calibration_queries`` (text vectors) tune ``auto``.
    """
    from pixquery.indexes import build_index, config_class, load_index

    config_class(kind)  # import the kind's module (and its library) before the clock starts
    n, dim = vectors.shape
    k = min(k, n)
    exact_scores, exact_ids = M.exact_neighbours(vectors, queries, k)
    ids = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    index = build_index(kind, dim, ids, vectors, queries=calibration_queries, **params)
    build = getattr(index, "build", None)
    if callable(build):
        build()
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="pixquery-eval-") as tmp:
        path = Path(tmp) / f"{kind}.index"
        t0 = time.perf_counter()
        index.save(path)
        save_s = time.perf_counter() - t0
        size = _dir_size(Path(tmp))  # every file the index wrote (manifest + parts)
        t0 = time.perf_counter()
        loaded = load_index(kind, path)
        load_s = time.perf_counter() - t0
        found = np.full((len(queries), k), -1, dtype=np.int64)
        t0 = time.perf_counter()
        for i in range(len(queries)):  # one query at a time: the online search case
            _, got = loaded.search(queries[i : i + 1], k)
            got = np.asarray(got).ravel()[:k]
            found[i, : len(got)] = got
        query_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded.search(queries, k)
        batch_s = time.perf_counter() - t0
        full_params = loaded.params() if hasattr(loaded, "params") else dict(params)
    valid = found >= 0
    true_scores = np.full(found.shape, np.nan, dtype=np.float32)
    true_scores[valid] = np.einsum("qd,qkd->qk", queries, vectors[np.where(valid, found, 0)])[valid]
    recall = M.index_recall(found, exact_ids, exact_scores, true_scores)
    return {
        "kind": kind,
        "params": full_params,
        "requested": dict(params),
        "shown_params": compact_params(kind, full_params, params),
        "k": k,
        "vectors": n,
        "queries": len(queries),
        "recall": recall,
        "build_s": build_s,
        "save_s": save_s,
        "load_s": load_s,
        "query_ms": 1000.0 * query_s / max(len(queries), 1),
        "batch_query_ms": 1000.0 * batch_s / max(len(queries), 1),
        "size_bytes": size,
    }


def measure_indexes(
    vectors: np.ndarray,
    config: EvalConfig,
    progress: ProgressFactory | None = None,
    calibration_queries: np.ndarray | None = None,
) -> list[dict]:
    progress = progress or _no_progress
    rng = np.random.default_rng(config.seed)
    n = len(vectors)
    if n == 0:
        return []
    q = vectors[np.sort(rng.permutation(n)[: min(config.index_queries, n)])]
    jobs = [(kind, p) for kind in config.indexes for p in (config.index_params.get(kind) or [{}])]
    update = progress("indexes", len(jobs))
    out = []
    for j, (kind, params) in enumerate(jobs):
        out.append(measure_index(kind, params, vectors, q, config.index_k, calibration_queries))
        update(j + 1)
    return out


# ----------------------------------------------------------------------------------------------
# model facts


def model_size_bytes(encoder: Encoder, spec: str) -> int | None:
    """Bytes on disk of the weights the encoder runs (the two ONNX towers, or the int8 copies it
    uses), when they can be found; else the size of the model folder or file; else None."""
    v = getattr(encoder, "size_bytes", None)
    if isinstance(v, int):
        return v
    model_dir = getattr(encoder, "model_dir", None)
    if model_dir is not None:
        towers = [Path(model_dir) / t / "model.onnx" for t in ("visual", "textual")]
        if all(t.is_file() for t in towers):
            if getattr(encoder, "precision", "fp32") == "int8":
                try:
                    from pixquery.encoders.quantize import quantized_copy

                    towers = [quantized_copy(t, getattr(encoder, "_cache_dir", None)) for t in towers]
                except Exception:  # size is informative only: never fail the run for it
                    return None
            extra = [p for t in towers for p in t.parent.glob(t.name + ".data")]  # external weights
            return sum(p.stat().st_size for p in towers + extra)
    p = Path(spec).expanduser()
    if p.exists():
        return _dir_size(p)
    return None


def machine_info() -> dict:
    import numpy

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "numpy": numpy.__version__,
    }


# ----------------------------------------------------------------------------------------------
# the whole evaluation


def warm_up(encoder: Encoder) -> float:
    """One image and one text through the encoder before any clock runs (session creation, first
    allocation): returns the seconds it took, reported apart from the throughput."""
    size = encoder.preprocess_cfg.size
    t0 = time.perf_counter()
    encoder.encode_images(np.zeros((1, 3, size, size), dtype=np.float32))
    encoder.encode_texts(["pixquery warm-up"])
    return time.perf_counter() - t0


def evaluate_model(
    dataset: Dataset,
    encoder: Encoder,
    config: EvalConfig,
    *,
    spec: str = "",
    load_seconds: float | None = None,
    progress: ProgressFactory | None = None,
) -> dict:
    """Everything for one model: image embedding once, then one run per template set, then indexes."""
    warmup_s = warm_up(encoder)
    emb = embed_images(dataset.paths, encoder, batch_size=config.batch_size, workers=config.workers, progress=progress)
    n_ok = int(emb.ok.sum())
    if n_ok == 0:
        reason = emb.failed[0][1] if emb.failed else "no images"
        raise PixqueryError(f"{dataset.root}: no image could be embedded (first failure: {reason})")
    labels = dataset.label_matrix()[emb.ok]
    runs = []
    calibration = None
    for tpl in config.templates:
        txt = embed_class_prompts(
            encoder, dataset.class_names, tpl, batch_size=config.text_batch_size, progress=progress
        )
        if calibration is None:  # the first template set's class prompts: text queries for `auto`
            calibration = txt.vectors
        run = score_run(
            emb.vectors, txt.vectors, labels, retrieval_ks=config.retrieval_ks, curve_points=config.curve_points
        )
        run.update(
            {
                "templates": tpl.name,
                "n_templates": len(tpl.templates),
                "texts": txt.n_texts,
                "text_seconds": txt.seconds,
                "texts_per_s": txt.n_texts / txt.seconds if txt.seconds > 0 else None,
            }
        )
        runs.append(run)
    indexes = measure_indexes(emb.vectors, config, progress, calibration) if config.indexes else []
    return {
        "spec": spec or encoder.name,
        "name": encoder.name,
        "fingerprint": encoder.fingerprint,
        "dim": int(encoder.dim),
        "size_bytes": model_size_bytes(encoder, spec),
        "load_seconds": load_seconds,
        "warmup_seconds": warmup_s,
        "images": {
            "embedded": n_ok,
            "failed_count": len(emb.failed),
            "failed": [{"path": p, "reason": r} for p, r in emb.failed[:50]],
            "encode_seconds": emb.encode_seconds,
            "wall_seconds": emb.wall_seconds,
            "images_per_s": n_ok / emb.encode_seconds if emb.encode_seconds > 0 else None,
            "images_per_s_end_to_end": n_ok / emb.wall_seconds if emb.wall_seconds > 0 else None,
            "ms_per_image": 1000.0 * emb.encode_seconds / n_ok,
        },
        "runs": runs,
        "indexes": indexes,
    }


def evaluate(
    dataset: Dataset,
    models: Sequence[str | Encoder],
    config: EvalConfig,
    *,
    progress: ProgressFactory | None = None,
    precision: str = "fp32",
    on_model: Callable[[dict], None] | None = None,
) -> dict:
    """Evaluate each model (a name/path for `load_encoder`, or an Encoder object) on `dataset`."""
    results = []
    for m in models:
        if isinstance(m, str):
            from pixquery.encoders.registry import load_encoder

            t0 = time.perf_counter()
            encoder = load_encoder(m, precision=precision)
            load_s = time.perf_counter() - t0
            spec = m
        else:
            encoder, load_s, spec = m, None, getattr(m, "name", "encoder")
        res = evaluate_model(dataset, encoder, config, spec=spec, load_seconds=load_s, progress=progress)
        res["precision"] = precision
        results.append(res)
        if on_model:
            on_model(res)
    return {
        "dataset": dataset.summary(),
        "config": {
            "templates": [{"name": t.name, "count": len(t.templates)} for t in config.templates],
            "indexes": list(config.indexes),
            "index_params": config.index_params,
            "index_k": config.index_k,
            "index_queries": config.index_queries,
            "retrieval_ks": list(config.retrieval_ks),
            "batch_size": config.batch_size,
            "seed": config.seed,
        },
        "machine": machine_info(),
        "models": results,
        "conventions": {
            "threshold_metric": "angular distance arccos(cos)/pi; a pair matches when distance <= threshold",
            "pairs": "every (image, class) pair over the full class list; positive when the class is one of the image's labels",
            "best_threshold": "highest F1 (strictest on ties), placed midway to the next observed distance",
            "ties": "equal scores rank by lower index first (classes for top-k, images for retrieval)",
            "top_k": "an image is correct when any of its labels is among the k best classes",
            "index_recall": "recall@k of single queries against exact numpy search; an id tied with the k-th exact score counts",
        },
    }


# ----------------------------------------------------------------------------------------------
# the threshold in the library's catalog


def store_threshold(
    library: str | Path | None, model_name: str, fingerprint: str, threshold: float, source: str = ""
) -> Path:
    """Store a model's best angular-distance threshold in a library's catalog (for `search
    --threshold auto`). Returns the catalog file. The one place that knows how to reach it."""
    from pixquery.catalog import Catalog

    path = catalog_path(library)
    with Catalog(path) as cat:
        cat.set_threshold(model_name, fingerprint, float(threshold), metric="angular", source=source)
    return path


def catalog_path(library: str | Path | None) -> Path:
    """The catalog file of a library folder (the default library when None), or the file itself."""
    from pixquery.api import CATALOG_FILE, default_library_path

    p = default_library_path() if library is None else Path(library).expanduser()
    if p.suffix in (".db", ".sqlite", ".sqlite3") or p.is_file():
        return p
    return p / CATALOG_FILE
