"""Landmark extraction: model lookup, consistency rules, FF++ layout, folder job, error paths."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lrnet.extract as ex
from lrnet.calibration import Calibration, FaceBoxes
from lrnet.errors import LrnetError
from lrnet.landmarks import read_landmarks


def write_video(path: Path, frames: int, size=(160, 120), fourcc="mp4v", fps=25.0, pattern="noise") -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        if pattern == "noise":
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        else:
            img = np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8)
        writer.write(img)
    writer.release()
    return path


def test_predictor_is_found_without_importing_its_package():
    code = ("import sys; from lrnet.extract import predictor_path; p = predictor_path(); "
            "assert p.is_file() and p.name == 'shape_predictor_68_face_landmarks.dat', p; "
            "assert 'face_recognition_models' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def face(cx, cy, size):
    pts = np.zeros((68, 2))
    pts[:, 0] = np.linspace(cx - size / 2, cx + size / 2, 68)
    pts[:, 1] = np.linspace(cy - size / 2, cy + size / 2, 68)
    return pts


def test_consistency_rules():
    prev = face(200, 200, 100)
    assert ex._consistent(prev, face(240, 230, 100))  # moved 50 px = half a face: still the face
    assert not ex._consistent(prev, face(241, 231, 100))  # 51.6 px: another face
    assert ex._consistent(prev, face(200, 200, 70)) and ex._consistent(prev, face(200, 200, 130))
    assert not ex._consistent(prev, face(200, 200, 69))
    assert not ex._consistent(prev, face(200, 200, 131))


def test_carried_box_reproduces_the_detector_geometry():
    model = ex._BoxModel()
    shape = face(300, 200, 100)
    box = (240.0, 130.0, 360.0, 250.0)  # 120 px, centre (300, 190): 10 px above the landmarks
    model.learn(box, shape)
    assert model.box_for(shape) == pytest.approx(box)
    # the same face moved right and grown by 10 %: the box follows
    assert model.box_for(face(350, 200, 110)) == pytest.approx((284.0, 123.0, 416.0, 255.0))


def test_largest_face_is_picked_and_the_tracked_face_preferred():
    class R:
        def __init__(self, l, t, r, b):
            self._v = (l, t, r, b)

        def left(self): return self._v[0]
        def top(self): return self._v[1]
        def right(self): return self._v[2]
        def bottom(self): return self._v[3]

    rects = [R(0, 0, 50, 50), R(100, 100, 200, 200)]
    assert ex._pick_face(rects, 0.5, None) == (200, 200, 400, 400)
    assert ex._pick_face(rects, 0.5, face(50, 50, 100)) == (0, 0, 100, 100)  # near the tracked face
    assert ex._pick_face([], 1.0, None) is None


# -------------------------------------------------------------------------------- FF++ layout


def make_ffpp_tree(root: Path) -> Path:
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "train.json").write_text(json.dumps([["000", "003"]]))
    (root / "splits" / "val.json").write_text(json.dumps([["001", "870"]]))
    (root / "splits" / "test.json").write_text(json.dumps([["002", "006"]]))
    videos = {
        "original_sequences/youtube/c23/videos": ["000", "003", "001", "999"],
        "original_sequences/youtube/raw/videos": ["002"],
        "manipulated_sequences/Deepfakes/c23/videos": ["000_003", "003_000", "870_001"],
        "manipulated_sequences/Face2Face/c40/videos": ["006_002"],
        "manipulated_sequences/FaceSwap/raw/videos": ["001_870"],
        "manipulated_sequences/NeuralTextures/c23/videos": ["002_006"],
        "manipulated_sequences/DeepFakeDetection/c23/videos": ["01_02__meeting"],
    }
    for folder, stems in videos.items():
        (root / folder).mkdir(parents=True)
        for stem in stems:
            (root / folder / f"{stem}.mp4").write_bytes(b"")
    return root


def test_ffpp_layout_maps_videos_to_dataset_folders(tmp_path):
    root = make_ffpp_tree(tmp_path / "ffpp")
    jobs = ex.ffpp_jobs(root, tmp_path / "out")
    got = sorted(str(j.output.relative_to(tmp_path / "out")) for j in jobs)
    assert got == sorted([
        "Origin/c23/train/000.txt", "Origin/c23/train/003.txt", "Origin/c23/val/001.txt",
        "Origin/raw/test/002.txt",
        "DF/c23/train/000_003.txt", "DF/c23/train/003_000.txt", "DF/c23/val/870_001.txt",
        "F2F/c40/test/006_002.txt", "FS/raw/val/001_870.txt", "NT/c23/test/002_006.txt",
    ])  # 999 is in no split; DeepFakeDetection is not an LRNet dataset
    by_output = {str(j.output.relative_to(tmp_path / "out")): j.video for j in jobs}
    assert by_output["DF/c23/val/870_001.txt"] == root / "manipulated_sequences/Deepfakes/c23/videos/870_001.mp4"


def test_ffpp_layout_errors(tmp_path):
    with pytest.raises(LrnetError, match="train.json: FF\\+\\+ split file not found"):
        ex.ffpp_jobs(tmp_path, tmp_path / "out")
    root = make_ffpp_tree(tmp_path / "ffpp")
    (root / "splits" / "val.json").write_text('{"a": 1}')
    with pytest.raises(LrnetError, match="val.json: expected a list of \\[a, b\\] pairs"):
        ex.ffpp_jobs(root, tmp_path / "out")


# ------------------------------------------------------------------------------- error paths


def test_non_video_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    with pytest.raises(LrnetError, match="notes.mp4: (cannot open|no frame could be decoded)"):
        ex.extract_video(bad)
    with pytest.raises(LrnetError, match="missing.mp4: no such video file"):
        ex.extract_video(tmp_path / "missing.mp4")


def test_video_without_a_face_is_a_clear_error(tmp_path):
    video = write_video(tmp_path / "noise.mp4", 12)
    with pytest.raises(LrnetError, match=r"noise.mp4: no face found in 12 frames"):
        ex.extract_video(video)


# ---------------------------------------------------------------------------- real extraction


def test_extract_a_real_video_prefix(reference):
    video = reference / "videos" / "dfo_real.mp4"
    result = ex.extract_video(video, ex.ExtractOptions(max_frames=60))
    s = result.stats
    assert (s.frames, s.width, s.height) == (60, 640, 480)
    assert s.skipped == 0 and s.landmarked + s.reused == 60
    assert s.detector_runs == 6 and s.detector_hits == 6  # every 10th frame
    assert not s.decoded_twice  # the cached face regions covered the final boxes
    assert result.raw.shape == (60, 68, 2) and result.sequence.shape == (60, 136)
    published = read_landmarks(reference / "landmarks" / "dfo_real.txt")[:60]
    mad_px = np.abs(result.sequence - published).mean() * 200
    assert mad_px < 8, mad_px  # a different detector: a few pixels of the 400-px crop


def test_cached_regions_give_the_same_result_as_decoding_twice(reference):
    video = reference / "videos" / "dfo_real.mp4"
    cached = ex.extract_video(video, ex.ExtractOptions(max_frames=40))
    twice = ex.extract_video(video, ex.ExtractOptions(max_frames=40, cache_mb=0))
    assert not cached.stats.decoded_twice and twice.stats.decoded_twice
    assert np.array_equal(cached.sequence, twice.sequence)


def test_sparse_detection_gives_the_landmarks_of_detecting_every_frame(reference):
    video = reference / "videos" / "dfo_real.mp4"
    sparse = ex.extract_video(video, ex.ExtractOptions(max_frames=40, detect_every=10), calibrate=False)
    dense = ex.extract_video(video, ex.ExtractOptions(max_frames=40, detect_every=1), calibrate=False)
    assert dense.stats.detector_runs == 40 and sparse.stats.detector_runs == 4
    assert np.abs(sparse.raw - dense.raw).mean() < 1.0  # px in the 640 x 480 frame


# ------------------------------------------------------------------------------- folder job


def fake_extract(path, options=None):
    """Stand-in for extract_video: 'fail' in the name fails, others give a 40-frame sequence."""
    path = Path(path)
    if "fail" in path.name:
        raise LrnetError(f"{path}: no face found in 12 frames")
    seq = np.full((40, 136), 0.25, np.float32)
    stats = ex.VideoStats(video=str(path), frames=42, skipped=2, landmarked=40)
    cal = Calibration(seq, np.zeros((40, 68, 2), np.int64), np.zeros((40, 68, 2), np.int64),
                      FaceBoxes(np.zeros(40, np.int64), np.zeros(40, np.int64), np.ones(40, np.int64), 1), 0)
    return ex.VideoLandmarks(np.zeros((40, 68, 2), np.int64), cal, stats)


def test_folder_job_is_resumable_logged_and_survives_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "extract_video", fake_extract)
    src = tmp_path / "videos"
    (src / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/b.avi", "fail.mp4"):
        (src / name).write_bytes(b"x")
    (src / "readme.txt").write_text("not a video")
    out = tmp_path / "out"
    summary = ex.extract_folder(src, out, progress=False)
    assert (summary.total, summary.done, summary.skipped_existing, summary.failed) == (3, 2, 0, 1)
    assert read_landmarks(out / "a.txt").shape == (40, 136)
    assert (out / "sub" / "b.txt").is_file() and not (out / "fail.txt").exists()
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temporaries
    rows = list(csv.DictReader(open(summary.log)))
    assert {Path(r["video"]).name: r["error"] for r in rows}["fail.mp4"].endswith("no face found in 12 frames")
    assert {r["skipped"] for r in rows if not r["error"]} == {"2"}

    # second run: finished outputs are skipped, only the failed video is retried; log appended
    before = (out / "a.txt").stat().st_mtime_ns
    summary = ex.extract_folder(src, out, progress=False)
    assert (summary.total, summary.done, summary.skipped_existing, summary.failed) == (3, 0, 2, 1)
    assert (out / "a.txt").stat().st_mtime_ns == before
    assert len(list(csv.DictReader(open(summary.log)))) == 4


def test_folder_job_errors(tmp_path):
    with pytest.raises(LrnetError, match="input folder not found"):
        ex.extract_folder(tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrnetError, match="no video files"):
        ex.extract_folder(tmp_path / "empty", tmp_path / "out", progress=False)


def test_folder_job_with_worker_processes(reference, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "one.mp4").symlink_to(reference / "videos" / "dfo_real.mp4")
    (src / "two.mp4").symlink_to(reference / "videos" / "dfo_real.mp4")
    write_video(src / "noface.mp4", 8)
    summary = ex.extract_folder(src, tmp_path / "out", workers=2, progress=False,
                                options=ex.ExtractOptions(max_frames=35))
    assert (summary.done, summary.failed) == (2, 1)
    one, two = read_landmarks(tmp_path / "out" / "one.txt"), read_landmarks(tmp_path / "out" / "two.txt")
    assert one.shape == (35, 136) and np.array_equal(one, two)


def test_extract_command(tmp_path, monkeypatch, capsys):
    from lrnet.cli import main

    monkeypatch.setattr(ex, "extract_video", fake_extract)
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    assert main(["extract", str(src), str(tmp_path / "out"), "--no-progress"]) == 0
    assert "1 videos: 1 extracted, 0 already done, 0 failed" in capsys.readouterr().out
    (src / "fail.mp4").write_bytes(b"x")
    assert main(["extract", str(src), str(tmp_path / "out"), "--no-progress", "-j", "1"]) == 1
    captured = capsys.readouterr()
    assert "2 videos: 0 extracted, 1 already done, 1 failed" in captured.out
    assert "fail.mp4: no face found" in captured.err
    assert main(["extract", str(src), str(tmp_path / "out"), "--splits", str(tmp_path)]) == 2
    assert "--splits only applies with --layout ffpp" in capsys.readouterr().err


# ---------------------------------------------------------------------- edited clips (issue 15)


@pytest.fixture(scope="module")
def jump_clip(reference, tmp_path_factory):
    """ff_real reframed twice (jump cuts: the face moves 320 px): 3 x 40 frames, 960 x 720, 30 fps."""
    from test_video import clip_frames, write_clip

    frames = clip_frames(reference / "videos" / "ff_real.mp4", 0, 120)
    parts = [f[:, :960] for f in frames[:40]] + [f[:, 320:] for f in frames[40:80]] + [f[:, :960] for f in frames[80:]]
    return write_clip(tmp_path_factory.mktemp("clips") / "jump.avi", parts, 30.0)


def check_segments_restart(result, expected_starts):
    starts = [s.start for s in result.segments]
    assert starts == expected_starts
    cal = result.calibration
    for s in result.segments:  # calibration restarts: each segment's first row is its own detection
        assert np.array_equal(cal.points[s.start], cal.detections[s.start])
    assert not np.array_equal(cal.points[1], cal.detections[1])  # ... which tracking otherwise changes


@pytest.mark.reference
def test_jump_cuts_start_new_segments_and_keep_the_frames_landmarked(jump_clip):
    result = ex.extract_video(jump_clip)
    s = result.stats
    assert s.selected == 120 and s.landmarked >= 0.95 * 120, s
    assert (s.segments, s.cuts, s.dropped) == (3, 2, 0)
    assert result.cuts == pytest.approx([40 / 30, 80 / 30])
    check_segments_restart(result, [0, 40, 80])
    assert s.detector_runs <= 120 / 10 + 6  # the cut does not leave the detector running on every frame


@pytest.mark.reference
def test_a_face_found_away_from_the_track_replaces_it_within_a_few_frames(jump_clip, monkeypatch):
    monkeypatch.setattr(ex, "CUT_MIN", float("inf"))  # only the face jump can reveal the cuts
    result = ex.extract_video(jump_clip)
    s = result.stats
    assert (s.segments, s.cuts, s.dropped, s.reused) == (3, 2, 0, 0), s
    assert s.landmarked == 120  # the frames before the jump was confirmed got the new face's landmarks
    # found at the next detection (every 10 frames): until then the carried box follows the old place
    starts = [seg.start for seg in result.segments]
    assert 40 <= starts[1] < 50 and 80 <= starts[2] < 90, starts
    assert result.cuts == pytest.approx([starts[1] / 30, starts[2] / 30])
    check_segments_restart(result, starts)


@pytest.mark.reference
def test_a_looped_clip_keeps_its_frames_landmarked(reference, tmp_path):
    from test_video import clip_frames, write_clip

    loop = write_clip(tmp_path / "loop.avi", clip_frames(reference / "videos" / "dfo_real.mp4", 0, 50) * 3, 25.0)
    result = ex.extract_video(loop)
    assert result.stats.selected == 150 and result.stats.landmarked >= 0.95 * 150, result.stats
    assert len(result.raw) == 150


@pytest.mark.reference
def test_a_long_run_of_failed_detections_is_dropped_and_reported(reference, tmp_path):
    import cv2

    from test_video import clip_frames, write_clip

    video = reference / "videos" / "dfo_real.mp4"
    first = ex.extract_video(video, ex.ExtractOptions(max_frames=1), calibrate=False).raw[0]
    (x0, y0), (x1, y1) = first.min(axis=0) - 40, first.max(axis=0) + 40
    frames = clip_frames(video, 0, 80)
    for f in frames[30:55]:  # the face is blurred beyond recognition for 25 frames
        f[y0:y1, x0:x1] = cv2.GaussianBlur(f[y0:y1, x0:x1], (0, 0), 25)
    clip = write_clip(tmp_path / "covered.avi", frames, 25.0)
    result = ex.extract_video(clip, ex.ExtractOptions(detect_every=1, max_reused=10))
    s = result.stats
    assert s.dropped == 11 and s.skipped == 14, s  # 11 reused frames end the track, the rest have no face
    assert [(seg.start, seg.stop) for seg in result.segments] == [(0, 30), (30, 55)]
    assert result.frame_index.tolist() == list(range(30)) + list(range(55, 80))
    assert result.times[30] == pytest.approx(55 / 25)
