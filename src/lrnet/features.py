"""Model inputs cut from a landmark sequence: 30-frame blocks (g1) and their frame differences (g2).

Shapes: a sequence is ``(frames, 136)``; blocks are ``(n_blocks, B, 136)``; differences are
``(n_blocks, B - 1, 136)``. Everything is float32.

Segmentation follows the reference implementation exactly: blocks start at frames 0, B, 2B, ...
for every start ``s`` with ``s < N - B``. This drops the last full block when N is a multiple of B
(e.g. 60 frames and B = 30 give one block, not two) and gives no block at all when N <= B. It is
kept on purpose so that scores and metrics match the published numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from .errors import LrnetValueError

if TYPE_CHECKING:
    import torch

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, "torch.Tensor")  # blocks as NumPy or torch

__all__ = ["BRANCHES", "DEFAULT_BLOCK_SIZE", "Branch", "branch_input", "check_block_size", "cut_blocks",
           "frame_differences", "num_blocks"]

BRANCHES = ("g1", "g2")
Branch = Literal["g1", "g2"]
DEFAULT_BLOCK_SIZE = 30


def check_block_size(block_size) -> int:
    """`block_size` as an int, or `LrnetValueError` (a ValueError) when it is not a whole number
    of frames >= 2 (g2 needs two frames for one difference)."""
    if isinstance(block_size, (bool, np.bool_)) or not isinstance(block_size, (int, np.integer)):
        if not (isinstance(block_size, (float, np.floating)) and float(block_size).is_integer()):
            raise LrnetValueError(f"block size must be a whole number of frames, got {block_size!r}")
    if block_size < 2:
        raise LrnetValueError(f"block size must be at least 2 frames, got {block_size}")
    return int(block_size)


def num_blocks(n_frames, block_size: int = DEFAULT_BLOCK_SIZE):
    """Blocks the reference cuts from `n_frames` frames: ``len(range(0, N - B, B))``.

    Works on an int or on an integer array of frame counts (vectorised over videos).
    """
    block_size = check_block_size(block_size)
    n = np.asarray(n_frames, dtype=np.int64)
    count = np.where(n > block_size, (n - block_size + block_size - 1) // block_size, 0)
    return int(count) if count.ndim == 0 else count


def cut_blocks(frames: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Cut a ``(frames, 136)`` sequence into ``(n_blocks, B, 136)`` g1 blocks.

    Blocks are consecutive and do not overlap, so the result is a reshaped view of `frames` when
    it is C-contiguous (no copy). An empty ``(0, B, 136)`` array means the sequence is too short.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2:
        raise ValueError(f"expected a (frames, features) array, got shape {frames.shape}")
    n = num_blocks(frames.shape[0], block_size)
    return frames[: n * block_size].reshape(n, block_size, frames.shape[1])


def frame_differences(blocks: ArrayOrTensor) -> ArrayOrTensor:
    """g2 input: ``x[t + 1] - x[t]`` inside each block, ``(n, B, F) -> (n, B - 1, F)``.

    Accepts a NumPy array or a torch tensor (the training loop computes differences per batch
    on the device instead of storing a second copy of the data).
    """
    return blocks[:, 1:] - blocks[:, :-1]


def branch_input(blocks: ArrayOrTensor, branch: str) -> ArrayOrTensor:
    """The input of `branch` ("g1": the blocks themselves; "g2": their frame differences); works on
    NumPy arrays and torch tensors alike (``(n, B, 136)`` -> ``(n, B - 1, 136)`` for g2)."""
    if branch == "g1":
        return blocks
    if branch == "g2":
        return frame_differences(blocks)
    raise LrnetValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")
