"""The LRNet landmark calibration: stable face box, 400-px crops, LK tracking merged with detections.

Input: frames (BGR ``uint8`` images, all the same size) and raw 68-point landmarks per frame in
frame pixels, ``(frames, 68, 2)``. Output: the calibrated sequence ``(frames, 136)`` float32,
interleaved ``x0 y0 x1 y1 ...`` in ``(p - 200) / 200`` units (the published landmark format).

The algorithm (issue 6; it follows the reference demo's calibration):

1. *Stable face box.* Face size = mean over frames of max(width, height) of the landmark bounding
   box, rounded; box side = ``int(1.2 * size)`` made even; centred on the floored midpoint of each
   frame's landmark bounding box, except that the previous centre is kept while the new one is
   less than 1.42 px away; clipped to the frame (left/top at least 0, side shrunk to fit). Each
   face is resized to 400 x 400 (cubic when enlarging, area when shrinking) and its landmarks are
   mapped into that space and rounded to integers.
2. *Tracking.* Per consecutive pair of crops: pyramidal Lucas-Kanade forward from the previous
   calibrated points (initial guess: the next detection), then backward. A point whose
   forward-backward error exceeds 2 px or whose LK status is 0 takes the detection; the others
   merge detection and LK with a per-point Kalman gain. LK outputs are rounded; the merged value is
   truncated toward zero (the reference stores it in an integer array).
3. *Normalise* to ``(p - 200) / 200`` and flatten.

Everything is vectorised over the 68 points; the loop over frame pairs is inherent (each step
starts from the previous calibrated points). Frames are consumed as a stream, so memory does not
grow with the video length.

A video with cuts or long runs of failed detections is calibrated segment by segment
(`calibrate_video`, `lrnet.segments`): the stable box and the tracking restart in each segment.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, cast

import numpy as np

from .errors import LrnetError
from .landmarks import NUM_POINTS
from .segments import FACE, NO_FACE, REUSED, Segment, find_segments, longest
from .video import read_frames, video_size  # noqa: F401  (re-exported: lrnet.calibration.read_frames)
from .vocab import PathLike


CROP_SIZE = 400  # side of the normalised face crop, pixels
BOX_SCALE = 1.2  # face box side / landmark face size
CENTRE_SHIFT = 1.42  # px: a smaller move of the box centre keeps the previous centre
FB_MAX_ERROR = 2.0  # px: forward-backward error above this rejects the LK point
PROCESS_NOISE = 0.3  # Kalman Q added to every tracked point's P per frame
MAX_REUSED = 10  # a longer run of frames without own landmarks ends a segment (frames)
LK_WINDOW, LK_LEVELS = (15, 15), 3  # pyramidal Lucas-Kanade: window (px) and pyramid levels
LK_CRITERIA = (3, 10, 0.03)  # 3 = TERM_CRITERIA_EPS | COUNT: 10 iterations or a 0.03 px step

# (prev_crop, next_crop, start_points, initial_guess) -> (points (68, 2) float32, status (68,) bool)
LKFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


@dataclass
class FaceBoxes:
    """Per-frame square face boxes in frame pixels: ``x1``, ``y1``, ``side``, each ``(frames,)`` int64.

    The crop of frame ``i`` is ``frame[y1:y1 + side, x1:x1 + side]``.
    """

    x1: np.ndarray
    y1: np.ndarray
    side: np.ndarray
    face_size: int  # the stable landmark face size (px) the sides come from

    def __len__(self) -> int:
        return len(self.side)

    @staticmethod
    def concat(parts: Sequence["FaceBoxes"], face_size: int = 0) -> "FaceBoxes":
        """Boxes of several segments end to end (`face_size` given: each part has its own)."""
        return FaceBoxes(np.concatenate([b.x1 for b in parts]), np.concatenate([b.y1 for b in parts]),
                         np.concatenate([b.side for b in parts]), face_size)


@dataclass
class Calibration:
    """Result of `calibrate`.

    ``sequence``: ``(frames, 136)`` float32, normalised, the published format.
    ``points``: ``(frames, 68, 2)`` int64 calibrated points in 400-px crop space.
    ``detections``: ``(frames, 68, 2)`` int64 raw landmarks mapped into crop space (rounded).
    ``boxes``: the face boxes used. ``lk_rejected``: points that took the detection because LK
    failed (status 0 or forward-backward error > 2 px), summed over frame pairs.
    """

    sequence: np.ndarray
    points: np.ndarray
    detections: np.ndarray
    boxes: FaceBoxes
    lk_rejected: int

    def points_in_frame(self) -> np.ndarray:
        """Calibrated points mapped back to frame pixels, ``(frames, 68, 2)`` float64."""
        scale = self.boxes.side.astype(np.float64) / CROP_SIZE
        origin = np.stack([self.boxes.x1, self.boxes.y1], axis=1).astype(np.float64)
        return self.points * scale[:, None, None] + origin[:, None, :]


def check_landmarks(landmarks: np.ndarray, source: str = "landmarks") -> np.ndarray:
    """Validate a ``(frames, 68, 2)`` pixel array (finite, at least one frame); returns float64."""
    arr = np.asarray(landmarks, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 2 * NUM_POINTS:
        raise LrnetError(f"{source}: got a (frames, 136) array; calibration wants raw pixels as (frames, 68, 2)")
    if arr.ndim != 3 or arr.shape[1:] != (NUM_POINTS, 2):
        raise LrnetError(f"{source}: expected landmarks of shape (frames, 68, 2), got {arr.shape}")
    if len(arr) == 0:
        raise LrnetError(f"{source}: no frames")
    if not np.isfinite(arr).all():
        raise LrnetError(f"{source}: landmarks contain NaN or infinite values")
    return arr


def face_sizes(landmarks: np.ndarray) -> np.ndarray:
    """max(width, height) of each frame's landmark bounding box, ``(frames,)``, pixels."""
    extent = landmarks.max(axis=1) - landmarks.min(axis=1)
    return extent.max(axis=1)


