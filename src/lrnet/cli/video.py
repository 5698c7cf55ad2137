"""``lrnet detect`` / ``lrnet extract`` / ``lrnet calibrate``: from raw video to landmarks and verdicts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_gpu_flag, add_weights_flag


def _add_extract_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detect-every", type=int, default=10, metavar="N",
                   help="run the face detector every N frames, carrying the box forward in between (default: 10)")
    p.add_argument("--detect-width", type=int, default=640, metavar="PX",
                   help="longer side of the downscaled copy the detector sees (default: 640)")
    p.add_argument("--upsample", type=int, default=0, metavar="K",
                   help="dlib detector upsampling steps, for small faces (default: 0)")


def _options(args: argparse.Namespace, max_frames=None):
    from ..extract import ExtractOptions

    if args.detect_every < 1:
        from ..errors import LrnetError

        raise LrnetError(f"--detect-every must be at least 1, got {args.detect_every}")
    return ExtractOptions(detect_every=args.detect_every, detect_width=args.detect_width,
                          upsample=args.upsample, max_frames=max_frames)


def register(sub) -> None:
    d = sub.add_parser("detect", help="score raw videos: extract, calibrate, classify",
                       description="Extract and calibrate the face landmarks of each video and score them "
                                   "with pretrained LRNet weights. One line per video; a failing video "
                                   "(no face, not a video, too short) is reported and the others still run.")
    d.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    add_weights_flag(d, "dfo")
    d.add_argument("--aggregate", choices=("vote", "mean-prob", "mean-logit"), default="vote",
                   help="how block scores become a video score (default: vote)")
    d.add_argument("--json", action="store_true", help="print one JSON object per video")
    d.add_argument("--blocks", action="store_true", help="with --json, include per-block scores")
    d.add_argument("--save-landmarks", metavar="OUT", help="write the calibrated landmarks (.txt): a file "
                   "for one video, else a folder receiving <video>.txt")
    d.add_argument("--visualize", metavar="OUT.mp4", help="write the video with raw (green) and calibrated "
                   "(red) landmarks; with several videos, a folder receiving <video>.mp4")
    d.add_argument("--plot", metavar="OUT.png", help="plot per-block p(fake) over time; with several videos, "
                   "a folder receiving <video>.png")
    d.add_argument("--max-frames", type=int, default=None, metavar="N", help="only use the first N frames")
    d.add_argument("--offline", action="store_true", help="never download pretrained weights")
    _add_extract_flags(d)
    add_gpu_flag(d)
    d.set_defaults(func=run_detect)

    c = sub.add_parser("calibrate", help="calibrate landmarks from another detector (OpenFace CSV) against a video",
                       description="Calibrate an OpenFace 2.0 landmark CSV (x_0..x_67, y_0..y_67; one row per "
                                   "frame) or a (frames, 68, 2) .npy array against its video, and write the "
                                   "published .txt format.")
    c.add_argument("video", metavar="VIDEO")
    c.add_argument("landmarks", metavar="LANDMARKS.csv")
    c.add_argument("-o", "--output", metavar="OUT.txt",
                   help="output file (default: the landmark file's name with .txt, in the current folder)")
    c.set_defaults(func=run_calibrate)


def _output_for(option: str, video: str, many: bool, suffix: str) -> Path:
    if not many:
        return Path(option)
    return Path(option) / (Path(video).stem + suffix)


def run_detect(args: argparse.Namespace) -> int:
    from ..detect import detect_video, save_landmarks, write_block_plot, write_visualization
    from ..errors import LrnetError
    from ..model import select_device
    from ..weights import resolve_weights

    device = select_device(args.gpu)
    options = _options(args, args.max_frames)
    weights = resolve_weights(args.weights, device=device, download=not args.offline)
    many = len(args.videos) > 1
    failures = 0
    if not args.json:
        print(f"weights: {weights.source}   aggregation: {args.aggregate}")
        print(f"{'video':<32} {'verdict':>7} {'score':>7} {'blocks':>6} {'frames':>6} {'time s':>7} {'fps':>6}")
    for video in args.videos:
        try:
            result = detect_video(video, weights, options, args.aggregate, device)
            if args.save_landmarks:
                save_landmarks(result, _output_for(args.save_landmarks, video, many, ".txt"))
            if args.visualize:
                write_visualization(result, _output_for(args.visualize, video, many, ".mp4"))
            if args.plot:
                write_block_plot(result, _output_for(args.plot, video, many, ".png"))
        except LrnetError as exc:
            failures += 1
            print(f"lrnet detect: error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"video": video, "error": str(exc)}))
            continue
        if args.json:
            print(json.dumps(result.to_dict(with_blocks=args.blocks)))
        else:
            total = result.timing["total"]
            decoded = result.landmarks.stats.frames
            print(f"{video:<32} {result.verdict:>7} {result.score:>7.4f} {result.blocks:>6} {result.frames:>6} "
                  f"{total:>7.2f} {decoded / total if total else 0:>6.1f}")
        sys.stdout.flush()
    return 1 if failures else 0


def run_calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from ..calibration import calibrate_video, check_landmarks, read_openface_csv
    from ..errors import LrnetError
    from ..landmarks import write_landmarks

    source = Path(args.landmarks)
    if not source.is_file():
        raise LrnetError(f"{source}: no such landmark file")
    if source.suffix.lower() == ".npy":
        try:
            landmarks = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise LrnetError(f"{source}: not a readable .npy array ({exc})") from None
        landmarks, success = check_landmarks(landmarks, str(source)), None
    else:
        landmarks, success = read_openface_csv(source)
    result, skipped, reused = calibrate_video(args.video, landmarks, success)
    output = Path(args.output) if args.output else Path(source.stem + ".txt")
    write_landmarks(output, result.sequence)
    note = f", {skipped} leading frames without a face skipped" if skipped else ""
    note += f", {reused} failed frames reused the previous landmarks" if reused else ""
    print(f"{output}: {len(result.sequence)} frames calibrated (face box {int(result.boxes.side.max())} px, "
          f"{result.lk_rejected} tracked points fell back to the detection{note})")
    return 0
