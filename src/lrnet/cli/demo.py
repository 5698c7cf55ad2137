"""``lrnet demo``: the main job on built-in synthetic data (generate, train g1 + g2, evaluate)."""

from __future__ import annotations

import argparse
import logging

from .common import add_talk_flags, configure_logging, int_range, seed

MAX_EPOCHS = MAX_VIDEOS = 100_000


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a small synthetic dataset (offline, minutes)",
                       description="Generate a small SYNTHETIC landmark dataset, train both branches briefly, "
                                   "evaluate on its test split and print the metrics with the plot paths.")
    p.add_argument("--output", default="demo-output", help="output folder (default: ./demo-output)")
    p.add_argument("--epochs", type=int_range(1, MAX_EPOCHS), default=80, help="epochs per branch (default: 80)")
    p.add_argument("--videos", type=int_range(4, MAX_VIDEOS), default=80,
                   help="training videos per class, >= 4 (the val/test splits are cut from it; default: 80)")
    p.add_argument("--seed", type=seed, default=0, help="data and training seed (default: 0)")
    add_talk_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import SYNTHETIC_NOTE, DemoSettings, demo_summary, run_demo

    n = args.videos
    settings = DemoSettings(videos={"train": n, "val": max(2, n // 4), "test": max(2, (3 * n) // 8)},
                            epochs=args.epochs, seed=args.seed)
    print(SYNTHETIC_NOTE + "\n", flush=True)
    # The demo's steps ([1/3] ...) are INFO records: shown by default, hidden by --quiet.
    with configure_logging("demo", args.quiet, args.verbose, default=logging.INFO):
        outcome = run_demo(args.output, settings, progress=not args.quiet)
    print()
    print(demo_summary(outcome))
    return 0
