"""Live frame sources (the live side of the video home, `lrnet.video`): a file (optionally played at its own pace), a network stream, a camera, stdin.

`open_source` classifies what the user typed and `LiveSource.frames` yields decoded `Frame`s in
time order, or a `Gap` when the source stalled or dropped and was reopened (a segment boundary
for the pipeline: frames on both sides are never joined by frozen landmarks).

Every source is decoded by OpenCV's FFmpeg backend, as `lrnet.video.VideoReader` decodes files,
so a stream carrying a file's frames gives that file's pixels, landmarks and block scores:

- ``FILE``: decoded as fast as possible, or at its own pace (`realtime`: each frame is released
  at its presentation time);
- ``rtsp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``srt://``, ``rtmp://`` ...: opened with a
  bounded wait (`open_timeout`); a read that blocks longer than `read_timeout` counts as a stall;
  a dropped or stalled stream is reopened up to `reconnect` times with exponential backoff;
- ``/dev/videoN``: a V4L2 camera;
- ``-``: a stream on standard input (any container FFmpeg can probe, e.g. ``-f mpegts``).

Times: seconds from the first frame of the session. A file keeps its own timestamps; a stream's
timestamps are taken relative to its first frame after each (re)connection and placed after the
wall-clock time the gap lasted.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from ..errors import LrnetError
from .backends import DEFAULT_FPS, quiet_ffmpeg
from .decode import Frame, VideoReader
from .probe import VideoInfo, check_video

__all__ = ["Gap", "LiveSource", "SOURCE_KINDS", "open_source"]

SOURCE_KINDS = ("file", "url", "camera", "stdin")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
MAX_BACKOFF = 30.0  # s between reconnection attempts, at most


@dataclass(frozen=True)
class Gap:
    """The source stalled or dropped at `time` (s) and was reopened (or ended)."""

    time: float
    reason: str


class LiveSource:
    """Frames from one source; see the module docstring. Build with `open_source`."""

    def __init__(self, source: str, kind: str, realtime: bool = False, open_timeout: float = 10.0,
                 read_timeout: float = 10.0, reconnect: int = 0, max_frames: Optional[int] = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.source, self.kind = source, kind
        self.realtime = realtime
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self.reconnect = reconnect
        self.max_frames = max_frames
        self.sleep = sleep
        self.fps = 0.0  # nominal frame rate (0: unknown)
        self.width = self.height = 0
        self.decoded = 0
        self.reconnects = 0
        self._cap: Any = None  # cv2.VideoCapture of a stream
        self._reader: Optional[VideoReader] = None
        if kind == "file":
            self._reader = VideoReader(source, max_frames)
            info = self._reader.info
            self.fps, self.width, self.height = info.fps, info.width, info.height
        else:
            self._open()

    # ---------------------------------------------------------------------------------- opening

    def _open(self) -> None:
        quiet_ffmpeg()
        import cv2

        ms = int(self.open_timeout * 1000), int(self.read_timeout * 1000)
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the failure is ours to say, in one line
        try:
            if self.kind == "camera":
                cap = cv2.VideoCapture(self.source, cv2.CAP_V4L2)
            else:
                target = "pipe:0" if self.kind == "stdin" else self.source
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms[0], cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms[1]])
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not cap.isOpened():
            cap.release()
            raise LrnetError(self._cannot_open())
        self._cap = cap
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        self.width, self.height = width, height
        if width and height:
            check_video(VideoInfo(self.source, width, height, 0, self.fps, 0.0))

    def _cannot_open(self) -> str:
        if self.kind == "camera":
            return f"{self.source}: cannot open the camera (no such device, busy, or not a V4L2 camera)"
        if self.kind == "stdin":
            return "standard input: not a video stream FFmpeg can read"
        return (f"{self.source}: cannot open the stream within {self.open_timeout:g} s (unreachable, refused, "
                "or not a video stream)")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- frames

    def frames(self) -> Iterator[Union[Frame, Gap]]:
        """Decoded frames in time order, with a `Gap` where a stream dropped (and was reopened)."""
        if self._reader is not None:
            yield from self._file_frames()
        else:
            yield from self._stream_frames()

    def _file_frames(self) -> Iterator[Union[Frame, Gap]]:
        assert self._reader is not None
        started: Optional[float] = None
        first = 0.0
        for frame in self._reader:
            if self.realtime:
                if started is None:
                    started, first = time.monotonic(), frame.time
                wait = started + (frame.time - first) - time.monotonic()
                if wait > 0:
                    self.sleep(wait)
            self.decoded += 1
            yield frame

    def _stream_frames(self) -> Iterator[Union[Frame, Gap]]:
        import cv2

        offset = 0.0  # session time of this connection's first frame
        attempts = 0
        last_time = -1.0
        while True:
            cap = self._cap
            first_pts: Optional[float] = None
            count = 0
            reason = "the stream ended"
            while cap is not None and (self.max_frames is None or self.decoded < self.max_frames):
                ok, image = cap.read()
                if not ok:
                    reason = "the stream dropped or stalled"
                    break
                pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if first_pts is None:
                    first_pts = pts if math.isfinite(pts) else 0.0
                t = offset + (pts - first_pts if math.isfinite(pts) else count / (self.fps or DEFAULT_FPS))
                if t <= last_time:  # a missing or repeated timestamp: one nominal frame on
                    t = last_time + 1.0 / (self.fps or DEFAULT_FPS)
                last_time = t
                count += 1
                attempts = 0
                yield Frame(self.decoded, t, image)
                self.decoded += 1
            if self.max_frames is not None and self.decoded >= self.max_frames:
                return
            if self.kind in ("stdin",) or attempts >= self.reconnect:
                if self.decoded == 0 and cap is not None:
                    raise LrnetError(f"{self.source if self.kind != 'stdin' else 'standard input'}: "
                                     "no frame could be decoded (not a video stream?)")
                return
            self.close()
            gap_started = time.monotonic()
            delay = min(MAX_BACKOFF, 2.0 ** attempts)
            attempts += 1
            self.reconnects += 1
            yield Gap(max(last_time, 0.0), f"{reason}; reconnecting in {delay:g} s (attempt {attempts} of "
                                           f"{self.reconnect})")
            self.sleep(delay)
            try:
                self._open()
            except LrnetError:
                self._cap = None  # counted as a failed attempt; the loop tries again or ends
            offset = max(last_time, 0.0) + (time.monotonic() - gap_started)


def open_source(source: str, *, realtime: bool = False, open_timeout: float = 10.0, read_timeout: float = 10.0,
                reconnect: int = 0, max_frames: Optional[int] = None) -> LiveSource:
    """Classify and open `source` (see the module docstring); `LrnetError` (one line) when it cannot be
    opened: a missing file, a file that is not a video, a camera that does not exist, an unreachable URL."""
    if source == "-":
        return LiveSource(source, "stdin", realtime, open_timeout, read_timeout, 0, max_frames)
    if source.startswith("/dev/"):
        if not os.path.exists(source):
            raise LrnetError(f"{source}: no such camera")
        return LiveSource(source, "camera", realtime, open_timeout, read_timeout, reconnect, max_frames)
    if _URL.match(source) and not source.startswith("file://"):
        return LiveSource(source, "url", realtime, open_timeout, read_timeout, reconnect, max_frames)
    path = Path(source[len("file://"):] if source.startswith("file://") else source)
    if not path.is_file():
        raise LrnetError(f"{source}: no such file (give a video file, a stream URL such as rtsp://HOST/PATH, "
                         "a camera such as /dev/video0, or - for standard input)")
    return LiveSource(str(path), "file", realtime, open_timeout, read_timeout, 0, max_frames)
