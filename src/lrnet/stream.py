"""The streaming pipeline: frames in one at a time, a verdict for every block as it completes.

One pipeline serves a live camera or network stream (`lrnet watch`, the web page's Live tab) and
a file (`lrnet detect` feeds it as fast as the decoder goes), so both give the same landmarks and
block scores::

    frames -> Resampler (by timestamp, to the weights' frame rate)
           -> FaceTracker (detection rhythm, 68 landmarks, consistency, shot cuts)
           -> segmenter (runs of one face track; a run of > max_reused reused frames is dropped)
           -> calibrator (per segment: stable face box, 400-px crops, LK + Kalman, normalised)
           -> blocks (the reference's rule, per segment) -> Detector -> events

State is bounded: nothing grows with the stream's length except one float per block (the video
score) unless ``collect=True`` keeps every landmark row for the outputs of `lrnet detect`.

**Look-ahead** (what a frame's result waits for, all of it stated here):

- resampling holds one frame (its interval ends halfway to the next frame);
- the tracker holds ``confirm - 1`` frames (2): a face confirmed away from the track rewrites them;
- a run of reused frames (no landmarks of their own) is held until it ends or exceeds
  ``max_reused`` (10 frames), since a longer run is dropped;
- a segment's face-box size is the mean face size of its first ``block_size`` frames (30; the
  reference takes the mean over the whole video, which no stream can wait for), so those frames
  wait for the first block anyway; later frames are calibrated as they come;
- a block is final when the frame after it arrives (the reference cuts ``range(0, n - B, B)``).

So in the usual case a block's verdict comes 3 frames after its last frame (120 ms at 25 fps).

Events (`Event.to_dict()`, JSON-ready, ``"type"`` first): ``block`` (one per block: times, p(fake)
per branch and merged, the rolling verdict over the last ``window`` blocks, the alert state),
``face_found`` / ``face_lost`` (a segment starts / ends, with the reason), ``cut`` (a shot
boundary), ``alert`` (the alert rule starts to hold), ``resolution`` (the frame size changed),
``gap`` (the source stalled or reconnected: a segment boundary) and ``summary`` (at the end).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from .calibration import (BOX_SCALE, NUM_POINTS, BoxFollower, Calibration, FaceBoxes, TrackState, crop_face,
                          normalise, opencv_lk, stable_face_size, to_crop_space, track_step)
from .detector import Detector
from .landmarker import Landmarker
from .scoring import THRESHOLD, merge_branches
from .segments import FACE, NO_FACE, Segment, StreamSegmenter
from .tracking import MAX_JUMP, ExtractOptions, FaceTracker, VideoStats
from .tracking import _bbox as _face_bbox
from .video import Frame, Resampler, VideoInfo

__all__ = ["Event", "FACE_MODES", "FPS_POLICIES", "FramePlan", "LiveOptions", "StreamPipeline", "StreamRecord", "plan_frame_rate"]

FPS_POLICIES = ("resample", "keep")
FACE_MODES = ("all", "largest")  # follow every face (at least min_face px tall) or only the largest
RESAMPLE_ABOVE = 1.02  # resample a video more than 2 % faster than the weights' frame rate
SLOW_MARGIN = 0.8  # a rate below 0.8 x the weights' is outside the model's range (never interpolated)
FAST_MARGIN = 1.25  # ... as is one above 1.25 x when not resampled (--fps-policy keep)
REGION_MARGIN = 2.0  # a held frame keeps a square of this x the face box around the face (px)
DEFAULT_FPS = 25.0  # frame interval assumed before a stream's rate is known


# ----------------------------------------------------------------------------------- frame rate

@dataclass(frozen=True)
class FramePlan:
    """The frame rate a video is scored at. Rates in frames/s; 0 when unknown."""

    source: float  # the file's nominal rate
    target: Optional[float]  # frames are selected by timestamp at this rate (None: every frame)
    used: float  # the rate of the frames scored
    warning: Optional[str]  # set when `used` is outside the weights' range


def rate_warning(rate: float, model_fps: Optional[float]) -> Optional[str]:
    """The warning for scoring at `rate` with weights trained at `model_fps` (None: in range or unknown)."""
    if model_fps is None or not rate or SLOW_MARGIN * model_fps <= rate <= FAST_MARGIN * model_fps:
        return None
    return (f"frame rate outside the model's range ({rate:.3g} fps scored, weights trained at "
            f"{model_fps:.3g} fps)")


def plan_frame_rate(source_fps: float, model_fps: Optional[float], policy: str = "resample") -> FramePlan:
    """Choose the scoring rate: the weights' `model_fps` for a faster (or unknown-rate) source under
    policy "resample", else the source's own. A rate outside [0.8, 1.25] x `model_fps` gets a warning."""
    if policy not in FPS_POLICIES:
        raise ValueError(f"unknown frame-rate policy {policy!r}; expected one of {FPS_POLICIES}")
    resample = (policy == "resample" and model_fps is not None
                and (not source_fps or source_fps > RESAMPLE_ABOVE * model_fps))
    target = float(model_fps) if resample and model_fps is not None else None
    used = target if target and source_fps else source_fps
    return FramePlan(source_fps, target, used, rate_warning(used, model_fps))


