"""`lrnet detect` end to end on the reference videos, outputs, and per-video error handling."""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from lrnet.cli import main
from lrnet.errors import LrnetError
from lrnet.video import read_frames

EXPECTED = {"ff_real": "real", "ff_fake": "fake", "dfo_real": "real", "dfo_fake": "fake"}
PREFIX = 80  # decoded frames: two 30-frame blocks also after a 30 fps clip is resampled to the dfo weights' 25 fps


@pytest.fixture(scope="module")
def dfo_weights(reference):
    from lrnet.weights import resolve_weights

    return resolve_weights(str(reference / "weights" / "dfo"))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_verdict_on_a_prefix_of_each_reference_video(reference, dfo_weights, name):
    from lrnet.detect import detect_video
    from lrnet.extract import ExtractOptions

    result = detect_video(reference / "videos" / f"{name}.mp4", dfo_weights, ExtractOptions(max_frames=PREFIX))
    assert result.blocks == 2 and result.landmarks.stats.frames == PREFIX
    assert result.frames == round(PREFIX * min(1.0, 25.0 / result.fps))  # the dfo weights are 25 fps
    # two blocks are little evidence: the call must hold, the verdict may say "uncertain"
    assert result.scoring.call == EXPECTED[name], (name, result.score, result.scoring.block_scores)
    assert result.verdict in (EXPECTED[name], "uncertain")
    assert set(result.timing) == {"decode", "detect", "landmarks", "calibration", "scoring", "total"}


@pytest.mark.slow
def test_verdicts_on_the_whole_reference_videos(reference, tmp_path, capsys):
    videos = [str(reference / "videos" / f"{n}.mp4") for n in EXPECTED]
    code = main(["detect", "--json", "--weights", str(reference / "weights" / "dfo"), *videos])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {Path(r["video"]).stem: r["call"] for r in rows} == EXPECTED
    assert all(r["verdict"] in (r["call"], "uncertain") for r in rows)


def test_default_weights_come_from_the_verified_cache(reference, capsys):
    # conftest points LRNET_CACHE at an empty temporary folder; fill it from the local mirror
    from lrnet.weights import fetch_pretrained

    fetch_pretrained("dfo", mirror=str(reference / "weights" / "dfo"))
    video = str(reference / "videos" / "dfo_real.mp4")
    code = main(["detect", "--offline", "--max-frames", "40", video])
    out = capsys.readouterr().out
    assert code == 0
    assert "pretrained:dfo" in out and "real" in out


def test_failing_videos_are_one_line_each_and_others_still_run(reference, tmp_path, capsys):
    from test_extract import write_video

    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello\n" * 100)
    no_face = write_video(tmp_path / "noise.mp4", 10)
    good = str(reference / "videos" / "dfo_real.mp4")
    code = main(["detect", "--weights", str(reference / "weights" / "dfo"), "--max-frames", "30",
                 str(not_video), str(no_face), good])
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert code == 1
    assert len(errors) == 3, errors
    assert "notes.mp4: " in errors[0] and "noise.mp4: no face found" in errors[1]
    assert "dfo_real.mp4: too short: 30 frames, need more than 30" in errors[2]
    assert "Traceback" not in captured.err


def test_json_landmarks_visualization_and_plot(reference, tmp_path, capsys):
    video = str(reference / "videos" / "dfo_real.mp4")
    args = ["detect", "--json", "--blocks", "--weights", str(reference / "weights" / "dfo"), "--max-frames", "45",
            "--save-landmarks", str(tmp_path / "lm.txt"), "--visualize", str(tmp_path / "vis.mp4"),
            "--plot", str(tmp_path / "blocks.png")]
    assert main(args + [video]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["call"] == "real" and row["blocks"] == 1 and len(row["block_scores"]) == 1
    assert row["verdict"] == "uncertain"  # one block: the interval spans the threshold
    assert row["frames"] == 45 and row["timing"]["total"] > 0

    from lrnet.landmarks import read_landmarks

    assert read_landmarks(tmp_path / "lm.txt").shape == (45, 136)
    assert (tmp_path / "blocks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mask = os.umask(0)
    os.umask(mask)
    for name in ("lm.txt", "vis.mp4", "blocks.png"):  # the usual permissions, not mkstemp's 0600
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "vis.mp4"))
    ok, frame = cap.read()
    n = 1 + sum(1 for _ in iter(lambda: cap.read()[0], False))
    assert ok and n == 45 and frame.shape == (480, 640, 3)
    # the landmarks are drawn: saturated green/red dots that the source frame does not have
    src = cv2.VideoCapture(video).read()[1]
    assert np.abs(frame.astype(int) - src.astype(int)).max() > 100


