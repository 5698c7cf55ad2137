"""Fake moments: the two-state HMM on hand-made block scores, and a forged stretch located in real data."""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess

import numpy as np
import pytest

from lrnet.moments import (BLOCK_ERROR, SWITCH_PROB, FakeMoment, block_evidence, decode_blocks, find_moments,
                           moment_note, moment_notes, run_threshold)


def _times(n, block_s=1.2):
    start = np.arange(n) * block_s
    return start, start + block_s


def _moments(scores, segment=None):
    scores = np.asarray(scores, dtype=np.float64)
    start, end = _times(len(scores))
    return find_moments(scores, start, end, np.zeros(len(scores), np.int64) if segment is None else segment)


def _brute_force(scores, segment, q, eps):
    """Log joint of every state path (segments framed by a known-real block on each side) -> the best
    path and the exact posterior P(fake) of each block."""
    p = np.asarray(scores, float)
    emit = np.stack([eps + (1 - 2 * eps) * (1 - p), eps + (1 - 2 * eps) * p], axis=1)
    best, best_lp, weights, marg = None, -math.inf, 0.0, np.zeros(len(p))
    for path in itertools.product((0, 1), repeat=len(p)):
        lp, prev = 0.0, 0
        for t, s in enumerate(path):
            if t and segment[t] != segment[t - 1]:
                lp += math.log(q if prev else 1 - q)  # leave into the virtual real block
                prev = 0
            lp += math.log(q if s != prev else 1 - q) + math.log(emit[t, s])
            prev = s
        lp += math.log(q if prev else 1 - q)
        if lp > best_lp:
            best, best_lp = path, lp
        w = math.exp(lp)
        weights += w
        marg += w * np.array(path)
    return np.array(best, bool), marg / weights


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_and_posteriors_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 9
    scores = rng.choice([0.02, 0.3, 0.6, 0.93, 0.999], size=n)
    segment = np.sort(rng.integers(0, 3, size=n))
    q, eps = (0.1, 0.01) if seed % 2 else (0.3, 0.1)
    best, posterior = _brute_force(scores, segment, q, eps)
    path = decode_blocks(scores, segment, q, eps)
    assert np.array_equal(path.fake, best)
    assert np.allclose(path.posterior, posterior, atol=1e-9)


def test_real_video_has_no_moment():
    assert _moments(np.full(40, 0.03)) == []
    # the sample real video's blocks (official dfo weights on ff_real): isolated 0.5-0.64 blocks
    assert _moments([0.07, 0.008, 0.636, 0.015, 0.006, 0.57, 0.2, 0.011, 0.30, 0.504, 0.17, 0.45, 0.44]) == []


def test_fake_stretch_is_one_moment_with_times_score_and_confidence():
    scores = np.r_[np.full(10, 0.02), [0.97, 0.99, 0.95, 0.98], np.full(10, 0.03)]
    (m,) = _moments(scores)
    assert (m.first_block, m.last_block, m.blocks, m.segment) == (10, 13, 4, 0)
    assert m.start_s == pytest.approx(12.0) and m.end_s == pytest.approx(16.8)
    assert m.score == pytest.approx(np.mean([0.97, 0.99, 0.95, 0.98]))
    assert 0.95 < m.confidence <= 1.0
    assert moment_note(m) == "fake moment at 12.0-16.8 s (score 0.97, confidence 0.98, 4 blocks)"
    assert moment_notes([m, m]) == [moment_note(m)] * 2


