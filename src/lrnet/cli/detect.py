"""``lrnet detect`` / ``lrnet calibrate``: from raw video to calibrated landmarks and verdicts
(``lrnet extract``, the dataset-building job, is `lrnet.cli.extract`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from ..vocab import AGGREGATIONS, DEFAULT_AGGREGATION, WRITABLE_VIDEO_SUFFIXES
from .common import (
    add_face_flags,
    add_gpu_flag,
    add_operating_flags,
    add_weights_flag,
    interval_text,
    nonneg_int,
    positive_int,
    verdict_text,
)
from .extract import add_extract_flags, extract_options
from .scan import add_scan_flags, is_scan, run_scan


def register(sub) -> None:
    d = sub.add_parser("detect", help="score raw videos: extract, calibrate, classify",
                       description="Extract and calibrate the face landmarks of each video and score them "
                                   "with pretrained LRNet weights. One line per video; a failing video "
                                   "(no face, not a video, too short) is reported and the others still run.")
    d.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    add_weights_flag(d, "dfo")
    d.add_argument("--aggregate", choices=AGGREGATIONS, default=DEFAULT_AGGREGATION,
                   help="how block scores become a video score (default: %(default)s)")
    d.add_argument("--json", action="store_true", help="print one JSON object per video")
    d.add_argument("--blocks", action="store_true", help="with --json, include per-block scores")
    d.add_argument("--save-landmarks", metavar="OUT", help="write the calibrated landmarks (.txt); with several "
                   "videos, a folder of <video>.txt")
    d.add_argument("--visualize", metavar="OUT.mp4", help="write the video with raw (green) and calibrated (red) "
                   "landmarks (.mp4 .avi .mkv .mov .m4v); with several videos, a folder")
    d.add_argument("--plot", metavar="OUT.png", help="plot p(fake) per block over time (.png .pdf .svg ...); with "
                   "several videos, a folder")
    d.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                   help="only use the first N frames of each video")
    d.add_argument("--fps-policy", choices=("resample", "keep"), default="resample",
                   help="resample a video faster than the weights' frame rate to it (default), or keep every frame")
    d.add_argument("--max-reused", type=nonneg_int, default=10, metavar="N",
                   help="more than N frames without landmarks of their own end a segment (default: 10)")
    add_face_flags(d)
    d.add_argument("--offline", action="store_true", help="never download pretrained weights")
    add_operating_flags(d)
    add_extract_flags(d)
    add_gpu_flag(d)
    add_scan_flags(d)
    d.set_defaults(func=run_detect)

    c = sub.add_parser("calibrate", help="calibrate landmarks from another detector (OpenFace CSV) against a video",
                       description="Calibrate an OpenFace 2.0 landmark CSV (x_0..x_67, y_0..y_67; one row per "
                                   "frame) or a (frames, 68, 2) .npy array against its video, and write the "
                                   "published .txt format.")
    c.add_argument("video", metavar="VIDEO")
    c.add_argument("landmarks", metavar="LANDMARKS.csv")
    c.add_argument("-o", "--output", metavar="OUT.txt",
                   help="output file (default: the landmark file's name with .txt, in the current folder)")
    c.add_argument("--max-reused", type=nonneg_int, default=10, metavar="N",
                   help="a run of more than N failed rows ends a segment and is dropped; the longest segment "
                        "is written (default: 10)")
    c.set_defaults(func=run_calibrate)


OUTPUT_FLAGS = (("save_landmarks", ".txt"), ("visualize", ".mp4"), ("plot", ".png"))


def plot_suffixes() -> List[str]:
    """File extensions Matplotlib's Agg canvas can write (``.png``, ``.pdf``, ``.svg``, ``.jpg`` ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return sorted("." + kind for kind in FigureCanvasAgg.get_supported_filetypes())


