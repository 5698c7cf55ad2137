"""Which uploads browsers play as they are; the probe and the H.264 copy are `lrnet.video`'s.

Browsers play H.264 in MP4 and VP8/VP9/AV1 in WebM (also VP9/AV1 in MP4) when the pictures are
4:2:0 (``yuv420p``); anything else (AVI, Matroska, QuickTime, MPEG-4 part 2, 4:4:4 H.264 ...)
is re-encoded once to H.264 / yuv420p MP4 (`lrnet.video.transcode_h264`). Audio is not kept: the
page only needs the pictures. `lrnet.video.probe_video` reads the header (nothing decoded), so an
over-long video is refused before any frame is decoded.
"""

from __future__ import annotations

from ..video import VideoInfo, probe_video, transcode_h264

__all__ = ["PLAYABLE_CODECS", "VideoInfo", "browser_playable", "probe_video", "transcode_h264"]

PLAYABLE_CODECS = {"mp4": {"h264", "vp9", "av1"}, "webm": {"vp8", "vp9", "av1"}}
PLAYABLE_PIX_FMTS = {"yuv420p", "yuvj420p"}


def browser_playable(kind: str, info: VideoInfo) -> bool:
    """Whether browsers play the upload as it is (container `kind` from `sniff_kind`)."""
    return info.codec in PLAYABLE_CODECS.get(kind, set()) and info.pix_fmt in PLAYABLE_PIX_FMTS
