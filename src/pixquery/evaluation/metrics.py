"""Evaluation metrics in plain numpy: zero-shot top-k, ROC/AUC and F1 over the angular-distance
threshold, text-to-image retrieval (precision@k, recall@k, mAP) and ANN index recall.

Conventions (the study's, made explicit):

* Similarity is cosine between L2-normalised embeddings. The threshold metric is the **angular
  distance** ``d = arccos(cos) / pi`` in [0, 1]: 0 = same direction, 0.5 = orthogonal.
* Labels are sets of class indices per image (multi-label, as in ImageNet DET). An image is
  **top-k correct** when *any* of its labels is among the k best-scoring classes.
* **Ties** are broken deterministically: among equal scores the lower index ranks first (a stable
  sort of ``-score``). So a class's rank is ``#(classes scoring strictly higher)`` plus
  ``#(classes scoring the same with a lower index)``; the same rule orders images for retrieval.
  This never depends on the platform or on numpy's sort algorithm.
* **Pairs for ROC/F1**: every (image, class) pair over the full class set is one sample. It is
  *positive* when the class is one of the image's labels, *negative* otherwise; its value is the
  angular distance between the image embedding and the class text embedding. A threshold ``t``
  predicts "match" when ``d <= t``. Pairs with equal distances always fall on the same side of any
  threshold, so each distinct distance is one point on the curves (ties are never split).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------------------------
# basics


def angular_distance(cos: np.ndarray) -> np.ndarray:
    """Cosine similarity -> angular distance arccos(cos)/pi (clipped to [0, 1])."""
    c = np.clip(np.asarray(cos, dtype=np.float64), -1.0, 1.0)
    return np.arccos(c) / np.pi


def cosine_from_angular(d: float | np.ndarray) -> float | np.ndarray:
    """Inverse of `angular_distance`."""
    return np.cos(np.asarray(d, dtype=np.float64) * np.pi)


def label_matrix(labels: Sequence[Iterable[int]], n_classes: int) -> np.ndarray:
    """List of label sets -> (n, n_classes) bool matrix."""
    m = np.zeros((len(labels), n_classes), dtype=bool)
    for i, labs in enumerate(labels):
        for c in labs:
            if not 0 <= int(c) < n_classes:
                raise ValueError(f"label {c} of item {i} is outside 0..{n_classes - 1}")
            m[i, int(c)] = True
    return m


def _as_label_matrix(labels, n_classes: int) -> np.ndarray:
    if isinstance(labels, np.ndarray) and labels.dtype == bool and labels.ndim == 2:
        if labels.shape[1] != n_classes:
            raise ValueError(f"label matrix has {labels.shape[1]} columns, scores have {n_classes}")
        return labels
    return label_matrix(labels, n_classes)


def stable_rank_order(scores: np.ndarray) -> np.ndarray:
    """Row-wise order of indices by descending score, ties by ascending index."""
    return np.argsort(-np.asarray(scores), axis=-1, kind="stable")


# ----------------------------------------------------------------------------------------------
# zero-shot classification


def label_ranks(scores: np.ndarray, labels) -> np.ndarray:
    """0-based rank of each image's best-ranked label (the tie rule above); -1 when it has none.

    ``scores`` is (n_images, n_classes); ``labels`` a list of label sets or a bool matrix.
    Computed without a full sort: rank(c) = #(s > s_c) + #(s == s_c and index < c).
    """
    scores = np.asarray(scores)
    n, n_classes = scores.shape
    lab = _as_label_matrix(labels, n_classes)
    ranks = np.full(n, -1, dtype=np.int64)
    idx = np.arange(n_classes)
    for i in range(n):
        cls = np.flatnonzero(lab[i])
        if len(cls) == 0:
            continue
        row = scores[i]
        best = None
        for c in cls:
            s = row[c]
            r = int(np.count_nonzero(row > s) + np.count_nonzero((row == s) & (idx < c)))
            best = r if best is None else min(best, r)
        ranks[i] = best
    return ranks


def topk_accuracy(scores: np.ndarray, labels, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of images (with at least one label) whose any label ranks within the top k."""
    ranks = label_ranks(scores, labels)
    valid = ranks >= 0
    if not valid.any():
        return {int(k): float("nan") for k in ks}
    return {int(k): float(np.mean(ranks[valid] < k)) for k in ks}


# ----------------------------------------------------------------------------------------------
# threshold metrics (ROC, precision/recall/F1 against the angular distance)


