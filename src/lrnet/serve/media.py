"""Video facts for the server: a header probe (duration, frame rate, codec) and a browser-playable copy.

`probe_video` is the one place the server reads a video's header; it opens the container with
PyAV and decodes nothing, so an over-long video is refused before any frame is decoded.

Browsers play H.264 in MP4 and VP8/VP9/AV1 in WebM (also VP9/AV1 in MP4) when the pictures are
4:2:0 (``yuv420p``); anything else (AVI, Matroska, QuickTime, MPEG-4 part 2, 4:4:4 H.264 ...)
is re-encoded once to H.264 / yuv420p MP4 with PyAV's libx264 (`transcode_h264`). Audio is not
kept: the page only needs the pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

from ..atomic import atomic_path
from ..errors import LrnetError

__all__ = ["PLAYABLE_CODECS", "VideoInfo", "browser_playable", "probe_video", "transcode_h264"]

PLAYABLE_CODECS = {"mp4": {"h264", "vp9", "av1"}, "webm": {"vp8", "vp9", "av1"}}
PLAYABLE_PIX_FMTS = {"yuv420p", "yuvj420p"}


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says. Seconds and frames/s; None where the header does not say."""

    duration_s: Optional[float]
    fps: Optional[float]
    frames: Optional[int]
    width: int
    height: int
    codec: str
    pix_fmt: str


def probe_video(path: Path) -> VideoInfo:
    """Read the header of the first video stream; `LrnetError` when it cannot be opened as a video."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise LrnetError(f"{path}: no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            fps = float(stream.average_rate) if stream.average_rate else None
            # the video stream's own length first: the container's is the longest stream's (audio too)
            duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                        else None)
            if duration is None and container.duration:
                duration = container.duration / 1e6
            frames = int(stream.frames) or None
            if duration is None and frames and fps:
                duration = frames / fps
            return VideoInfo(duration, fps, frames, int(ctx.width or 0), int(ctx.height or 0),
                             str(ctx.name or ""), str(ctx.format.name if ctx.format else ""))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise LrnetError(f"{path}: cannot open as a video ({exc})") from None


def browser_playable(kind: str, info: VideoInfo) -> bool:
    """Whether browsers play the upload as it is (container `kind` from `sniff_kind`)."""
    return info.codec in PLAYABLE_CODECS.get(kind, set()) and info.pix_fmt in PLAYABLE_PIX_FMTS


def transcode_h264(source: Path, target: Path, crf: int = 23, preset: str = "veryfast") -> Path:
    """Re-encode the first video stream of `source` to H.264 yuv420p MP4 at `target` (atomic).

    Frames keep their order and the stream's average frame rate; odd sizes are cut to even ones
    (4:2:0 needs them). Audio is dropped.
    """
    import av

    with av.open(str(source)) as src, atomic_path(target, suffix=".mp4") as tmp:
        stream_in = src.streams.video[0]
        stream_in.thread_type = "AUTO"
        rate = Fraction(stream_in.average_rate or 25).limit_denominator(1001)
        width, height = stream_in.codec_context.width // 2 * 2, stream_in.codec_context.height // 2 * 2
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            for index, frame in enumerate(src.decode(stream_in)):
                picture = frame.reformat(width=width, height=height, format="yuv420p")
                picture.pts, picture.time_base = index, 1 / rate
                out.mux(stream.encode(picture))
            out.mux(stream.encode(None))
    return target
