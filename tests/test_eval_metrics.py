"""Evaluation metrics against values computed by hand on small fixed inputs."""

import math

import numpy as np
import pytest

from pixquery.evaluation import metrics as M

# -- top-k, ties, multi-label -------------------------------------------------------------------


def test_topk_single_label_hand_computed():
    scores = np.array(
        [
            [0.9, 0.1, 0.3, 0.2],  # label 0: rank 0
            [0.9, 0.1, 0.3, 0.2],  # label 2: rank 1
            [0.1, 0.2, 0.3, 0.4],  # label 0: rank 3
        ]
    )
    labels = [{0}, {2}, {0}]
    assert M.label_ranks(scores, labels).tolist() == [0, 1, 3]
    acc = M.topk_accuracy(scores, labels, ks=(1, 2, 3, 4))
    assert acc == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3), 4: 1.0}


def test_ties_rank_lower_index_first():
    # classes 0 and 2 tie at 0.9: class 0 ranks first, class 2 second, whatever the sort backend
    scores = np.array([[0.9, 0.5, 0.9, 0.1]])
    assert M.label_ranks(scores, [{0}]).tolist() == [0]
    assert M.label_ranks(scores, [{2}]).tolist() == [1]
    assert M.topk_accuracy(scores, [{2}], ks=(1, 2)) == {1: 0.0, 2: 1.0}
    # all equal: the rank of class c is c
    flat = np.zeros((1, 6))
    assert M.label_ranks(flat, [{4}]).tolist() == [4]
    # same rule as a stable sort of -score
    assert M.stable_rank_order(scores).tolist() == [[0, 2, 1, 3]]


def test_multi_label_counts_when_any_label_is_predicted():
    scores = np.array(
        [
            [0.1, 0.8, 0.3],  # labels {0, 2}: ranks 2 and 1 -> best 1
            [0.7, 0.2, 0.6],  # labels {1, 2}: ranks 2 and 1 -> best 1
            [0.2, 0.5, 0.9],  # labels {0, 2}: rank of 2 is 0
        ]
    )
    labels = [{0, 2}, {1, 2}, {0, 2}]
    assert M.label_ranks(scores, labels).tolist() == [1, 1, 0]
    assert M.topk_accuracy(scores, labels, ks=(1, 2)) == {1: pytest.approx(1 / 3), 2: 1.0}
    # a bool matrix works the same as label sets
    assert M.label_ranks(scores, M.label_matrix(labels, 3)).tolist() == [1, 1, 0]


def test_images_without_labels_are_not_counted():
    scores = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert M.label_ranks(scores, [set(), {1}]).tolist() == [-1, 0]
    assert M.topk_accuracy(scores, [set(), {1}], ks=(1,)) == {1: 1.0}


def test_label_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        M.label_matrix([{3}], 3)


# -- angular distance, ROC, AUC, F1 ---------------------------------------------------------------


def test_angular_distance():
    d = M.angular_distance(np.array([1.0, 0.0, -1.0, 0.5, 1.0000001]))
    assert d.tolist() == pytest.approx([0.0, 0.5, 1.0, 1 / 3, 0.0])
    assert M.cosine_from_angular(0.25) == pytest.approx(math.sqrt(0.5))


# positives at 0.1 and 0.4, negatives at 0.2, 0.4 (tied with a positive) and 0.5
DIST = np.array([0.4, 0.1, 0.5, 0.2, 0.4])
POS = np.array([True, True, False, False, False])


def test_roc_hand_computed_with_a_tie():
    fpr, tpr, thr = M.roc_curve(DIST, POS)
    # thresholds -inf, 0.1, 0.2, 0.4 (the tie is one point, never split), 0.5
    assert thr.tolist() == [-np.inf, 0.1, 0.2, 0.4, 0.5]
    assert tpr.tolist() == pytest.approx([0, 0.5, 0.5, 1, 1])
    assert fpr.tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1])
    # trapezoids: 0 + 1/3*0.5 + 1/3*0.75 + 1/3*1 = 0.75
    assert M.roc_auc(DIST, POS) == pytest.approx(0.75)
    # = P(d_pos < d_neg) + 0.5 P(tie): (3 + 1 + 0.5) / 6
    pos, neg = DIST[POS], DIST[~POS]
    mw = np.mean([(p < n) + 0.5 * (p == n) for p in pos for n in neg])
    assert M.roc_auc(DIST, POS) == pytest.approx(mw)