@dataclass
class ThresholdCurve:
    """Every distinct distance as a threshold, ascending; counts of pairs with ``d <= t``."""

    thresholds: np.ndarray  # (m,) ascending distinct distances
    tp: np.ndarray  # (m,) positives with d <= t
    fp: np.ndarray  # (m,) negatives with d <= t
    n_pos: int
    n_neg: int

    @property
    def tpr(self) -> np.ndarray:
        return self.tp / max(self.n_pos, 1)

    @property
    def fpr(self) -> np.ndarray:
        return self.fp / max(self.n_neg, 1)

    @property
    def precision(self) -> np.ndarray:
        pred = self.tp + self.fp
        return np.divide(self.tp, pred, out=np.ones_like(self.tp, dtype=np.float64), where=pred > 0)

    @property
    def recall(self) -> np.ndarray:
        return self.tpr

    @property
    def f1(self) -> np.ndarray:
        denom = 2 * self.tp + (self.fp) + (self.n_pos - self.tp)
        return np.divide(2 * self.tp, denom, out=np.zeros_like(self.tp, dtype=np.float64), where=denom > 0)


def threshold_curve(distances: np.ndarray, positive: np.ndarray) -> ThresholdCurve:
    """Counts at each distinct distance (ties grouped: equal distances are one threshold)."""
    d = np.asarray(distances, dtype=np.float64).ravel()
    pos = np.asarray(positive, dtype=bool).ravel()
    if d.shape != pos.shape:
        raise ValueError(f"{d.size} distances but {pos.size} labels")
    if d.size == 0:
        raise ValueError("no pairs to score")
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    p_sorted = pos[order]
    tp = np.cumsum(p_sorted, dtype=np.int64)
    fp = np.cumsum(~p_sorted, dtype=np.int64)
    # last index of each run of equal distances
    last = np.flatnonzero(np.r_[d_sorted[1:] != d_sorted[:-1], True])
    return ThresholdCurve(
        thresholds=d_sorted[last],
        tp=tp[last].astype(np.float64),
        fp=fp[last].astype(np.float64),
        n_pos=int(pos.sum()),
        n_neg=int((~pos).sum()),
    )


def roc_curve(distances: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold -inf (nothing accepted)."""
    c = threshold_curve(distances, positive)
    return np.r_[0.0, c.fpr], np.r_[0.0, c.tpr], np.r_[-np.inf, c.thresholds]


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under a curve given by increasing x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def roc_auc(distances: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve; equals P(d_pos < d_neg) + 0.5 P(d_pos == d_neg). NaN if one
    class of pairs is empty."""
    pos = np.asarray(positive, dtype=bool)
    if pos.all() or not pos.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(distances, positive)
    return auc(fpr, tpr)


@dataclass
class BestThreshold:
    threshold: float  # angular distance; accept when d <= threshold
    f1: float
    precision: float
    recall: float
    at_observed: float  # the observed distance that achieved the best F1


def best_f1_threshold(curve: ThresholdCurve) -> BestThreshold:
    """The threshold with the highest F1 (the first, i.e. strictest, if several tie).

    F1 is a step function between observed distances: accepting ``d <= t`` gives the same pairs
    for every ``t`` from the best observed distance up to (not including) the next one. The
    reported threshold is the **midpoint** of that interval, so that with two separated clusters
    it lies between them rather than on the edge of the positive cluster.
    """
    f1 = curve.f1
    i = int(np.argmax(f1))
    t_obs = float(curve.thresholds[i])
    t = (t_obs + float(curve.thresholds[i + 1])) / 2.0 if i + 1 < len(curve.thresholds) else t_obs
    return BestThreshold(
        threshold=t,
        f1=float(f1[i]),
        precision=float(curve.precision[i]),
        recall=float(curve.recall[i]),
        at_observed=t_obs,
    )


def counts_at(distances: np.ndarray, positive: np.ndarray, thresholds: Sequence[float]) -> dict[str, np.ndarray]:
    """precision / recall / F1 / fpr at arbitrary thresholds (for plotting on a fixed grid)."""
    d = np.sort(np.asarray(distances, dtype=np.float64)[np.asarray(positive, dtype=bool)])
    n = np.sort(np.asarray(distances, dtype=np.float64)[~np.asarray(positive, dtype=bool)])
    t = np.asarray(thresholds, dtype=np.float64)
    tp = np.searchsorted(d, t, side="right").astype(np.float64)
    fp = np.searchsorted(n, t, side="right").astype(np.float64)
    n_pos, n_neg = len(d), len(n)
    pred = tp + fp
    precision = np.divide(tp, pred, out=np.ones_like(tp), where=pred > 0)
    recall = tp / max(n_pos, 1)
    denom = 2 * tp + fp + (n_pos - tp)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"threshold": t, "precision": precision, "recall": recall, "f1": f1, "fpr": fp / max(n_neg, 1)}


