"""From branch outputs to block scores, video scores and verdicts.

Per block, each branch gives p(fake). With both branches the *merged* block score is
``(p_g1 + p_g2) / 2``; with one branch it is that branch's p(fake). A video's blocks are then
aggregated into one video score in [0, 1]; the verdict is "fake" when it is >= 0.5.

Aggregations (`AGGREGATIONS`), always reported next to the number they produced:

- ``vote`` (reference default): the fraction of blocks whose merged score is >= 0.5;
- ``mean-prob``: the mean merged block score;
- ``mean-logit``: sigmoid of the mean block logit ``log(p / (1 - p))`` (p clipped to [1e-7, 1 - 1e-7]).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .features import BRANCHES, branch_input, cut_blocks
from .model import fake_probability

AGGREGATIONS = ("vote", "mean-prob", "mean-logit")
DEFAULT_AGGREGATION = "vote"
THRESHOLD = 0.5
_EPS = 1e-7


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
            x = branch_input(source[start:start + batch_size].to(device, non_blocking=True), branch)
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


def aggregate_blocks(block_scores: np.ndarray, video_index: np.ndarray, n_videos: int,
                     aggregation: str = DEFAULT_AGGREGATION) -> np.ndarray:
    """Video scores from block scores, vectorised over all videos.

    ``block_scores`` ``(n_blocks,)``, ``video_index`` ``(n_blocks,)`` ints in [0, n_videos).
    Returns ``(n_videos,)`` float64; a video without blocks gets NaN.
    """
    scores = np.asarray(block_scores, dtype=np.float64)
    index = np.asarray(video_index, dtype=np.int64)
    counts = np.bincount(index, minlength=n_videos).astype(np.float64)
    if aggregation == "vote":
        values = (np.asarray(block_scores) >= THRESHOLD).astype(np.float64)
    elif aggregation == "mean-prob":
        values = scores
    elif aggregation == "mean-logit":
        p = np.clip(scores, _EPS, 1 - _EPS)
        values = np.log(p) - np.log1p(-p)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    sums = np.bincount(index, weights=values, minlength=n_videos)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    if aggregation == "mean-logit":
        mean = 1.0 / (1.0 + np.exp(-mean))
    return mean


def verdict(score: float) -> str:
    """"fake" when the video score is >= 0.5, else "real" (NaN: "n/a")."""
    if score != score:
        return "n/a"
    return "fake" if score >= THRESHOLD else "real"


@dataclass
class VideoResult:
    """The score of one landmark sequence."""

    video: str
    frames: int
    blocks: int
    score: float  # NaN when the sequence gives no block
    verdict: str  # "fake", "real" or "n/a"
    aggregation: str
    branches: Sequence[str]
    block_scores: np.ndarray = field(repr=False)  # merged per-block p(fake), (blocks,)
    branch_block_scores: Dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    error: Optional[str] = None

    def to_dict(self, with_blocks: bool = False) -> Dict[str, object]:
        out: Dict[str, object] = {
            "video": self.video, "frames": self.frames, "blocks": self.blocks,
            "score": None if self.score != self.score else round(float(self.score), 6),
            "verdict": self.verdict, "aggregation": self.aggregation,
            "branches": list(self.branches),
        }
        if self.error:
            out["error"] = self.error
        if with_blocks:
            out["block_scores"] = [round(float(v), 6) for v in self.block_scores]
            for b, v in self.branch_block_scores.items():
                out[f"block_scores_{b}"] = [round(float(x), 6) for x in v]
        return out


def score_sequence(frames: np.ndarray, models: Mapping[str, nn.Module], block_size: int = 30,
                   aggregation: str = DEFAULT_AGGREGATION, name: str = "",
                   device: "str | torch.device | None" = None) -> VideoResult:
    """Score one ``(frames, 136)`` landmark sequence with the given branch models.

    A sequence too short for one block (frames <= block_size) gives ``blocks == 0``, a NaN score
    and verdict "n/a" with an explanatory `error`, never a silent drop.
    """
    return score_blocks(cut_blocks(frames, block_size), models, len(frames), block_size, aggregation, name, device)


def score_blocks(blocks: np.ndarray, models: Mapping[str, nn.Module], frames: int, block_size: int = 30,
                 aggregation: str = DEFAULT_AGGREGATION, name: str = "",
                 device: "str | torch.device | None" = None) -> VideoResult:
    """Score already-cut ``(blocks, block_size, 136)`` blocks of one video of `frames` frames.

    For videos whose blocks do not come from one continuous sequence (e.g. blocks cut per shot).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    branches = [b for b in BRANCHES if b in models]
    if len(blocks) == 0:
        return VideoResult(name, frames, 0, float("nan"), "n/a", aggregation, branches,
                           np.empty(0, np.float32), {},
                           error=f"too short: {frames} frames, need more than {block_size} for one block")
    per_branch = {b: block_fake_probabilities(models[b], blocks, b, device=device) for b in branches}
    merged = merge_branches(per_branch)
    score = float(aggregate_blocks(merged, np.zeros(len(merged), np.int64), 1, aggregation)[0])
    return VideoResult(name, frames, len(blocks), score, verdict(score), aggregation, branches,
                       merged, per_branch)
