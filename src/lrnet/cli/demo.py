"""``lrnet demo``: the main job on built-in synthetic data (generate, train g1 + g2, evaluate)."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import nonneg_int, positive_int


def _videos(text: str) -> int:
    """Training videos per class: an integer >= 4 (the demo's val/test splits are cut from it)."""
    value = positive_int(text)
    if value < 4:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 4")
    return value


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a small synthetic dataset (offline, minutes)",
                       description="Generate a small SYNTHETIC landmark dataset, train both branches briefly, "
                                   "evaluate on its test split and print the metrics with the plot paths.")
    p.add_argument("--output", default="demo-output", help="output folder (default: ./demo-output)")
    p.add_argument("--epochs", type=positive_int, default=80, help="epochs per branch (default: 80)")
    p.add_argument("--videos", type=_videos, default=80, help="training videos per class, >= 4 (default: 80)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="data and training seed (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or steps; only the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import SYNTHETIC_NOTE, DemoSettings, demo_summary, run_demo

    logger = logging.getLogger("lrnet")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    n = args.videos
    settings = DemoSettings(videos={"train": n, "val": max(2, n // 4), "test": max(2, (3 * n) // 8)},
                            epochs=args.epochs, seed=args.seed)
    print(SYNTHETIC_NOTE + "\n")
    try:
        outcome = run_demo(args.output, settings, progress=not args.quiet)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    print()
    print(demo_summary(outcome))
    return 0