# ---------------------------------------------------------------------------------------- events

@dataclass
class Event:
    """One thing the pipeline reports: a ``type`` and its fields (JSON-ready)."""

    type: str
    data: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.type, **self.data}


@dataclass(frozen=True)
class LiveOptions:
    """How block scores are read as a stream: the rolling window and the alert rule.

    ``window``: blocks in the rolling verdict; ``alert``: ``(k, n)``, alert while k of the last n
    blocks have p(fake) >= 0.5 (None: no alert rule).
    """

    window: int = 10
    alert: Optional[Tuple[int, int]] = (3, 5)

    def check(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1 block")
        if self.alert is not None:
            k, n = self.alert
            if not 1 <= k <= n:
                raise ValueError(f"alert rule {k}/{n}: need 1 <= K <= N")


# ---------------------------------------------------------------------------------------- records

@dataclass
class _Row:
    """One final tracked frame on its way through the segmenter and the calibrator."""

    row: int
    index: int  # frame number in the source
    time: float  # s
    status: int
    track: int
    shape: np.ndarray  # (68, 2) int64, frame px
    region: Optional[Tuple[int, int, np.ndarray]]  # (x0, y0, pixels) around the face


@dataclass
class StreamRecord:
    """Everything a pipeline run with ``collect=True`` kept: the landmark rows of every segment laid
    end to end (time order) and every block, for the outputs of `lrnet detect`.

    ``raw`` ``(rows, 68, 2)`` int64 frame px; ``points``/``detections`` ``(rows, 68, 2)`` int64 in
    400-px crop space; ``boxes`` ``(rows, 3)`` (x1, y1, side) px; ``sequence`` ``(rows, 136)``
    float32; ``times`` s and ``frame_index`` ``(rows,)``; ``segments`` row ranges; ``face_sizes``
    per segment (px). Blocks: ``block_probs`` ``{branch: (blocks,)}``, ``block_segment``,
    ``block_start_row`` ``(blocks,)``.
    """

    raw: List[np.ndarray] = field(default_factory=list)
    points: List[np.ndarray] = field(default_factory=list)
    detections: List[np.ndarray] = field(default_factory=list)
    boxes: List[Tuple[int, int, int]] = field(default_factory=list)
    sequence: List[np.ndarray] = field(default_factory=list)
    times: List[float] = field(default_factory=list)
    frame_index: List[int] = field(default_factory=list)
    segments: List[Segment] = field(default_factory=list)
    face_sizes: List[int] = field(default_factory=list)
    block_segment: List[int] = field(default_factory=list)
    block_start_row: List[int] = field(default_factory=list)

    def calibration(self, lk_rejected: int) -> Calibration:
        """The rows as one `lrnet.calibration.Calibration` (boxes' face size: the longest segment's)."""
        boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 3)
        main = int(np.argmax([len(s) for s in self.segments])) if self.segments else 0
        size = self.face_sizes[main] if self.face_sizes else 0
        return Calibration(np.asarray(self.sequence, np.float32).reshape(-1, 2 * NUM_POINTS),
                           np.asarray(self.points, np.int64).reshape(-1, NUM_POINTS, 2),
                           np.asarray(self.detections, np.int64).reshape(-1, NUM_POINTS, 2),
                           FaceBoxes(boxes[:, 0], boxes[:, 1], boxes[:, 2], size), lk_rejected)


# ------------------------------------------------------------------------------------ one segment

