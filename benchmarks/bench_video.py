"""Throughput of the video pipeline: frames/s per stage (decode, detect, landmarks, calibration, total).

Runs `lrnet.extract.extract_video` on the 720p (ff_*.mp4) and 1080p (dfo_fake.mp4) reference videos
from ``../shared/reference/lrnet-official/videos`` and prints, per video:

- frames/s of each stage, i.e. frames divided by the seconds spent in that stage (decoding runs in
  its own thread and overlaps detection, so stage rates are not additive);
- the end-to-end rate (wall clock, decode + detect + landmarks + calibration);
- CPU milliseconds per frame (all threads), which is less sensitive to other load on the machine:
  on N idle cores the end-to-end rate can approach ``1000 * N / cpu_ms``.

Usage: ``.venv/bin/python benchmarks/bench_video.py [--max-frames N] [--detect-every N] [VIDEO ...]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "lrnet-official" / "videos"
DEFAULT_VIDEOS = ["ff_real.mp4", "ff_fake.mp4", "dfo_fake.mp4"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", help=f"videos (default: {', '.join(DEFAULT_VIDEOS)} in {REFERENCE})")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")
    parser.add_argument("--detect-every", type=int, default=10, help="face detector period in frames (default 10)")
    args = parser.parse_args(argv)

    from lrnet.extract import ExtractOptions, _dlib_models, extract_video

    videos = [Path(v) for v in args.videos] or [REFERENCE / v for v in DEFAULT_VIDEOS]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        print(f"missing videos: {', '.join(missing)}", file=sys.stderr)
        return 2
    _dlib_models()  # load the models outside the timed region
    options = ExtractOptions(detect_every=args.detect_every, max_frames=args.max_frames)
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  detect every {args.detect_every} frames")
    header = f"{'video':<14} {'size':>9} {'frames':>6} | {'decode':>7} {'detect':>7} {'landmk':>7} {'calib':>7} | " \
             f"{'total':>7} fps  {'cpu ms/frame':>12}"
    print(header)
    print("-" * len(header))
    for video in videos:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = extract_video(video, options)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        s = result.stats
        rate = lambda seconds: s.frames / seconds if seconds > 0 else float("inf")  # noqa: E731
        print(f"{video.name:<14} {s.width:>4}x{s.height:<4} {s.frames:>6} | {rate(s.t_decode):>7.0f} "
              f"{rate(s.t_detect):>7.0f} {rate(s.t_landmarks):>7.0f} {rate(s.t_calibration):>7.0f} | "
              f"{s.frames / wall:>7.1f} fps  {1000 * cpu / s.frames:>12.2f}"
              + ("  (decoded twice)" if s.decoded_twice else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
