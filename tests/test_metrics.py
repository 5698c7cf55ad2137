"""Each metric against numbers worked out by hand or by an independent pure-Python computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lrnet import metrics as M

F32 = np.float32
BELOW_HALF = np.nextafter(F32(0.5), F32(0))  # the largest float32 below 0.5


def _auc_by_pairs(labels, scores):
    """P(fake scores above real), ties count 1/2: a loop over every (fake, real) pair."""
    fakes = [s for s, y in zip(scores, labels) if y == 1]
    reals = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if f > r else 0.5 if f == r else 0.0 for f, r in itertools.product(fakes, reals))
    return wins / (len(fakes) * len(reals))


def _ap_by_ranks(labels, scores):
    """Average precision without ties: mean over fakes of the precision at the fake's rank."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if labels[i] == 1:
            hits += 1
            total += hits / rank
    return total / hits


def test_class_counts():
    assert M.class_counts([0, 1, 1, 1, 0, 1]) == {"real": 2, "fake": 4}
    assert M.class_counts(np.array([], dtype=np.int64)) == {"real": 0, "fake": 0}


def test_branch_accuracy_threshold_exactly_half_is_fake():
    p = np.array([0.1, 0.5, 0.7, BELOW_HALF], dtype=F32)
    labels = [0, 1, 0, 0]
    # predicted: real, fake (exactly 0.5), fake, real -> right, right, wrong, right
    assert M.branch_accuracy(p, labels) == 0.75
    assert M.branch_accuracy(np.array([0.5], F32), [0]) == 0.0


def test_merged_sample_accuracy_sum_of_one_is_fake():
    two_below = np.nextafter(BELOW_HALF, F32(0))  # 0.5 - 2**-24
    p1 = np.array([0.5, 0.25, 0.3, two_below, 0.9, BELOW_HALF], dtype=F32)
    p2 = np.array([0.5, 0.75, 0.6, 0.5, 0.05, 0.5], dtype=F32)
    labels = [1, 1, 1, 0, 0, 0]
    # sums: 1.0 (fake, right), 1.0 exactly (fake, right), 0.9 (real, wrong), 1 - 2**-24 (real, right),
    # 0.95 (real, right), and 1 - 2**-25, which rounds to 1.0 in float32 as in the reference (fake, wrong)
    assert M.merged_sample_accuracy(p1, p2, labels) == 4 / 6
    # the reference's loop, written out
    count = sum(int((1 if a + b >= 1 else 0) == y) for a, b, y in zip(p1, p2, labels))
    assert M.merged_sample_accuracy(p1, p2, labels) == count / len(labels)


def test_video_accuracy_score_exactly_half_is_fake():
    scores = [0.5, 0.4999, 1.0, 0.0]
    labels = [1, 0, 0, 0]
    assert M.video_accuracy(scores, labels) == 0.75


def test_accuracy_without_samples_is_none():
    assert M.branch_accuracy(np.array([], F32), []) is None
    assert M.video_accuracy([], []) is None
    assert M.merged_sample_accuracy([], [], []) is None


def test_roc_curve_points_by_hand():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.6, 0.4, 0.9]
    curve = M.roc_curve(labels, scores)
    np.testing.assert_allclose(curve.fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.tpr, [0, 0.5, 0.5, 1, 1])
    assert math.isinf(curve.thresholds[0])
    np.testing.assert_allclose(curve.thresholds[1:], [0.9, 0.6, 0.4, 0.1])
    assert curve.to_dict()["thresholds"][0] is None  # JSON has no infinity


def test_auc_by_hand_and_by_pair_counting():
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == 0.75
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)  # many ties
    assert M.roc_auc(labels, scores) == pytest.approx(_auc_by_pairs(labels, scores), abs=1e-12)