class _Segment:
    """Calibration and block cutting of one segment, one kept row at a time."""

    def __init__(self, number: int, track: int, block_size: int, width: int, height: int, start: float):
        self.number, self.track, self.block_size = number, track, block_size
        self.width, self.height = width, height
        self.start_time = start
        self.waiting: List[_Row] = []  # rows before the face size is fixed
        self.follower: Optional[BoxFollower] = None
        self.face_size = 0
        self.state: Optional[TrackState] = None
        self.rows = 0  # calibrated rows
        self.recent: Deque[Tuple[np.ndarray, float, Optional[float]]] = deque(maxlen=block_size + 1)
        # (sequence row, time s, wall-clock arrival of its frame)
        self.blocks = 0
        self.lk_rejected = 0
        self.padded = 0  # crops that needed pixels outside the kept region (edge-replicated)
        self.last_time = start

    def add(self, row: _Row) -> List[Tuple[_Row, Tuple[int, int, int], np.ndarray, np.ndarray, np.ndarray]]:
        """Take a kept row; return the rows calibrated now: ``(row, box, points, detection, sequence row)``."""
        self.last_time = row.time
        if self.follower is None:
            self.waiting.append(row)
            if len(self.waiting) < self.block_size:
                return []
            return self._fix_size()
        return [self._calibrate(row)]

    def finish(self) -> List[Tuple[_Row, Tuple[int, int, int], np.ndarray, np.ndarray, np.ndarray]]:
        """The segment ended: calibrate what still waits for the face size."""
        return self._fix_size() if self.follower is None and self.waiting else []

    def _fix_size(self):
        self.face_size = stable_face_size(np.stack([r.shape for r in self.waiting]))
        self.follower = BoxFollower(self.face_size, self.width, self.height)
        waiting, self.waiting = self.waiting, []
        return [self._calibrate(r) for r in waiting]

    def _calibrate(self, row: _Row):
        assert self.follower is not None
        box = self.follower.box(row.shape)
        x1, y1, side = box
        crop = self._crop(row, x1, y1, side)
        boxes = FaceBoxes(np.array([x1]), np.array([y1]), np.array([side]), self.face_size)
        detection = to_crop_space(row.shape[None].astype(np.float64), boxes)[0]
        if self.state is None:
            self.state = TrackState(crop, detection.copy(), detection.copy(), np.zeros(NUM_POINTS))
        else:
            self.state, lost = track_step(self.state, crop, detection, opencv_lk)
            self.lk_rejected += lost
        points = self.state.points
        return row, box, points, detection, normalise(points[None])[0]

    def _crop(self, row: _Row, x1: int, y1: int, side: int) -> np.ndarray:
        assert row.region is not None
        x0, y0, pixels = row.region
        h, w = pixels.shape[:2]
        if x1 >= x0 and y1 >= y0 and x1 + side <= x0 + w and y1 + side <= y0 + h:
            return crop_face(pixels, x1 - x0, y1 - y0, side)
        import cv2

        self.padded += 1  # the box outgrew the kept region: replicate its edge (counted, never silent)
        top, left = max(0, y0 - y1), max(0, x0 - x1)
        bottom, right = max(0, y1 + side - (y0 + h)), max(0, x1 + side - (x0 + w))
        padded = cv2.copyMakeBorder(pixels, top, bottom, left, right, cv2.BORDER_REPLICATE)
        return crop_face(padded, x1 - x0 + left, y1 - y0 + top, side)

    def push_row(self, sequence_row: np.ndarray, t: float,
                 arrived: Optional[float]) -> Optional[Tuple[int, np.ndarray, float, float, Optional[float]]]:
        """Append a calibrated row; a block is final when the row after it arrives. Returns ``(block
        number in the segment, (B, 136) block, first and last frame time (s), last frame's arrival)``."""
        self.recent.append((sequence_row, t, arrived))
        self.rows += 1
        b = self.block_size
        if self.rows > (self.blocks + 1) * b:  # the deque holds the block's B rows and the one after
            rows = list(self.recent)[:b]
            number = self.blocks
            self.blocks += 1
            return number, np.stack([r[0] for r in rows]).astype(np.float32), rows[0][1], rows[-1][1], rows[-1][2]
        return None


# ------------------------------------------------------------------------------------ the pipeline