def downsample_curve(n_points: int, max_points: int = 400) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread points of a curve, first and last kept."""
    if n_points <= max_points:
        return np.arange(n_points)
    return np.unique(np.linspace(0, n_points - 1, max_points).round().astype(np.int64))


# ----------------------------------------------------------------------------------------------
# text-to-image retrieval


def retrieval_metrics(scores: np.ndarray, relevant, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Text-to-image retrieval with one query per class.

    ``scores`` is (n_queries, n_images) (query = class text embedding, higher = better);
    ``relevant`` is a (n_queries, n_images) bool matrix or, per query, a set of relevant image
    indices. Queries without any relevant image are skipped (they have no defined recall or AP).
    Images are ranked by descending score, ties by ascending image index.

    precision@k = relevant in top k / k;  recall@k = relevant in top k / #relevant;
    AP = mean over the relevant images of the precision at their rank;  mAP = mean AP.
    """
    scores = np.asarray(scores)
    nq, ni = scores.shape
    rel = _as_label_matrix(relevant, ni)
    has = rel.any(axis=1)
    out: dict = {"queries": int(has.sum()), "k": [int(k) for k in ks]}
    if not has.any():
        out.update({f"precision@{k}": float("nan") for k in ks})
        out.update({f"recall@{k}": float("nan") for k in ks})
        out["mAP"] = float("nan")
        return out
    qs = np.flatnonzero(has)
    ks_eff = [min(int(k), ni) for k in ks]
    prec = {k: [] for k in ks}
    rec = {k: [] for k in ks}
    aps = []
    ranks = np.arange(1, ni + 1, dtype=np.float64)
    for start in range(0, len(qs), 256):  # chunks keep memory at 256 x n_images
        sel = qs[start : start + 256]
        order = stable_rank_order(scores[sel])
        hits = np.take_along_axis(rel[sel], order, axis=1)  # relevance in ranked order
        n_rel = hits.sum(axis=1).astype(np.float64)
        cum = np.cumsum(hits, axis=1, dtype=np.float64)
        for k, kk in zip(ks, ks_eff):
            prec[k].append(cum[:, kk - 1] / k)
            rec[k].append(cum[:, kk - 1] / n_rel)
        aps.append((hits * (cum / ranks)).sum(axis=1) / n_rel)
    for k in ks:
        out[f"precision@{k}"] = float(np.mean(np.concatenate(prec[k])))
        out[f"recall@{k}"] = float(np.mean(np.concatenate(rec[k])))
    out["mAP"] = float(np.mean(np.concatenate(aps)))
    return out


# ----------------------------------------------------------------------------------------------
# ANN index recall


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with the tie rule above: (scores (q, k), ids (q, k))."""
    sims = np.asarray(queries, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    k = min(k, sims.shape[1])
    order = stable_rank_order(sims)[:, :k]
    return np.take_along_axis(sims, order, axis=1), order.astype(np.int64)


def index_recall(
    found_ids: np.ndarray,
    exact_ids: np.ndarray,
    exact_scores: np.ndarray | None = None,
    found_true_scores: np.ndarray | None = None,
    tol: float = 1e-6,
) -> float:
    """Recall@k of an approximate search against exact search, averaged over queries.

    Plain form: |found ∩ exact| / k per query. When ``exact_scores`` and ``found_true_scores``
    (the exact similarity of each returned id, NaN for a missing id) are given, a returned id also
    counts when its true similarity ties the k-th exact one (within ``tol``): with duplicate or
    near-duplicate vectors, which of the tied ids an index returns is arbitrary and not an error.
    """
    found_ids = np.asarray(found_ids)
    exact_ids = np.asarray(exact_ids)
    q, k = exact_ids.shape
    total = 0.0
    for i in range(q):
        f = found_ids[i][found_ids[i] >= 0]
        if exact_scores is not None and found_true_scores is not None:
            kth = exact_scores[i, -1]
            ts = np.asarray(found_true_scores[i])[found_ids[i] >= 0]
            good = len(set(f.tolist()) & set(exact_ids[i].tolist()))
            extra = np.count_nonzero(~np.isin(f, exact_ids[i]) & (ts >= kth - tol))
            total += min(good + extra, k) / k
        else:
            total += len(set(f.tolist()) & set(exact_ids[i].tolist())) / k
    return total / max(q, 1)
