"""From branch outputs to block scores, video scores, intervals and verdicts.

Per block, each branch gives p(fake). With both branches the *merged* block score is
``(p_g1 + p_g2) / 2``; with one branch it is that branch's p(fake). A video's blocks are then
aggregated into one video score in [0, 1]; the *call* is "fake" when it is >= the threshold
(0.5 unless the weights carry a calibrated one).

Aggregations (`AGGREGATIONS`), always reported next to the number they produced:

- ``vote`` (reference default): the fraction of blocks whose merged score is >= 0.5;
- ``mean-prob``: the mean merged block score;
- ``mean-logit``: sigmoid of the mean block logit ``log(p / (1 - p))`` (p clipped to [1e-7, 1 - 1e-7]).

Every video score comes with a 95% interval over its blocks: for ``vote`` the Wilson score
interval of k fake blocks out of n; for the means a percentile bootstrap (2000 resamples of the
blocks with replacement, fixed seed, so the same blocks always give the same interval). A video
whose interval contains the threshold gets the verdict "uncertain" (its `call` is kept).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .features import BRANCHES, branch_input
from .model import fake_probability
from .vocab import AGGREGATIONS, DEFAULT_AGGREGATION  # re-exported: lrnet.scoring.AGGREGATIONS

__all__ = ["AGGREGATIONS", "DEFAULT_AGGREGATION", "THRESHOLD", "CONFIDENCE", "BOOTSTRAP_RESAMPLES",
           "BOOTSTRAP_SEED", "VideoResult", "aggregate_blocks", "block_fake_probabilities", "bootstrap_intervals",
           "decide", "interval_method", "merge_branches", "verdict",
           "video_intervals", "wilson_interval"]

THRESHOLD = 0.5
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_EPS = 1e-7
_CHUNK = 1 << 22  # resample counts held at once (resamples x blocks), ~32 MB of int64


@torch.inference_mode()
def block_fake_probabilities(model: nn.Module, blocks: "np.ndarray | torch.Tensor", branch: str,
                             batch_size: int = 512,
                             device: "str | torch.device | None" = None) -> np.ndarray:
    """p(fake) of each block for one branch: ``(n, B, 136)`` blocks -> ``(n,)`` float32.

    g2 differences are computed per batch on the model's device, so no second copy is stored.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n = len(blocks)
    out = np.empty(n, dtype=np.float32)
    with warnings.catch_warnings():
        # read-only blocks (a memory-mapped dataset cache) are only ever read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        source = torch.as_tensor(blocks)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            batch: Any = source[start:start + batch_size].to(device, non_blocking=True)  # a tensor: branch_input
            x = branch_input(batch, branch)  # is typed for arrays but works on tensors as well
            out[start:start + len(x)] = fake_probability(model(x)).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def merge_branches(probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Merged block score: the mean of the available branches' p(fake), ``(n,)``."""
    if not probs:
        raise ValueError("no branch probabilities to merge")
    stacked = np.stack([np.asarray(probs[b], dtype=np.float32) for b in BRANCHES if b in probs])
    if len(stacked) == 1:
        return stacked[0]
    # (p1 + p2) / 2 written as the reference's sum-then-threshold-at-1 rule, in float32.
    return (stacked.sum(axis=0) / np.float32(len(stacked))).astype(np.float32)


def _block_values(block_scores: np.ndarray, aggregation: str) -> np.ndarray:
    """What an aggregation averages per block: fake votes (0/1), probabilities or logits; float64."""
    if aggregation == "vote":
        return (np.asarray(block_scores) >= THRESHOLD).astype(np.float64)
    scores = np.asarray(block_scores, dtype=np.float64)
    if aggregation == "mean-prob":
        return scores
    if aggregation == "mean-logit":
        p = np.clip(scores, _EPS, 1 - _EPS)
        return np.log(p) - np.log1p(-p)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def aggregate_blocks(block_scores: np.ndarray, video_index: np.ndarray, n_videos: int,
                     aggregation: str = DEFAULT_AGGREGATION) -> np.ndarray:
    """Video scores from block scores, vectorised over all videos.

    ``block_scores`` ``(n_blocks,)``, ``video_index`` ``(n_blocks,)`` ints in [0, n_videos).
    Returns ``(n_videos,)`` float64; a video without blocks gets NaN.
    """
    values = _block_values(block_scores, aggregation)
    index = np.asarray(video_index, dtype=np.int64)
    counts = np.bincount(index, minlength=n_videos).astype(np.float64)
    sums = np.bincount(index, weights=values, minlength=n_videos)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    return _sigmoid(mean) if aggregation == "mean-logit" else mean


# ----------------------------------------------------------------------------- intervals

def wilson_interval(successes, trials, confidence: float = CONFIDENCE) -> Tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion, vectorised: ``(k,)`` successes of ``(k,)``
    trials -> ``(lo, hi)`` float64 arrays (NaN where trials == 0).

    ``centre = (p + z^2 / 2n) / (1 + z^2 / n)``, ``half = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)``.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))  # exact ends, not 1e-17 off
    hi = np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    empty = n == 0
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def _bootstrap_group(values: np.ndarray, resamples: int, seed: int, confidence: float) -> np.ndarray:
    """Percentile interval of the mean of each row of ``(V, n)`` values -> ``(V, 2)``.

    Resample counts are Multinomial(n, 1/n) per resample (the bootstrap), drawn from a generator
    seeded by ``(seed, n)`` so a video's interval depends only on its own blocks; the resampled
    means of all rows are one matrix product ``values @ counts.T / n``.
    """
    n_videos, n = values.shape
    rng = np.random.default_rng([seed, n])
    per_chunk = max(1, _CHUNK // n)
    means = np.empty((n_videos, resamples))
    for start in range(0, resamples, per_chunk):
        size = min(per_chunk, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)  # (size, n)
        means[:, start:start + size] = values @ counts.T.astype(np.float64) / n
    alpha = (1.0 - confidence) / 2
    return np.quantile(means, [alpha, 1.0 - alpha], axis=1).T


def bootstrap_intervals(block_scores: np.ndarray, video_index: np.ndarray, n_videos: int, aggregation: str,
                        confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap interval of each video's mean-prob / mean-logit score: ``(n_videos, 2)`` float64.

    Videos are grouped by block count (one resampling plan per count, applied to all of them at
    once). A video without blocks gets NaN; one with a single block gets [0, 1] (no spread to
    resample, so nothing is known beyond its score).
    """
    values = _block_values(block_scores, aggregation)
    index = np.asarray(video_index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    counts = np.bincount(index, minlength=n_videos)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full((n_videos, 2), np.nan)
    out[counts == 1] = (0.0, 1.0)
    for n in np.unique(counts[counts > 1]):
        videos = np.flatnonzero(counts == n)
        rows = values[order[starts[videos][:, None] + np.arange(n)]]  # (V, n) blocks of each video
        out[videos] = _bootstrap_group(rows, resamples, seed, confidence)
    if aggregation == "mean-logit":
        multi = counts > 1
        out[multi] = _sigmoid(out[multi])
    return out


def video_intervals(block_scores: np.ndarray, video_index: np.ndarray, n_videos: int,
                    aggregation: str = DEFAULT_AGGREGATION, confidence: float = CONFIDENCE,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The interval of every video score, ``(n_videos, 2)`` float64 ``[lo, hi]`` (NaN: no block).

    ``vote``: Wilson interval of (fake blocks, blocks); the means: `bootstrap_intervals`.
    """
    if aggregation == "vote":
        index = np.asarray(video_index, dtype=np.int64)
        fake = np.bincount(index, weights=_block_values(block_scores, "vote"), minlength=n_videos)
        lo, hi = wilson_interval(fake, np.bincount(index, minlength=n_videos), confidence)
        return np.stack([lo, hi], axis=1)
    return bootstrap_intervals(block_scores, video_index, n_videos, aggregation, confidence, resamples, seed)


def interval_method(aggregation: str) -> str:
    """How the interval of `aggregation` is computed, for reports."""
    if aggregation == "vote":
        return f"Wilson {CONFIDENCE:.0%} over blocks"
    return f"bootstrap {CONFIDENCE:.0%} over blocks ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})"


def verdict(score: float, threshold: float = THRESHOLD) -> str:
    """"fake" when the video score is >= `threshold`, else "real" (NaN: "n/a")."""
    if score != score:
        return "n/a"
    return "fake" if score >= threshold else "real"


def decide(scores, intervals, threshold: float = THRESHOLD, uncertain: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Calls and verdicts of ``(v,)`` scores with ``(v, 2)`` intervals -> two ``(v,)`` str arrays.

    call: "fake" if score >= threshold, "real" below, "n/a" for NaN. verdict: the call, or
    "uncertain" when `uncertain` and ``lo <= threshold <= hi``.
    """
    s = np.asarray(scores, dtype=np.float64)
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    call = np.where(np.isnan(s), "n/a", np.where(s >= threshold, "fake", "real")).astype(object)
    verdicts = call.copy()
    if uncertain:
        straddles = (iv[:, 0] <= threshold) & (threshold <= iv[:, 1])  # NaN compares False
        verdicts[straddles & ~np.isnan(s)] = "uncertain"
    return call, verdicts


# ----------------------------------------------------------------------------- one video

@dataclass
class VideoResult:
    """The score of one landmark sequence.

    ``call`` is the threshold decision ("real", "fake", "n/a"); ``verdict`` is the call, or
    "uncertain" when the 95% ``interval`` of the score contains ``threshold``.
    """

    video: str
    frames: int
    blocks: int
    score: float  # NaN when the sequence gives no block
    verdict: str  # "fake", "real", "uncertain" or "n/a"
    aggregation: str
    branches: Sequence[str]
    block_scores: np.ndarray = field(repr=False)  # merged per-block p(fake), (blocks,)
    branch_block_scores: Dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    error: Optional[str] = None
    call: str = ""  # "fake", "real" or "n/a"; "" (old constructors): taken from `verdict`
    interval: Optional[Tuple[float, float]] = None  # 95% interval of `score`; None without blocks
    threshold: float = THRESHOLD
    threshold_source: str = "default"

    def __post_init__(self) -> None:
        if not self.call:
            self.call = self.verdict if self.verdict != "uncertain" else verdict(self.score, self.threshold)

    def to_dict(self, with_blocks: bool = False) -> Dict[str, object]:
        out: Dict[str, object] = {
            "video": self.video, "frames": self.frames, "blocks": self.blocks,
            "score": None if self.score != self.score else round(float(self.score), 6),
            "verdict": self.verdict, "call": self.call,
            "interval": None if self.interval is None else [round(float(v), 6) for v in self.interval],
            "threshold": float(self.threshold), "threshold_source": self.threshold_source,
            "aggregation": self.aggregation, "branches": list(self.branches),
        }
        if self.error:
            out["error"] = self.error
        if with_blocks:
            out["block_scores"] = [round(float(v), 6) for v in self.block_scores]
            for b, v in self.branch_block_scores.items():
                out[f"block_scores_{b}"] = [round(float(x), 6) for x in v]
        return out
