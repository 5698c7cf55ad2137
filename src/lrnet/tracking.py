"""Following faces through frames: detection rhythm, 68 landmarks, consistency, shot cuts.

`FaceTracker` consumes selected frames one at a time (`step`) and records, per frame, a status
(`lrnet.segments.FACE`: own landmarks; `REUSED`: the previous landmarks repeated because detection
failed or was rejected; `NO_FACE`), the ``(68, 2)`` landmarks and a track id:

1. *Detect* faces (`lrnet.landmarker.Landmarker`, dlib by default) on a grey copy downscaled to
   about 640 px, every `detect_every` frames; in between, the face box is carried forward from the
   previous frame's landmarks (using the box/landmark geometry of the last detection).
2. *Landmarks*: the 68 points of the chosen box, in full resolution.
3. *One face, consistent over time*: the largest face is chosen, faces near the tracked one
   preferred; a result whose centre jumps more than half a face away, or whose size changes by
   more than 30 %, is rejected and the previous landmarks are reused.
4. *Shots.* A cut is seen in the frames (the mean difference of 32 x 32 thumbnails jumps
   suddenly, well above its recent level) or as a face found `confirm` detections in a row away
   from the tracked one; either starts a new track (the jumped frames get the new face's
   landmarks: rows up to ``confirm - 1`` back can still change, see `FaceTracker.final_rows`). A
   run of more than `max_reused` reused frames ends the track.

The tracker keeps its per-frame records from ``offset`` on; `trim` drops final ones, so a stream
holds a bounded window (`lrnet.stream`) while `lrnet.extract` keeps them all.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from .calibration import BOX_SCALE, MAX_REUSED, FaceBoxes, crop_face
from .landmarker import Box, Landmarker, default_landmarker
from .segments import FACE, NO_FACE, REUSED
from .video import MAX_FRAMES, Frame, VideoInfo

__all__ = ["ExtractOptions", "FaceTracker", "RegionCache", "VideoStats"]

MAX_JUMP = 0.5  # a face centre moving more than this x previous face size is another face
SIZE_CHANGE = (0.7, 1.3)  # accepted ratio of face size to the previous frame's
CACHE_MARGIN = 1.3  # cached region covers a box for a stable size up to this x the local face size
THUMB = 32  # side of the thumbnail the shot-cut test compares (px)
CUT_MIN = 3.0  # a thumbnail difference (mean grey levels) below this is never a cut ...
CUT_RATIO = 6.0  # ... nor one below this x the recent median, or below 3 x the previous difference
CUT_HISTORY = 25  # frames of recent differences


@dataclass
class ExtractOptions:
    """Settings of the per-video extraction."""

    detect_every: int = 10  # run the face detector every N frames (1 = every frame)
    detect_width: int = 640  # the detector sees a copy whose longer side is at most this (px)
    upsample: int = 0  # dlib detector upsampling steps (1 finds faces half as large, 4x slower)
    max_frames: Optional[int] = None  # only the first N decoded frames (None: all)
    cache_mb: int = 1024  # memory for face regions kept for calibration; beyond it, decode twice
    fps: Optional[float] = None  # resample by timestamp to this rate before landmarking (None: every frame)
    max_reused: int = MAX_REUSED  # a longer run of frames reusing landmarks ends the segment (dropped)
    confirm: int = 3  # consecutive detections away from the tracked face that replace it (a new shot)
    frame_limit: int = MAX_FRAMES  # refuse longer videos (unless max_frames keeps to a prefix)

    def check(self) -> None:
        for name in ("detect_every", "detect_width", "confirm", "frame_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be at least 1 (or None)")
        if self.fps is not None and not self.fps > 0:
            raise ValueError("fps must be > 0 (or None)")
        if self.max_reused < 0 or self.upsample < 0 or self.cache_mb < 0:
            raise ValueError("max_reused, upsample and cache_mb must be >= 0")


@dataclass
class VideoStats:
    """Per-video statistics; times in seconds (stages overlap, so they need not add up to total)."""

    video: str
    frames: int = 0  # decoded frames
    width: int = 0
    height: int = 0
    fps: float = 0.0  # nominal rate of the file
    fps_used: float = 0.0  # rate of the landmarked frames (the target when resampled)
    selected: int = 0  # frames landmarked (all decoded frames unless resampled)
    landmarked: int = 0  # kept frames with their own accepted landmarks
    reused: int = 0  # kept frames that reuse the previous landmarks (detection failed or rejected)
    skipped: int = 0  # selected frames without a face (in no segment)
    dropped: int = 0  # reused frames in runs longer than max_reused (in no segment)
    segments: int = 0
    cuts: int = 0  # shot boundaries seen
    detector_runs: int = 0  # frames the face detector ran on
    detector_hits: int = 0  # ... and found a face
    rejected: int = 0  # landmark results rejected by the consistency rules
    lk_rejected: int = 0  # calibration: points that took the detection (LK failure)
    decoded_twice: bool = False  # the calibration needed a second decode
    t_decode: float = 0.0
    t_detect: float = 0.0
    t_landmarks: float = 0.0
    t_calibration: float = 0.0
    t_total: float = 0.0
    error: str = ""

    def row(self) -> Dict[str, object]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        return out


# ------------------------------------------------------------------------ face geometry


def _bbox(shape: np.ndarray) -> Tuple[np.ndarray, float]:
    """(floored midpoint of the landmark bounding box, max(width, height)) of a (68, 2) shape."""
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    return np.floor((lo + hi) / 2), float((hi - lo).max())


def _consistent(prev: np.ndarray, new: np.ndarray) -> bool:
    """The consistency rule between two (68, 2) shapes of consecutive frames."""
    prev_size = float((prev.max(axis=0) - prev.min(axis=0)).max())
    new_size = float((new.max(axis=0) - new.min(axis=0)).max())
    jump = float(np.linalg.norm(new.mean(axis=0) - prev.mean(axis=0)))
    return (jump <= MAX_JUMP * prev_size
            and SIZE_CHANGE[0] * prev_size <= new_size <= SIZE_CHANGE[1] * prev_size)


@dataclass
class _BoxModel:
    """Where the detector puts its box relative to the landmarks it leads to, to mimic it later."""

    offset: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (box centre - landmark centre) / size
    scale: float = 1.0  # box side / landmark face size

    def learn(self, box: Tuple[float, float, float, float], shape: np.ndarray) -> None:
        lo, hi = shape.min(axis=0), shape.max(axis=0)
        size = max(float((hi - lo).max()), 1.0)
        centre = (np.array([box[0] + box[2], box[1] + box[3]]) / 2.0)
        self.offset = (centre - (lo + hi) / 2.0) / size
        self.scale = max(box[2] - box[0], box[3] - box[1]) / size

    def box_for(self, shape: np.ndarray) -> Tuple[float, float, float, float]:
        lo, hi = shape.min(axis=0), shape.max(axis=0)
        size = float((hi - lo).max())
        centre = (lo + hi) / 2.0 + self.offset * size
        half = self.scale * size / 2.0
        return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def _pick_face(found: List[Box], scale: float, prev: Optional[np.ndarray]) -> Optional[Box]:
    """The largest detected face (in full-frame pixels), preferring faces near the tracked one.

    `found`: boxes in the pixels of the detector's image, which is `scale` x the frame."""
    boxes = [(b[0] / scale, b[1] / scale, b[2] / scale, b[3] / scale) for b in found]
    if not boxes:
        return None
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    if prev is not None:
        centre, size = _bbox(prev)
        near = [b for b in boxes
                if np.hypot((b[0] + b[2]) / 2 - centre[0], (b[1] + b[3]) / 2 - centre[1]) <= MAX_JUMP * size]
        if near:
            boxes = near
    return max(boxes, key=area)


