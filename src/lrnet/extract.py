"""Landmark extraction for datasets: a whole video -> raw and calibrated landmarks, segment by segment.

This is the offline path of ``lrnet extract`` and `lrnet.batch.extract_folder` (datasets for
training). It follows the reference's calibration exactly: a segment's face-box size is the mean
face size over the *whole* segment, so the video is tracked first and calibrated after. Verdicts
(``lrnet detect``, ``lrnet watch``, ``lrnet serve``) use `lrnet.stream.StreamPipeline` instead,
which fixes the size from a segment's first block so it can run live (see its docstring); on the
sample videos the two agree on every verdict.

Per video (`extract_video`):

1. *Decode* (`lrnet.video.VideoReader`: a background thread), optionally resampled by timestamp
   to a target frame rate (``options.fps``): skipped frames are decoded but never landmarked.
2. *Track* the face frame by frame (`lrnet.tracking.FaceTracker`: detection rhythm, 68 landmarks,
   consistency, shot cuts) and turn its per-frame records into segments
   (`lrnet.segments.find_segments`).
3. *Calibrate* (`lrnet.calibration`) each segment on its own. The face regions needed are kept
   from the first decode (with a margin); if a final stable box does not fit them (or the cache
   would exceed `cache_mb`), the video is decoded a second time instead, so the result is exact.

A landmark file holds one sequence per video: `VideoLandmarks.sequence`, the longest segment.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from .calibration import Calibration, FaceBoxes, calibrate_crops, concat_calibrations, crop_face, stable_face_boxes
from .errors import LrnetError
from .landmarker import PREDICTOR_FILE, default_landmarker, predictor_path  # noqa: F401  (re-exported)
from .segments import FACE, NO_FACE, REUSED, Segment, find_segments, longest
from .tracking import ExtractOptions, FaceTracker, RegionCache, VideoStats  # noqa: F401  (re-exported)
from .video import VideoReader, prefetch, read_frames
from .vocab import VIDEO_SUFFIXES, PathLike  # noqa: F401  (VIDEO_SUFFIXES re-exported)




def load_models() -> None:
    """Load the face detector and landmark model now (e.g. before timing a run)."""
    default_landmarker()


@dataclass
class VideoLandmarks:
    """Extraction result: the landmark rows kept, segment by segment, laid end to end in time order.

    ``raw``: ``(frames, 68, 2)`` int64 landmarks in frame pixels. ``times``: ``(frames,)`` s, the
    presentation time of each row's source frame; ``frame_index``: ``(frames,)`` its number in the
    video (after resampling and dropping, so both can have gaps). ``segments``: row ranges, in
    order, covering all rows. ``calibration``: every segment calibrated on its own, rows end to end.
    ``cuts``: times (s) of the shot boundaries seen.
    """

    raw: np.ndarray
    calibration: Optional[Calibration]
    stats: VideoStats
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # empty: frame_index / nominal fps
    frame_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # empty: consecutive
    segments: List[Segment] = field(default_factory=list)  # empty: one segment of all rows
    cuts: List[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.raw)
        if len(self.frame_index) != n:
            self.frame_index = self.stats.skipped + np.arange(n, dtype=np.int64)
        if len(self.times) != n:
            self.times = self.frame_index / (self.stats.fps or 25.0)
        if not self.segments and n:
            self.segments = [Segment(0, n)]

    def calibrated(self) -> Calibration:
        """The calibration (ValueError when extracted with ``calibrate=False``)."""
        if self.calibration is None:
            raise ValueError("these landmarks were extracted without calibration")
        return self.calibration

    @property
    def sequence(self) -> np.ndarray:
        """The calibrated ``(frames, 136)`` float32 sequence of the longest segment (the earliest among
        equals): what a landmark file stores, one continuous shot. All of it when there is one segment."""
        seg = self.segments[longest(self.segments)]
        return self.calibrated().sequence[seg.start:seg.stop]

    def segment_sequences(self) -> List[np.ndarray]:
        """The calibrated ``(frames, 136)`` sequence of each segment."""
        return [self.calibrated().sequence[s.start:s.stop] for s in self.segments]

    def points_in_frame(self) -> np.ndarray:
        """Calibrated points in frame pixels, ``(frames, 68, 2)`` float64, aligned with ``raw``."""
        return self.calibrated().points_in_frame()


# ------------------------------------------------------------------------------ per video


ProgressFn = Callable[[str, float], None]  # (stage, fraction done in [0, 1])


def extract_video(path: PathLike, options: Optional[ExtractOptions] = None, calibrate: bool = True,
                  progress: Optional[ProgressFn] = None) -> VideoLandmarks:
    """Raw and calibrated landmarks of the single (largest) face in a video, segment by segment.

    Raises `LrnetError` naming the video when it is missing, too large, cannot be decoded or shows
    no face. `progress(stage, fraction)` is called with stages "landmarks" (decode + landmarks,
    about every 25 frames) and "calibration" (0 and 1).
    """
    options = options or ExtractOptions()
    options.check()
    started = time.perf_counter()
    path = Path(path)
    stats = VideoStats(video=str(path))
    tracker = _track_video(path, options, stats, progress)
    result, rows = _assemble(tracker, stats)
    if progress is not None:
        progress("landmarks", 1.0)
    if calibrate:
        if progress is not None:
            progress("calibration", 0.0)
        t = time.perf_counter()
        result.calibration = _calibrate_segments(path, result, rows, tracker.cache, stats)
        stats.t_calibration = time.perf_counter() - t
        stats.lk_rejected = result.calibration.lk_rejected
        if progress is not None:
            progress("calibration", 1.0)
    stats.t_total = time.perf_counter() - started
    return result


def _track_video(path: Path, options: ExtractOptions, stats: VideoStats,
                 progress: Optional[ProgressFn]) -> FaceTracker:
    """Decode (resampled to ``options.fps``) and track the face through the whole video."""
    with VideoReader(path, options.max_frames, options.fps, options.frame_limit) as reader:
        info = reader.info
        stats.width, stats.height, stats.fps = info.width, info.height, info.fps
        stats.fps_used = options.fps if options.fps and (not info.fps or info.fps > options.fps) else info.fps
        tracker = FaceTracker(options, info, stats)
        expected = info.frames if options.max_frames is None else min(info.frames, options.max_frames)
        for frame in reader:
            tracker.step(frame)
            if progress is not None and len(tracker.status) % 25 == 0:
                progress("landmarks", min(1.0, (frame.index + 1) / expected) if expected else 0.0)
        stats.frames, stats.t_decode = reader.decoded, reader.seconds
    if stats.frames == 0:
        raise LrnetError(f"{path}: no frame could be decoded (unreadable or not a video file)")
    return tracker


def _assemble(tracker: FaceTracker, stats: VideoStats) -> Tuple[VideoLandmarks, np.ndarray]:
    """Segments from the tracker's per-frame records -> (`VideoLandmarks` without calibration,
    the selected-frame rows kept, in order)."""
    status = np.array(tracker.status, dtype=np.int64)
    segments, kept = find_segments(status, np.array(tracker.track, dtype=np.int64), tracker.options.max_reused)
    stats.selected = len(status)
    stats.landmarked = int((kept & (status == FACE)).sum())
    stats.reused = int((kept & (status == REUSED)).sum())
    stats.dropped = int((~kept & (status == REUSED)).sum())
    stats.skipped = int((status == NO_FACE).sum())
    stats.segments, stats.cuts = len(segments), len(tracker.cut_rows)
    if not segments:
        raise LrnetError(f"{stats.video}: no face found in {stats.frames} frames")
    rows = np.flatnonzero(kept)
    times = np.array(tracker.times, dtype=np.float64)
    lengths = np.array([len(s) for s in segments])
    ends = np.cumsum(lengths)
    laid = [Segment(int(e - n), int(e)) for n, e in zip(lengths, ends)]
    raw = np.stack([tracker.shapes[r] for r in rows])
    result = VideoLandmarks(raw, None, stats, times[rows], np.array(tracker.index, dtype=np.int64)[rows], laid,
                            [float(times[r]) for r in tracker.cut_rows])
    return result, rows


def _calibrate_segments(path: Path, result: VideoLandmarks, rows: np.ndarray, cache: RegionCache,
                        stats: VideoStats) -> Calibration:
    """Calibrate each segment on its own, from the cached face regions or a second decode."""
    per_segment = [stable_face_boxes(result.raw[s.start:s.stop], stats.width, stats.height)
                   for s in result.segments]
    boxes = FaceBoxes.concat(per_segment)
    if cache.covers(rows, boxes):
        crops = prefetch(cache.crops(rows, boxes), name="lrnet-crop")
    else:
        stats.decoded_twice = True
        crops = prefetch(_crops_from_video(path, result.frame_index, boxes), name="lrnet-crop")
    try:
        parts = [calibrate_crops(itertools.islice(crops, len(s)), result.raw[s.start:s.stop], b)
                 for s, b in zip(result.segments, per_segment)]
    finally:
        crops.close()
    return concat_calibrations(parts)


def _crops_from_video(path: Path, frame_index: np.ndarray, boxes: FaceBoxes) -> Iterator[np.ndarray]:
    """Decode the video again and crop the face box of each wanted frame (``frame_index`` increasing)."""
    j = 0
    for i, frame in enumerate(read_frames(path, int(frame_index[-1]) + 1)):
        if i == frame_index[j]:
            yield crop_face(frame, int(boxes.x1[j]), int(boxes.y1[j]), int(boxes.side[j]))
            j += 1
            if j == len(frame_index):
                return