def stable_face_size(landmarks: np.ndarray) -> int:
    """The stable face size of step 1: the rounded mean of `face_sizes` (px)."""
    return int(np.rint(face_sizes(landmarks).mean()))


class BoxFollower:
    """Step 1 one frame at a time, for a fixed stable face size (px) in a ``width x height`` frame.

    Side ``int(1.2 * face_size)`` made even; centre the floored midpoint of the landmark bounding
    box, the previous centre kept while the new one is less than 1.42 px away; clipped to the frame.
    """

    def __init__(self, face_size: int, width: int, height: int):
        self.face_size, self.width, self.height = int(face_size), int(width), int(height)
        self.side0 = int(self.face_size * BOX_SCALE) // 2 * 2
        self.held: Optional[np.ndarray] = None

    def box(self, landmarks: np.ndarray) -> Tuple[int, int, int]:
        """``(x1, y1, side)`` of one frame's ``(68, 2)`` landmarks; `LrnetError` when it lies outside the frame."""
        points = np.asarray(landmarks, dtype=np.float64)
        centre = np.floor((points.min(axis=0) + points.max(axis=0)) / 2)
        if self.held is None or np.sqrt(((self.held - centre) ** 2).sum()) >= CENTRE_SHIFT:
            self.held = centre
        x1, y1 = (int(v) for v in np.maximum(self.held - self.side0 // 2, 0))
        side = min(self.side0, self.width - x1, self.height - y1)
        if side <= 0:
            raise LrnetError(f"the face box lies outside the {self.width}x{self.height} frame")
        return x1, y1, side


def stable_face_boxes(landmarks: np.ndarray, width: int, height: int) -> FaceBoxes:
    """Step 1's face boxes for ``(frames, 68, 2)`` landmarks in a ``width x height`` frame.

    The face size is the mean over all the frames given; `BoxFollower` then places each box (the
    centre-hold rule makes each centre depend on the previous one).
    """
    landmarks = check_landmarks(landmarks)
    face_size = stable_face_size(landmarks)
    follower = BoxFollower(face_size, width, height)
    boxes = np.empty((len(landmarks), 3), np.int64)
    for i, points in enumerate(landmarks):
        try:
            boxes[i] = follower.box(points)
        except LrnetError as exc:
            raise LrnetError(f"frame {i}: {exc}") from None
    return FaceBoxes(boxes[:, 0], boxes[:, 1], boxes[:, 2], face_size)


def crop_face(frame: np.ndarray, x1: int, y1: int, side: int) -> np.ndarray:
    """The ``side``-px square at (x1, y1) resized to 400 x 400 (cubic when enlarging, else area)."""
    import cv2

    face = frame[y1:y1 + side, x1:x1 + side]
    interpolation = cv2.INTER_CUBIC if side < CROP_SIZE else cv2.INTER_AREA
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE), interpolation=interpolation)


