"""``lrnet predict``: score landmark files with a pair of branch weights.

Each video gets its score, the score's 95% interval over its blocks, the call at the threshold
(the weights' calibrated one, or 0.5) and a verdict, "uncertain" when the interval contains the
threshold. Rows are printed (and flushed) as each file is scored, so ``| head`` sees them at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ..vocab import AGGREGATIONS, DEFAULT_AGGREGATION
from .common import (add_branch_flag, add_gpu_flag, add_operating_flags, add_weights_flag, block_size, branches_of,
                     interval_text, verdict_text)


def register(sub) -> None:
    p = sub.add_parser("predict", help="score landmark files (.txt, frames x 136) and print verdicts",
                       description="Score landmark files or folders of them; print one verdict per video, with "
                                   "the 95%% interval of its score and the threshold that decided it.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="landmark files or folders of .txt files")
    add_weights_flag(p)
    add_branch_flag(p)
    p.add_argument("--block-size", type=block_size, default=None,
                   help="frames per block (default: the weights' own, 30 for the official ones)")
    p.add_argument("--aggregate", choices=AGGREGATIONS, default=DEFAULT_AGGREGATION,
                   help="how block scores become a video score (default: %(default)s; vote = fraction of fake blocks)")
    add_operating_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per video instead of a table")
    p.add_argument("--blocks", action="store_true", help="with --json, include per-block scores")
    p.add_argument("--offline", action="store_true", help="never download pretrained weights")
    add_gpu_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LrnetError
    from ..landmarks import find_landmark_files, read_landmarks
    from ..detector import load_detector
    from ..device import select_device

    device = select_device(args.gpu)
    files = find_landmark_files(args.paths)
    if not files:
        raise LrnetError(f"no landmark files (*.txt) found in {', '.join(args.paths)}")
    branches = branches_of(args.branch)
    detector = load_detector(args.weights, aggregation=args.aggregate, branches=branches, threshold=args.threshold,
                             uncertain=args.uncertain, device=device, download=not args.offline)
    if args.block_size is not None and args.block_size != detector.block_size:
        detector = replace(detector, weights=replace(detector.weights, block_size=args.block_size))
    weights, domain = detector.weights, detector.domain
    width = max([len("video")] + [len(str(f)) for f in files])
    if not args.json:
        emit(f"weights: {weights.source}   domain: {domain or 'unknown'}")
        emit(f"aggregation: {args.aggregate}   threshold: {detector.threshold:.4f} ({detector.threshold_source})   "
             f"interval: 95% over blocks")
        emit(f"{'video':<{width}}  {'frames':>6}  {'blocks':>6}  {'score':>7}  {'95% interval':>15}  verdict")
    failures = 0
    for path in files:
        try:
            frames = read_landmarks(path)
        except LrnetError as exc:
            failures += 1
            print(f"lrnet predict: error: {exc}", file=sys.stderr, flush=True)
            emit(json.dumps({"video": str(path), "error": str(exc)}) if args.json
                 else f"{str(path):<{width}}  {'-':>6}  {'-':>6}  {'-':>7}  {'-':>15}  error (see above)")
            continue
        result = detector.score_sequence(frames, name=str(path))
        failures += result.blocks == 0
        row = {**result.to_dict(with_blocks=args.blocks), "weights": weights.source, "domain": domain}
        emit(json.dumps(row) if args.json else table_row(row, width))
    return 1 if failures else 0


def emit(line: str) -> None:
    """One line to stdout, flushed at once (a closed pipe surfaces here, not at exit)."""
    print(line, flush=True)


def table_row(r, width: int) -> str:
    """A table line: video, frames, blocks, score, interval, verdict ("uncertain (fake)" keeps the call)."""
    score = "-" if r["score"] is None else f"{r['score']:.4f}"
    interval, verdict = interval_text(r), verdict_text(r)
    extra = f"  ({r['error']})" if r.get("error") else ""
    return f"{r['video']:<{width}}  {r['frames']:>6}  {r['blocks']:>6}  {score:>7}  {interval:>15}  {verdict}{extra}"
