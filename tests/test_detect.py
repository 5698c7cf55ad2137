"""`lrnet detect` end to end on the reference videos, outputs, and per-video error handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrnet.cli import main
from lrnet.errors import LrnetError

EXPECTED = {"ff_real": "real", "ff_fake": "fake", "dfo_real": "real", "dfo_fake": "fake"}
PREFIX = 70  # frames: two 30-frame blocks; the verdicts already hold on this prefix


@pytest.fixture(scope="module")
def dfo_weights(reference):
    from lrnet.weights import resolve_weights

    return resolve_weights(str(reference / "weights" / "dfo"))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_verdict_on_a_prefix_of_each_reference_video(reference, dfo_weights, name):
    from lrnet.detect import detect_video
    from lrnet.extract import ExtractOptions

    result = detect_video(reference / "videos" / f"{name}.mp4", dfo_weights, ExtractOptions(max_frames=PREFIX))
    assert result.blocks == 2 and result.frames == PREFIX
    assert result.verdict == EXPECTED[name], (name, result.score, result.scoring.block_scores)
    assert set(result.timing) == {"decode", "detect", "landmarks", "calibration", "scoring", "total"}


@pytest.mark.slow
def test_verdicts_on_the_whole_reference_videos(reference, tmp_path, capsys):
    videos = [str(reference / "videos" / f"{n}.mp4") for n in EXPECTED]
    code = main(["detect", "--json", "--weights", str(reference / "weights" / "dfo"), *videos])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {Path(r["video"]).stem: r["verdict"] for r in rows} == EXPECTED


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
    assert row["verdict"] == "real" and row["blocks"] == 1 and len(row["block_scores"]) == 1
    assert row["frames"] == 45 and row["timing"]["total"] > 0

    from lrnet.landmarks import read_landmarks

    assert read_landmarks(tmp_path / "lm.txt").shape == (45, 136)
    assert (tmp_path / "blocks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