def test_wholly_fake_video_is_one_moment_covering_it():
    for n in (1, 3, 25):
        scores = np.full(n, 0.999)
        (m,) = _moments(scores)
        assert (m.first_block, m.last_block, m.blocks) == (0, n - 1, n)
        assert m.start_s == 0.0 and m.end_s == pytest.approx(1.2 * n)
    (m,) = _moments(np.full(20, 0.8))  # 20 moderately fake blocks: one moment, no gaps
    assert m.blocks == 20
    # the sample fake videos' blocks (official dfo weights), dips to 0.62 and 0.32 included: one moment each
    ff_fake = [0.97, 0.89, 0.82, 0.96, 0.85, 0.86, 0.68, 0.95, 0.96, 0.96, 0.84, 0.94, 0.96, 0.96, 0.95, 0.62,
               0.998, 0.93, 0.98, 0.99, 0.99, 0.95, 0.84, 0.77, 0.98]
    dfo_fake = [0.505, 0.802, 0.324, 0.783, 0.961, 0.726, 0.996, 0.948, 0.73, 0.998, 0.737, 0.518]
    for scores in (ff_fake, dfo_fake):
        assert [(m.first_block, m.last_block) for m in _moments(scores)] == [(0, len(scores) - 1)]


def test_rule_for_runs_in_real_context():
    """A run of k equal blocks becomes a moment exactly above `run_threshold(k)`, in the middle and at the edges."""
    thresholds = [run_threshold(k) for k in (1, 2, 3, 4)]
    assert thresholds == pytest.approx([0.9978, 0.9082, 0.8186, 0.7551], abs=1e-4)
    assert run_threshold(1, error=0.05) == math.inf  # with eps = 0.05 one block can never outweigh two switches
    for k, p in zip((1, 2, 3, 4), thresholds):
        for where in (0, 10, 20 - k):  # first blocks, middle, last blocks
            for delta, expected in ((1e-4, 1), (-1e-4, 0)):
                scores = np.full(20, 0.01)
                scores[where:where + k] = p + delta
                found = _moments(scores)
                assert len(found) == expected, (k, where, delta)
                if found:
                    assert (found[0].first_block, found[0].blocks) == (where, k)


def test_lone_confident_block_and_lone_ordinary_fake_block():
    scores = np.full(30, 0.02)
    scores[15] = 0.97  # a block the weights call fake, alone: no moment
    assert _moments(scores) == []
    scores[15] = 0.9995  # very confident (>= 0.9978): a one-block moment
    (m,) = _moments(scores)
    assert m.blocks == 1 and m.first_block == 15


def test_moments_never_span_segments():
    scores = np.r_[np.full(6, 0.02), np.full(4, 0.98), np.full(4, 0.98), np.full(6, 0.02)]
    segment = np.repeat([0, 1, 2], [10, 4, 6])
    found = _moments(scores, segment)
    assert [(m.first_block, m.last_block, m.segment) for m in found] == [(6, 9, 0), (10, 13, 1)]
    # the same run in one segment is one moment
    assert [(m.first_block, m.last_block) for m in _moments(scores)] == [(6, 13)]


def test_posterior_and_path_agree_on_clear_cases():
    scores = np.r_[np.full(8, 0.01), np.full(5, 0.99), np.full(8, 0.01)]
    path = decode_blocks(scores, np.zeros(21, np.int64))
    assert np.array_equal(path.fake, scores > 0.5)
    assert np.all(path.posterior[path.fake] > 0.9) and np.all(path.posterior[~path.fake] < 0.1)


def test_long_video_does_not_underflow():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.3, 5000)
    scores[3000:3010] = 0.99
    path = decode_blocks(scores, np.zeros(len(scores), np.int64))
    assert np.all(np.isfinite(path.posterior))
    (m,) = _moments(scores)
    assert (m.first_block, m.last_block) == (3000, 3009)


