"""The quality gate: measures on hand-made landmarks, the per-weights ranges, and edited copies of a sample video."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

from lrnet.errors import LrnetError
from lrnet.quality import (DEFAULT_RANGE, QUALITY_RANGES, STABLE_POINTS, QualityRange, apply_quality, assess,
                           bits_per_pixel, face_height_px, landmark_jitter, landmarked_share, measure, quality_range)


def _template(height=100.0, seed=0):
    """68 points spanning exactly `height` px vertically, centred on (300, 200)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.5, 0.5, size=(68, 2)) * [0.8 * height, height]
    pts[0, 1], pts[1, 1] = -height / 2, height / 2
    return pts + [300.0, 200.0]


def _moving(frames=50, height=100.0, noise=0.0, seed=0):
    """The template under a smooth similarity motion (shift, rotation, zoom), plus Gaussian noise (px)."""
    rng = np.random.default_rng(seed + 1)
    base = _template(height) - [300.0, 200.0]
    t = np.arange(frames)[:, None, None]
    angle = 0.01 * t[..., 0]
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], -1).reshape(frames, 2, 2)
    scale = (1 + 0.002 * t)
    pts = np.einsum("fij,pj->fpi", rot, base) * scale + [300.0, 200.0] + 1.5 * t * [1.0, 0.3]
    return pts + rng.normal(0.0, noise, pts.shape) if noise else pts


def test_face_height_is_the_median_landmark_box_height():
    raw = np.stack([_template(h) for h in (60, 100, 101, 140, 300)])
    assert face_height_px(raw) == pytest.approx(101.0)
    assert math.isnan(face_height_px(np.zeros((0, 68, 2))))
    with pytest.raises(ValueError, match="68, 2"):
        face_height_px(np.zeros((3, 5, 2)))


def test_landmarked_share():
    assert landmarked_share(75, 100) == 0.75
    assert math.isnan(landmarked_share(0, 0))
    with pytest.raises(ValueError):
        landmarked_share(101, 100)


def test_jitter_removes_global_motion_and_scales_with_noise():
    assert landmark_jitter(_moving()) < 1e-9  # rigid motion only: no jitter
    low, high = landmark_jitter(_moving(noise=0.5)), landmark_jitter(_moving(noise=1.0))
    # the difference of two noisy frames has variance 2 sigma^2 per coordinate, so 4 sigma^2 per 2-D point;
    # a 4-parameter fit leaves 12 of 16 degrees of freedom: RMS 2 sigma sqrt(12 / 16), over a 100-px
    # face (about: this is the median of a noisy estimate)
    assert low == pytest.approx(2 * 0.5 * math.sqrt(12 / 16) / 100, rel=0.25)
    assert high == pytest.approx(2 * low, rel=0.25)
    # the same noise on a face twice as tall is half the jitter (it is relative to the face height)
    assert landmark_jitter(_moving(noise=1.0, height=200.0)) == pytest.approx(high / 2, rel=0.25)


def test_jitter_skips_reused_frames_and_segment_boundaries():
    raw = _moving(frames=20, noise=0.5)
    reused = np.repeat(raw, 2, axis=0)  # every frame repeated, as reused landmarks are
    assert landmark_jitter(reused) == pytest.approx(landmark_jitter(raw), rel=0.3)
    jump = np.repeat(raw[:1], 20, axis=0)  # still frames but for one big non-rigid change at row 10
    jump[10:, STABLE_POINTS] += np.random.default_rng(3).normal(0, 20, (len(STABLE_POINTS), 2))
    assert landmark_jitter(jump) > 0.05
    assert math.isnan(landmark_jitter(jump, segment=np.repeat([0, 1], 10)))  # the only moving pairs cross it
    assert math.isnan(landmark_jitter(raw[:1]))


def test_assess_inside_and_outside_the_range():
    good = {"face_px": 195.0, "landmarked_share": 1.0, "jitter": 0.0035, "bits_per_pixel": 0.04}
    report = assess(good, "dfo")
    assert report.ok and report.reasons == [] and report.unmeasured == []
    bad = {"face_px": 38.2, "landmarked_share": 0.35, "jitter": 0.016, "bits_per_pixel": 0.004}
    report = assess(bad, "ffpp-raw")
    assert not report.ok
    assert report.reasons == [
        "face 38 px tall; the weights saw 80 px and up",
        "a face was landmarked in 35% of the frames; the weights need 50% and up",
        "landmarks jitter by 1.6% of the face height per frame; the weights saw up to 1.2%",
        "heavy compression: 0.0040 bits per pixel per frame; the weights saw 0.01 and up",
    ]
    assert report.to_dict()["measures"]["face_px"] == 38.2
    partial = assess({"face_px": 150.0, "landmarked_share": math.nan, "jitter": 0.004, "bits_per_pixel": None})
    assert partial.ok and partial.unmeasured == ["landmarked_share", "bits_per_pixel"]


