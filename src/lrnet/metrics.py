"""Detection metrics: small functions over label and score arrays.

Conventions: labels are ints, 0 = real and 1 = fake; scores are p(fake) in [0, 1] (a block's
branch probability, a merged block score, or a video score). Thresholds follow the reference
LRNet evaluation exactly:

- branch accuracy: a block is called fake when the branch's p(fake) >= 0.5 (the argmax of the two
  softmax outputs; an exact tie goes to fake here, to real in the reference's ``argmax``; the two
  only differ when both logits are equal to float precision);
- merged sample accuracy: fake when ``p_g1 + p_g2 >= 1`` (float32 sum, as the reference);
- video accuracy: fake when the video score >= 0.5.

Ranking metrics (ROC AUC, ROC curve, EER, average precision) need both classes. With one class
they are *undefined*: the functions return ``None`` and `undefined_reason` says why; nothing
raises. Scores must be finite (callers drop videos without blocks first).

Operating points: `confusion_matrix` and `video_accuracy` at any threshold, `tpr_at_fpr` (the
detection rate allowed by a false-positive budget) and `operating_point`, which picks a threshold
on a (validation) split at the EER or at a target false-positive rate (``lrnet evaluate --calibrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

THRESHOLD = 0.5
CLASS_NAMES = ("real", "fake")


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y.astype(np.int64, copy=False)


def _scores(scores, n: int) -> np.ndarray:
    s = np.asarray(scores)
    if s.shape != (n,):
        raise ValueError(f"expected {n} scores to match the labels, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (drop videos without blocks before computing metrics)")
    return s


def class_counts(labels) -> Dict[str, int]:
    """``{"real": n0, "fake": n1}`` for ``(n,)`` labels."""
    counts = np.bincount(_labels(labels), minlength=2)
    return {CLASS_NAMES[0]: int(counts[0]), CLASS_NAMES[1]: int(counts[1])}


def undefined_reason(labels, what: str = "videos") -> Optional[str]:
    """Why ranking metrics (AUC, ROC, EER, AP) cannot be computed on ``(n,)`` labels, else None."""
    counts = class_counts(labels)
    if counts["real"] and counts["fake"]:
        return None
    if not counts["real"] and not counts["fake"]:
        return f"no scored {what}"
    present = "fake" if counts["fake"] else "real"
    return (f"only one class among the scored {what} ({counts[present]} {present}, 0 "
            f"{'real' if present == 'fake' else 'fake'}): AUC, ROC, EER and AP need both classes")


def _accuracy(predicted_fake: np.ndarray, labels: np.ndarray) -> Optional[float]:
    if labels.size == 0:
        return None
    return float(np.count_nonzero(predicted_fake == labels.astype(bool)) / labels.size)


def branch_accuracy(p_fake, labels) -> Optional[float]:
    """Accuracy of one branch over blocks: ``(n,)`` p(fake), ``(n,)`` labels -> fraction correct.

    A block is predicted fake when p(fake) >= 0.5. None when there are no blocks.
    """
    y = _labels(labels)
    p = _scores(p_fake, y.size)
    return _accuracy(p >= THRESHOLD, y)


def merged_sample_accuracy(p_g1, p_g2, labels) -> Optional[float]:
    """Accuracy of the merged prediction over blocks: fake when ``p_g1 + p_g2 >= 1``.

    ``p_g1``, ``p_g2`` ``(n,)`` float32 p(fake) of the two branches; the sum is taken in float32
    exactly as the reference does. None when there are no blocks.
    """
    y = _labels(labels)
    s = _scores(p_g1, y.size).astype(np.float32, copy=False) + _scores(p_g2, y.size).astype(np.float32, copy=False)
    return _accuracy(s >= np.float32(1.0), y)


def video_accuracy(video_scores, labels, threshold: float = THRESHOLD) -> Optional[float]:
    """Video-level accuracy: ``(v,)`` video scores, ``(v,)`` labels; fake when score >= `threshold`."""
    y = _labels(labels)
    s = _scores(video_scores, y.size)
    return _accuracy(s >= threshold, y)


def confusion_matrix(labels, scores, threshold: float = THRESHOLD) -> Dict[str, int]:
    """Counts at `threshold` (fake = positive, called fake when score >= threshold):
    ``{"tp", "fp", "tn", "fn"}`` over ``(n,)`` labels and scores."""
    y = _labels(labels).astype(bool)
    called = _scores(scores, y.size) >= threshold
    return {"tp": int(np.count_nonzero(called & y)), "fp": int(np.count_nonzero(called & ~y)),
            "tn": int(np.count_nonzero(~called & ~y)), "fn": int(np.count_nonzero(~called & y))}


@dataclass
class RocCurve:
    """ROC curve points, all ``(k,)``: false/true positive rates and the score threshold of each
    point (the first threshold is +inf: nothing is called fake)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def to_dict(self) -> Dict[str, List[Optional[float]]]:
        """JSON-ready lists; an infinite threshold becomes None."""
        return {
            "fpr": [float(v) for v in self.fpr],
            "tpr": [float(v) for v in self.tpr],
            "thresholds": [float(v) if np.isfinite(v) else None for v in self.thresholds],
        }