def test_detect_video_api_errors(tmp_path, dfo_weights):
    from lrnet.detect import detect_video

    with pytest.raises(LrnetError, match="missing.mp4: no such video file"):
        detect_video(tmp_path / "missing.mp4", dfo_weights)


def test_calibrate_command(reference, tmp_path, capsys):
    out = tmp_path / "000_003.txt"
    code = main(["calibrate", str(reference / "calibrator" / "000_003.mp4"),
                 str(reference / "calibrator" / "000_003.csv"), "-o", str(out)])
    assert code == 0
    from lrnet.calibration import read_openface_csv, stable_face_boxes, to_crop_space
    from lrnet.landmarks import read_landmarks

    written = read_landmarks(out)
    assert written.shape == (396, 136)
    # the first frame is the OpenFace detection mapped into the stable 400-px box, normalised
    landmarks, _ = read_openface_csv(reference / "calibrator" / "000_003.csv")
    boxes = stable_face_boxes(landmarks, 640, 480)
    first = (to_crop_space(landmarks, boxes)[0] - 200) / 200
    assert np.allclose(written[0], first.reshape(136), atol=5e-6)
    assert "396 frames calibrated" in capsys.readouterr().out


def test_calibrate_command_errors(reference, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a, b\n1, 2\n")
    assert main(["calibrate", str(reference / "calibrator" / "000_003.mp4"), str(bad)]) == 2
    assert "bad.csv: not an OpenFace landmark CSV" in capsys.readouterr().err


# ------------------------------------------------------------------------------- frame rate


def test_frame_rate_plan():
    from lrnet.detect import plan_frame_rate

    plan = plan_frame_rate(50.0, 25.0)
    assert (plan.target, plan.used, plan.warning) == (25.0, 25.0, None)
    assert plan_frame_rate(25.0, 25.0).target is None and plan_frame_rate(25.4, 25.0).target is None
    assert plan_frame_rate(30.0, 25.0).used == 25.0
    slow = plan_frame_rate(12.0, 25.0)
    assert slow.target is None and slow.used == 12.0
    assert slow.warning.startswith("frame rate outside the model's range (12 fps scored, weights trained at 25")
    assert plan_frame_rate(20.0, 25.0).warning is None  # 0.8 x is still inside
    keep = plan_frame_rate(60.0, 25.0, "keep")
    assert keep.target is None and keep.used == 60.0 and "outside the model's range" in keep.warning
    assert plan_frame_rate(60.0, None) == plan_frame_rate(60.0, None, "keep")  # unknown rate: every frame
    with pytest.raises(ValueError):
        plan_frame_rate(30.0, 25.0, "interpolate")


@pytest.fixture(scope="module")
def doubled_clips(reference, tmp_path_factory):
    """dfo_real's first 100 frames at 25 fps, and the same with every frame twice at 50 fps (lossless)."""
    from test_video import clip_frames, write_clip

    frames = clip_frames(reference / "videos" / "dfo_real.mp4", 0, 100)
    folder = tmp_path_factory.mktemp("fps")
    return (write_clip(folder / "original.avi", frames, 25.0, lossless=True),
            write_clip(folder / "doubled.avi", [f for f in frames for _ in range(2)], 50.0, lossless=True))


@pytest.mark.reference
def test_a_doubled_frame_rate_scores_as_the_original_after_resampling(dfo_weights, doubled_clips):
    from dataclasses import replace

    from lrnet.detect import detect_video

    weights = replace(dfo_weights, fps=25.0)
    original, doubled = (detect_video(v, weights) for v in doubled_clips)
    assert (original.fps, original.fps_used, doubled.fps, doubled.fps_used) == (25.0, 25.0, 50.0, 25.0)
    assert doubled.landmarks.stats.frames == 200 and doubled.frames == original.frames == 100
    assert doubled.blocks == original.blocks == 3
    assert np.array_equal(doubled.landmarks.raw, original.landmarks.raw)  # the same frames were landmarked
    assert np.allclose(doubled.scoring.block_scores, original.scoring.block_scores, atol=1e-6)
    assert doubled.landmarks.times.tolist() == pytest.approx(original.landmarks.times.tolist())
    assert doubled.fps_warning is None and doubled.scoring.call == original.scoring.call == "real"
    assert doubled.verdict == original.verdict
    import cv2

    from lrnet.detect import write_visualization

    vis = write_visualization(doubled, doubled_clips[1].with_name("vis.mp4"))
    cap = cv2.VideoCapture(str(vis))
    # every source frame up to the last one landmarked (198: 199 is past the last output time)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 199 and cap.get(cv2.CAP_PROP_FPS) == 50.0
    cap.read()
    drawn = cap.read()[1]  # frame 1 was skipped by the resampling: it shows frame 0's landmarks
    source = next(itertools.islice(read_frames(doubled_clips[1]), 1, None))
    assert np.abs(drawn.astype(int) - source.astype(int)).max() > 100
    kept = detect_video(doubled_clips[1], weights, fps_policy="keep")  # opting out: every frame, flagged
    assert kept.frames == 200 and kept.blocks == 6 and kept.fps_used == 50.0
    assert "frame rate outside the model's range" in kept.fps_warning
    assert kept.to_dict()["fps_warning"] == kept.fps_warning


# ------------------------------------------------------------------------- shots and segments


@pytest.mark.reference
def test_a_real_video_followed_by_a_forged_one_locates_the_fake_segment(reference, dfo_weights, tmp_path):
    import cv2

    from lrnet.detect import detect_video, write_block_plot
    from lrnet.video import keep_mask
    from test_video import clip_frames, write_clip

    real = clip_frames(reference / "videos" / "dfo_real.mp4", 0, 200)  # 8 s at 25 fps, 640 x 480
    fake = clip_frames(reference / "videos" / "dfo_fake.mp4", 0, 120)  # 4 s at 30 fps, 1920 x 1080
    fake = [cv2.resize(f[:, 240:1680], (640, 480), interpolation=cv2.INTER_AREA)
            for f, k in zip(fake, keep_mask(np.arange(120) / 30.0, 25.0)) if k]
    clip = write_clip(tmp_path / "splice.avi", real + fake, 25.0)
    result = detect_video(clip, dfo_weights)
    assert result.scoring.call == "real" and result.blocks == 9  # 6 real blocks outvote 3 fake ones
    assert [s.call for s in result.segments] == ["real", "fake"]
    # the detector's own decision: 3 of 3 fake blocks has a Wilson interval [0.44, 1] around 0.5
    assert [s.verdict for s in result.segments] == ["real", "uncertain"]
    assert result.segments[1].interval is not None and result.segments[1].interval[0] < 0.5
    fake_segment = result.segments[1]
    assert abs(fake_segment.start_s - 8.0) <= 30 / 25 and abs(fake_segment.end_s - 12.0) <= 30 / 25
    assert result.cuts == pytest.approx([8.0])
    assert len(result.moments) == 1
    assert (result.moments[0].start_s, result.moments[0].end_s) == pytest.approx((8.0, 12.0), abs=30 / 25)
    assert any(n.startswith("fake moment at ") for n in result.notes), result.notes
    row = result.to_dict(with_blocks=True)
    assert row["segments"][1] == fake_segment.to_dict() and row["cuts"] == [8.0]
    assert {b["segment"] for b in row["block_details"]} == {0, 1}
    for b in row["block_details"]:  # no block straddles the cut
        assert b["end_s"] <= 8.0 + 1e-6 or b["start_s"] >= 8.0 - 1e-6
    assert write_block_plot(result, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.reference
def test_result_dictionary_contract(reference, dfo_weights):
    from lrnet.detect import detect_video
    from lrnet.extract import ExtractOptions

    result = detect_video(reference / "videos" / "dfo_real.mp4", dfo_weights, ExtractOptions(max_frames=40))
    row = result.to_dict(with_blocks=True)
    assert set(result.scoring.to_dict(True)) <= set(row)  # scoring's keys flow through
    for key in ("fps", "fps_used", "fps_warning", "segments", "cuts", "dropped_frames", "notes", "block_details"):
        assert key in row, key
    assert set(row["segments"][0]) == {"index", "start_s", "end_s", "frames", "blocks", "score", "verdict", "call",
                                       "interval"}
    assert set(row["block_details"][0]) == {"index", "segment", "start_s", "end_s", "p_fake", "p_g1", "p_g2"}
    lm = result.landmarks
    assert lm.times.shape == (40,) and lm.raw.shape == (40, 68, 2) and lm.points_in_frame().shape == (40, 68, 2)
    assert lm.times[1] == pytest.approx(0.04)
    json.dumps(row)


def test_progress_reports_landmarks_calibration_and_scoring(reference, dfo_weights):
    from lrnet.detect import detect_video
    from lrnet.extract import ExtractOptions

    seen = []
    detect_video(reference / "videos" / "dfo_real.mp4", dfo_weights, ExtractOptions(max_frames=60),
                 progress=lambda stage, f: seen.append((stage, f)))
    stages = [s for s, _ in seen]
    assert stages.index("landmarks") < stages.index("calibration") < stages.index("scoring")
    assert ("landmarks", 1.0) in seen and ("scoring", 1.0) in seen
    assert [f for s, f in seen if s == "landmarks"][:2] == pytest.approx([25 / 60, 50 / 60])


# ------------------------------------------------------------------------------------ misuse


def lrnet(*args, limit_bytes=None, cwd=None):
    """Run ``python -m lrnet`` in a subprocess (optionally with RLIMIT_FSIZE, a stand-in for a full disk)."""
    import subprocess
    import sys

    prelude = ""
    if limit_bytes:
        prelude = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                   f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes})); ")
    code = prelude + "import sys; from lrnet.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "LRNET_CACHE": str(Path(cwd or ".") / "c"),
           "MPLCONFIGDIR": str(Path(cwd or ".") / "mpl"), "HOME": str(cwd or ".")}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd)