class RegionCache:
    """Face regions kept from the first decode for calibration, by selected-frame row, with a margin."""

    def __init__(self, width: int, height: int, budget_bytes: int):
        self.width, self.height = width, height
        self.budget = budget_bytes
        self.used = 0
        self.regions: Dict[int, Tuple[int, int, np.ndarray]] = {}  # row -> (x0, y0, pixels)
        self.enabled = budget_bytes > 0
        self._size_sum, self._size_count = 0.0, 0  # face sizes of the current track

    def new_track(self) -> None:
        self._size_sum, self._size_count = 0.0, 0

    def add(self, row: int, frame: np.ndarray, shape: np.ndarray) -> None:
        """Keep (or replace) the region of `row` around `shape`."""
        if not self.enabled:
            return
        centre, size = _bbox(shape)
        self._size_sum += size
        self._size_count += 1
        reference = max(size, self._size_sum / self._size_count)
        half = int(np.ceil(0.5 * BOX_SCALE * CACHE_MARGIN * reference)) + 3
        x0 = max(0, int(centre[0]) - half)
        y0 = max(0, int(centre[1]) - half)
        pixels = frame[y0:min(self.height, y0 + 2 * half + 2), x0:min(self.width, x0 + 2 * half + 2)].copy()
        old = self.regions.pop(row, None)
        self.used += pixels.nbytes - (old[2].nbytes if old is not None else 0)
        if self.used > self.budget:
            self.enabled, self.regions = False, {}
            return
        self.regions[row] = (x0, y0, pixels)

    def covers(self, rows: np.ndarray, boxes: FaceBoxes) -> bool:
        """Whether the kept regions of `rows` contain the final face boxes (one per row)."""
        if not self.enabled or not all(int(r) in self.regions for r in rows):
            return False
        regions = [self.regions[int(r)] for r in rows]
        x0 = np.array([r[0] for r in regions])
        y0 = np.array([r[1] for r in regions])
        w = np.array([r[2].shape[1] for r in regions])
        h = np.array([r[2].shape[0] for r in regions])
        return bool(np.all((boxes.x1 >= x0) & (boxes.y1 >= y0)
                           & (boxes.x1 + boxes.side <= x0 + w) & (boxes.y1 + boxes.side <= y0 + h)))

    def crops(self, rows: np.ndarray, boxes: FaceBoxes) -> Iterator[np.ndarray]:
        for i, row in enumerate(rows):
            x0, y0, pixels = self.regions[int(row)]
            yield crop_face(pixels, int(boxes.x1[i]) - x0, int(boxes.y1[i]) - y0, int(boxes.side[i]))