def _check_output_name(option: str, value: str, many: int) -> None:
    """Refuse, before any work, an output name the writer cannot honour (LrnetError)."""
    from ..errors import LrnetError

    flag = "--" + option.replace("_", "-")
    path = Path(value)
    if path.is_dir():
        return
    if many and path.suffix:
        raise LrnetError(f"{value}: with {many} videos {flag} names a folder receiving one file per video, and "
                         f"{path.suffix!r} looks like a file extension; give a folder name without one (or an "
                         "existing folder), or one video")
    # `lrnet.video.write_video` writes WRITABLE_VIDEO_SUFFIXES (.avi: MJPG; the others MPEG-4 part 2).
    allowed = WRITABLE_VIDEO_SUFFIXES if option == "visualize" else plot_suffixes() if option == "plot" else None
    if not many and allowed is not None and path.suffix.lower() not in allowed:
        got = f"got {path.suffix!r}" if path.suffix else "got a name without one"
        raise LrnetError(f"{value}: {flag} writes {', '.join(s[1:] for s in allowed)} files (by the extension); {got}")


def _output_for(option: str, video: str, many: bool, suffix: str) -> Path:
    if not many and not Path(option).is_dir():
        return Path(option)
    return Path(option) / (Path(video).stem + suffix)


def _plan_outputs(args: argparse.Namespace, videos: List[str]) -> Dict[str, Dict[str, Path]]:
    """Output paths per video and flag; refuses (LrnetError) one that is an input or written twice."""
    from ..atomic import ensure_not_input
    from ..errors import LrnetError

    many = len(videos) > 1
    plan: Dict[str, Dict[str, Path]] = {v: {} for v in videos}
    written: Dict[Path, str] = {}
    for option, suffix in OUTPUT_FLAGS:
        value = getattr(args, option)
        if not value:
            continue
        flag = "--" + option.replace("_", "-")
        for video in videos:
            out = _output_for(value, video, many, suffix)
            ensure_not_input(out, videos, what=f"{flag} output", reread=False, fix="choose another path")
            key = out.resolve()
            if key in written:
                raise LrnetError(f"{out}: {flag} and {written[key]} would write the same file")
            written[key] = flag
            plan[video][option] = out
        _check_output_name(option, value, len(videos) if many else 0)  # after "is the input"
    return plan


