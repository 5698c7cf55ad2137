"""The two video libraries behind `lrnet.video`, opened in one place each.

OpenCV (``cv2``, FFmpeg backend) decodes for landmark extraction and writes ``--visualize``
videos; `open_capture` opens a file with it. PyAV (``av``, which carries libx264) encodes H.264
and reads container headers; `load_pyav` imports it with an install hint, `open_av` opens a file
with it. Both keep FFmpeg's own log lines ("moov atom not found", ...) off stderr, so a bad file
gives lrnet's one-line error and nothing else.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Tuple

import numpy as np

from ..errors import LrnetError
from ..vocab import PathLike

__all__ = ["AvVideo", "DEFAULT_FPS", "load_pyav", "open_av", "open_capture", "quiet_ffmpeg"]

DEFAULT_FPS = 25.0  # frame interval assumed when a file states no rate


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's log lines off stderr (OpenCV reads this once, at its first FFmpeg use).

    ``OPENCV_FFMPEG_LOGLEVEL=-8`` is FFmpeg's AV_LOG_QUIET. A value the user set is kept.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


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


def load_pyav():
    """The `av` module, or `LrnetError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise LrnetError("PyAV is not installed (it carries libx264): pip install 'lrnet[video]'") from None
    return av


@dataclass
class AvVideo:
    """The first video stream of a file opened with PyAV (see `open_av`), ready to decode."""

    path: Path
    container: Any  # av.container.InputContainer
    stream: Any  # av.video.stream.VideoStream

    @property
    def rate(self) -> Fraction:
        """Frames per second: the stream's average rate, else FFmpeg's guess, else `DEFAULT_FPS`."""
        return Fraction(self.stream.average_rate or self.stream.guessed_rate or DEFAULT_FPS)

    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)`` of the coded pictures, px."""
        return int(self.stream.codec_context.width or 0), int(self.stream.codec_context.height or 0)

    def frames(self) -> Iterator[Any]:
        """Decoded ``av.VideoFrame``s in order; a decoding error is `LrnetError` naming the file."""
        av = load_pyav()
        try:
            yield from self.container.decode(self.stream)
        except av.FFmpegError as exc:
            raise LrnetError(f"{self.path}: cannot decode ({exc})") from None

    def rgb_frames(self, size: Tuple[int, int]) -> Iterator[np.ndarray]:
        """Decoded pictures as ``(height, width, 3)`` uint8 RGB at `size` ``(width, height)``
        (area interpolation when shrinking)."""
        for frame in self.frames():
            yield frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")


@contextlib.contextmanager
def open_av(path: PathLike) -> Iterator[AvVideo]:
    """Open `path` with PyAV (threaded decoding) for the duration of the block.

    `LrnetError` naming the file when PyAV is missing, the file is missing, is not a container
    or holds no video stream.
    """
    av = load_pyav()
    path = Path(path)
    if not path.is_file():
        raise LrnetError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise LrnetError(f"{path}: cannot open as a video ({exc})") from None
    with container:
        if not container.streams.video:
            raise LrnetError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield AvVideo(path, container, stream)
