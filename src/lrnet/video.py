"""Video reading: the one place lrnet opens, decodes and times video frames.

Owns: the container facts (`video_info`: size, frame count, nominal frame rate, duration), the
limits on what lrnet agrees to decode (`check_video`), sequential decoding (`read_frames`), the
background producer thread that overlaps decoding with the caller's work (`prefetch`,
`VideoReader`), frame selection by timestamp (`keep_mask`, `select_frames`: resampling a faster
video down to a model's frame rate) and keeping FFmpeg's own log lines ("moov atom not found",
...) off stderr, so a bad file gives lrnet's one-line error and nothing else.

Decoding uses OpenCV's FFmpeg backend. Frame times come from the decoder position
(``CAP_PROP_POS_MSEC``, i.e. the frame's presentation timestamp), so variable-frame-rate files are
timed by their timestamps, not by the nominal rate; a missing or non-increasing timestamp is
replaced by the previous one plus one nominal frame interval.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Iterable, Iterator, List, Optional, Tuple, TypeVar, Union

import numpy as np

from .errors import LrnetError

__all__ = ["Frame", "Resampler", "VideoInfo", "VideoReader", "check_video", "keep_mask", "open_capture", "prefetch",
           "quiet_ffmpeg", "read_frames", "select_frames", "video_info", "video_size", "write_video",
           "MAX_PIXELS", "MAX_FRAMES", "QUEUE_BYTES"]

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

MAX_PIXELS = 8192 * 4320  # larger frames (beyond 8K) are refused: one BGR frame would exceed 100 MB
MAX_FRAMES = 180_000  # longer videos (100 min at 30 fps) are refused unless only a prefix is asked for
QUEUE_BYTES = 256 << 20  # decoded frames waiting in the producer queue use at most this (>= 2 frames)
DEFAULT_FPS = 25.0  # frame interval assumed when a file states no rate
_GRID_EPS = 1e-6  # tolerance, in output frame intervals, of the timestamp grid test


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's log lines off stderr (OpenCV reads this once, at its first FFmpeg use).

    ``OPENCV_FFMPEG_LOGLEVEL=-8`` is FFmpeg's AV_LOG_QUIET. A value the user set is kept.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video. ``frames``/``fps`` are header values (0: unknown)."""

    path: str
    width: int  # px
    height: int  # px
    frames: int  # header frame count (may be approximate)
    fps: float  # nominal frames per second
    duration: float  # seconds, frames / fps (0 when either is unknown)


@dataclass
class Frame:
    """One decoded frame: its number in the video, presentation time (s) and BGR pixels."""

    index: int
    time: float
    image: np.ndarray  # (height, width, 3) uint8


def open_capture(path: PathLike):
    """An opened ``cv2.VideoCapture``; `LrnetError` when the file is missing or not a video."""
    quiet_ffmpeg()
    import cv2

    path = Path(path)
    if not path.is_file():
        raise LrnetError(f"{path}: no such video file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise LrnetError(f"{path}: cannot open as a video (unreadable or not a video file)")
    return cap


def _info_of(path: PathLike, cap) -> VideoInfo:
    import cv2

    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        raise LrnetError(f"{path}: not a video (no frame size)")
    frames = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
    return VideoInfo(str(path), width, height, frames, fps, frames / fps if fps and frames else 0.0)


def video_info(path: PathLike) -> VideoInfo:
    """Frame size, header frame count, nominal rate and duration of a video file."""
    cap = open_capture(path)
    try:
        return _info_of(path, cap)
    finally:
        cap.release()


def video_size(path: PathLike) -> Tuple[int, int, int]:
    """``(width, height, frame count)`` from the container header (count may be approximate)."""
    info = video_info(path)
    return info.width, info.height, info.frames


def check_video(info: VideoInfo, max_frames: Optional[int] = None, frame_limit: int = MAX_FRAMES,
                max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, before decoding, a video too large to process with bounded memory.

    A frame over `max_pixels`, or a header count over `frame_limit` when not limited to a prefix
    of at most `frame_limit` frames by `max_frames`, raises `LrnetError` naming the video.
    """
    if info.width * info.height > max_pixels:
        raise LrnetError(f"{info.path}: frames of {info.width}x{info.height} are larger than lrnet decodes "
                         f"(at most {max_pixels / 1e6:.1f} megapixels); downscale the video first")
    wanted = info.frames if max_frames is None else min(info.frames, max_frames)
    if wanted > frame_limit:
        raise LrnetError(f"{info.path}: {info.frames} frames is longer than lrnet processes in one go "
                         f"({frame_limit}); use --max-frames or split the video")


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


def write_video(target: PathLike, frames: Iterable[np.ndarray], fps: float, size: Tuple[int, int]) -> int:
    """Write BGR frames of `size` ``(width, height)`` to a video file, atomically; returns the count.

    The container follows `target`'s extension (``.avi``: MJPG; else MPEG-4 part 2). OpenCV's
    writer reports no write errors (a full disk leaves a truncated file), so the finished
    temporary is opened again and its frame count checked before it is renamed onto `target`.
    Any failure is a one-line `LrnetError` and leaves `target` untouched.
    """
    quiet_ffmpeg()
    import cv2

    target = Path(target)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # "Failed to write frame" is ours to say
    try:
        return _write_checked(target, frames, fps, size)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _write_checked(target: Path, frames: Iterable[np.ndarray], fps: float, size: Tuple[int, int]) -> int:
    import cv2

    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if target.suffix.lower() == ".avi" else "mp4v"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # OpenCV picks the container from the name, so the temporary keeps the real extension.
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix or ".mp4", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise LrnetError(f"{target}: cannot write ({exc.strerror or exc})") from None
    tmp = Path(name)
    try:
        writer = cv2.VideoWriter(str(tmp), fourcc, fps or DEFAULT_FPS, tuple(size))
        if not writer.isOpened():
            raise LrnetError(f"{target}: cannot write a video here (unsupported extension {target.suffix!r}?)")
        count = 0
        try:
            for frame in frames:
                writer.write(frame)
                count += 1
        finally:
            writer.release()
        _check_written(target, tmp, count)
        os.replace(tmp, target)
    except OSError as exc:
        raise LrnetError(f"{target}: cannot write ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return count


def _check_written(target: Path, tmp: Path, count: int) -> None:
    """Open a just-written video again: it must hold `count` frames (a full disk truncates it)."""
    import cv2

    cap = cv2.VideoCapture(str(tmp))
    try:
        written = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else -1
    finally:
        cap.release()
    if written != count:
        found = "an unreadable file" if written < 0 else f"{written} frames"
        raise LrnetError(f"{target}: cannot write (wrote {count} frames, the file holds {found}; disk full?)")


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
            self.info = _info_of(self.path, self._cap)
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
