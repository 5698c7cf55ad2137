"""``lrnet demo``: the main job on built-in synthetic data (generate, train g1 + g2, evaluate)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a small synthetic dataset (offline, minutes)",
                       description="Generate a small SYNTHETIC landmark dataset, train both branches briefly, "
                                   "evaluate on its test split and print the metrics with the plot paths.")
    p.add_argument("--output", default="demo-output", help="output folder (default: ./demo-output)")
    p.add_argument("--epochs", type=int, default=80, help="epochs per branch (default: 80)")
    p.add_argument("--videos", type=int, default=80, help="training videos per class (default: 80)")
    p.add_argument("--seed", type=int, default=0, help="data and training seed (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, run_demo
    from ..errors import LrnetError

    if args.epochs < 1 or args.videos < 4:
        raise LrnetError("--epochs must be >= 1 and --videos >= 4")
    n = args.videos
    settings = DemoSettings(videos={"train": n, "val": max(2, n // 4), "test": max(2, (3 * n) // 8)},
                            epochs=args.epochs, seed=args.seed)
    run_demo(args.output, settings)
    return 0
