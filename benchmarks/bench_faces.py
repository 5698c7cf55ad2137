"""Frames per second of `lrnet detect` with 1, 2 and 4 faces in the picture (every face followed).

Builds 1280 x 720 clips from the reference videos (``../shared/reference/lrnet-official``): one
face (ff_real's 1280 x 720 frames), two faces (ff_real and ff_fake side by side, 640 px each) and
four faces (a 2 x 2 grid of 640 x 360 tiles: ff_real, ff_fake, and the two again mirrored). The
detector runs at full resolution (``--detect-width 1280``) for all three, so the 100 px faces of
the grid are found; each clip is written losslessly, then `lrnet.detect.detect_video` runs on it
with the official dfo weights. Prints frames/s (decoded frames over wall seconds), CPU ms per
frame and the faces found.

Usage: ``python benchmarks/bench_faces.py [--frames N]`` (default 150 frames, 5 s at 30 fps).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "lrnet-official"


def _frames(name: str, n: int):
    from lrnet.video import read_frames

    return list(itertools.islice(read_frames(REFERENCE / "videos" / name), n))


def _write(path: Path, frames, fps: float) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    if not (REFERENCE / "videos" / "ff_real.mp4").is_file():
        print(f"reference videos not found under {REFERENCE} (see the README: the official LRNet repository)")
        return 2
    import cv2
    import numpy as np

    from lrnet.detect import detect_video
    from lrnet.detector import load_detector
    from lrnet.tracking import ExtractOptions

    real, fake = _frames("ff_real.mp4", args.frames), _frames("ff_fake.mp4", args.frames)
    tile = lambda f: cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA)  # noqa: E731
    clips = {
        1: real,
        2: [np.concatenate([r[:, 260:900], f[:, 283:923]], axis=1) for r, f in zip(real, fake)],
        4: [np.concatenate([np.concatenate([tile(r), tile(f)], axis=1),
                            np.concatenate([tile(f)[:, ::-1], tile(r)[:, ::-1]], axis=1)], axis=0)
            for r, f in zip(real, fake)],
    }
    detector = load_detector(str(REFERENCE / "weights" / "dfo"), download=False)
    options = ExtractOptions(detect_width=1280)
    with tempfile.TemporaryDirectory() as tmp:
        for faces, frames in clips.items():
            clip = _write(Path(tmp) / f"faces{faces}.avi", frames, 30.0)
            started, cpu = time.perf_counter(), time.process_time()
            result = detect_video(clip, detector, options, min_face=60)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            found = [(f["face"], f["verdict"], f["blocks"]) for f in result.faces]
            print(f"{faces} face(s) in the picture: {len(frames) / wall:6.1f} frames/s, {1000 * cpu / len(frames):6.1f} "
                  f"CPU ms/frame, {len(result.faces)} followed {found}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
