"""``lrnet predict``: score landmark files with a pair of branch weights."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_branch_flag, add_gpu_flag, add_weights_flag, branches_of


def register(sub) -> None:
    p = sub.add_parser("predict", help="score landmark files (.txt, frames x 136) and print verdicts",
                       description="Score landmark files or folders of them; print one verdict per video.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="landmark files or folders of .txt files")
    add_weights_flag(p, "ffpp-raw")
    add_branch_flag(p)
    p.add_argument("--block-size", type=int, default=None,
                   help="frames per block (default: the weights' own, 30 for the official ones)")
    p.add_argument("--aggregate", choices=("vote", "mean-prob", "mean-logit"), default="vote",
                   help="how block scores become a video score (default: vote = fraction of fake blocks)")
    p.add_argument("--json", action="store_true", help="print one JSON object per video instead of a table")
    p.add_argument("--blocks", action="store_true", help="with --json, include per-block scores")
    p.add_argument("--offline", action="store_true", help="never download pretrained weights")
    add_gpu_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LrnetError
    from ..landmarks import find_landmark_files, read_landmarks
    from ..model import select_device
    from ..scoring import score_sequence
    from ..weights import resolve_weights

    device = select_device(args.gpu)
    files = find_landmark_files(args.paths)
    if not files:
        raise LrnetError(f"no landmark files (*.txt) found in {', '.join(args.paths)}")
    weights = resolve_weights(args.weights, branches_of(args.branch), device=device, download=not args.offline)
    block_size = args.block_size or weights.block_size
    failures = 0
    rows = []
    for path in files:
        try:
            frames = read_landmarks(path)
        except LrnetError as exc:
            failures += 1
            rows.append({"video": str(path), "error": str(exc)})
            print(f"lrnet predict: error: {exc}", file=sys.stderr)
            continue
        result = score_sequence(frames, weights.models, block_size, args.aggregate, name=str(path), device=device)
        if result.blocks == 0:
            failures += 1
        rows.append(result.to_dict(with_blocks=args.blocks))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        _print_table(rows, weights.source, args.aggregate)
    return 1 if failures else 0


def _print_table(rows, source: str, aggregation: str) -> None:
    width = max([len("video")] + [len(r["video"]) for r in rows])
    print(f"weights: {source}   aggregation: {aggregation}")
    print(f"{'video':<{width}}  {'frames':>6}  {'blocks':>6}  {'score':>7}  verdict")
    for r in rows:
        if "frames" not in r:
            print(f"{r['video']:<{width}}  {'-':>6}  {'-':>6}  {'-':>7}  error (see above)")
            continue
        score = "-" if r["score"] is None else f"{r['score']:.4f}"
        extra = f"  ({r['error']})" if r.get("error") else ""
        print(f"{r['video']:<{width}}  {r['frames']:>6}  {r['blocks']:>6}  {score:>7}  {r['verdict']}{extra}")
