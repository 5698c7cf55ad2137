"""`lrnet.scoring`: video-score intervals (Wilson, bootstrap), calls, "uncertain" verdicts, `VideoResult`."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from lrnet.detector import score_blocks, score_sequence
from lrnet.scoring import (VideoResult, aggregate_blocks, bootstrap_intervals, decide,
                           video_intervals, wilson_interval)

Z = NormalDist().inv_cdf(0.975)


def test_wilson_interval_solves_the_score_equation():
    """Each end p of the Wilson interval satisfies (k/n - p)^2 = z^2 p (1 - p) / n (the score test's boundary)."""
    k = np.array([1, 3, 6, 11, 7])
    n = np.array([4, 12, 12, 12, 25])
    lo, hi = wilson_interval(k, n)
    for end in (lo, hi):
        np.testing.assert_allclose((k / n - end) ** 2, Z * Z * end * (1 - end) / n, atol=1e-12)
    assert (lo < k / n).all() and (k / n < hi).all()
    # the published example: 6 of 12 -> [0.2538, 0.7462]
    assert (lo[2], hi[2]) == pytest.approx((0.253782, 0.746218), abs=1e-6)


def test_wilson_interval_edges():
    lo, hi = wilson_interval([0, 5, 0], [5, 5, 0])
    assert lo[0] == 0.0 and hi[1] == 1.0  # exact, not 1e-17 off
    assert hi[0] == pytest.approx(Z * Z / (5 + Z * Z))  # k = 0: upper end z^2 / (n + z^2)
    assert math.isnan(lo[2]) and math.isnan(hi[2])  # no blocks: no interval


def _loop_bootstrap(values, resamples=4000, seed=123):
    """An independent percentile bootstrap: resample indices one resample at a time."""
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return np.quantile(means, [0.025, 0.975])


@pytest.mark.parametrize("aggregation", ["mean-prob", "mean-logit"])
def test_bootstrap_agrees_with_a_loop_bootstrap(aggregation):
    rng = np.random.default_rng(0)
    scores = rng.beta(2, 3, size=40).astype(np.float32)
    interval = bootstrap_intervals(scores, np.zeros(40, np.int64), 1, aggregation)[0]
    values = scores.astype(np.float64)
    if aggregation == "mean-logit":
        values = np.log(values / (1 - values))
    expected = _loop_bootstrap(values)
    if aggregation == "mean-logit":
        expected = 1 / (1 + np.exp(-expected))
    np.testing.assert_allclose(interval, expected, atol=0.015)  # Monte Carlo error of 2000 resamples
    score = aggregate_blocks(scores, np.zeros(40, np.int64), 1, aggregation)[0]
    assert interval[0] < score < interval[1]


def test_intervals_are_seeded_and_per_video():
    """Vectorised over videos, each interval is the one the video gets on its own (same seed)."""
    rng = np.random.default_rng(1)
    counts = np.array([5, 12, 5, 1, 0, 30, 12])
    scores = rng.random(counts.sum()).astype(np.float32)
    index = np.repeat(np.arange(len(counts)), counts)
    for aggregation in ("vote", "mean-prob", "mean-logit"):
        together = video_intervals(scores, index, len(counts), aggregation)
        again = video_intervals(scores, index, len(counts), aggregation)
        np.testing.assert_array_equal(together, again)
        start = 0
        for v, n in enumerate(counts):
            alone = video_intervals(scores[start:start + n], np.zeros(n, np.int64), 1, aggregation)[0]
            np.testing.assert_allclose(together[v], alone, rtol=1e-12)  # BLAS may round the last bit
            start += n
        assert np.isnan(together[4]).all()
    # one block: nothing to resample, so the interval says nothing: [0, 1]
    np.testing.assert_array_equal(video_intervals(scores[:1], np.zeros(1, np.int64), 1, "mean-prob")[0], [0, 1])


def test_more_blocks_give_narrower_intervals():
    rng = np.random.default_rng(2)
    for aggregation in ("vote", "mean-prob"):
        widths = []
        for n in (8, 32, 128):
            s = (rng.random(n) < 0.7).astype(np.float32) * 0.6 + 0.2
            iv = video_intervals(s, np.zeros(n, np.int64), 1, aggregation)[0]
            widths.append(iv[1] - iv[0])
        assert widths[0] > widths[1] > widths[2]


def test_decide_calls_and_uncertain_verdicts():
    scores = [0.9, 0.5, 0.45, float("nan"), 0.2]
    intervals = [[0.7, 1.0], [0.3, 0.7], [0.40, 0.49], [np.nan, np.nan], [0.0, 0.5]]
    call, verdict = decide(scores, intervals, 0.5)
    assert list(call) == ["fake", "fake", "real", "n/a", "real"]
    assert list(verdict) == ["fake", "uncertain", "real", "n/a", "uncertain"]  # 0.5 on the upper end counts
    call, verdict = decide(scores, intervals, 0.5, uncertain=False)
    assert list(verdict) == list(call)
    call, verdict = decide(scores, intervals, 0.95)
    assert list(call) == ["real", "real", "real", "n/a", "real"] and list(verdict[:2]) == ["uncertain", "real"]


class _Logit(nn.Module):
    """A stand-in branch whose fake logit is feature 0 of frame 0 of each block (g1 only)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), x[:, 0, 0]], dim=1)


def _sequence(logits, block=4):
    frames = np.zeros((len(logits) * block + 1, 136), np.float32)
    frames[np.arange(len(logits)) * block, 0] = logits
    return frames


def test_score_sequence_on_the_tie_is_uncertain_and_keeps_the_call():
    models = {"g1": _Logit()}
    result = score_sequence(_sequence([5.0, -5.0, 5.0, -5.0]), models, 4)
    assert result.score == 0.5 and result.call == "fake" and result.verdict == "uncertain"
    lo, hi = wilson_interval([2], [4])
    assert result.interval == pytest.approx((lo[0], hi[0]))
    d = result.to_dict()
    assert d["call"] == "fake" and d["verdict"] == "uncertain" and d["threshold"] == 0.5
    assert d["threshold_source"] == "default" and len(d["interval"]) == 2
    # a threshold outside the interval gives a confident verdict, and says which threshold produced it
    strict = score_sequence(_sequence([5.0] * 3 + [-5.0]), models, 4, threshold=0.05, threshold_source="test")
    assert strict.verdict == strict.call == "fake" and strict.to_dict()["threshold_source"] == "test"
    assert score_sequence(_sequence([5.0, -5.0]), models, 4, uncertain=False).verdict == "fake"


def test_old_positional_parameters_still_work():
    models = {"g1": _Logit()}
    frames = _sequence([5.0] * 20)
    result = score_sequence(frames, models, 4, "mean-prob", "clip", "cpu")
    assert result.video == "clip" and result.aggregation == "mean-prob" and result.verdict == "fake"
    blocks = frames[:80].reshape(20, 4, 136)
    assert score_blocks(blocks, models, 81, 4, "vote", "clip", None).score == 1.0
    short = score_sequence(frames[:4], models, 4)
    assert short.verdict == short.call == "n/a" and short.interval is None and short.to_dict()["interval"] is None
    # a VideoResult built the old way (nine positional fields) gets its call from the verdict
    old = VideoResult("v", 10, 1, 0.2, "real", "vote", ["g1"], np.array([0.2], np.float32))
    assert old.call == "real" and old.to_dict()["interval"] is None


@pytest.mark.reference
def test_reference_parity_calls_with_intervals(reference):
    """The published video scores of tests/test_model.py, now with calls and intervals: ffpp-raw puts
    dfo_real exactly on the 0.5 tie (6 of 12 blocks): its call is "fake" as before, its verdict "uncertain"."""
    from lrnet.landmarks import read_landmarks
    from lrnet.weights import load_branch

    models = {b: load_branch(reference / "weights" / "ffpp_raw" / f"{b}.pth") for b in ("g1", "g2")}
    expected = {"ff_fake": ("fake", "fake"), "ff_real": ("real", "real"), "dfo_fake": ("fake", "uncertain"),
                "dfo_real": ("fake", "uncertain")}
    for video, (call, verdict) in expected.items():
        result = score_sequence(read_landmarks(reference / "landmarks" / f"{video}.txt"), models)
        assert (result.call, result.verdict) == (call, verdict), (video, result.score, result.interval)