def run_detect(args: argparse.Namespace) -> int:
    from ..errors import LrnetError

    landmark_files = [v for v in args.videos if _is_landmark_file(Path(v))]
    if landmark_files:
        raise LrnetError(f"{landmark_files[0]}: a landmark file, not a video; score landmark files with "
                         f"`lrnet predict {landmark_files[0]}`")
    if is_scan(args):
        return run_scan(args)

    missing = [v for v in args.videos if not Path(v).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LrnetError(f"{missing[0]}: no such video file{more}")
    outputs = _plan_outputs(args, args.videos)  # refused before anything heavy is imported

    from ..detect import detect_video
    from ..detector import load_detector
    from ..device import select_device

    device = select_device(args.gpu)
    options = extract_options(args, args.max_frames)
    options.max_reused = args.max_reused
    detector = load_detector(args.weights, aggregation=args.aggregate, threshold=args.threshold,
                             uncertain=args.uncertain, device=device, download=not args.offline)
    failures = 0
    if not args.json:
        print(f"weights: {detector.source}   domain: {detector.domain or 'unknown'}")
        print(f"aggregation: {detector.aggregation}   threshold: {detector.threshold:.4f} ({detector.threshold_source})"
              "   frame rate: " + (f"{detector.fps:g} fps ({args.fps_policy})" if detector.fps
                                   else "unknown (every frame scored)"))
        print(f"{'video':<32} {'verdict':>16} {'score':>7} {'95% interval':>15} {'blocks':>6} {'frames':>6} "
              f"{'segs':>4} {'fps':>5} {'time s':>7} {'frames/s':>8}")
    for video in args.videos:
        try:
            with _progress_bar(video, enabled=not args.json) as progress:
                result = detect_video(video, detector, options, fps_policy=args.fps_policy, faces=args.faces,
                                      min_face=args.min_face, progress=progress)
            written = _write_outputs(result, outputs[video])
        except LrnetError as exc:
            failures += 1
            print(f"lrnet detect: error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"video": video, "error": str(exc)}))
            continue
        if args.json:
            print(json.dumps({**result.to_dict(with_blocks=args.blocks), "outputs": {k: str(v) for k, v in written}}))
        else:
            _print_row(video, result)
            for what, path in written:
                print(f"  wrote {path} ({what})")
        sys.stdout.flush()
    return 1 if failures else 0


def _is_landmark_file(path: Path) -> bool:
    """A .csv/.npy landmark file, or a .txt whose first line holds 136 numbers (a .txt of names is a
    list of videos to scan)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".npy"):
        return True
    if suffix != ".txt" or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 16).split()
        return len(first) == 136 and all(_is_number(v) for v in first)
    except OSError:
        return False


def _is_number(text: bytes) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _write_outputs(result, outputs: Dict[str, Path]) -> List[Tuple[str, Path]]:
    """Write the asked-for outputs; returns ``(what, path)`` of every file written."""
    from ..detect import save_landmarks, write_block_plot, write_visualization

    writers = {"save_landmarks": save_landmarks, "visualize": write_visualization, "plot": write_block_plot}
    what = {"save_landmarks": "calibrated landmarks", "visualize": "video with landmarks", "plot": "block plot"}
    written: List[Tuple[str, Path]] = []
    for option, path in outputs.items():
        writers[option](result, path)
        written.append((what[option], path))
        if option == "save_landmarks" and len(result.face_landmarks) > 1:
            written += [(f"landmarks of face {face}", path.with_name(f"{path.stem}.face{face}{path.suffix}"))
                        for face in sorted(result.face_landmarks)]
    return written


@contextlib.contextmanager
def _progress_bar(video: str, enabled: bool):
    """A progress bar on stderr while one video is detected (only on a terminal); yields the callback."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=Path(video).name[:30], unit="%", leave=False, disable=None if enabled else True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def progress(stage: str, fraction: float) -> None:
        done = int(round(100 * fraction)) if stage == "landmarks" else 100
        if done > bar.n:
            bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()


def _print_row(video: str, result) -> None:
    from ..detect import segment_table

    total = result.timing["total"]
    decoded = result.landmarks.stats.frames
    row = {**result.scoring.to_dict(), "verdict": result.verdict}  # the verdict after the quality gate
    verdict = verdict_text(row) + ("*" if result.fps_warning else "")
    rate = decoded / total if total else 0.0
    print(f"{video:<32} {verdict:>16} {result.score:>7.4f} {interval_text(row):>15} {result.blocks:>6} "
          f"{result.frames:>6} {len(result.segments):>4} {result.fps_used:>5.1f} {total:>7.2f} {rate:>8.1f}")
    if result.fps_warning:
        print(f"  * {result.fps_warning}")
    if len(result.segments) > 1:
        for index, span, frames, blocks, score, verdict in segment_table(result):
            print(f"  segment {index}: {span:<16} {frames:>6} frames {blocks:>4} blocks  score {score:>6}  {verdict}")
    for note in result.notes:
        print(f"  note: {note}")


def run_calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from ..atomic import ensure_not_input
    from ..calibration import calibrate_video, check_landmarks, read_openface_csv
    from ..errors import LrnetError
    from ..landmarks import write_landmarks

    source = Path(args.landmarks)
    if not source.is_file():
        raise LrnetError(f"{source}: no such landmark file")
    if not Path(args.video).is_file():
        raise LrnetError(f"{args.video}: no such video file")
    output = Path(args.output) if args.output else Path(source.stem + ".txt")
    ensure_not_input(output, [source, args.video], reread=False, fix="choose another -o")
    if source.suffix.lower() == ".npy":
        try:
            landmarks = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise LrnetError(f"{source}: not a readable .npy array ({exc})") from None
        landmarks, success = check_landmarks(landmarks, str(source)), None
    else:
        landmarks, success = read_openface_csv(source)
    result = calibrate_video(args.video, landmarks, success, max_reused=args.max_reused)
    sequence = result.sequence
    try:
        write_landmarks(output, sequence)
    except OSError as exc:
        raise LrnetError(f"{output}: cannot write ({exc.strerror or exc})") from None
    note = f", {result.skipped} leading frames without a face skipped" if result.skipped else ""
    note += f", {result.reused} failed frames reused the previous landmarks" if result.reused else ""
    note += f", {result.dropped} failed frames in long runs dropped" if result.dropped else ""
    if len(result.segments) > 1:
        spans = ", ".join(f"{s.start}-{s.stop - 1}" for s in result.segments)
        note += f"; {len(result.segments)} segments (frames {spans}), the longest written"
    print(f"{output}: {len(sequence)} frames calibrated (face box {int(result.calibration.boxes.side.max())} px, "
          f"{result.calibration.lk_rejected} tracked points fell back to the detection{note})")
    return 0