def roc_curve(labels, scores) -> Optional[RocCurve]:
    """ROC curve of ``(n,)`` scores against ``(n,)`` labels (scikit-learn, every threshold kept);
    None when only one class is present."""
    from sklearn.metrics import roc_curve as _roc

    y = _labels(labels)
    s = _scores(scores, y.size)
    if undefined_reason(y) is not None:
        return None
    fpr, tpr, thresholds = _roc(y, s, drop_intermediate=False)
    return RocCurve(fpr, tpr, thresholds)


def roc_auc(labels, scores) -> Optional[float]:
    """Area under the ROC curve (probability that a random fake outscores a random real, ties
    counting one half); None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = _labels(labels)
    s = _scores(scores, y.size)
    if undefined_reason(y) is not None:
        return None
    return float(roc_auc_score(y, s))


def equal_error_rate(labels, scores) -> Optional[float]:
    """Equal error rate: where the false positive rate equals the false negative rate (1 - TPR).

    Found on the ROC curve, linearly interpolated between the two points where ``FPR - FNR``
    changes sign. None when only one class is present.
    """
    curve = roc_curve(labels, scores)
    if curve is None:
        return None
    gap = curve.fpr - (1.0 - curve.tpr)  # rises from -1 at (0, 0) to +1 at (1, 1)
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0 or i == 0:
        return float(curve.fpr[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(curve.fpr[i - 1] + t * (curve.fpr[i] - curve.fpr[i - 1]))


def average_precision(labels, scores) -> Optional[float]:
    """Average precision of ``(n,)`` scores with fake as the positive class (scikit-learn's step
    sum: precision at each recall step, weighted by the recall gained); None with one class."""
    from sklearn.metrics import average_precision_score

    y = _labels(labels)
    s = _scores(scores, y.size)
    if undefined_reason(y) is not None:
        return None
    return float(average_precision_score(y, s))


def tpr_at_fpr(labels, scores, targets: Sequence[float] = (0.01, 0.05, 0.10)) -> Optional[Dict[float, float]]:
    """True positive rate reachable with a false positive rate <= each target (the ROC step,
    no interpolation): ``{target: tpr}``; None when only one class is present."""
    curve = roc_curve(labels, scores)
    if curve is None:
        return None
    return {float(t): float(curve.tpr[curve.fpr <= t + 1e-12].max()) for t in targets}


@dataclass
class OperatingPoint:
    """A chosen threshold and the rates it gives on the split it was chosen on."""

    threshold: float  # call fake when score >= threshold
    fpr: float
    tpr: float
    method: str  # "eer" or "target-fpr"
    target_fpr: Optional[float] = None

    def to_dict(self) -> Dict[str, object]:
        return {"threshold": self.threshold, "fpr": self.fpr, "tpr": self.tpr, "method": self.method,
                "target_fpr": self.target_fpr}


def operating_point(labels, scores, method: str = "eer",
                    target_fpr: Optional[float] = None) -> Optional[OperatingPoint]:
    """Choose a video-score threshold on ``(n,)`` labels and scores; None with one class.

    ``"eer"``: the ROC point where FPR and FNR are closest (ties: the lower FPR).
    ``"target-fpr"``: the point with the highest TPR whose FPR <= `target_fpr`.
    The threshold is a score of the split (the ROC's own thresholds); when even the strictest
    cut-off exceeds the budget, it is just above the highest score (nothing is called fake).
    """
    if method not in ("eer", "target-fpr"):
        raise ValueError(f"unknown operating point method {method!r}; expected 'eer' or 'target-fpr'")
    budget = -1.0 if target_fpr is None else float(target_fpr)
    if method == "target-fpr" and not 0.0 <= budget <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    curve = roc_curve(labels, scores)
    if curve is None:
        return None
    if method == "eer":
        gap = np.abs(curve.fpr - (1.0 - curve.tpr))
        i = int(np.flatnonzero(gap == gap.min())[0])
    else:
        allowed = np.flatnonzero(curve.fpr <= budget + 1e-12)
        i = int(allowed[np.argmax(curve.tpr[allowed])])
    threshold = curve.thresholds[i]
    if not np.isfinite(threshold):  # sklearn's first point: above every score
        threshold = np.nextafter(float(np.max(scores)), np.inf)
    return OperatingPoint(float(threshold), float(curve.fpr[i]), float(curve.tpr[i]), method,
                          None if method == "eer" else budget)
