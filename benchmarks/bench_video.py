"""Throughput of the video pipeline: frames/s per stage, on whole videos and on edited (cut) clips.

Runs `lrnet.extract.extract_video` on the 720p (ff_*.mp4) and 1080p (dfo_fake.mp4) reference videos
from ``../shared/reference/lrnet-official/videos`` and prints, per video:

- frames/s of each stage, i.e. frames divided by the seconds spent in that stage (decoding runs in
  its own thread and overlaps detection, so stage rates are not additive);
- the end-to-end rate (wall clock, decode + detect + landmarks + calibration);
- CPU milliseconds per frame (all threads), which is less sensitive to other load on the machine:
  on N idle cores the end-to-end rate can approach ``1000 * N / cpu_ms``;
- segments, shot cuts, the share of frames with landmarks of their own and detector runs.

``--edited`` also builds edited clips from the same videos (MJPG .avi in a temporary folder) and
runs each next to an uncut clip built the same way: ff_real reframed twice (two jump cuts: the
face moves 320 px) against the same frames unreframed, and dfo_real looped three times against
its first 3 x N frames; plus a real-then-forged splice (dfo_real then dfo_fake).

Usage: ``python benchmarks/bench_video.py [--max-frames N] [--detect-every N] [--edited] [VIDEO ...]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "lrnet-official" / "videos"
DEFAULT_VIDEOS = ["ff_real.mp4", "ff_fake.mp4", "dfo_fake.mp4"]


def write_clip(path: Path, frames, fps: float) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def edited_clips(folder: Path, part: int) -> list:
    """(name, path) of uncut and edited clips built from the reference videos, `part` frames per shot."""
    import cv2
    import numpy as np

    from lrnet.video import keep_mask, read_frames

    ff = list(itertools.islice(read_frames(REFERENCE / "ff_real.mp4"), 3 * part))
    dfo = list(itertools.islice(read_frames(REFERENCE / "dfo_real.mp4"), 3 * part))
    fake = list(itertools.islice(read_frames(REFERENCE / "dfo_fake.mp4"), 2 * part))
    fake = [cv2.resize(f[:, 240:1680], (640, 480), interpolation=cv2.INTER_AREA)
            for f, k in zip(fake, keep_mask(np.arange(len(fake)) / 30.0, 25.0)) if k]
    jumped = [f[:, :960] for f in ff[:part]] + [f[:, 320:] for f in ff[part:2 * part]] + [f[:, :960] for f in ff[2 * part:]]
    return [
        ("ff uncut", write_clip(folder / "ff_uncut.avi", [f[:, :960] for f in ff], 30.0)),
        ("ff 2 jump cuts", write_clip(folder / "ff_jumps.avi", jumped, 30.0)),
        ("dfo uncut", write_clip(folder / "dfo_uncut.avi", dfo, 25.0)),
        ("dfo looped x3", write_clip(folder / "dfo_loop.avi", dfo[:part] * 3, 25.0)),
        ("dfo real+fake", write_clip(folder / "splice.avi", dfo[:2 * part] + fake, 25.0)),
    ]


def run(name: str, video: Path, options) -> None:
    from lrnet.extract import extract_video

    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = extract_video(video, options)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    s = result.stats
    rate = lambda seconds: s.frames / seconds if seconds > 0 else float("inf")  # noqa: E731
    print(f"{name:<15} {s.width:>4}x{s.height:<4} {s.frames:>6} | {rate(s.t_decode):>7.0f} "
          f"{rate(s.t_detect):>7.0f} {rate(s.t_landmarks):>7.0f} {rate(s.t_calibration):>7.0f} | "
          f"{s.frames / wall:>7.1f} {1000 * cpu / s.frames:>7.2f} | {s.segments:>4} {s.cuts:>4} "
          f"{100 * s.landmarked / max(s.selected, 1):>5.1f}% {s.detector_runs:>6}"
          + ("  (decoded twice)" if s.decoded_twice else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", help=f"videos (default: {', '.join(DEFAULT_VIDEOS)} in {REFERENCE})")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")
    parser.add_argument("--detect-every", type=int, default=10, help="face detector period in frames (default 10)")
    parser.add_argument("--edited", action="store_true", help="also run cut, looped and spliced clips")
    parser.add_argument("--part", type=int, default=100, help="frames per shot of the edited clips (default 100)")
    args = parser.parse_args(argv)

    from lrnet.extract import ExtractOptions, load_models

    videos = [Path(v) for v in args.videos] or [REFERENCE / v for v in DEFAULT_VIDEOS]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        print(f"missing videos: {', '.join(missing)}", file=sys.stderr)
        return 2
    load_models()  # outside the timed region
    options = ExtractOptions(detect_every=args.detect_every, max_frames=args.max_frames)
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  detect every {args.detect_every} frames")
    header = (f"{'video':<15} {'size':>9} {'frames':>6} | {'decode':>7} {'detect':>7} {'landmk':>7} {'calib':>7} | "
              f"{'total':>7} {'cpu ms':>7} | {'segs':>4} {'cuts':>4} {'own lm':>6} {'detect':>6}")
    print(header)
    print(f"{'':<33}| {'frames/s per stage':^31} | {'fps':>7} {'/frame':>7} |")
    print("-" * len(header))
    for video in videos:
        run(video.name, video, options)
    if args.edited:
        with tempfile.TemporaryDirectory(prefix="lrnet-bench-") as folder:
            for name, clip in edited_clips(Path(folder), args.part):
                run(name, clip, ExtractOptions(detect_every=args.detect_every))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