def to_crop_space(landmarks: np.ndarray, boxes: FaceBoxes) -> np.ndarray:
    """Landmarks ``(frames, 68, 2)`` in frame pixels -> rounded ints in 400-px crop space."""
    origin = np.stack([boxes.x1, boxes.y1], axis=1)[:, None, :]
    scale = (CROP_SIZE / boxes.side.astype(np.float64))[:, None, None]
    return np.rint((landmarks - origin) * scale).astype(np.int64)


def opencv_lk(prev_crop: np.ndarray, next_crop: np.ndarray, start: np.ndarray,
              guess: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pyramidal LK (15 x 15 window, 3 levels, 10 iterations / eps 0.03) from `start`, initial guess `guess`.

    Points ``(68, 2)`` float32 -> ``(points (68, 2) float32, status (68,) bool)``.
    """
    import cv2

    points, status, _ = cv2.calcOpticalFlowPyrLK(
        prev_crop, next_crop, np.ascontiguousarray(start, np.float32), np.array(guess, np.float32),
        winSize=LK_WINDOW, maxLevel=LK_LEVELS, criteria=LK_CRITERIA, flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    return np.asarray(points).reshape(-1, 2), np.asarray(status).reshape(-1).astype(bool)


class _TooFewCrops(ValueError):
    pass


@dataclass
class TrackState:
    """What one tracking step carries to the next: previous crop, calibrated points, detections, P."""

    crop: np.ndarray
    points: np.ndarray  # (68, 2) int64, calibrated
    detection: np.ndarray  # (68, 2) int64, raw (crop space)
    p: np.ndarray  # (68,) float64 Kalman variance


def track_step(state: TrackState, crop: np.ndarray, detection: np.ndarray,
               lk: LKFunction = opencv_lk) -> Tuple[TrackState, int]:
    """Step 2 for one frame pair: returns the new state and how many points LK lost.

    All 68 points are handled at once; `lk` is injectable so the merge can be tested exactly.
    """
    start = state.points.astype(np.float32)
    forward, ok_fw = lk(state.crop, crop, start, detection.astype(np.float32))
    backward, ok_fb = lk(crop, state.crop, forward, start)
    finite = np.asarray(np.isfinite(forward).all(axis=1) & np.isfinite(backward).all(axis=1))
    forward = np.where(finite[:, None], forward, 0)
    backward = np.where(finite[:, None], backward, 0)
    forward_i = np.rint(forward).astype(np.int64)
    backward_i = np.rint(backward).astype(np.int64)

    fb_error = np.linalg.norm(backward_i - state.points, axis=1)
    good = ok_fw & ok_fb & finite & ~(fb_error > FB_MAX_ERROR)

    detect_motion = np.linalg.norm(detection - state.detection, axis=1)
    lk_motion = np.linalg.norm(forward_i - state.points, axis=1)
    lk_motion[lk_motion == 0] = 1
    r = detect_motion / lk_motion

    p = state.p.copy()
    p[good] += PROCESS_NOISE
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 only where not `good`
        gain = np.where(good, p / (p + r), 0.0)
    merged = forward_i + gain[:, None] * (detection - forward_i)
    # The reference assigns the float result into an int array: truncation toward zero.
    points = np.where(good[:, None], merged.astype(np.int64), detection)
    p = np.where(good, (1 - gain) * p, p)
    return TrackState(crop, points, detection, p), int((~good).sum())


def track(crops: Iterable[np.ndarray], detections: np.ndarray,
          lk: LKFunction = opencv_lk) -> Tuple[np.ndarray, int]:
    """Run step 2 over a stream of 400-px crops and their crop-space detections ``(frames, 68, 2)``.

    Returns the calibrated points ``(frames, 68, 2)`` int64 and the number of LK-rejected points.
    The first frame keeps its detection.
    """
    detections = np.asarray(detections, dtype=np.int64)
    out = np.empty_like(detections)
    rejected = 0
    state: Optional[TrackState] = None
    count = 0
    for i, crop in enumerate(crops):
        if i >= len(detections):
            raise ValueError(f"more crops than detections ({len(detections)})")
        if state is None:
            state = TrackState(crop, detections[0].copy(), detections[0].copy(), np.zeros(NUM_POINTS))
        else:
            state, lost = track_step(state, crop, detections[i], lk)
            rejected += lost
        out[i] = state.points
        count = i + 1
    if count != len(detections):
        raise _TooFewCrops(f"got {count} crops for {len(detections)} frames of landmarks")
    return out, rejected


def normalise(points: np.ndarray) -> np.ndarray:
    """Step 3: crop-space points ``(frames, 68, 2)`` -> ``(frames, 136)`` float32, ``(p - 200) / 200``."""
    half = CROP_SIZE // 2
    flat = (np.asarray(points, dtype=np.float64) - half) / half
    return flat.reshape(len(flat), -1).astype(np.float32)


def calibrate(frames: Iterable[np.ndarray], landmarks: np.ndarray, frame_size: Optional[Tuple[int, int]] = None,
              lk: LKFunction = opencv_lk, source: str = "video") -> Calibration:
    """Calibrate raw landmarks ``(frames, 68, 2)`` (frame pixels) against their video frames.

    `frames` is any iterable of BGR images (a list, or a decoder stream; consumed once, in order).
    `frame_size` ``(width, height)`` is needed up front when `frames` is a stream; with a list or
    array it is read from the first frame. Frames and landmark rows must correspond one to one.
    `source` names the video in error messages.
    """
    landmarks = check_landmarks(landmarks)
    if frame_size is None:
        if not hasattr(frames, "__getitem__"):
            raise ValueError("frame_size is required when frames is a stream")
        indexable = cast(Sequence[np.ndarray], frames)
        if len(indexable) == 0:
            raise LrnetError("no frames to calibrate")
        height, width = np.asarray(indexable[0]).shape[:2]
    else:
        width, height = frame_size
    boxes = stable_face_boxes(landmarks, width, height)
    detections = to_crop_space(landmarks, boxes)

    count = 0

    def crops() -> Iterator[np.ndarray]:
        nonlocal count
        for i, frame in enumerate(frames):
            count = i + 1
            if i >= len(boxes):
                raise LrnetError(f"{source}: more frames than landmark rows ({len(boxes)})")
            if frame.shape[1] != width or frame.shape[0] != height:
                raise LrnetError(f"{source}: frame {i}: size {frame.shape[1]}x{frame.shape[0]} "
                                 f"differs from {width}x{height}")
            yield crop_face(frame, int(boxes.x1[i]), int(boxes.y1[i]), int(boxes.side[i]))

    try:
        points, rejected = track(crops(), detections, lk)
    except _TooFewCrops:
        raise LrnetError(f"{source}: {count} frames but {len(boxes)} landmark rows") from None
    return Calibration(normalise(points), points, detections, boxes, rejected)


def calibrate_crops(crops: Iterable[np.ndarray], landmarks: np.ndarray, boxes: FaceBoxes,
                    lk: LKFunction = opencv_lk) -> Calibration:
    """Like `calibrate` when the caller already produces the 400-px crops for `boxes` itself."""
    landmarks = check_landmarks(landmarks)
    detections = to_crop_space(landmarks, boxes)
    points, rejected = track(crops, detections, lk)
    return Calibration(normalise(points), points, detections, boxes, rejected)


# --------------------------------------------------------------------------------------- I/O


def read_openface_csv(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read an OpenFace 2.0 CSV: ``(landmarks (rows, 68, 2) float64, success (rows,) bool)``.

    Columns ``x_0..x_67`` and ``y_0..y_67`` (OpenFace writes ``, `` between names; spaces are
    ignored). ``success`` is all True when the file has no such column.
    """
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise LrnetError(f"{path}: no such file") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LrnetError(f"{path}: not a readable CSV file ({first[:160]})") from None
    table.columns = [str(c).strip() for c in table.columns]
    xs = [f"x_{i}" for i in range(NUM_POINTS)]
    ys = [f"y_{i}" for i in range(NUM_POINTS)]
    missing = [c for c in xs + ys if c not in table.columns]
    if missing:
        raise LrnetError(f"{path}: not an OpenFace landmark CSV (missing columns {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''})")
    if len(table) == 0:
        raise LrnetError(f"{path}: no rows")
    try:
        x = table[xs].to_numpy(dtype=np.float64)
        y = table[ys].to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise LrnetError(f"{path}: non-numeric landmark values") from None
    landmarks = np.stack([x, y], axis=2)
    if not np.isfinite(landmarks).all():
        row = int(np.flatnonzero(~np.isfinite(landmarks).all(axis=(1, 2)))[0])
        raise LrnetError(f"{path}: row {row + 1}: missing or non-finite landmark value")
    success = (table["success"].to_numpy() != 0) if "success" in table.columns else np.ones(len(table), bool)
    return landmarks, success


def fill_failed(landmarks: np.ndarray, success: np.ndarray) -> Tuple[np.ndarray, int, int]:
    """Apply the extraction rules to failed rows: drop leading failures, reuse the previous landmarks.

    Returns ``(landmarks without the leading failures, skipped leading rows, reused rows)``.
    """
    success = np.asarray(success, dtype=bool)
    if not success.any():
        raise LrnetError("no frame with a successful face detection")
    first = int(np.argmax(success))
    kept = landmarks[first:]
    ok = success[first:]
    # index of the latest successful row at or before each row (vectorised forward fill)
    source = np.maximum.accumulate(np.where(ok, np.arange(len(ok)), 0))
    return kept[source], first, int((~ok).sum())


def concat_calibrations(parts: Sequence[Calibration]) -> Calibration:
    """Segments calibrated apart, laid end to end in one `Calibration` (rows in segment order).

    ``boxes.face_size`` is that of the longest part (each part has its own stable size).
    """
    if not parts:
        raise ValueError("no calibrations to concatenate")
    if len(parts) == 1:
        return parts[0]
    main = max(parts, key=lambda c: len(c.sequence))
    boxes = FaceBoxes.concat([c.boxes for c in parts], main.boxes.face_size)
    return Calibration(np.concatenate([c.sequence for c in parts]), np.concatenate([c.points for c in parts]),
                       np.concatenate([c.detections for c in parts]), boxes, sum(c.lk_rejected for c in parts))


@dataclass
class VideoCalibration:
    """Per-frame landmarks of a whole video calibrated segment by segment (see `lrnet.segments`).

    ``segments`` are frame ranges of the input (row i = frame i); ``calibration`` holds the
    segments' rows end to end. ``sequence`` is the longest segment (what a landmark file keeps).
    ``skipped``: frames without landmarks outside any segment (failed rows before the first
    success); ``reused``: failed rows inside segments (previous landmarks repeated); ``dropped``:
    failed rows in runs longer than ``max_reused`` (they end a segment and are not kept).
    """

    segments: List[Segment]
    calibration: Calibration
    skipped: int
    reused: int
    dropped: int

    @property
    def sequence(self) -> np.ndarray:
        """The calibrated ``(frames, 136)`` sequence of the longest segment."""
        i = longest(self.segments)
        offset = sum(len(s) for s in self.segments[:i])
        return self.calibration.sequence[offset:offset + len(self.segments[i])]


def calibrate_video(video: PathLike, landmarks: np.ndarray, success: Optional[np.ndarray] = None,
                    lk: LKFunction = opencv_lk, max_reused: int = MAX_REUSED) -> VideoCalibration:
    """Calibrate per-frame landmarks ``(frames, 68, 2)`` (one row per video frame) against `video`.

    Failed rows (``success`` False) follow the extraction rules: before the first success they
    are skipped; a failed row repeats the previous landmarks; a run of more than `max_reused`
    failed rows is dropped and ends the segment. Each segment is calibrated on its own.
    """
    video = Path(video)
    landmarks = check_landmarks(landmarks, str(video))
    width, height, _ = video_size(video)
    success = np.ones(len(landmarks), bool) if success is None else np.asarray(success, dtype=bool)
    if not success.any():
        raise LrnetError(f"{video}: no frame with a successful face detection")
    filled, first, _ = fill_failed(landmarks, success)
    filled = np.concatenate([landmarks[:first], filled])
    status = np.where(success, FACE, REUSED)
    status[:first] = NO_FACE
    segments, kept = find_segments(status, np.zeros(len(status), np.int64), max_reused)
    frames = read_frames(video)
    parts: List[Calibration] = []
    position = 0
    for seg in segments:
        for _ in itertools.islice(frames, seg.start - position):
            pass  # frames between segments
        source = f"{video} (frames {seg.start}-{seg.stop - 1})" if len(segments) > 1 or seg.start else str(video)
        parts.append(calibrate(itertools.islice(frames, len(seg)), filled[seg.start:seg.stop], (width, height),
                               lk, source=source))
        position = seg.stop
    rest = sum(1 for _ in itertools.islice(frames, len(landmarks) - position + 1))
    frames.close()
    if position + rest != len(landmarks):
        counted = f"more than {len(landmarks)}" if rest > len(landmarks) - position else str(position + rest)
        raise LrnetError(f"{video}: {counted} frames but {len(landmarks)} landmark rows")
    reused = int((kept & (status == REUSED)).sum())
    dropped = int((~kept & (status == REUSED)).sum())
    return VideoCalibration(segments, concat_calibrations(parts), first, reused, dropped)


def calibrate_openface(video: PathLike, csv_path: PathLike, max_reused: int = MAX_REUSED) -> VideoCalibration:
    """Calibrate an OpenFace 2.0 CSV against its video; see `calibrate_video`."""
    landmarks, success = read_openface_csv(csv_path)
    return calibrate_video(video, landmarks, success, max_reused=max_reused)