@pytest.mark.parametrize("labels, scores, expected", [
    ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5),  # crossing exactly at the ROC point (0.5, 0.5)
    ([0, 0, 0, 1, 1], [0.1, 0.2, 0.7, 0.3, 0.8], 1 / 3),  # on a vertical segment at FPR 1/3
    ([0, 0, 1, 1, 1], [0.2, 0.6, 0.5, 0.7, 0.9], 1 / 3),  # interpolated along a horizontal segment
    ([0, 1], [0.5, 0.5], 0.5),  # a tie: the diagonal segment crosses at (0.5, 0.5)
    ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.0),  # perfect separation
])
def test_equal_error_rate_by_hand(labels, scores, expected):
    assert M.equal_error_rate(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_average_precision_by_hand_and_by_ranks():
    # ranking 0.9 fake, 0.6 real, 0.4 fake, 0.1 real: precision 1/1 and 2/3 at the fakes
    assert M.average_precision([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == pytest.approx(5 / 6)
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = rng.permutation(40) / 40.0  # distinct scores
    assert M.average_precision(labels, scores) == pytest.approx(_ap_by_ranks(labels, scores), abs=1e-12)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0]])
def test_one_class_leaves_ranking_metrics_undefined(labels):
    scores = np.linspace(0.2, 0.8, len(labels))
    assert M.roc_auc(labels, scores) is None
    assert M.roc_curve(labels, scores) is None
    assert M.equal_error_rate(labels, scores) is None
    assert M.average_precision(labels, scores) is None
    reason = M.undefined_reason(labels)
    assert "only one class" in reason and f"{len(labels)} " in reason
    assert M.video_accuracy(scores, labels) is not None  # accuracy stays defined


def test_undefined_reason():
    assert M.undefined_reason([0, 1]) is None
    assert M.undefined_reason([], "videos") == "no scored videos"


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="finite"):
        M.roc_auc([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match="expected 2 scores"):
        M.video_accuracy([0.2, 0.3, 0.4], [0, 1])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        M.class_counts([0, 2])


# ----------------------------------------------------------------------------- operating points

Y = [0, 0, 0, 0, 1, 1, 1, 1]
S = [0.1, 0.3, 0.45, 0.7, 0.4, 0.6, 0.8, 0.9]


def test_confusion_matrix_by_hand():
    assert M.confusion_matrix(Y, S, 0.5) == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    assert M.confusion_matrix(Y, S, 0.4) == {"tp": 4, "fp": 2, "tn": 2, "fn": 0}  # >= is fake
    assert M.confusion_matrix(Y, S, 0.95) == {"tp": 0, "fp": 0, "tn": 4, "fn": 4}
    assert M.video_accuracy(S, Y, 0.4) == 0.75 and M.video_accuracy(S, Y) == 0.75


def test_tpr_at_fpr_by_hand():
    # cut-offs: 0.9 -> (0, .25), 0.8 -> (0, .5), 0.7 -> (.25, .5), 0.6 -> (.25, .75), 0.45 -> (.5, .75) ...
    assert M.tpr_at_fpr(Y, S, (0.0, 0.1, 0.25, 0.5)) == {0.0: 0.5, 0.1: 0.5, 0.25: 0.75, 0.5: 1.0}
    assert M.tpr_at_fpr([1, 1], [0.2, 0.3]) is None


def test_operating_points_by_hand():
    eer = M.operating_point(Y, S, "eer")
    assert (eer.threshold, eer.fpr, eer.tpr) == (0.6, 0.25, 0.75)  # FPR = FNR = 0.25
    point = M.operating_point(Y, S, "target-fpr", 0.1)
    assert (point.threshold, point.fpr, point.tpr) == (0.8, 0.0, 0.5)
    assert point.to_dict()["target_fpr"] == 0.1
    # a budget no cut-off can meet except "nothing is fake": just above the highest score
    strict = M.operating_point([0, 1], [0.9, 0.5], "target-fpr", 0.0)
    assert strict.threshold > 0.9 and strict.tpr == 0.0
    assert M.confusion_matrix([0, 1], [0.9, 0.5], strict.threshold)["fp"] == 0
    assert M.operating_point([0, 0], [0.1, 0.2]) is None
    with pytest.raises(ValueError):
        M.operating_point(Y, S, "target-fpr")
    with pytest.raises(ValueError):
        M.operating_point(Y, S, "youden")


def test_calibrated_threshold_meets_its_budget_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    for target in (0.01, 0.05, 0.2):
        point = M.operating_point(y, s, "target-fpr", target)
        c = M.confusion_matrix(y, s, point.threshold)
        assert c["fp"] / (c["fp"] + c["tn"]) == point.fpr <= target
        assert c["tp"] / (c["tp"] + c["fn"]) == point.tpr == M.tpr_at_fpr(y, s, (target,))[target]