def test_auc_perfect_inverse_and_degenerate():
    assert M.roc_auc(np.array([0.1, 0.2, 0.6, 0.7]), np.array([1, 1, 0, 0], bool)) == 1.0
    assert M.roc_auc(np.array([0.1, 0.2, 0.6, 0.7]), np.array([0, 0, 1, 1], bool)) == 0.0
    assert M.roc_auc(np.array([0.3, 0.3, 0.3]), np.array([1, 0, 0], bool)) == 0.5  # all tied
    assert math.isnan(M.roc_auc(np.array([0.1, 0.2]), np.array([1, 1], bool)))


def test_f1_over_threshold_and_best_threshold():
    c = M.threshold_curve(DIST, POS)
    # t=0.1: tp1 fp0 fn1 -> 2/3; t=0.2: tp1 fp1 fn1 -> 1/2; t=0.4: tp2 fp2 -> 2/3; t=0.5: tp2 fp3 -> 4/7
    assert c.f1.tolist() == pytest.approx([2 / 3, 1 / 2, 2 / 3, 4 / 7])
    assert c.precision.tolist() == pytest.approx([1, 1 / 2, 1 / 2, 2 / 5])
    assert c.recall.tolist() == pytest.approx([1 / 2, 1 / 2, 1, 1])
    best = M.best_f1_threshold(c)
    # two thresholds reach F1 2/3: the strictest (0.1) wins, placed midway to the next distance
    assert best.at_observed == pytest.approx(0.1)
    assert best.threshold == pytest.approx(0.15)
    assert (best.f1, best.precision, best.recall) == pytest.approx((2 / 3, 1.0, 0.5))


def test_best_threshold_lies_between_separated_clusters():
    d = np.array([0.05, 0.1, 0.12, 0.4, 0.45, 0.5])
    p = np.array([1, 1, 1, 0, 0, 0], bool)
    best = M.best_f1_threshold(M.threshold_curve(d, p))
    assert best.f1 == 1.0
    assert 0.12 < best.threshold < 0.4
    assert best.threshold == pytest.approx(0.26)


def test_counts_at_grid_matches_the_curve():
    at = M.counts_at(DIST, POS, [0.0, 0.1, 0.3, 0.4, 1.0])
    assert at["f1"].tolist() == pytest.approx([0, 2 / 3, 1 / 2, 2 / 3, 4 / 7])
    assert at["precision"][0] == 1.0  # nothing accepted: precision 1 by convention
    assert at["fpr"].tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1])


def test_downsample_keeps_ends():
    idx = M.downsample_curve(10_000, 50)
    assert idx[0] == 0 and idx[-1] == 9_999 and len(idx) <= 50
    assert M.downsample_curve(5, 50).tolist() == [0, 1, 2, 3, 4]


# -- retrieval ------------------------------------------------------------------------------------


def test_retrieval_hand_computed_with_ties():
    scores = np.array(
        [
            [0.9, 0.8, 0.8, 0.1],  # relevant {1, 3}: order 0,1,2,3 -> hits 0,1,0,1
            [0.9, 0.8, 0.8, 0.1],  # relevant {2}: tie with image 1, which ranks first -> hit at 3
            [0.5, 0.5, 0.5, 0.5],  # no relevant image: skipped
        ]
    )
    rel = [{1, 3}, {2}, set()]
    r = M.retrieval_metrics(scores, rel, ks=(1, 2, 3))
    assert r["queries"] == 2
    assert r["precision@1"] == 0.0
    assert r["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert r["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    # AP: (1/2 + 2/4)/2 = 0.5 and 1/3
    assert r["mAP"] == pytest.approx((0.5 + 1 / 3) / 2)


def test_retrieval_perfect():
    scores = np.eye(3)
    r = M.retrieval_metrics(scores, np.eye(3, dtype=bool), ks=(1, 3))
    assert r["mAP"] == 1.0 and r["precision@1"] == 1.0 and r["recall@1"] == 1.0
    assert r["precision@3"] == pytest.approx(1 / 3)


# -- index recall ---------------------------------------------------------------------------------


def test_exact_neighbours_and_recall():
    v = np.array([[1, 0], [0.8, 0.6], [0.8, 0.6], [0, 1]], np.float32)
    q = np.array([[1, 0]], np.float32)
    scores, ids = M.exact_neighbours(v, q, 2)
    assert ids.tolist() == [[0, 1]]  # 1 and 2 tie: lower id first
    assert M.index_recall(np.array([[0, 1]]), ids) == 1.0
    assert M.index_recall(np.array([[0, 3]]), ids) == 0.5
    assert M.index_recall(np.array([[0, -1]]), ids) == 0.5  # a missing hit counts as a miss
    # returning the tied duplicate (2) instead of 1 is not an error in the tie-aware form
    found = np.array([[0, 2]])
    true = np.array([[1.0, 0.8]], np.float32)
    assert M.index_recall(found, ids) == 0.5
    assert M.index_recall(found, ids, scores, true) == 1.0