class _ShotCuts:
    """Shot-cut test on consecutive selected frames: the mean difference of 32 x 32 grey thumbnails
    (from a strided copy: about 0.1 ms a frame) well above both `CUT_MIN` and its recent level."""

    def __init__(self, width: int, height: int):
        self.step = max(1, max(width, height) // 256)
        self.previous: Optional[np.ndarray] = None
        self.recent: "deque[float]" = deque(maxlen=CUT_HISTORY)

    def is_cut(self, gray: np.ndarray) -> bool:
        import cv2

        small = np.ascontiguousarray(gray[::self.step, ::self.step])
        thumb = cv2.resize(small, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self.previous = self.previous, thumb
        if previous is None:
            return False
        difference = float(np.abs(thumb - previous).mean())
        typical = float(np.median(self.recent)) if self.recent else 0.0
        last = self.recent[-1] if self.recent else 0.0
        self.recent.append(difference)
        # a cut is a sudden jump; fast motion builds up over a few frames
        return difference > CUT_MIN and difference > CUT_RATIO * max(typical, last / 2)


# ------------------------------------------------------------------------------ face tracking


class FaceTracker:
    """Follows one face through the selected frames and records, per frame, its status (`FACE`,
    `REUSED`, `NO_FACE`), landmarks and track id; new tracks start at shot cuts (see module doc)."""

    def __init__(self, options: ExtractOptions, info: VideoInfo, stats: VideoStats,
                 landmarker: Optional[Landmarker] = None, keep_regions: bool = True):
        self.landmarker = landmarker or default_landmarker()
        self.options, self.stats = options, stats
        self.offset = 0  # row number of the first record still held (see `trim`)
        self.follower = False  # True: never runs the detector; takes boxes offered from another tracker's
        self.offered: Optional[List[Box]] = None  # boxes (frame px) offered for the next step (followers)
        self.found: Optional[List[Box]] = None  # boxes (frame px) the detector found in the last step
        self.scale = min(1.0, options.detect_width / max(info.width, info.height, 1))
        self.cache = RegionCache(info.width, info.height, options.cache_mb << 20 if keep_regions else 0)
        self.shots = _ShotCuts(info.width, info.height)
        self.box_model = _BoxModel()
        self.prev: Optional[np.ndarray] = None  # landmarks of the tracked face in the last frame
        self.since_detect = options.detect_every  # forces a detection on the first frame
        self.reused_run = 0
        self.track_id = -1
        self.candidate: List[Tuple[int, np.ndarray]] = []  # (row, shape) of a face away from the track
        self.recent: "deque[Tuple[int, np.ndarray]]" = deque(maxlen=options.confirm)  # (row, image)
        self.index: List[int] = []  # per selected frame: number in the video,
        self.times: List[float] = []  # presentation time (s),
        self.status: List[int] = []  # FACE / REUSED / NO_FACE,
        self.track: List[int] = []  # track id (-1: none),
        self.shapes: List[np.ndarray] = []  # (68, 2) int64 landmarks (zeros without a face)
        self.cut_rows: List[int] = []  # rows where a new shot starts
        self._none = np.zeros((68, 2), np.int64)

    def step(self, frame: Frame, offered: Optional[List[Box]] = None) -> None:
        """Process the next selected frame. `offered`: for a follower, the face boxes (frame px) the
        leading tracker's detector found on this frame and no other face claimed (None: no detection)."""
        self.offered = offered
        import cv2

        row = self.offset + len(self.status)
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        if self.shots.is_cut(gray):
            self.cut_rows.append(row)
            self._lose_track()
        self.index.append(frame.index)
        self.times.append(frame.time)
        self.recent.append((row, frame.image))
        shape, detected = self._find(gray)
        self._judge(row, shape, detected, frame.image)

    def _find(self, gray: np.ndarray) -> Tuple[Optional[np.ndarray], bool]:
        """(landmarks or None, whether they come from a fresh detection) for one frame."""
        import cv2

        t0 = time.perf_counter()
        detected = False
        self.found = None
        offered, self.offered = self.offered, None
        due = self.prev is None or self.since_detect >= self.options.detect_every
        if due and not self.follower:
            small = gray if self.scale == 1.0 else cv2.resize(gray, None, fx=self.scale, fy=self.scale,
                                                             interpolation=cv2.INTER_AREA)
            found = self.landmarker.detect(small, self.options.upsample)
            self.stats.detector_runs += 1
            self.found = [(b[0] / self.scale, b[1] / self.scale, b[2] / self.scale, b[3] / self.scale) for b in found]
            box = _pick_face(found, self.scale, self.prev)
        elif due and offered is not None:  # a follower takes its boxes from the leading tracker's detection
            box = _pick_face(offered, 1.0, self.prev)
        elif self.prev is not None:
            box = self.box_model.box_for(self.prev)
        else:
            box = None
        if due and box is not None and (not self.follower or offered is not None):
            self.stats.detector_hits += 1
            detected = True
            self.since_detect = 0
        t1 = time.perf_counter()
        self.stats.t_detect += t1 - t0
        shape = None
        if box is not None:
            shape = self.landmarker.landmarks(gray, box)
            if detected:
                self.box_model.learn(box, shape)
        self.stats.t_landmarks += time.perf_counter() - t1
        self.since_detect += 1
        return shape, detected

    def _judge(self, row: int, shape: Optional[np.ndarray], detected: bool, image: np.ndarray) -> None:
        """Accept the landmarks, start or switch a track, or reuse the previous landmarks."""
        if shape is not None and (self.prev is None or _consistent(self.prev, shape)):
            if self.prev is None:
                self._start_track()
            self._accept(row, shape, image)
            return
        if shape is not None:
            self.stats.rejected += 1
            if detected and self._confirmed(row, shape):
                self._switch_track(row, shape, image)
                return
        self.since_detect = self.options.detect_every  # lost or failed: detect again next frame
        if self.prev is None:
            self._record(NO_FACE, self._none, -1)
            return
        self._record(REUSED, self.prev, self.track_id)
        self.cache.add(row, image, self.prev)
        self.reused_run += 1
        if self.reused_run > self.options.max_reused:
            self._lose_track()

    def _confirmed(self, row: int, shape: np.ndarray) -> bool:
        """Add a face found away from the track; True once it was found `confirm` frames in a row."""
        last = self.candidate[-1] if self.candidate else None
        if last is None or last[0] != row - 1 or not _consistent(last[1], shape):
            self.candidate = []
        self.candidate.append((row, shape))
        return len(self.candidate) >= self.options.confirm

    def _switch_track(self, row: int, shape: np.ndarray, image: np.ndarray) -> None:
        """A new shot began at the candidate's first frame: its frames get the candidate's landmarks."""
        rows = [r for r, _ in self.candidate]
        images = dict(self.recent)
        self.cut_rows.append(rows[0])
        self._start_track()
        for r, s in self.candidate[:-1]:
            i = r - self.offset
            self.status[i], self.shapes[i], self.track[i] = FACE, s, self.track_id
            if r in images:
                self.cache.add(r, images[r], s)
        self._accept(row, shape, image)

    def _start_track(self) -> None:
        self.track_id += 1
        self.cache.new_track()

    def _accept(self, row: int, shape: np.ndarray, image: np.ndarray) -> None:
        self._record(FACE, shape, self.track_id)
        self.cache.add(row, image, shape)
        self.prev = shape
        self.reused_run = 0
        self.candidate = []

    def lose_track(self) -> None:
        """Forget the tracked face (a gap in the source): the next face found starts a new track."""
        self._lose_track()

    def _lose_track(self) -> None:
        self.prev = None
        self.since_detect = self.options.detect_every
        self.reused_run = 0
        self.candidate = []

    def final_rows(self) -> int:
        """Rows before this one can no longer change (a track switch rewrites up to ``confirm - 1``
        rows back); all rows are final once the stream ends."""
        return max(self.offset, self.offset + len(self.status) - (self.options.confirm - 1))

    def trim(self, upto: int) -> None:
        """Forget the records of rows before `upto` (final rows already handed on)."""
        n = max(0, min(upto - self.offset, len(self.status)))
        if n:
            for records in (self.index, self.times, self.status, self.track, self.shapes):
                del records[:n]
            self.offset += n

    def record(self, row: int) -> Tuple[int, float, int, int, np.ndarray]:
        """``(frame index, time s, status, track, (68, 2) shape)`` of a row still held."""
        i = row - self.offset
        return self.index[i], self.times[i], self.status[i], self.track[i], self.shapes[i]

    def _record(self, status: int, shape: np.ndarray, track: int) -> None:
        self.status.append(status)
        self.shapes.append(shape)
        self.track.append(track)

