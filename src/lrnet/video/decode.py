"""Sequential decoding with OpenCV: frames in order, timed, optionally resampled, in a background thread.

`read_frames` decodes a video's frames in order. `VideoReader` decodes in a background producer
thread (`prefetch`) that overlaps decoding with the caller's work, times each frame and selects
frames by timestamp (`keep_mask`, `select_frames`: resampling a faster video down to a model's
frame rate).

Frame times come from the decoder position (``CAP_PROP_POS_MSEC``, i.e. the frame's presentation
timestamp), so variable-frame-rate files are timed by their timestamps, not by the nominal rate; a
missing or non-increasing timestamp is replaced by the previous one plus one nominal frame interval.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Iterable, Iterator, List, Optional, TypeVar

import numpy as np

from ..errors import LrnetError
from ..vocab import PathLike
from .backends import DEFAULT_FPS, open_capture
from .probe import MAX_FRAMES, MAX_PIXELS, capture_info, check_video

__all__ = ["Frame", "QUEUE_BYTES", "Resampler", "VideoReader", "keep_mask", "prefetch", "read_frames", "select_frames"]

T = TypeVar("T")

QUEUE_BYTES = 256 << 20  # decoded frames waiting in the producer queue use at most this (>= 2 frames)
_GRID_EPS = 1e-6  # tolerance, in output frame intervals, of the timestamp grid test


@dataclass
class Frame:
    """One decoded frame: its number in the video, presentation time (s) and BGR pixels."""

    index: int
    time: float
    image: np.ndarray  # (height, width, 3) uint8


def read_frames(path: PathLike, max_frames: Optional[int] = None) -> Generator[np.ndarray, None, None]:
    """Decode a video's frames (BGR uint8), in order; `LrnetError` when it cannot be opened."""
    cap = open_capture(path)
    try:
        n = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            yield frame
    finally:
        cap.release()


# ------------------------------------------------------------------------ selection by timestamp


def _grid_point_within(lo, hi, fps: float):
    """Whether some output time ``k / fps`` (integer k >= 0) lies in ``[lo, hi)``; scalars or arrays (s).

    The grid test behind `keep_mask` and `select_frames` (one rule for both).
    """
    k = np.maximum(np.ceil(np.asarray(lo, dtype=np.float64) * fps - _GRID_EPS), 0.0)
    return k < np.asarray(hi, dtype=np.float64) * fps - _GRID_EPS


def keep_mask(times: np.ndarray, fps: float) -> np.ndarray:
    """Frames kept when resampling to `fps`: for each output time, the nearest source frame.

    ``times``: ``(frames,)`` increasing presentation times (s). Output times are ``t0 + k / fps``.
    Frame i owns the interval between the midpoints to its neighbours; it is kept when an output
    time falls in it. A source at or below `fps` keeps every frame (nothing is ever duplicated or
    interpolated); at 2x every other frame is kept. Returns ``(frames,)`` bool.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"expected a (frames,) array of times, got shape {t.shape}")
    if len(t) == 0:
        return np.zeros(0, bool)
    t = t - t[0]
    mid = (t[1:] + t[:-1]) / 2
    lo = np.concatenate([[-np.inf], mid])
    hi = np.concatenate([mid, [_last_end(t[-2] if len(t) > 1 else None, t[-1])]])
    return _grid_point_within(lo, hi, fps)


def _last_end(previous: Optional[float], last: float) -> float:
    """End of the last frame's interval: as far past it as the midpoint before it (inf for a lone frame)."""
    return math.inf if previous is None else last + (last - previous) / 2