def test_ranges_per_weights():
    assert set(QUALITY_RANGES) == {"ffpp-raw", "dfo"}
    assert quality_range("dfo") is QUALITY_RANGES["dfo"]
    assert quality_range("pretrained:ffpp-raw") is QUALITY_RANGES["ffpp-raw"]
    assert quality_range({"name": "ffpp-raw (copy in /w)"}) is QUALITY_RANGES["ffpp-raw"]
    assert quality_range("my-run") is DEFAULT_RANGE and quality_range(None) is DEFAULT_RANGE
    own = quality_range({"name": "run", "quality": {"min_face_px": 40}})
    assert own.min_face_px == 40 and own.max_jitter == DEFAULT_RANGE.max_jitter
    assert assess({"face_px": 50.0}, {"name": "run", "quality": {"min_face_px": 40}}).ok
    assert not assess({"face_px": 50.0}, "dfo").ok
    assert assess({"face_px": 50.0}, QualityRange(40, 0.5, 0.01, 0.01, "test")).ok
    with pytest.raises(LrnetError, match="quality"):
        quality_range({"name": "run", "quality": {"min_face": 40}})


def test_apply_quality():
    bad = assess({"face_px": 30.0}, "dfo")
    assert apply_quality("fake", bad) == ("uncertain", bad.reasons)
    assert apply_quality("real", bad)[0] == "uncertain"
    assert apply_quality("n/a", bad)[0] == "n/a"
    good = assess({"face_px": 300.0}, "dfo")
    assert apply_quality("fake", good) == ("fake", [])


def _ffmpeg(*args):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


def test_bits_per_pixel_orders_compression(tmp_path):
    values = {}
    for crf in (10, 45):
        target = tmp_path / f"crf{crf}.mp4"
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2", "-c:v", "libx264",
                "-preset", "veryfast", "-crf", crf, target)
        values[crf] = bits_per_pixel(target)
    assert values[10] > 4 * values[45] > 0
    assert bits_per_pixel(tmp_path / "crf10.mp4", max_packets=5) > 0
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(LrnetError, match="junk.mp4"):
        bits_per_pixel(junk)


# ------------------------------------------------------------------------------------ real clips


def _measured(path):
    from lrnet.extract import ExtractOptions, extract_video
    from lrnet.quality import measure_landmarks

    return measure_landmarks(extract_video(path, ExtractOptions(fps=25.0)), path)


@pytest.mark.slow
def test_unedited_sample_passes(reference, tmp_path):
    clip = tmp_path / "ff_real_6s.mp4"
    _ffmpeg("-i", reference / "videos" / "ff_real.mp4", "-t", 6, "-c", "copy", "-an", clip)  # no re-encoding
    measures = _measured(clip)
    for weights in ("dfo", "ffpp-raw"):
        report = assess(measures, weights)
        assert report.ok, report.reasons
    assert measures["face_px"] > 150 and measures["landmarked_share"] == 1.0


@pytest.mark.slow
def test_240p_crf45_copy_fails_the_gate(reference, tmp_path):
    """The copy is outside the range, and `apply_quality` keeps `detect_video` from a confident call on it."""
    from lrnet.detect import detect_video
    from lrnet.quality import measure_landmarks

    clip = tmp_path / "ff_real_240p_crf45.mp4"
    _ffmpeg("-i", reference / "videos" / "ff_real.mp4", "-t", 6, "-vf", "scale=-2:240", "-c:v", "libx264",
            "-preset", "veryfast", "-crf", 45, "-an", clip)
    result = detect_video(clip, str(reference / "weights" / "dfo"))
    report = assess(measure_landmarks(result.landmarks, clip), "dfo")
    assert not report.ok
    assert any(r.startswith("face ") for r in report.reasons) or any("compression" in r for r in report.reasons)
    assert report.measures["face_px"] < 80 and report.measures["bits_per_pixel"] < 0.01  # both, in fact
    verdict, reasons = apply_quality(result.verdict, report)
    assert verdict == "uncertain" and reasons == report.reasons
