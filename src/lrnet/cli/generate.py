"""``lrnet generate``: write a deterministic synthetic landmark dataset in the FF++ layout."""

from __future__ import annotations

import argparse

from ..ffpp import FAKES, LEVELS
from .common import add_talk_flags, configure_logging, float_range, int_range, seed

DEFAULT_VIDEOS = 60
DEFAULT_FRAMES = (120, 240)
MAX_VIDEOS = MAX_FRAMES = 1_000_000


def difficulty(text: str):
    """``easy``, ``medium``, ``hard`` or the artifact strength as a number from 0 to 1000."""
    if text in ("easy", "medium", "hard"):
        return text
    try:
        return float_range(0.0, 1000.0)(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; or one of easy, medium, hard") from None


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="write a synthetic landmark dataset (FF++ layout) for trying lrnet without FF++",
        description="Write a deterministic SYNTHETIC landmark dataset in the FF++ layout: ROOT/Origin/LEVEL/SPLIT/NNN.txt "
                    "(real) and ROOT/MANIP/LEVEL/SPLIT/NNN_MMM.txt (fake), plus a marker file saying it is synthetic. "
                    "Faces move, blink and talk; fakes carry a temporal artifact in the inner-face landmarks.")
    p.add_argument("root", metavar="ROOT", help="dataset root to write (e.g. ./datasets)")
    p.add_argument("--videos", type=int_range(3, MAX_VIDEOS), default=None, metavar="N",
                   help=f"real videos in all, split 72/14/14 %% into train/val/test as FF++ "
                        f"(default {DEFAULT_VIDEOS}; --ffpp-size: 1000)")
    p.add_argument("--frames", type=int_range(1, MAX_FRAMES), nargs=2, default=None, metavar=("LO", "HI"),
                   help=f"frames per video, drawn uniformly from LO..HI (default {DEFAULT_FRAMES[0]} {DEFAULT_FRAMES[1]}; "
                        f"--ffpp-size: 300 700)")
    p.add_argument("--manipulations", nargs="+", default=["DF"], metavar="M", choices=FAKES,
                   help=f"fake subsets to write: {' '.join(FAKES)} (default: DF)")
    p.add_argument("--levels", nargs="+", default=["raw"], metavar="LEVEL", choices=LEVELS,
                   help=f"compression levels to write: {' '.join(LEVELS)} (default: raw)")
    p.add_argument("--seed", type=seed, default=0,
                   help="random seed; same seed and flags, same files (default 0)")
    p.add_argument("--difficulty", type=difficulty, default="medium",
                   help="strength of the fake artifact: easy, medium, hard or a number (default: medium)")
    p.add_argument("--ffpp-size", action="store_true",
                   help="FaceForensics++ size: 720/140/140 videos per split, 300-700 frames each")
    p.add_argument("-j", "--workers", type=int_range(0, 4096), default=0,
                   help="writer processes (default 0: automatic)")
    add_talk_flags(p)
    p.set_defaults(func=run)


def videos_per_split(total: int) -> dict:
    """Split `total` real videos 72/14/14 into train/val/test (at least one in each when total >= 3)."""
    from ..errors import LrnetError

    if total < 3:
        raise LrnetError(f"--videos must be at least 3 (one per split), got {total}")
    val = max(1, round(total * 0.14))
    return {"train": total - 2 * val, "val": val, "test": val}


def run(args: argparse.Namespace) -> int:
    import time

    from ..errors import LrnetError
    from ..locks import output_lock
    from ..synthetic import MARKER_NAME, generate_ffpp

    total = args.videos if args.videos is not None else (1000 if args.ffpp_size else DEFAULT_VIDEOS)
    frames = tuple(args.frames) if args.frames else ((300, 700) if args.ffpp_size else DEFAULT_FRAMES)
    split = videos_per_split(total)
    if frames[0] > frames[1]:
        raise LrnetError(f"--frames LO HI needs LO <= HI, got {frames[0]} {frames[1]}")
    t0 = time.perf_counter()
    with configure_logging("generate", args.quiet, args.verbose), output_lock(args.root, "generate"):
        info = generate_ffpp(args.root, videos_per_split=split, manipulations=tuple(args.manipulations),
                             levels=tuple(args.levels), frames=frames, seed=args.seed, difficulty=args.difficulty,
                             workers=args.workers, progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    print(f"wrote {info['files']} SYNTHETIC landmark files to {args.root} in {elapsed:.1f} s "
          f"(real videos train/val/test: {split['train']}/{split['val']}/{split['test']}; "
          f"fakes: {', '.join(args.manipulations)}; levels: {', '.join(args.levels)}; frames {frames[0]}-{frames[1]}; "
          f"seed {args.seed})")
    print(f"this is synthetic data (see {args.root}/{MARKER_NAME}), not FaceForensics++; "
          f"e.g. train on it with: lrnet train --root {args.root} -d {args.manipulations[0]} -l {args.levels[0]}")
    return 0
