"""Writing videos, always atomically (`lrnet.atomic.atomic_path`): a temporary beside the target,
checked, fsync'ed and renamed, so the target is either the old file or the complete new one, with
the usual permissions (``0666 & ~umask``).

- `write_video`: BGR frames through OpenCV's writer (``.avi``: MJPG, else MPEG-4 part 2); used by
  ``lrnet detect --visualize``.
- `write_h264`: RGB pictures (or decoded PyAV frames) through PyAV's libx264, yuv420p; used by
  ``lrnet compress`` and `transcode_h264` (the server's browser-playable copy).

Containers follow the target's extension (`WRITABLE_VIDEO_SUFFIXES`). Before the rename each
writer calls `lrnet.parallel.require_parent`, so a pool worker whose job is gone publishes nothing.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Optional, Tuple

import numpy as np

from ..atomic import atomic_path, writing
from ..errors import LrnetError
from ..parallel import require_parent
from ..vocab import PathLike
from .backends import DEFAULT_FPS, load_pyav, open_av, quiet_ffmpeg

__all__ = ["PYAV_FORMATS", "transcode_h264", "write_h264", "write_video"]

# PyAV (FFmpeg) muxer per writable extension; any other extension is written as MP4.
# Its keys are `WRITABLE_VIDEO_SUFFIXES` (tests/test_video.py checks).
PYAV_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


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
        # OpenCV picks the container from the name, so the temporary keeps the real extension.
        with writing(target), atomic_path(target, suffix=target.suffix or ".mp4") as tmp:
            count = _write_cv2(target, tmp, frames, fps, size)
            _check_written(target, tmp, count)
            require_parent()
        return count
    finally:
        cv2.utils.logging.setLogLevel(level)


def _write_cv2(target: Path, tmp: Path, frames: Iterable[np.ndarray], fps: float, size: Tuple[int, int]) -> int:
    import cv2

    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if target.suffix.lower() == ".avi" else "mp4v"))
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


def write_h264(target: PathLike, pictures: Iterable[Any], rate: Fraction, size: Tuple[int, int], *, crf: int,
               source: PathLike, preset: Optional[str] = None, threads: Optional[int] = None,
               faststart: bool = False) -> int:
    """Encode `pictures` to H.264 (libx264, yuv420p) at `target`, atomically; returns the frame count.

    `pictures`: ``(height, width, 3)`` uint8 RGB arrays of `size` ``(width, height)`` (even
    numbers: 4:2:0 halves the chroma planes), or decoded ``av.VideoFrame``s (converted to `size`
    and yuv420p). Frame i is shown at ``i / rate`` s (`rate`: frames per second). `crf`: libx264's
    constant rate factor (0 lossless .. 51); `preset`: libx264's speed preset (None: its default);
    `threads`: encoder threads (None: PyAV's default); `faststart`: MP4 index first (a browser
    starts playing before the whole file arrived). Errors: `LrnetError` naming `source` (the video
    the pictures come from: nothing decoded) or `target` (cannot encode); a failed write is an
    `OSError` naming `target` (its errno tells a full disk, which a folder job retries elsewhere).
    """
    av = load_pyav()
    target = Path(target)
    fmt = PYAV_FORMATS.get(target.suffix.lower(), "mp4")
    options = {"movflags": "+faststart"} if faststart else {}
    with atomic_path(target, suffix=target.suffix) as tmp:
        with av.open(str(tmp), "w", format=fmt, options=options) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.options = {"crf": str(crf), **({"preset": preset} if preset else {})}
            if threads is not None:
                stream.codec_context.thread_count = threads
            written = 0
            try:
                for picture in pictures:
                    if isinstance(picture, np.ndarray):
                        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                        frame.pts = written
                    else:
                        frame = picture.reformat(width=size[0], height=size[1], format="yuv420p")
                        frame.pts, frame.time_base = written, 1 / rate
                    out.mux(stream.encode(frame))
                    written += 1
                if written == 0:
                    raise LrnetError(f"{source}: no frame could be decoded")
                out.mux(stream.encode(None))
            except av.FFmpegError as exc:
                raise LrnetError(f"{target}: cannot encode ({exc})") from None
        require_parent()
    return written


def transcode_h264(source: PathLike, target: PathLike, crf: int = 23, preset: str = "veryfast") -> Path:
    """Re-encode the first video stream of `source` to H.264 yuv420p MP4 at `target` (atomic).

    Frames keep their order and the stream's average frame rate; odd sizes are cut to even ones
    (4:2:0 needs them). Audio is dropped. `LrnetError` when `source` cannot be decoded.
    """
    target = Path(target)
    with open_av(source) as video:
        rate = video.rate.limit_denominator(1001)
        width, height = video.size
        write_h264(target, video.frames(), rate, (width // 2 * 2, height // 2 * 2), crf=crf, source=source,
                   preset=preset, faststart=True)
    return target