class Resampler:
    """`keep_mask` one frame at a time: `push` a frame, get back the frames kept so far.

    Holds one frame back (its interval ends halfway to the next frame); `close` releases it.
    ``fps`` None keeps every frame. The one rule behind `select_frames` and live streams.
    """

    def __init__(self, fps: Optional[float]):
        self.fps = fps
        self.pending: Optional[Frame] = None
        self._before: Optional[float] = None  # time of the frame before `pending`, from the first frame
        self._t0 = self._lo = 0.0

    def push(self, frame: Frame) -> List[Frame]:
        if not self.fps:
            return [frame]
        kept = []
        if self.pending is None:
            self._t0, self._lo = frame.time, -math.inf
        else:
            mid = (self.pending.time + frame.time) / 2 - self._t0
            if _grid_point_within(self._lo, mid, self.fps):
                kept.append(self.pending)
            self._lo, self._before = mid, self.pending.time - self._t0
        self.pending = frame
        return kept

    def close(self) -> List[Frame]:
        """The held frame, if the grid keeps it; the resampler then starts afresh (a new time origin)."""
        pending, self.pending = self.pending, None
        if pending is None or not self.fps:
            return []
        keep = _grid_point_within(self._lo, _last_end(self._before, pending.time - self._t0), self.fps)
        self._before = None
        return [pending] if keep else []


def select_frames(frames: Iterable[Frame], fps: Optional[float]) -> Iterator[Frame]:
    """Streaming `keep_mask`: yield the frames kept when resampling to `fps` (None: all).

    Holds one frame back (its interval ends halfway to the next frame).
    """
    resampler = Resampler(fps)
    for frame in frames:
        yield from resampler.push(frame)
    yield from resampler.close()


# --------------------------------------------------------------------------- producer thread


def prefetch(items: Iterable[T], depth: int = 8, name: str = "lrnet-prefetch") -> Generator[T, None, None]:
    """Produce `items` in a background thread, at most `depth` ahead of the consumer.

    OpenCV decoding and resizing release the GIL, so the producer overlaps the consumer's work on
    another core. An exception in the producer is raised in the consumer. Closing the generator
    (or leaving a ``for`` loop over it by an exception) stops and joins the thread.
    """
    q: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # surfaced in the consumer
            put(exc)
            return
        put(done)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class VideoReader:
    """Decode a video in a background thread, timed, optionally resampled to `fps` by timestamp.

    Iterating yields the selected `Frame`s; frames skipped by the selection are decoded but not
    queued. ``decoded`` counts decoded frames, ``seconds`` the time spent in the decoder. The queue
    holds at most ``QUEUE_BYTES`` of frames (at least 2, at most 16). Use as a context manager:
    leaving it stops the thread before the file is closed.
    """

    def __init__(self, path: PathLike, max_frames: Optional[int] = None, fps: Optional[float] = None,
                 frame_limit: int = MAX_FRAMES, max_pixels: int = MAX_PIXELS):
        self.path = Path(path)
        self._cap = open_capture(self.path)
        try:
            self.info = capture_info(self.path, self._cap)
            check_video(self.info, max_frames, frame_limit, max_pixels)
        except BaseException:
            self._cap.release()
            raise
        self.max_frames = max_frames
        self.frame_limit = frame_limit
        self.fps = fps
        self.decoded = 0
        self.seconds = 0.0
        frame_bytes = max(1, self.info.width * self.info.height * 3)
        self._depth = int(min(16, max(2, QUEUE_BYTES // frame_bytes)))
        self._stream: Optional[Generator[Frame, None, None]] = None

    def _decode(self) -> Iterator[Frame]:
        import cv2

        step = 1.0 / (self.info.fps or DEFAULT_FPS)
        previous = -math.inf
        while self.max_frames is None or self.decoded < self.max_frames:
            started = time.perf_counter()
            ok, image = self._cap.read()
            position = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            self.seconds += time.perf_counter() - started
            if not ok:
                return
            if self.decoded >= self.frame_limit:
                raise LrnetError(f"{self.path}: more than {self.frame_limit} frames (the header said "
                                 f"{self.info.frames}); use --max-frames or split the video")
            if not (math.isfinite(position) and position > previous):
                position = previous + step if math.isfinite(previous) else 0.0
            previous = position
            yield Frame(self.decoded, position, image)
            self.decoded += 1

    def __iter__(self) -> Iterator[Frame]:
        if self._stream is not None:
            raise RuntimeError("a VideoReader is iterated once")
        self._stream = prefetch(select_frames(self._decode(), self.fps), self._depth, name="lrnet-decode")
        return self._stream

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()  # stops and joins the producer before the capture goes away
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
