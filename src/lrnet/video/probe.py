"""What a video's header says (`VideoInfo`), and the limits on what lrnet agrees to decode.

Two probes, one answer type:

- `video_info` asks OpenCV, the decoder landmark extraction uses, so the frame count and rate
  are the ones that decoder will see;
- `probe_video` asks PyAV, reading the container header only (no frame decoded), and adds the
  codec and pixel format (the server decides from them whether browsers can play an upload).

`check_video` refuses, before decoding, a video too large to process with bounded memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import LrnetError
from ..vocab import PathLike
from .backends import load_pyav, open_av, open_capture

__all__ = ["MAX_FRAMES", "MAX_PIXELS", "VideoInfo", "bits_per_pixel", "check_video", "count_frames", "probe_video", "video_info",
           "video_size"]

MAX_PIXELS = 8192 * 4320  # larger frames (beyond 8K) are refused: one BGR frame would exceed 100 MB
MAX_FRAMES = 180_000  # longer videos (100 min at 30 fps) are refused unless only a prefix is asked for


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video; 0 (or "") where it does not say."""

    path: str
    width: int  # px
    height: int  # px
    frames: int  # header frame count (may be approximate)
    fps: float  # nominal frames per second
    duration: float  # seconds
    codec: str = ""  # decoder name, e.g. "h264" (`probe_video` only)
    pix_fmt: str = ""  # pixel format, e.g. "yuv420p" (`probe_video` only)


def capture_info(path: PathLike, cap) -> VideoInfo:
    """`VideoInfo` of an opened ``cv2.VideoCapture``: duration is frames / fps."""
    import cv2

    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        raise LrnetError(f"{path}: not a video (no frame size)")
    frames = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
    return VideoInfo(str(path), width, height, frames, fps, frames / fps if fps and frames else 0.0)


def video_info(path: PathLike) -> VideoInfo:
    """Frame size, header frame count, nominal rate and duration of a video file, as OpenCV sees them."""
    cap = open_capture(path)
    try:
        return capture_info(path, cap)
    finally:
        cap.release()


def video_size(path: PathLike) -> Tuple[int, int, int]:
    """``(width, height, frame count)`` from the container header (count may be approximate)."""
    info = video_info(path)
    return info.width, info.height, info.frames


def probe_video(path: PathLike) -> VideoInfo:
    """The header of the first video stream, read with PyAV (nothing decoded), codec included.

    Duration: the container's, else the stream's, else frames / fps. `LrnetError` when the file
    cannot be opened as a video.
    """
    av = load_pyav()
    with open_av(path) as video:
        try:
            stream, ctx = video.stream, video.stream.codec_context
            fps = float(stream.average_rate) if stream.average_rate else 0.0
            duration = video.container.duration / 1e6 if video.container.duration else 0.0
            if not duration and stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            frames = int(stream.frames or 0)
            if not duration and frames and fps:
                duration = frames / fps
            return VideoInfo(str(path), int(ctx.width or 0), int(ctx.height or 0), frames, fps, duration,
                             str(ctx.name or ""), str(ctx.format.name if ctx.format else ""))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise LrnetError(f"{path}: cannot open as a video ({exc})") from None


def count_frames(path: PathLike) -> Optional[int]:
    """Frames of a video: the header's count, else counted by decoding; None when it cannot be read."""
    av = load_pyav()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return int(stream.frames) or sum(1 for _ in container.decode(stream))
    except (av.FFmpegError, OSError, IndexError, ValueError):
        return None


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


def bits_per_pixel(path: PathLike, max_packets: Optional[int] = None) -> float:
    """Mean bits per pixel per frame of a video's first video stream: packet bytes x 8 / (packets x
    width x height), read from the container with PyAV without decoding (`max_packets`: only the
    first N). `LrnetError` when the file cannot be read or holds no video packet."""
    av = load_pyav()
    packets = total = 0
    with open_av(path) as video:
        width, height = video.stream.codec_context.width, video.stream.codec_context.height
        try:
            for packet in video.container.demux(video.stream):
                if packet.size:
                    packets += 1
                    total += packet.size
                    if max_packets is not None and packets >= max_packets:
                        break
        except (av.FFmpegError, OSError) as exc:
            raise LrnetError(f"{path}: cannot read the video packets ({exc})") from None
    if not packets or not width or not height:
        raise LrnetError(f"{path}: no video packets to measure compression on")
    return 8.0 * total / (packets * width * height)