class _Lane:
    """One face followed through the stream: its tracker, segments, calibration, blocks and verdicts."""

    def __init__(self, face: int, tracker: FaceTracker, row_base: int, detector: Detector, live: LiveOptions,
                 max_reused: int, collect: bool):
        self.face = face
        self.tracker = tracker
        self.row_base = row_base  # global row of the tracker's row 0
        self.segmenter = StreamSegmenter(max_reused)
        self.segment: Optional[_Segment] = None
        self.segments = 0
        self.record = StreamRecord() if collect else None
        self.block_probs: Dict[str, List[float]] = {b: [] for b in detector.branches}
        self.window: Deque[float] = deque(maxlen=live.window)
        self.alert_span: Deque[float] = deque(maxlen=live.alert[1] if live.alert else 1)
        self.alerting = False
        self.stats = tracker.stats
        self.lk_rejected = 0
        self.padded = 0
        self.first_time: Optional[float] = None  # first and last time (s) with a kept row
        self.last_time = 0.0
        self.boxes: Deque[np.ndarray] = deque(maxlen=300)  # recent landmark boxes (x0, y0, x1, y1), px
        self.idle = 0  # selected frames since this face was last seen

    @property
    def blocks(self) -> int:
        return len(next(iter(self.block_probs.values())))


