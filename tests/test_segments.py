"""Segment and block bookkeeping on hand-made per-frame arrays (lrnet.segments)."""

from __future__ import annotations

import numpy as np
import pytest

from lrnet.features import cut_blocks
from lrnet.segments import (FACE, NO_FACE, REUSED, Segment, block_starts, find_segments, gather_blocks, longest,
                            segment_of_rows)

F, R, N = FACE, REUSED, NO_FACE


def spans(segments):
    return [(s.start, s.stop) for s in segments]


def test_one_track_without_failures_is_one_segment():
    segments, kept = find_segments(np.full(7, F), np.zeros(7, int), max_reused=2)
    assert spans(segments) == [(0, 7)] and kept.all()


def test_frames_without_a_face_are_in_no_segment():
    status = np.array([N, N, F, F, F, N, N])
    track = np.array([-1, -1, 0, 0, 0, -1, -1])
    segments, kept = find_segments(status, track, max_reused=2)
    assert spans(segments) == [(2, 5)]
    assert kept.tolist() == [False, False, True, True, True, False, False]


def test_short_reused_runs_stay_long_ones_are_dropped_and_split():
    #          0  1  2  3  4  5  6  7  8  9
    status = [F, R, R, F, R, R, R, F, F, R]
    segments, kept = find_segments(np.array(status), np.zeros(10, int), max_reused=2)
    # rows 1-2 (2 reused) stay; rows 4-6 (3 > 2) are dropped; the trailing reused row stays
    assert spans(segments) == [(0, 4), (7, 10)]
    assert (~kept).nonzero()[0].tolist() == [4, 5, 6]


def test_a_new_track_starts_a_new_segment_even_without_a_gap():
    status = np.array([F, F, F, F, F])
    track = np.array([0, 0, 1, 1, 1])
    segments, _ = find_segments(status, track, max_reused=5)
    assert spans(segments) == [(0, 2), (2, 5)]


def test_reused_runs_are_counted_per_track():
    # two reused runs of 2 on both sides of a track change are two runs, not one of 4
    status = np.array([F, R, R, F, R, R])
    track = np.array([0, 0, 0, 1, 1, 1])
    segments, kept = find_segments(status, track, max_reused=2)
    assert kept.all() and spans(segments) == [(0, 3), (3, 6)]
    status = np.array([F, R, R, R, R, F])  # a reused run across the change: 2 + 2
    track = np.array([0, 0, 0, 1, 1, 1])
    assert find_segments(status, track, max_reused=2)[1].all()


def test_max_reused_zero_drops_every_reused_frame():
    segments, kept = find_segments(np.array([F, R, F]), np.zeros(3, int), max_reused=0)
    assert spans(segments) == [(0, 1), (2, 3)] and kept.tolist() == [True, False, True]


def test_no_face_at_all_gives_no_segment():
    segments, kept = find_segments(np.full(4, N), np.full(4, -1), max_reused=3)
    assert segments == [] and not kept.any()
    assert find_segments(np.zeros(0, int), np.zeros(0, int), 3)[0] == []


def test_bad_arrays_are_rejected():
    with pytest.raises(ValueError, match="must be equal"):
        find_segments(np.zeros(3, int), np.zeros(4, int), 1)


def test_blocks_follow_the_reference_rule_per_segment_and_never_straddle():
    # segments of 65, 30, 91 frames with B = 30: range(0, N - B, B) gives 2, 0, 3 blocks
    starts, segment = block_starts([65, 30, 91], 30)
    assert segment.tolist() == [0, 0, 2, 2, 2]
    assert starts.tolist() == [0, 30, 95, 125, 155]
    bounds = np.array([0, 65, 95, 186])
    for s, g in zip(starts, segment):
        assert bounds[g] <= s and s + 30 <= bounds[g + 1]


def test_one_segment_gives_exactly_the_reference_blocks():
    seq = np.random.default_rng(0).normal(size=(125, 136)).astype(np.float32)
    starts, segment = block_starts([125], 30)
    assert np.array_equal(gather_blocks(seq, starts, 30), cut_blocks(seq, 30))
    assert (segment == 0).all()
    seq60 = seq[:60]  # a multiple of B: the reference drops the last full block
    assert len(block_starts([60], 30)[0]) == 1 == len(cut_blocks(seq60, 30))


def test_gathered_blocks_hold_the_right_rows():
    seq = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 136), np.float32)
    starts, _ = block_starts([7, 9], 3)  # range(0, 4, 3) -> 0, 3; range(0, 6, 3) -> 7 + 0, 7 + 3
    blocks = gather_blocks(seq, starts, 3)
    assert blocks.shape == (4, 3, 136)
    assert blocks[:, :, 0].tolist() == [[0, 1, 2], [3, 4, 5], [7, 8, 9], [10, 11, 12]]


def test_no_block_when_every_segment_is_too_short():
    starts, segment = block_starts([30, 10, 0], 30)
    assert len(starts) == 0 and len(segment) == 0


def test_rows_laid_end_to_end_and_the_longest_segment():
    segments = [Segment(0, 3), Segment(3, 8), Segment(8, 13)]
    assert segment_of_rows(segments).tolist() == [0] * 3 + [1] * 5 + [2] * 5
    assert longest(segments) == 1  # the earliest of the longest
    with pytest.raises(ValueError):
        longest([])
