"""Fake moments inside a shot: contiguous runs of fake blocks, located with a two-state hidden Markov model.

A forged stretch spliced into its own real video at the same timestamps leaves no cut, so segments
cannot locate it; its blocks score fake while the rest score real. `find_moments` turns the merged
per-block p(fake) of a video into *fake moments*: maximal runs of blocks that a two-state (real /
fake) hidden Markov model decodes as fake, each with its time span, mean score and confidence.

The model (one chain per segment; blocks of different segments never join):

- *States*: 0 = real, 1 = fake, one per block, in time order.
- *Transitions*: the state switches between consecutive blocks with probability ``q``
  (`SWITCH_PROB`) and stays with ``1 - q``.
- *Edges*: each segment is framed by a virtual block known to be real before its first and after
  its last block, so a moment must be entered and left, at the edges as in the middle (the same
  rule for a block at 0 s as at 10 s). A wholly fake segment pays the two switches once and is one
  moment covering it.
- *Emissions*: the block's score ``p`` is read as the classifier's belief that the block is fake,
  trusted up to an error rate ``eps`` (`BLOCK_ERROR`): a block's label is taken to be wrong with
  probability at least ``eps``, independently of the others, so
  ``P(score | fake) = eps + (1 - 2 eps) p`` and ``P(score | real) = eps + (1 - 2 eps) (1 - p)``.
  The evidence of one block, ``log P(score | fake) - log P(score | real)``, is thus bounded by
  ``log((1 - eps) / eps)``: one overconfident block cannot outweigh its neighbours without limit.

Runs are the Viterbi (most probable) state path; a run's *confidence* is the mean, over its blocks,
of the forward-backward posterior P(fake).

What the constants imply (derived in `run_threshold`, tested): inside real context a run of ``k``
blocks of equal score ``p`` becomes a moment exactly when ``k * evidence(p) > 2 log((1 - q) / q)``
(two switches against two stays). With ``q = 0.1`` and ``eps = 0.01``:

- a lone block needs p >= 0.9978 ("very confident": the official weights' blocks on the real
  sample videos stay below 0.65 in their domain and below 0.97 out of it, their fake blocks reach 0.99+);
- two adjacent blocks need p >= 0.908 each, three p >= 0.82, four p >= 0.75 (in general: their
  summed evidence must exceed 2 log((1 - q) / q) = 4.39).

``q`` and ``eps`` were chosen for these rules (a two-block run of clearly fake blocks, about 2 s at
the weights' rates, is a moment; a single block only when nearly certain), not fitted to data.

Everything is vectorised except the Viterbi and forward-backward recursions, which are a loop over
blocks with 2 x 2 arithmetic (blocks are about a second each, so an hour is ~3600 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["BLOCK_ERROR", "SWITCH_PROB", "FakeMoment", "HmmPath", "block_evidence", "decode_blocks",
           "find_moments", "moment_note", "moment_notes", "run_threshold"]

SWITCH_PROB = 0.1  # q: P(state changes between consecutive blocks)
BLOCK_ERROR = 0.01  # eps: the least probability that a block's score points the wrong way


@dataclass(frozen=True)
class FakeMoment:
    """One run of blocks decoded as fake. Times in seconds of the source video.

    ``start_s``: start of the first block; ``end_s``: end of the last block's last frame.
    ``first_block`` / ``last_block``: block indices (inclusive) into the video's block arrays;
    ``blocks``: their count. ``score``: mean merged p(fake) of the run's blocks; ``confidence``:
    mean posterior P(fake) of those blocks under the model. ``segment``: the segment holding the run.
    """

    start_s: float
    end_s: float
    first_block: int
    last_block: int
    blocks: int
    score: float
    confidence: float
    segment: int = 0

    def to_dict(self) -> Dict[str, object]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "first_block": self.first_block,
                "last_block": self.last_block, "blocks": self.blocks, "score": round(self.score, 6),
                "confidence": round(self.confidence, 6), "segment": self.segment}


@dataclass(frozen=True)
class HmmPath:
    """Per block ``(blocks,)``: ``fake`` the Viterbi state (bool), ``posterior`` P(fake) (float64)."""

    fake: np.ndarray
    posterior: np.ndarray


def _check_params(switch: float, error: float) -> None:
    if not 0.0 < switch < 0.5:
        raise ValueError(f"switch probability must be in (0, 0.5), not {switch}")
    if not 0.0 < error < 0.5:
        raise ValueError(f"block error rate must be in (0, 0.5), not {error}")


def _emissions(scores: np.ndarray, error: float) -> np.ndarray:
    """``(blocks,)`` p(fake) -> ``(blocks, 2)`` likelihoods [P(score | real), P(score | fake)]."""
    p = np.asarray(scores, dtype=np.float64)
    return np.stack([error + (1 - 2 * error) * (1 - p), error + (1 - 2 * error) * p], axis=1)


def block_evidence(scores, error: float = BLOCK_ERROR) -> np.ndarray:
    """Log-likelihood ratio fake : real of each block, ``(blocks,)`` float64, bounded by
    ``log((1 - error) / error)`` in magnitude (0 for p = 0.5)."""
    e = _emissions(np.asarray(scores, dtype=np.float64).reshape(-1), error)
    return np.log(e[:, 1]) - np.log(e[:, 0])


def run_threshold(k: int, switch: float = SWITCH_PROB, error: float = BLOCK_ERROR) -> float:
    """The score ``p`` that each of ``k`` adjacent equal blocks must exceed to become a moment
    inside real context: ``k * evidence(p) = 2 log((1 - q) / q)`` solved for ``p`` (``inf`` when even
    ``p = 1`` is not enough). Derivation: the path real..fake x k..real differs from all-real by two
    switches (``2 log q`` instead of ``2 log(1 - q)``) and ``k`` blocks of evidence."""
    _check_params(switch, error)
    if k < 1:
        raise ValueError("k must be at least 1")
    ratio = math.exp(2 * math.log((1 - switch) / switch) / k)  # needed P(s|fake) / P(s|real) per block
    if ratio >= (1 - error) / error:
        return math.inf
    # error + (1 - 2 error) p = ratio (error + (1 - 2 error)(1 - p))  ->  p
    return (ratio * (1 - error) - error) / ((1 - 2 * error) * (1 + ratio))


def _framed(scores: np.ndarray, segment: np.ndarray, error: float) -> Tuple[np.ndarray, np.ndarray]:
    """Emissions of the blocks with a known-real virtual block before each segment and after the last:
    ``(blocks + segments + 1, 2)`` likelihoods and the ``(blocks,)`` rows of the real blocks in it."""
    new = np.ones(len(scores), bool)
    new[1:] = segment[1:] != segment[:-1]
    rows = np.arange(len(scores)) + np.cumsum(new)  # one virtual row before each segment start
    out = np.tile([1.0, 0.0], (len(scores) + int(new.sum()) + 1, 1))  # virtual rows: certainly real
    out[rows] = _emissions(scores, error)
    return out, rows


def _viterbi(emit: np.ndarray, switch: float) -> np.ndarray:
    """Most probable ``(T,)`` bool state path (True = fake) of ``(T, 2)`` likelihoods, log domain."""
    with np.errstate(divide="ignore"):
        log_e = np.log(emit)
    stay, move = math.log(1 - switch), math.log(switch)
    n = len(emit)
    back = np.zeros((n, 2), bool)  # back[t, s]: the state at t - 1 on the best path into s at t
    d0, d1 = float(log_e[0, 0]), float(log_e[0, 1])  # the first row is a virtual real block
    for t in range(1, n):
        r0, r1 = d0 + stay, d1 + move  # into real from real / fake
        f0, f1 = d0 + move, d1 + stay  # into fake
        back[t, 0] = r1 > r0
        back[t, 1] = f1 >= f0  # ties stay fake: the longer run, never a spurious split
        d0, d1 = max(r0, r1) + log_e[t, 0], max(f0, f1) + log_e[t, 1]
    states = np.zeros(n, bool)
    states[-1] = d1 > d0
    for t in range(n - 1, 0, -1):
        states[t - 1] = back[t, int(states[t])]
    return states


def _posterior_fake(emit: np.ndarray, switch: float) -> np.ndarray:
    """Forward-backward P(fake) of each of ``(T, 2)`` likelihoods, ``(T,)``; scaled (each step
    normalised), so no underflow however long the video."""
    a = np.array([[1 - switch, switch], [switch, 1 - switch]])
    n = len(emit)
    alpha = np.empty((n, 2))
    alpha[0] = emit[0] / emit[0].sum()
    for t in range(1, n):
        v = (alpha[t - 1] @ a) * emit[t]
        alpha[t] = v / v.sum()
    beta = np.empty((n, 2))
    beta[-1] = 1.0
    for t in range(n - 2, -1, -1):
        v = a @ (emit[t + 1] * beta[t + 1])
        beta[t] = v / v.sum()
    post = alpha * beta
    return post[:, 1] / post.sum(axis=1)


def _check_blocks(scores, segment) -> Tuple[np.ndarray, np.ndarray]:
    p = np.asarray(scores, dtype=np.float64)
    seg = np.asarray(segment)
    if p.ndim != 1 or seg.shape != p.shape:
        raise ValueError(f"block scores {p.shape} and segments {seg.shape} must be equal (blocks,) arrays")
    if not np.all((p >= 0) & (p <= 1)):  # also rejects NaN
        raise ValueError("block scores must be probabilities in [0, 1]")
    if len(seg) and (not np.issubdtype(seg.dtype, np.integer) or np.any(np.diff(seg) < 0)):
        raise ValueError("block segment indices must be integers in non-decreasing order")
    return p, seg.astype(np.int64)


def decode_blocks(block_scores, block_segment, switch: float = SWITCH_PROB,
                  error: float = BLOCK_ERROR) -> HmmPath:
    """Viterbi states and posterior P(fake) of ``(blocks,)`` merged p(fake) with ``(blocks,)`` segment
    indices (non-decreasing ints; each segment its own chain, framed by real). See the module doc."""
    _check_params(switch, error)
    p, seg = _check_blocks(block_scores, block_segment)
    if len(p) == 0:
        return HmmPath(np.zeros(0, bool), np.zeros(0))
    emit, rows = _framed(p, seg, error)
    return HmmPath(_viterbi(emit, switch)[rows], _posterior_fake(emit, switch)[rows])


def find_moments(block_scores, block_start_s, block_end_s, block_segment, switch: float = SWITCH_PROB,
                 error: float = BLOCK_ERROR) -> List[FakeMoment]:
    """Fake moments of a video, in time order.

    ``block_scores``: ``(blocks,)`` merged p(fake); ``block_start_s`` / ``block_end_s``: ``(blocks,)``
    start of each block and end of its last frame (s); ``block_segment``: ``(blocks,)`` segment index
    (non-decreasing). A run never spans two segments. ValueError on mismatched or invalid arrays.
    """
    path = decode_blocks(block_scores, block_segment, switch, error)
    p, seg = _check_blocks(block_scores, block_segment)
    start = np.asarray(block_start_s, dtype=np.float64)
    end = np.asarray(block_end_s, dtype=np.float64)
    if start.shape != p.shape or end.shape != p.shape:
        raise ValueError(f"block times {start.shape}, {end.shape} must match the scores {p.shape}")
    fake = path.fake
    if not fake.any():
        return []
    edge = np.ones(len(p), bool)  # a run starts where fake begins or the segment changes
    edge[1:] = ~fake[:-1] | (seg[1:] != seg[:-1])
    firsts = np.flatnonzero(fake & edge)
    run = np.cumsum(fake & edge) - 1  # run id of each fake block
    ids = run[fake]
    counts = np.bincount(ids)
    lasts = firsts + counts - 1
    score = np.bincount(ids, weights=p[fake]) / counts
    confidence = np.bincount(ids, weights=path.posterior[fake]) / counts
    return [FakeMoment(float(start[a]), float(end[b]), int(a), int(b), int(n), float(s), float(c), int(seg[a]))
            for a, b, n, s, c in zip(firsts, lasts, counts, score, confidence)]


def moment_note(moment: FakeMoment) -> str:
    """``"fake moment at 4.0-8.0 s (score 0.93, confidence 0.97, 5 blocks)"``."""
    blocks = f"{moment.blocks} block{'s' if moment.blocks != 1 else ''}"
    return (f"fake moment at {moment.start_s:.1f}-{moment.end_s:.1f} s (score {moment.score:.2f}, "
            f"confidence {moment.confidence:.2f}, {blocks})")


def moment_notes(moments: Sequence[FakeMoment]) -> List[str]:
    """One `moment_note` per moment, in order."""
    return [moment_note(m) for m in moments]
