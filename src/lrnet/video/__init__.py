"""Video I/O: the one place lrnet opens, probes, decodes and writes video files.

No other module imports OpenCV's video classes or PyAV's containers; they call this package:

- `backends`: the two libraries, opened in one place each: OpenCV (`open_capture`; decoding for
  landmark extraction) and PyAV (`load_pyav`, `open_av`; H.264 encoding, container headers),
  with FFmpeg's own log lines kept off stderr (`quiet_ffmpeg`).
- `probe`: what a header says (`VideoInfo`; `video_info` through OpenCV, `probe_video` through
  PyAV with the codec, `count_frames`) and the limits on what lrnet decodes (`check_video`).
- `decode`: frames in order (`read_frames`), timed and resampled by timestamp in a background
  thread (`VideoReader`, `prefetch`, `keep_mask`, `select_frames`).
- `encode`: atomic, checked writes (`write_video` through OpenCV for ``--visualize``;
  `write_h264` and `transcode_h264` through PyAV's libx264).
"""

from .backends import DEFAULT_FPS, AvVideo, load_pyav, open_av, open_capture, quiet_ffmpeg
from .decode import QUEUE_BYTES, Frame, Resampler, VideoReader, keep_mask, prefetch, read_frames, select_frames
from .encode import PYAV_FORMATS, transcode_h264, write_h264, write_video
from .probe import (MAX_FRAMES, MAX_PIXELS, VideoInfo, bits_per_pixel, check_video, count_frames, probe_video, video_info,
                    video_size)
from .live import Gap, LiveSource, open_source

__all__ = ["AvVideo", "DEFAULT_FPS", "Frame", "Gap", "LiveSource", "bits_per_pixel", "open_source", "MAX_FRAMES", "MAX_PIXELS", "PYAV_FORMATS", "QUEUE_BYTES", "Resampler", "VideoInfo",
           "VideoReader", "check_video", "count_frames", "keep_mask", "load_pyav", "open_av", "open_capture",
           "prefetch", "probe_video", "quiet_ffmpeg", "read_frames", "select_frames", "transcode_h264", "video_info",
           "video_size", "write_h264", "write_video"]