@pytest.mark.misuse
def test_outputs_never_replace_an_input(reference, tmp_path):
    from test_video import noise_video

    a, b = noise_video(tmp_path / "a.mp4", 5), noise_video(tmp_path / "b.mp4", 5)
    before = a.read_bytes()
    weights = reference / "weights" / "dfo"
    for flag in ("--save-landmarks", "--visualize", "--plot"):
        run = lrnet("detect", "--weights", weights, flag, a, a, cwd=tmp_path)
        assert run.returncode == 2 and run.stderr.splitlines() == [
            f"lrnet detect: error: {a}: the {flag} output is the input {a}; choose another path "
            "(lrnet never overwrites its input)"], run.stderr
    (tmp_path / "link.mp4").symlink_to(a)  # the same file under another name
    run = lrnet("detect", "--weights", weights, "--plot", tmp_path / "link.mp4", a, cwd=tmp_path)
    assert run.returncode == 2 and f"--plot output is the input {a}" in run.stderr
    run = lrnet("detect", "--weights", weights, "--visualize", tmp_path, a, b, cwd=tmp_path)  # folder of inputs
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1
    assert f"{tmp_path / 'a.mp4'}: the --visualize output is the input" in run.stderr
    assert a.read_bytes() == before


@pytest.mark.misuse
def test_bad_numbers_and_missing_videos_are_usage_errors(tmp_path):
    for flag, value in (("--max-frames", "0"), ("--detect-every", "0"), ("--detect-width", "-5"),
                        ("--upsample", "-1"), ("--max-reused", "x")):
        run = lrnet("detect", flag, value, tmp_path / "missing.mp4", cwd=tmp_path)
        assert run.returncode == 2 and f"argument {flag}:" in run.stderr and "Traceback" not in run.stderr
    run = lrnet("detect", "--offline", tmp_path / "missing.mp4", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"lrnet detect: error: {tmp_path / 'missing.mp4'}: no such video file"]
    run = lrnet("calibrate", "--max-reused", "-1", tmp_path / "v.mp4", tmp_path / "x.csv", cwd=tmp_path)
    assert run.returncode == 2 and "argument --max-reused:" in run.stderr