class StreamPipeline:
    """Frames in (`push`), events out, bounded state. See the module docstring for the look-ahead.

    `detector`: the verdict (`lrnet.detector.Detector`); `options`: tracking settings
    (`ExtractOptions`: detection rhythm, ``max_reused``, ``confirm`` ...; its ``fps`` is ignored:
    the frame-rate plan comes from `fps_policy`, the weights' rate and `source_fps`, the nominal
    rate when known, 0 for a live source); `live`: rolling window and alert rule; `collect`: keep
    every landmark row and block (`StreamRecord`, per face) for the outputs of `lrnet detect`.

    Faces: the largest face is followed as `lrnet.tracking.FaceTracker` follows one face (its
    detector rhythm decides when faces are looked for). With ``faces="all"`` every other face the
    detector finds, at least `min_face` px tall (its detection box), no nearer than half a face to
    a face already followed, is followed too (up to `max_faces`), with the boxes of those same
    detections: each face has its own track, segments, calibration, blocks and verdict, and events
    name it (``"face"``). A face unseen for ``RETIRE_FRAMES`` frames is let go (its results kept).
    """

    RETIRE_FRAMES = 250  # selected frames (10 s at 25 fps) after which a face no longer seen is let go

    def __init__(self, detector: Detector, options: Optional[ExtractOptions] = None,
                 live: Optional[LiveOptions] = None, *, source_fps: float = 0.0, fps_policy: str = "resample",
                 collect: bool = False, landmarker: Optional[Landmarker] = None, name: str = "stream",
                 faces: str = "all", min_face: int = 80, max_faces: int = 8):
        if faces not in FACE_MODES:
            raise ValueError(f"unknown faces mode {faces!r}; expected one of {FACE_MODES}")
        self.detector = detector
        self.options = replace(options or ExtractOptions(), fps=None)
        self.options.check()
        self.live = live or LiveOptions()
        self.live.check()
        self.plan = plan_frame_rate(source_fps, detector.fps, fps_policy)
        self.resampler = Resampler(self.plan.target)
        self.collect = collect
        self.landmarker = landmarker
        self.name = name
        self.faces_mode, self.min_face, self.max_faces = faces, min_face, max_faces
        self.stats = VideoStats(video=name, fps=source_fps)  # frames of the whole source
        self.size: Optional[Tuple[int, int]] = None
        self.images: Deque[Tuple[int, np.ndarray]] = deque()  # (row, image) of rows not yet final everywhere
        self.rows = 0  # selected frames so far (global row numbers)
        self.lanes: List[_Lane] = []
        self.retired: List[_Lane] = []
        self.next_face = 0
        self.alerts = 0
        self.cuts: List[float] = []
        self.frame_times: Deque[float] = deque(maxlen=60)  # recent selected-frame times, for the frame interval
        self.arrival: Dict[int, float] = {}  # row -> wall-clock time it was pushed (latency)
        self.latencies: Deque[float] = deque(maxlen=10_000)
        self.first_time: Optional[float] = None
        self.last_time = 0.0
        self.t_calibration = 0.0
        self.t_scoring = 0.0
        self.closed = False

    # -------------------------------------------------------------------------------- input

    def push(self, frame: Frame) -> List[Event]:
        """Take the next decoded frame (in time order); return the events it completed."""
        if self.closed:
            raise RuntimeError("the pipeline is closed")
        self.stats.frames += 1
        events: List[Event] = []
        for kept in self.resampler.push(frame):
            events += self._selected(kept)
        return events

    def gap(self, reason: str) -> List[Event]:
        """The source stalled or reconnected: what is held is finished and the next frame starts a new
        segment (a gap is never bridged by frozen landmarks)."""
        events = self._drain_resampler()
        events += self._end_trackers(f"gap in the source ({reason})")
        events.append(Event("gap", {"time_s": round(self.last_time, 3), "reason": reason}))
        return events

    def close(self) -> List[Event]:
        """End of the stream: flush everything held; the last event is the ``summary``."""
        if self.closed:
            return []
        events = self._drain_resampler()
        events += self._end_trackers("end of the stream")
        self.closed = True
        events.append(Event("summary", self.summary()))
        return events

    def _drain_resampler(self) -> List[Event]:
        events: List[Event] = []
        for kept in self.resampler.close():
            events += self._selected(kept)
        return events

    # ----------------------------------------------------------------------------- tracking

    def _selected(self, frame: Frame) -> List[Event]:
        events: List[Event] = []
        h, w = frame.image.shape[:2]
        if self.size != (w, h):
            if self.size is not None:
                events += self._end_trackers("the frame size changed")
                events.append(Event("resolution", {"time_s": round(frame.time, 3), "width": w, "height": h,
                                                   "previous": list(self.size)}))
            self.size = (w, h)
            self.stats.width, self.stats.height = w, h
            for lane in self.lanes:
                lane.tracker, lane.row_base = self._tracker(lane.stats, follower=lane.face != self.lanes[0].face), self.rows
            if not self.lanes:
                self._new_lane(follower=False)
        if self.first_time is None:
            self.first_time = frame.time
        self.last_time = frame.time
        self.frame_times.append(frame.time)
        self.stats.selected += 1
        row = self.rows
        self.rows += 1
        self.arrival[row] = time.perf_counter()
        self.images.append((row, frame.image))
        lead = self.lanes[0]
        cuts_before = len(lead.tracker.cut_rows)
        lead.tracker.step(frame)
        if len(lead.tracker.cut_rows) > cuts_before:
            self.stats.cuts += 1
        found = lead.tracker.found
        if self.faces_mode == "all":
            events += self._follow_others(frame, found)
        for lane in list(self.lanes):
            events += self._hand_on(lane, lane.tracker.final_rows(), cuts=lane is lead)
        self._forget_images()
        return events

    def _follow_others(self, frame: Frame, found: Optional[List]) -> List[Event]:
        """Step every other face's tracker with the leading tracker's detections, and start following
        faces no tracker claims."""
        events: List[Event] = []
        free = None if found is None else [b for b in found if not self._claimed(self.lanes[0], b)]
        for lane in self.lanes[1:]:
            offered = None if free is None else [b for b in free if b[3] - b[1] >= self.min_face]
            lane.tracker.step(frame, offered)
            if free is not None:
                free = [b for b in free if not self._claimed(lane, b)]
        for box in free or []:
            if box[3] - box[1] < self.min_face or len(self.lanes) >= self.max_faces:
                continue
            lane = self._new_lane(follower=True)
            lane.tracker.step(frame, [box])
            free = [b for b in (free or []) if not self._claimed(lane, b)]
        return events

    @staticmethod
    def _claimed(lane: _Lane, box) -> bool:
        prev = lane.tracker.prev
        if prev is None:
            return False
        centre, size = _face_bbox(prev)
        return bool(np.hypot((box[0] + box[2]) / 2 - centre[0], (box[1] + box[3]) / 2 - centre[1]) <= MAX_JUMP * size)

    def _tracker(self, stats: VideoStats, follower: bool) -> FaceTracker:
        assert self.size is not None
        info = VideoInfo(self.name, self.size[0], self.size[1], 0, self.stats.fps, 0.0)
        tracker = FaceTracker(self.options, info, stats, self.landmarker, keep_regions=False)
        tracker.follower = follower
        return tracker

    def _new_lane(self, follower: bool) -> _Lane:
        stats = self.stats if not follower else VideoStats(video=self.name, fps=self.stats.fps)
        # its row 0 is the current frame: a follower is made after that frame's row was counted
        lane = _Lane(self.next_face, self._tracker(stats, follower), self.rows - (1 if follower else 0),
                     self.detector, self.live, self.options.max_reused, self.collect)
        self.next_face += 1
        self.lanes.append(lane)
        return lane

    def _forget_images(self) -> None:
        oldest = min((lane.row_base + lane.tracker.offset for lane in self.lanes), default=self.rows)
        while self.images and self.images[0][0] < oldest:
            self.images.popleft()

    def _end_trackers(self, reason: str) -> List[Event]:
        """Hand on every held row of every face, close their open segments and forget their tracks."""
        events: List[Event] = []
        for lane in self.lanes:
            tracker = lane.tracker
            events += self._hand_on(lane, tracker.offset + len(tracker.status), cuts=lane is self.lanes[0])
            events += self._act(lane, lane.segmenter.close(reason))
            tracker.lose_track()  # the next face found starts a new track
        self._forget_images()
        return events

    def _hand_on(self, lane: _Lane, upto: int, cuts: bool) -> List[Event]:
        """Rows of `lane`'s tracker before `upto` (tracker numbering) are final: pass them on."""
        tracker = lane.tracker
        events: List[Event] = []
        cut_rows = set(tracker.cut_rows[-8:]) if cuts else set()
        images = {r: img for r, img in self.images}
        for local in range(tracker.offset, upto):
            row = lane.row_base + local
            index, t, status, track, shape = tracker.record(local)
            if local in cut_rows:
                self.cuts.append(float(t))
                events.append(Event("cut", {"time_s": round(float(t), 3)}))
            image = images.get(row)
            region = _region(image, shape) if image is not None and status != NO_FACE else None
            lane.idle = 0 if status != NO_FACE else lane.idle + 1
            events += self._act(lane, lane.segmenter.push(_Row(row, int(index), float(t), int(status), int(track),
                                                               shape, region), status, track))
        tracker.trim(upto)
        if lane is not self.lanes[0] and lane.idle > self.RETIRE_FRAMES and lane.segment is None:
            self.lanes.remove(lane)  # let go of a face no longer seen; its results stay
            self.retired.append(lane)
        return events

    # ---------------------------------------------------------------------------- segmenter

    def _act(self, lane: _Lane, actions) -> List[Event]:
        """Act on `lrnet.segments.StreamSegmenter`'s decisions for `lane`."""
        events: List[Event] = []
        for action, row, detail in actions:
            if action == "end":
                events += self._end_segment(lane, str(detail))
            elif action == "drop":
                if lane is self.lanes[0]:
                    self.arrival.pop(row.row, None)
                if row.status == NO_FACE:
                    lane.stats.skipped += 1
                else:
                    lane.stats.dropped += 1
            else:
                if row.status == FACE:
                    lane.stats.landmarked += 1
                else:
                    lane.stats.reused += 1
                events += self._kept(lane, row, bool(detail))
        return events

    def _kept(self, lane: _Lane, row: _Row, new_segment: bool) -> List[Event]:
        events: List[Event] = []
        if new_segment and lane.segment is not None:
            events += self._end_segment(lane, "new face track")
        if lane.segment is None:
            assert self.size is not None
            lane.segment = _Segment(lane.segments, row.track, self.detector.block_size, *self.size, row.time)
            lane.segments += 1
            if lane.record is not None:
                start = len(lane.record.times)
                lane.record.segments.append(Segment(start, start))
            events.append(Event("face_found", {"time_s": round(row.time, 3), "face": lane.face,
                                               "segment": lane.segment.number}))
        if lane.first_time is None:
            lane.first_time = row.time
        lane.last_time = row.time
        lo, hi = row.shape.min(axis=0), row.shape.max(axis=0)
        lane.boxes.append(np.concatenate([lo, hi]))
        started = time.perf_counter()
        done = lane.segment.add(row)
        self.t_calibration += time.perf_counter() - started
        return events + self._calibrated(lane, done)

    def _end_segment(self, lane: _Lane, reason: str) -> List[Event]:
        segment = lane.segment
        if segment is None:
            return []
        started = time.perf_counter()
        done = segment.finish()
        self.t_calibration += time.perf_counter() - started
        events = self._calibrated(lane, done)
        lane.segment = None
        lane.lk_rejected += segment.lk_rejected
        lane.padded += segment.padded
        if lane.record is not None:
            lane.record.face_sizes.append(segment.face_size)
        events.append(Event("face_lost", {"time_s": round(segment.last_time + self._frame_interval(), 3),
                                          "face": lane.face, "segment": segment.number, "frames": segment.rows,
                                          "blocks": segment.blocks, "reason": reason}))
        return events

    # --------------------------------------------------------------------------- calibrated rows

    def _calibrated(self, lane: _Lane, done) -> List[Event]:
        events: List[Event] = []
        segment = lane.segment
        assert segment is not None
        for row, box, points, detection, sequence_row in done:
            if lane.record is not None:
                rec = lane.record
                rec.raw.append(row.shape)
                rec.points.append(points)
                rec.detections.append(detection)
                rec.boxes.append(box)
                rec.sequence.append(sequence_row)
                rec.times.append(row.time)
                rec.frame_index.append(row.index)
                last = rec.segments[-1]
                rec.segments[-1] = Segment(last.start, last.stop + 1)
            arrived = self.arrival.get(row.row) if lane is self.lanes[0] else None
            if lane is self.lanes[0]:
                self.arrival.pop(row.row, None)
            block = segment.push_row(sequence_row, row.time, arrived)
            if block is not None:
                events += self._score(lane, segment, block)
        return events

    def _frame_interval(self) -> float:
        if self.plan.target:
            return 1.0 / self.plan.target
        t = self.frame_times
        if len(t) > 1 and t[-1] > t[0]:
            return (t[-1] - t[0]) / (len(t) - 1)
        return 1.0 / (self.plan.source or DEFAULT_FPS)

    def _score(self, lane: _Lane, segment: _Segment,
               block: Tuple[int, np.ndarray, float, float, Optional[float]]) -> List[Event]:
        number, blocks, start, last, arrived = block
        started = time.perf_counter()
        probs = self.detector.branch_probabilities(blocks[None])
        merged = float(merge_branches(probs)[0])
        self.t_scoring += time.perf_counter() - started
        index = lane.blocks
        for b in self.detector.branches:
            lane.block_probs[b].append(float(probs[b][0]))
        if lane.record is not None:
            lane.record.block_segment.append(segment.number)
            lane.record.block_start_row.append(len(lane.record.times) - 1 - self.detector.block_size)
        lane.window.append(merged)
        lane.alert_span.append(merged)
        rolling = self._rolling(lane)
        raised = False
        if self.live.alert is not None:
            k, n = self.live.alert
            holds = sum(p >= THRESHOLD for p in lane.alert_span) >= k
            raised = holds and not lane.alerting
            lane.alerting = holds
            self.alerts += raised
        latency = time.perf_counter() - arrived if arrived is not None else None
        if latency is not None:
            self.latencies.append(latency)
        data: Dict[str, Any] = {"index": index, "face": lane.face, "segment": segment.number,
                                "start_s": round(start, 3), "end_s": round(last + self._frame_interval(), 3),
                                "p_fake": round(merged, 6),
                                **{f"p_{b}": round(float(probs[b][0]), 6) if b in probs else None
                                   for b in ("g1", "g2")},
                                "rolling": rolling, "alert": lane.alerting,
                                "latency_s": None if latency is None else round(latency, 4)}
        events = [Event("block", data)]
        if raised:
            k, n = self.live.alert or (0, 0)
            data["alert_raised"] = f"{k} of the last {n} blocks look fake" + (f" (face {lane.face})"
                                                                             if self.next_face > 1 else "")
            events.append(Event("alert", {"time_s": data["end_s"], "face": lane.face, "block": index,
                                          "rule": f"{k}/{n}", "message": data["alert_raised"]}))
        return events

    def _rolling(self, lane: _Lane) -> Dict[str, Any]:
        scores = np.asarray(lane.window, dtype=np.float32)
        score, interval, call, verdict = self.detector.group_verdicts(scores, np.zeros(len(scores), np.int64), 1)
        return {"blocks": len(scores), "score": round(float(score[0]), 6), "verdict": str(verdict[0]),
                "call": str(call[0]), "interval": [round(float(v), 6) for v in interval[0]]}

    # ------------------------------------------------------------------------------- summary

    def all_lanes(self) -> List[_Lane]:
        """Every face followed, in the order they were found (let-go ones included)."""
        return sorted(self.lanes + self.retired, key=lambda lane: lane.face)

    def face_result(self, lane: _Lane):
        """One face's `lrnet.scoring.VideoResult` over all its blocks (the detector's aggregation)."""
        per_branch = {b: np.asarray(v, np.float32) for b, v in lane.block_probs.items()}
        return self.detector.judge(per_branch, lane.stats.landmarked + lane.stats.reused, self.name)

    def main_lane(self) -> _Lane:
        """The most suspicious face: the highest video score among faces with a block (ties: more
        blocks, then the earlier face); the largest face when none has a block."""
        scored = [lane for lane in self.all_lanes() if lane.blocks]
        if not scored:
            return self.all_lanes()[0] if self.all_lanes() else self.lanes[0]
        return max(scored, key=lambda lane: (float(self.face_result(lane).score), lane.blocks, -lane.face))

    def video_result(self):
        """The stream's `lrnet.scoring.VideoResult`: that of its most suspicious face (`main_lane`)."""
        return self.face_result(self.main_lane())

    def faces(self) -> List[Dict[str, Any]]:
        """Per face: id, time span (s), median landmark box (x0, y0, x1, y1 px), blocks, score, verdict."""
        out = []
        for lane in self.all_lanes():
            if lane.first_time is None:
                continue
            result = self.face_result(lane)
            box = np.median(np.asarray(lane.boxes), axis=0) if lane.boxes else np.zeros(4)
            out.append({"face": lane.face, "first_s": round(lane.first_time, 3),
                        "last_s": round(lane.last_time + self._frame_interval(), 3),
                        "box": [int(v) for v in np.rint(box)], "frames": lane.stats.landmarked + lane.stats.reused,
                        "blocks": result.blocks,
                        "score": None if result.score != result.score else round(float(result.score), 6),
                        "verdict": result.verdict, "call": result.call,
                        "interval": None if result.interval is None else [round(v, 6) for v in result.interval]})
        return out

    def summary(self) -> Dict[str, Any]:
        """What a ``summary`` event says: the verdict of the most suspicious face, every face, counts."""
        main = self.main_lane() if (self.lanes or self.retired) else None
        result = self.video_result() if main is not None else self.detector.judge({}, 0, self.name)
        lat = np.asarray(self.latencies) if self.latencies else None
        stats = main.stats if main is not None else self.stats
        return {**result.to_dict(), "face": None if main is None else main.face, "faces": self.faces(),
                "decoded_frames": self.stats.frames, "selected_frames": self.stats.selected,
                "landmarked": stats.landmarked, "reused": stats.reused,
                "skipped": self.stats.selected - stats.landmarked - stats.reused - stats.dropped,
                "dropped_frames": stats.dropped, "segments": 0 if main is None else main.segments,
                "cuts": [round(c, 3) for c in self.cuts], "alerts": self.alerts,
                "duration_s": round((self.last_time - self.first_time) + self._frame_interval(), 3)
                if self.first_time is not None else 0.0,
                "fps_used": self.plan.used or _rate(self.frame_times), "fps_warning": self.plan.warning,
                "latency_s": None if lat is None else {"p50": round(float(np.percentile(lat, 50)), 4),
                                                       "p95": round(float(np.percentile(lat, 95)), 4)},
                **self.detector.describe()}


def _rate(times: Deque[float]) -> float:
    t = list(times)
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


def _region(image: np.ndarray, shape: np.ndarray) -> Tuple[int, int, np.ndarray]:
    """A copy of the square around the face, ``REGION_MARGIN`` x its face box, clipped to the frame."""
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    centre = np.floor((lo + hi) / 2)
    size = float((hi - lo).max())
    half = int(math.ceil(0.5 * BOX_SCALE * REGION_MARGIN * max(size, 1.0))) + 3
    h, w = image.shape[:2]
    x0, y0 = max(0, int(centre[0]) - half), max(0, int(centre[1]) - half)
    return x0, y0, image[y0:min(h, y0 + 2 * half + 2), x0:min(w, x0 + 2 * half + 2)].copy()
