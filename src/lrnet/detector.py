"""The verdict seam: one object that owns how landmark blocks become a verdict.

A `Detector` holds everything a verdict depends on and nothing else decides it:

- the branch models (`LoadedWeights`) and which branches are used (g1, g2 or both);
- the block size and the frame rate of the weights' training videos (from the weights);
- the aggregation of block scores into a video score (`lrnet.scoring.AGGREGATIONS`);
- the threshold and where it came from: a ``--threshold`` override, the weights' calibrated one
  when it fits this aggregation and these branches, else 0.5 (`lrnet.weights.threshold_for`);
- whether an interval that contains the threshold gives "uncertain".

Every entry point (``predict``, ``detect``, ``watch``, ``serve``, ``evaluate``, ``robustness`` and the
Python API) builds one with `load_detector` (or `Detector.from_weights` for weights already loaded)
and calls its methods, so the same file gets the same verdict wherever it is scored::

    import lrnet
    detector = lrnet.load_detector("dfo")                  # calibrated threshold honoured
    result = detector.score_sequence(lrnet.read_landmarks("clip.txt"), name="clip.txt")
    print(result.verdict, result.score, result.interval)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .errors import LrnetError
from .features import BRANCHES, cut_blocks
from .scoring import (AGGREGATIONS, DEFAULT_AGGREGATION, VideoResult, aggregate_blocks, block_fake_probabilities,
                      decide, merge_branches, video_intervals)

__all__ = ["DEFAULT_WEIGHTS", "Detector", "load_detector", "score_blocks", "score_sequence"]

DEFAULT_WEIGHTS = "dfo"  # the official demo's weights: the default of every command and of load_detector


@dataclass
class Detector:
    """Weights + branches + aggregation + threshold: what turns blocks into a verdict.

    Build with `load_detector` or `Detector.from_weights`; the fields are then fixed for its life.
    """

    weights: Any  # lrnet.weights.LoadedWeights (Any: keeps this module free of the weights package's imports)
    branches: Tuple[str, ...]
    aggregation: str
    threshold: float
    threshold_source: str
    uncertain: bool = True
    device: Optional[torch.device] = None

    @classmethod
    def from_weights(cls, weights, aggregation: str = DEFAULT_AGGREGATION,
                     branches: Optional[Sequence[str]] = None, threshold: Optional[float] = None,
                     uncertain: bool = True, device: "str | torch.device | None" = None) -> "Detector":
        """A detector over loaded weights. `threshold` overrides the weights' own (a ``--threshold``
        flag); `branches` defaults to every branch the weights hold, in g1, g2 order."""
        from .weights import threshold_for

        if aggregation not in AGGREGATIONS:
            raise LrnetError(f"unknown aggregation {aggregation!r}; expected one of {', '.join(AGGREGATIONS)}")
        unknown = sorted(set(branches or ()) - set(BRANCHES))
        if unknown:
            raise LrnetError(f"unknown branch {', '.join(unknown)}; expected g1 and/or g2")
        used = tuple(b for b in BRANCHES if b in (branches or weights.models))
        if not used:
            raise LrnetError("no branch to score with (expected g1 and/or g2)")
        missing = [b for b in used if b not in weights.models]
        if missing:
            raise LrnetError(f"{weights.source}: no weights loaded for branch {', '.join(missing)}")
        value, source = threshold_for(weights, aggregation, used, threshold)
        return cls(weights, used, aggregation, float(value), source, uncertain,
                   torch.device(device) if device is not None else None)

    # ------------------------------------------------------------------ facts about the weights

    @property
    def models(self) -> Dict[str, nn.Module]:
        """The branch models used, ``{branch: model}`` in g1, g2 order."""
        return {b: self.weights.models[b] for b in self.branches}

    @property
    def block_size(self) -> int:
        """Frames per block (30 for the official weights)."""
        return int(self.weights.block_size)

    @property
    def fps(self) -> Optional[float]:
        """Frame rate of the weights' training videos (frames/s); None when unknown."""
        return self.weights.fps

    @property
    def source(self) -> str:
        """Where the weights came from (``pretrained:dfo``, a folder ...)."""
        return str(self.weights.source)

    @property
    def card(self) -> Dict[str, Any]:
        """The weights' model card (training data, domain, fps, threshold ...)."""
        return dict(self.weights.card)

    @property
    def domain(self) -> str:
        """The footage the weights are meant for."""
        return str(self.weights.card.get("domain", ""))

    def describe(self) -> Dict[str, Any]:
        """What every output states next to a verdict: weights, domain, branches, aggregation, threshold."""
        return {"weights": self.source, "domain": self.domain, "branches": list(self.branches),
                "aggregation": self.aggregation, "threshold": self.threshold,
                "threshold_source": self.threshold_source, "block_size": self.block_size, "fps": self.fps}

    # ------------------------------------------------------------------------------- scoring

    def branch_probabilities(self, blocks: "np.ndarray | torch.Tensor",
                             batch_size: int = 512) -> Dict[str, np.ndarray]:
        """p(fake) of each block per branch: ``(n, B, 136)`` blocks -> ``{branch: (n,) float32}``."""
        return {b: block_fake_probabilities(self.weights.models[b], blocks, b, batch_size=batch_size,
                                            device=self.device) for b in self.branches}

    def decide(self, scores, intervals) -> Tuple[np.ndarray, np.ndarray]:
        """Calls and verdicts of ``(v,)`` video scores with their ``(v, 2)`` intervals, at this threshold."""
        return decide(scores, intervals, self.threshold, self.uncertain)

    def judge(self, per_branch: Mapping[str, np.ndarray], frames: int, name: str = "") -> VideoResult:
        """One video's result from its blocks' per-branch p(fake) ``{branch: (blocks,)}``.

        The merged block score, the video score (this aggregation), its 95% interval, the call and
        the verdict. No block: a NaN score, verdict "n/a" and an explanatory `error`.
        """
        if not per_branch or len(next(iter(per_branch.values()))) == 0:
            return VideoResult(name, frames, 0, float("nan"), "n/a", self.aggregation, list(self.branches),
                               np.empty(0, np.float32), {},
                               error=f"too short: {frames} frames, need more than {self.block_size} for one block",
                               call="n/a", threshold=self.threshold, threshold_source=self.threshold_source)
        per_branch = {b: np.asarray(per_branch[b], dtype=np.float32) for b in self.branches}
        merged = merge_branches(per_branch)
        one = np.zeros(len(merged), np.int64)
        score = float(aggregate_blocks(merged, one, 1, self.aggregation)[0])
        lo, hi = video_intervals(merged, one, 1, self.aggregation)[0]
        call, verdicts = self.decide([score], [[lo, hi]])
        return VideoResult(name, frames, len(merged), score, str(verdicts[0]), self.aggregation, list(self.branches),
                           merged, per_branch, call=str(call[0]), interval=(float(lo), float(hi)),
                           threshold=self.threshold, threshold_source=self.threshold_source)

    def score_blocks(self, blocks: np.ndarray, frames: int, name: str = "") -> VideoResult:
        """Score already-cut ``(blocks, B, 136)`` blocks of one video of `frames` frames."""
        if len(blocks) == 0:
            return self.judge({}, frames, name)
        return self.judge(self.branch_probabilities(blocks), frames, name)

    def score_sequence(self, frames: np.ndarray, name: str = "") -> VideoResult:
        """Score one ``(frames, 136)`` landmark sequence, cut into blocks by the reference rule."""
        return self.score_blocks(cut_blocks(frames, self.block_size), len(frames), name)

    def group_verdicts(self, block_scores: np.ndarray, group: np.ndarray,
                       groups: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Scores, intervals, calls and verdicts of groups of blocks (segments, faces, windows).

        ``block_scores`` ``(n,)`` merged p(fake), ``group`` ``(n,)`` ints in [0, groups) ->
        ``(groups,)`` scores, ``(groups, 2)`` intervals, ``(groups,)`` calls and verdicts; a group
        without blocks gets NaN and "n/a".
        """
        scores = aggregate_blocks(block_scores, group, groups, self.aggregation)
        intervals = video_intervals(block_scores, group, groups, self.aggregation)
        calls, verdicts = self.decide(scores, intervals)
        return scores, intervals, calls, verdicts


def load_detector(weights: Any = DEFAULT_WEIGHTS, *, aggregation: str = DEFAULT_AGGREGATION,
                  branches: Optional[Sequence[str]] = None, threshold: Optional[float] = None,
                  uncertain: bool = True, device: "str | torch.device" = "cpu",
                  download: bool = True) -> Detector:
    """A `Detector` for `weights`: a registry name (``dfo``, ``ffpp-raw``), a weights or training-run
    folder, TF-era ``G1.h5,G2.h5``, loaded `LoadedWeights`, or a `Detector` (returned as it is).

    The weights' calibrated threshold is used when it was calibrated for this `aggregation` and
    these `branches`; `threshold` overrides it. `download`: fetch a registry pair when not cached
    (SHA-256 checked); False raises `LrnetError` with a hint instead.
    """
    if isinstance(weights, Detector):
        return weights
    from .weights import LoadedWeights, resolve_weights

    if not isinstance(weights, LoadedWeights):
        weights = resolve_weights(str(weights), tuple(branches or BRANCHES), device=device, download=download)
    return Detector.from_weights(weights, aggregation, branches, threshold, uncertain, device)


def _bare_detector(models: Mapping[str, nn.Module], block_size: int, aggregation: str, device,
                   threshold: float, threshold_source: str, uncertain: bool) -> Detector:
    """A `Detector` over bare branch models and an explicit threshold (no weights folder, no card)."""
    from .model import ModelConfig
    from .weights import LoadedWeights

    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    weights = LoadedWeights(dict(models), block_size, "models", ModelConfig())
    return Detector(weights, tuple(b for b in BRANCHES if b in models), aggregation, float(threshold),
                    threshold_source, uncertain, torch.device(device) if device is not None else None)


def score_sequence(frames: np.ndarray, models: Mapping[str, nn.Module], block_size: int = 30,
                   aggregation: str = DEFAULT_AGGREGATION, name: str = "",
                   device: "str | torch.device | None" = None, *, threshold: float = 0.5,
                   uncertain: bool = True, threshold_source: str = "default") -> VideoResult:
    """Score one ``(frames, 136)`` sequence with bare branch models and an explicit `threshold`.

    The low-level form of `Detector.score_sequence` (no weights' calibrated threshold is looked up:
    prefer `load_detector`). A sequence of `block_size` frames or fewer gives no block, a NaN
    score and verdict "n/a" with an explanatory `error`, never a silent drop.
    """
    return _bare_detector(models, block_size, aggregation, device, threshold, threshold_source,
                          uncertain).score_sequence(frames, name)


def score_blocks(blocks: np.ndarray, models: Mapping[str, nn.Module], frames: int, block_size: int = 30,
                 aggregation: str = DEFAULT_AGGREGATION, name: str = "",
                 device: "str | torch.device | None" = None, *, threshold: float = 0.5,
                 uncertain: bool = True, threshold_source: str = "default") -> VideoResult:
    """Score already-cut ``(blocks, block_size, 136)`` blocks with bare models; see `score_sequence`."""
    return _bare_detector(models, block_size, aggregation, device, threshold, threshold_source,
                          uncertain).score_blocks(blocks, frames, name)
