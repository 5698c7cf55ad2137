"""Block segmentation (reference rule) and g2 differences."""

from __future__ import annotations

import numpy as np
import pytest

from lrnet.features import branch_input, cut_blocks, frame_differences, num_blocks


def _reference_starts(n, b):
    # The reference's loop, written out: for s in range(0, N - B, B)
    return list(range(0, n - b, b))


@pytest.mark.parametrize("n", [0, 1, 29, 30, 31, 59, 60, 61, 89, 90, 91, 757])
def test_block_count_matches_reference_rule(n):
    assert num_blocks(n, 30) == len(_reference_starts(n, 30))
    frames = np.arange(n * 136, dtype=np.float32).reshape(n, 136)
    blocks = cut_blocks(frames, 30)
    assert blocks.shape == (len(_reference_starts(n, 30)), 30, 136)
    for i, s in enumerate(_reference_starts(n, 30)):
        np.testing.assert_array_equal(blocks[i], frames[s:s + 30])


def test_multiple_of_block_size_drops_last_block():
    assert num_blocks(60, 30) == 1  # reference quirk: not 2
    assert num_blocks(30, 30) == 0  # no block at all when N <= B


def test_num_blocks_vectorised():
    np.testing.assert_array_equal(num_blocks(np.array([10, 31, 60, 61]), 30), [0, 1, 1, 2])


def test_blocks_are_views_and_float32():
    frames = np.random.default_rng(0).normal(size=(100, 136)).astype(np.float32)
    blocks = cut_blocks(frames, 30)
    assert blocks.dtype == np.float32 and np.shares_memory(blocks, frames)
    assert cut_blocks(frames.astype(np.float64), 30).dtype == np.float32


def test_differences():
    frames = np.cumsum(np.ones((61, 136), np.float32), axis=0) * np.arange(1, 137, dtype=np.float32)
    blocks = cut_blocks(frames, 30)
    diff = frame_differences(blocks)
    assert diff.shape == (2, 29, 136)
    np.testing.assert_array_equal(diff[0, 0], frames[1] - frames[0])
    np.testing.assert_array_equal(diff[1, 28], frames[59] - frames[58])
    assert branch_input(blocks, "g1") is blocks
    np.testing.assert_array_equal(branch_input(blocks, "g2"), diff)
    with pytest.raises(ValueError):
        branch_input(blocks, "g3")


@pytest.mark.misuse
@pytest.mark.parametrize("bad", [1, 0, -30, 2.5, float("nan"), True, "30", None])
def test_exit_codes_bad_block_size_is_a_user_error(bad):
    """Promise 9: a block size from a flag or a config file that cannot cut blocks is a one-line
    user error (LrnetError), still a ValueError for API callers."""
    from lrnet.errors import LrnetError

    for call in (lambda: num_blocks(100, bad), lambda: cut_blocks(np.zeros((100, 136), np.float32), bad)):
        with pytest.raises(LrnetError) as err:
            call()
        assert isinstance(err.value, ValueError) and "block size" in str(err.value)


def test_block_size_accepts_numpy_and_whole_floats():
    assert num_blocks(100, np.int64(30)) == num_blocks(100, 30.0) == 3
    with pytest.raises(ValueError):
        branch_input(np.zeros((1, 30, 136), np.float32), "g3")
