"""Calibration: hand-made cases whose results are worked out by hand, and the 000_003 example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrnet.calibration import (CROP_SIZE, TrackState, calibrate, calibrate_openface, calibrate_video, check_landmarks,
                               fill_failed, normalise, read_frames, read_openface_csv, stable_face_boxes,
                               to_crop_space, track, track_step)
from lrnet.errors import LrnetError


def square_face(x0: float, y0: float, w: float, h: float) -> np.ndarray:
    """A (68, 2) 'face' whose landmark bounding box is [x0, x0 + w] x [y0, y0 + h]."""
    rng = np.random.default_rng(0)
    pts = np.column_stack([x0 + rng.uniform(0, w, 68), y0 + rng.uniform(0, h, 68)])
    pts[0] = (x0, y0)
    pts[1] = (x0 + w, y0 + h)
    return pts


# ----------------------------------------------------------------------------- face boxes


def test_box_of_one_frame():
    # size max(100, 80) = 100; side int(1.2 * 100) = 120; centre floor(150, 90) -> corner (90, 30)
    boxes = stable_face_boxes(square_face(100, 50, 100, 80)[None], 640, 480)
    assert boxes.face_size == 100
    assert (boxes.x1[0], boxes.y1[0], boxes.side[0]) == (90, 30, 120)


def test_face_size_is_the_rounded_mean_and_the_side_is_made_even():
    # sizes 101 and 102: mean 101.5 rounds (half to even) to 102; int(1.2 * 102) = 122
    lm = np.stack([square_face(100, 100, 101, 50), square_face(100, 100, 102, 50)])
    boxes = stable_face_boxes(lm, 640, 480)
    assert boxes.face_size == 102 and list(boxes.side) == [122, 122]
    # sizes 100 and 101: mean 100.5 -> 100 -> side 120
    lm = np.stack([square_face(100, 100, 100, 50), square_face(100, 100, 101, 50)])
    assert stable_face_boxes(lm, 640, 480).face_size == 100
    # size 103: int(123.6) = 123, made even: 122
    assert stable_face_boxes(square_face(100, 100, 103, 50)[None], 640, 480).side[0] == 122


def test_centre_is_the_floored_midpoint():
    # x: [100.4, 200.9] -> midpoint 150.65 -> 150; y: [50, 131] -> 90.5 -> 90; side int(1.2 * 100.5) = 120
    lm = square_face(100.4, 50, 100.5, 81)[None]
    boxes = stable_face_boxes(lm, 640, 480)
    assert (boxes.x1[0], boxes.y1[0], boxes.side[0]) == (150 - 60, 90 - 60, 120)


def test_centre_moves_of_less_than_1_42_px_keep_the_previous_centre():
    # centres: (150, 90); (151, 91) is 1.414 px away -> held; (152, 91) is 2.24 px from the held
    # (150, 90) -> moves; (152, 92) is 1 px away -> held at (152, 91); (150, 91) is 2 px -> moves.
    offsets = [(0, 0), (1, 1), (2, 1), (2, 2), (0, 1)]
    lm = np.stack([square_face(100 + dx, 50 + dy, 100, 80) for dx, dy in offsets])
    boxes = stable_face_boxes(lm, 640, 480)
    centres = np.column_stack([boxes.x1, boxes.y1]) + 60
    assert centres.tolist() == [[150, 90], [150, 90], [152, 91], [152, 91], [150, 91]]
    assert math.sqrt(2) < 1.42  # the (1, 1) move is the boundary case the rule is tuned for


def test_boxes_are_clipped_to_the_frame():
    # left/top: centre (40, 30), side 120 -> corner (-20, -30) clipped to (0, 0); side kept
    boxes = stable_face_boxes(square_face(-10, -10, 100, 80)[None], 640, 480)
    assert (boxes.x1[0], boxes.y1[0], boxes.side[0]) == (0, 0, 120)
    # right: centre x 180 in a 200-px-wide frame -> corner 120, side shrinks to 200 - 120 = 80
    boxes = stable_face_boxes(square_face(130, 100, 100, 80)[None], 200, 480)
    assert (boxes.x1[0], boxes.y1[0], boxes.side[0]) == (120, 80, 80)
    # bottom: corner y 440 in a 480-px-high frame -> side 40 (the box stays square)
    boxes = stable_face_boxes(square_face(100, 460, 100, 80)[None], 640, 480)
    assert (boxes.y1[0], boxes.side[0]) == (440, 40)


def test_face_outside_the_frame_is_an_error():
    with pytest.raises(LrnetError, match="outside"):
        stable_face_boxes(square_face(900, 100, 100, 80)[None], 640, 480)


def test_crop_space_mapping_rounds():
    # size 167 -> side int(200.4) = 200 -> scale 2; centre floor(183.5, 100) -> corner (83, 0)
    lm = square_face(100, 50, 167, 100)[None]
    lm[0, 2] = (100.25, 60.75)  # (17.25, 60.75) * 2 = (34.5, 121.5): half to even -> (34, 122)
    lm[0, 3] = (120.2, 70.4)  # (37.2, 70.4) * 2 = (74.4, 140.8) -> (74, 141)
    boxes = stable_face_boxes(lm, 640, 480)
    assert (boxes.x1[0], boxes.y1[0], boxes.side[0]) == (83, 0, 200)
    det = to_crop_space(lm, boxes)
    assert det.dtype == np.int64
    assert det[0, 2].tolist() == [34, 122] and det[0, 3].tolist() == [74, 141]


def test_bad_landmark_arrays_are_rejected():
    with pytest.raises(LrnetError, match=r"\(frames, 68, 2\)"):
        check_landmarks(np.zeros((5, 136)))
    with pytest.raises(LrnetError, match="shape"):
        check_landmarks(np.zeros((5, 67, 2)))
    bad = np.zeros((2, 68, 2))
    bad[1, 3, 0] = np.nan
    with pytest.raises(LrnetError, match="NaN"):
        check_landmarks(bad)


# ------------------------------------------------------------------------- tracking (merge)


def scripted_lk(forward, backward, status_fw=None, status_bw=None):
    """An LK stand-in returning fixed points: first call forward, second call backward, ..."""
    calls = []

    def lk(prev, nxt, start, guess):
        forward_call = len(calls) % 2 == 0
        calls.append((start.copy(), guess.copy()))
        pts = np.asarray(forward if forward_call else backward, np.float32)
        st = status_fw if forward_call else status_bw
        st = np.ones(len(pts), bool) if st is None else np.asarray(st, bool)
        return pts, st

    lk.calls = calls
    return lk


def test_merge_step_worked_by_hand():
    start = np.array([[100, 100], [50, 50], [60, 60], [70, 70], [80, 80], [90, 90], [-9, -8], [10, 10]])
    prev_det = np.array([[107, 86], [50, 50], [41, 41], [70, 70], [80, 80], [93, 94], [-7, 1], [10, 10]])
    fw = start.astype(float) + [[3, 4], [1, 1], [1, 1], [1, 1], [1, 1], [0, 0], [6, 8], [2.5, 0.49]]
    det = np.array([[113, 94], [40, 40], [41, 41], [42, 42], [43, 43], [96, 98], [-4, 1], [12, 10]])
    bw = start.astype(float)
    bw[1] += (2, 1)  # forward-backward error sqrt(5) > 2: the detection wins
    bw[2] += (2, 0)  # error exactly 2: still tracked
    status_fw = np.ones(8, bool)
    status_fw[3] = False
    status_bw = np.ones(8, bool)
    status_bw[4] = False
    lk = scripted_lk(fw, bw, status_fw, status_bw)
    state = TrackState(np.zeros((4, 4, 3), np.uint8), start.copy(), prev_det, np.zeros(68)[:8])
    new, lost = track_step(state, np.zeros((4, 4, 3), np.uint8), det, lk)

    # LK called forward from the previous calibrated points with the detection as initial guess,
    # then backward from the (unrounded) forward result towards the start.
    assert np.array_equal(lk.calls[0][0], start.astype(np.float32))
    assert np.array_equal(lk.calls[0][1], det.astype(np.float32))
    assert np.array_equal(lk.calls[1][1], start.astype(np.float32))

    assert lost == 3  # points 1 (fb error), 3 (forward status), 4 (backward status)
    out = new.points
    # point 0: LK moved (3, 4) -> 5 px; detection moved (6, 8) -> 10 px; R = 2; P = 0.3;
    # K = 0.3 / 2.3 = 0.1304; merged = (103, 104) + K * (10, -10) = (104.30, 102.70) -> (104, 102)
    assert out[0].tolist() == [104, 102]
    assert new.p[0] == pytest.approx((1 - 0.3 / 2.3) * 0.3)
    # points 1, 3, 4 take the detection and keep P = 0
    for i in (1, 3, 4):
        assert out[i].tolist() == det[i].tolist() and new.p[i] == 0
    # point 2: fb error 2 is accepted; detection motion 0 -> R = 0 -> K = 1 -> the detection
    assert out[2].tolist() == [41, 41] and new.p[2] == 0.0
    # point 5: LK motion 0 counts as 1; detection moved (3, 4)... from (93, 94) to (96, 98) = 5;
    # R = 5, K = 0.3 / 5.3; merged = (90, 90) + K * (6, 8) = (90.34, 90.45) -> (90, 90)
    assert out[5].tolist() == [90, 90]
    assert new.p[5] == pytest.approx((1 - 0.3 / 5.3) * 0.3)
    # point 6: LK (6, 8) -> 10 px; detection (-7, 1) -> (-4, 1): 3 px; R = 0.3, K = 0.5;
    # merged = (-3, 0) + 0.5 * (-1, 1) = (-3.5, 0.5): truncated toward zero -> (-3, 0), not (-4, 0)
    assert out[6].tolist() == [-3, 0]
    # point 7: LK (12.5, 10.49) rounds half to even -> (12, 10), equal to the detection -> (12, 10)
    assert out[7].tolist() == [12, 10]
    assert np.array_equal(new.detection, det)


def test_kalman_variance_carries_over_frames():
    # Every frame LK moves the points (3, 4) (5 px) and the detection moves (6, 8) (10 px): R = 2.
    # The detection sits at LK + (10, -10). P accumulates: 0.3, then (1 - K) P + 0.3, ...
    state = TrackState(np.zeros((2, 2), np.uint8), np.full((68, 2), 100, np.int64), None, np.zeros(68))
    p = 0.0
    for step in range(3):
        before = state.points.copy()
        det = before + (13, -6)
        state = TrackState(state.crop, before, det - (6, 8), state.p)
        state, lost = track_step(state, state.crop, det, scripted_lk(before + (3, 4), before))
        p += 0.3
        k = p / (p + 2.0)
        expected = np.trunc(before[0] + (3, 4) + k * np.array([10, -10]))
        assert lost == 0
        assert state.points[0].tolist() == expected.tolist(), step
        p = (1 - k) * p
        assert state.p[0] == pytest.approx(p)


def test_first_frame_keeps_its_detection_and_points_are_integers():
    det = np.stack([np.full((68, 2), 100), np.full((68, 2), 103)]).astype(np.int64)
    lk = scripted_lk(np.full((68, 2), 130.0), np.full((68, 2), 170.0))  # fb error 70: all fail
    points, rejected = track([np.zeros((4, 4), np.uint8)] * 2, det, lk)
    assert points.dtype == np.int64
    assert np.array_equal(points, det) and rejected == 68


def test_real_lk_follows_a_shifted_texture():
    import cv2

    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (460, 460, 3), dtype=np.uint8), (0, 0), 2.0)
    a = np.ascontiguousarray(texture[30:430, 30:430])
    b = np.ascontiguousarray(texture[28:428, 27:427])  # content moves by (+3, +2)
    start = np.stack(np.meshgrid(np.arange(120, 290, 20), np.arange(120, 290, 22)), -1).reshape(-1, 2)[:68]
    assert len(start) == 68
    det0 = start.copy()
    det1 = start + (4, 2)  # the detector is off by one pixel in x
    points, rejected = track([a, b], np.stack([det0, det1]))
    assert rejected == 0
    # LK finds (+3, +2) exactly (rounded); R = |(4, 2)| / |(3, 2)|; K = 0.3 / (0.3 + R)
    r = math.hypot(4, 2) / math.hypot(3, 2)
    k = 0.3 / (0.3 + r)
    expected = np.trunc(start + (3, 2) + k * np.array([1, 0]))
    assert np.array_equal(points[1], expected.astype(np.int64))


def test_real_lk_failure_on_a_flat_image_takes_the_detection():
    flat = np.full((400, 400, 3), 128, np.uint8)
    det = np.stack([np.full((68, 2), 200), np.full((68, 2), 205)]).astype(np.int64)
    det[1, :, 0] += np.arange(68) % 3
    points, rejected = track([flat, flat], det)
    assert rejected == 68
    assert np.array_equal(points[1], det[1])


def test_normalise_interleaves_x_and_y():
    pts = np.zeros((1, 68, 2), np.int64)
    pts[0, 0] = (0, 400)
    pts[0, 1] = (300, 100)
    seq = normalise(pts)
    assert seq.shape == (1, 136) and seq.dtype == np.float32
    assert seq[0, :4].tolist() == [-1.0, 1.0, 0.5, -0.5]


# ------------------------------------------------------------------------- a whole sequence


def reference_style_calibration(frames, landmarks):
    """An independent, deliberately naive per-point, per-frame rendering of the issue's algorithm."""
    import cv2

    h, w = frames[0].shape[:2]
    sizes = [max(s[:, 0].max() - s[:, 0].min(), s[:, 1].max() - s[:, 1].min()) for s in landmarks]
    stable = int(np.rint(np.mean(sizes)))
    crops, dets, held = [], [], None
    for frame, shape in zip(frames, landmarks):
        cx = (shape[:, 0].min() + shape[:, 0].max()) // 2
        cy = (shape[:, 1].min() + shape[:, 1].max()) // 2
        if held is not None and math.dist(held, (cx, cy)) < 1.42:
            cx, cy = held
        held = (cx, cy)
        side = int(stable * 1.2) // 2 * 2
        x1, y1 = int(max(cx - side // 2, 0)), int(max(cy - side // 2, 0))
        side = min(w - x1, side)
        side = min(h - y1, side)
        interp = cv2.INTER_CUBIC if side < 400 else cv2.INTER_AREA
        crops.append(cv2.resize(frame[y1:y1 + side, x1:x1 + side], (400, 400), interpolation=interp))
        dets.append(np.rint((shape - [x1, y1]) * (400 / side)).astype(int))
    track_pts = [dets[0]]
    p = [0.0] * 68
    params = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03),
                  flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    for i in range(len(frames) - 1):
        start = track_pts[i].astype(np.float32)
        fw, s1, _ = cv2.calcOpticalFlowPyrLK(crops[i], crops[i + 1], start, dets[i + 1].astype(np.float32), **params)
        bw, s2, _ = cv2.calcOpticalFlowPyrLK(crops[i + 1], crops[i], fw, start.copy(), **params)
        fw_i, bw_i = np.rint(fw).astype(int), np.rint(bw).astype(int)
        merged = dets[i + 1].copy()
        for j in range(68):
            if math.dist(bw_i[j], track_pts[i][j]) > 2 or s1[j][0] == 0 or s2[j][0] == 0:
                continue
            lk_motion = math.dist(fw_i[j], track_pts[i][j]) or 1
            r = math.dist(dets[i + 1][j], dets[i][j]) / lk_motion
            p[j] += 0.3
            k = p[j] / (p[j] + r)
            merged[j] = fw_i[j] + k * (dets[i + 1][j] - fw_i[j])  # int array: truncates
            p[j] = (1 - k) * p[j]
        track_pts.append(merged)
    return (np.array(track_pts, float) - 200) / 200


def test_000_003_example_matches_a_naive_rendering_of_the_algorithm(reference):
    csv = reference / "calibrator" / "000_003.csv"
    video = reference / "calibrator" / "000_003.mp4"
    landmarks, success = read_openface_csv(csv)
    assert landmarks.shape == (396, 68, 2) and success.all()
    n = 80  # a prefix keeps the naive loop fast; the vectorised code runs on the same frames
    frames = [f for _, f in zip(range(n), read_frames(video))]
    result = calibrate(frames, landmarks[:n])
    expected = reference_style_calibration(frames, landmarks[:n])
    assert result.sequence.shape == (n, 136)
    assert np.array_equal(result.sequence, expected.reshape(n, 136).astype(np.float32))
    assert result.lk_rejected > 0  # the example does exercise the LK-failure branch
    assert not np.array_equal(result.points, result.detections)  # ... and the merge


def test_000_003_whole_video(reference, tmp_path):
    video = calibrate_openface(reference / "calibrator" / "000_003.mp4", reference / "calibrator" / "000_003.csv")
    assert (video.skipped, video.reused, video.dropped, len(video.segments)) == (0, 0, 0, 1)
    result = video.calibration
    seq = result.sequence
    assert np.array_equal(video.sequence, seq)
    assert seq.shape == (396, 136)
    # values are k / 200 for integer k; the first frame is the normalised detection
    assert np.allclose(seq * 200, np.rint(seq * 200), atol=1e-4)
    assert np.array_equal(result.points[0], result.detections[0])
    # the calibrated points stay close to the detections (a few px of 400), but are not them
    diff = np.abs(result.points - result.detections)
    assert 0 < diff.mean() < 3


# ------------------------------------------------------------------------------- OpenFace I/O


def write_openface(path, rows, success=None):
    names = ["frame", "face_id", "timestamp", "confidence", "success"]
    names += [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    lines = [", ".join(names)]
    for i, shape in enumerate(rows):
        ok = 1 if success is None else success[i]
        values = [i + 1, 0, i * 0.04, 0.98, ok] + list(shape[:, 0]) + list(shape[:, 1])
        lines.append(", ".join(str(v) for v in values))
    path.write_text("\n".join(lines) + "\n")


def test_openface_csv_is_read_with_spaces_after_commas(tmp_path):
    rows = [square_face(100 + i, 50, 100, 80).round(1) for i in range(3)]
    write_openface(tmp_path / "a.csv", rows, success=[0, 1, 1])
    landmarks, success = read_openface_csv(tmp_path / "a.csv")
    assert landmarks.shape == (3, 68, 2)
    assert np.allclose(landmarks[2], rows[2])
    assert success.tolist() == [False, True, True]


def test_openface_csv_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("frame, x_0, y_0\n1, 2, 3\n")
    with pytest.raises(LrnetError, match="bad.csv: not an OpenFace landmark CSV"):
        read_openface_csv(tmp_path / "bad.csv")
    with pytest.raises(LrnetError, match="no such file"):
        read_openface_csv(tmp_path / "missing.csv")


def test_failed_rows_are_skipped_at_the_start_and_reused_later():
    lm = np.arange(5)[:, None, None] * np.ones((5, 68, 2))
    filled, skipped, reused = fill_failed(lm, np.array([0, 0, 1, 0, 1], bool))
    assert (skipped, reused) == (2, 1)
    assert filled[:, 0, 0].tolist() == [2, 2, 4]
    with pytest.raises(LrnetError, match="no frame"):
        fill_failed(lm, np.zeros(5, bool))


def test_frame_and_landmark_counts_must_match():
    frames = [np.zeros((240, 320, 3), np.uint8)] * 3
    lm = np.stack([square_face(100, 50, 100, 80)] * 2)
    with pytest.raises(LrnetError, match="more frames than landmark rows"):
        calibrate(frames, lm)
    with pytest.raises(LrnetError, match="2 frames but 3 landmark rows"):
        calibrate(frames[:2], np.concatenate([lm, lm[:1]]))


def test_crop_size_constant():
    assert CROP_SIZE == 400


# ------------------------------------------------------------------------------- segments


@pytest.mark.reference
def test_a_long_failed_run_splits_the_video_and_segments_are_calibrated_apart(reference):
    video = reference / "calibrator" / "000_003.mp4"
    landmarks, success = read_openface_csv(reference / "calibrator" / "000_003.csv")
    success = success.copy()
    success[:3] = False  # leading failures: skipped
    success[50:55] = False  # 5 failed rows <= 10: the previous landmarks are reused
    success[100:120] = False  # 20 failed rows > 10: dropped, a new segment starts at 120
    result = calibrate_video(video, landmarks, success, max_reused=10)
    assert [(s.start, s.stop) for s in result.segments] == [(3, 100), (120, 396)]
    assert (result.skipped, result.reused, result.dropped) == (3, 5, 20)
    assert len(result.calibration.sequence) == 97 + 276
    assert np.array_equal(result.sequence, result.calibration.sequence[97:])  # the longest segment
    # the second segment is calibrated from its own frames only: its first row is its own detection,
    # and the whole segment equals a calibration of those frames alone
    frames = [f for i, f in enumerate(read_frames(video)) if i >= 120]
    alone = calibrate(frames, landmarks[120:])
    assert np.array_equal(result.calibration.sequence[97:], alone.sequence)
    assert np.array_equal(result.calibration.points[97], result.calibration.detections[97])
    # the reused rows repeat the landmarks of row 49
    first = calibrate([f for i, f in enumerate(read_frames(video)) if 3 <= i < 100],
                      np.concatenate([landmarks[3:50], np.repeat(landmarks[49:50], 5, axis=0), landmarks[55:100]]))
    assert np.array_equal(result.calibration.sequence[:97], first.sequence)