def test_evidence_is_bounded_and_antisymmetric():
    e = block_evidence([0.0, 0.5, 1.0, 0.2, 0.8])
    bound = math.log((1 - BLOCK_ERROR) / BLOCK_ERROR)
    assert e[[0, 1, 2]] == pytest.approx([-bound, 0.0, bound])
    assert e[3] == pytest.approx(-e[4])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="equal"):
        decode_blocks(np.zeros(3), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="probabilities"):
        decode_blocks(np.array([0.1, np.nan]), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="probabilities"):
        decode_blocks(np.array([0.1, 1.5]), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        decode_blocks(np.array([0.1, 0.2]), np.array([1, 0]))
    with pytest.raises(ValueError, match="switch"):
        decode_blocks(np.array([0.1]), np.zeros(1, np.int64), switch=0.0)
    with pytest.raises(ValueError, match="times"):
        find_moments(np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3, np.int64))
    assert find_moments(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, np.int64)) == []
    assert SWITCH_PROB == 0.1  # the documented constants
    assert FakeMoment(0.0, 1.0, 0, 0, 1, 0.9, 0.9).to_dict()["segment"] == 0


# ------------------------------------------------------------------------------------ real data


FAKE_FROM, FAKE_TO = 4.0, 8.0  # seconds of ff_fake spliced into ff_real (same timestamps)


def _within_one_block(moment, block_s):
    return abs(moment.start_s - FAKE_FROM) <= block_s and abs(moment.end_s - FAKE_TO) <= block_s


@pytest.mark.parametrize("weights", ["ffpp_raw", "dfo"])
def test_spliced_landmarks_locate_the_forged_stretch(reference, weights):
    """Rows 4-8 s of ff_fake's published landmarks replace ff_real's (both 30 fps, same shot)."""
    from lrnet.landmarks import read_landmarks
    from lrnet.detector import score_sequence
    from lrnet.weights import resolve_weights

    real = read_landmarks(reference / "landmarks" / "ff_real.txt")
    fake = read_landmarks(reference / "landmarks" / "ff_fake.txt")
    fps = 30.0
    rows = slice(int(FAKE_FROM * fps), int(FAKE_TO * fps))
    spliced = real.copy()
    spliced[rows] = fake[rows]
    loaded = resolve_weights(str(reference / "weights" / weights))
    size = loaded.block_size
    scored = score_sequence(spliced, loaded.models, size)
    start = np.arange(scored.blocks) * size / fps
    found = find_moments(scored.block_scores, start, start + size / fps, np.zeros(scored.blocks, np.int64))
    assert len(found) == 1, moment_notes(found)
    assert _within_one_block(found[0], size / fps), moment_note(found[0])
    # the unspliced real sequence has no moment
    clean = score_sequence(real, loaded.models, size)
    assert find_moments(clean.block_scores, *_times(clean.blocks, size / fps), np.zeros(clean.blocks, np.int64)) == []


@pytest.mark.slow
def test_spliced_video_locates_the_forged_stretch(reference, tmp_path):
    """Seconds 4-8 of ff_fake.mp4 replace the same seconds of ff_real.mp4 (ffmpeg, a 10-s clip, no cut):
    `detect_video` with the official dfo weights, then `find_moments` on its blocks."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    from lrnet.detect import detect_video

    videos = reference / "videos"
    clip = tmp_path / "spliced.mp4"
    graph = (f"[0:v]trim=0:10,setpts=PTS-STARTPTS[r];[1:v]trim=0:10,setpts=PTS-STARTPTS[f];"
             f"[r][f]overlay=enable='between(t,{FAKE_FROM},{FAKE_TO - 0.001})'[v]")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(videos / "ff_real.mp4"), "-i", str(videos / "ff_fake.mp4"),
                    "-filter_complex", graph, "-map", "[v]", "-t", "10", "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "18", str(clip)], check=True)
    result = detect_video(clip, str(reference / "weights" / "dfo"))
    assert len(result.segments) == 1, "the splice must not look like a cut"
    found = find_moments(result.scoring.block_scores, result.block_start_s, result.block_end_s, result.block_segment)
    block_s = float(np.median(result.block_end_s - result.block_start_s))
    assert len(found) == 1, moment_notes(found)
    assert _within_one_block(found[0], block_s), moment_note(found[0])