@pytest.mark.misuse
@pytest.mark.reference
def test_a_full_disk_is_one_line_per_output_and_leaves_no_broken_file(reference, tmp_path):
    video = reference / "videos" / "dfo_real.mp4"
    weights = reference / "weights" / "dfo"
    common = ["detect", "--weights", weights, "--max-frames", "40"]
    run = lrnet(*common, "--visualize", tmp_path / "vis.mp4", video, limit_bytes=150_000, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert run.stderr.splitlines() == [f"lrnet detect: error: {tmp_path / 'vis.mp4'}: cannot write (wrote 40 "
                                       "frames, the file holds an unreadable file; disk full?)"], run.stderr
    run = lrnet(*common, "--save-landmarks", tmp_path / "lm.txt", video, limit_bytes=20_000, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"lrnet detect: error: {tmp_path / 'lm.txt'}: cannot write (File too large)"]
    assert not list(tmp_path.glob("vis*")) and not list(tmp_path.glob("*lm.txt*"))


@pytest.mark.misuse
def test_detect_refuses_a_landmark_file_at_once_and_points_to_predict(tmp_path, capsys):
    from lrnet.cli import main

    landmarks = tmp_path / "clip.txt"
    landmarks.write_text(" ".join(["0.1"] * 136) + "\n")
    assert main(["detect", str(landmarks), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "a landmark file, not a video" in err and "lrnet predict" in err and len(err.strip().splitlines()) == 1
