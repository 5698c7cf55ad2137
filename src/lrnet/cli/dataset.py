"""``lrnet dataset check``: is a landmark dataset fit to train on? Table, dataset card, exit status."""

from __future__ import annotations

import argparse
import json

from .common import add_talk_flags, block_size, configure_logging, int_range


def register(sub) -> None:
    from ..ffpp import LEVELS

    d = sub.add_parser("dataset", help="inspect landmark datasets (check)",
                       description="Commands about landmark datasets.")
    inner = d.add_subparsers(dest="dataset_command", metavar="ACTION")
    inner.required = True
    c = inner.add_parser("check", help="check a landmark dataset and write its dataset card",
                         description="Read every landmark file of the dataset at ROOT (FF++ layout, NAME/{real,fake} "
                                     "layout, or a dataset YAML file) and report per subset, level and split: "
                                     "videos, frames, blocks, videos too short for one block, unreadable or "
                                     "non-finite files; byte-identical files, video ids in two splits (leakage), "
                                     "frame counts against the source videos (--videos) and class balance. Writes "
                                     "dataset_card.json and .md. Exit status 1 when a problem is found.")
    c.add_argument("root", metavar="ROOT", help="dataset root folder or dataset YAML file")
    c.add_argument("-d", "--dataset", metavar="NAME", help="only this dataset (FF++: DF, F2F, FS, NT, FF_all; "
                   "or a custom NAME under ROOT)")
    c.add_argument("-l", "--level", nargs="+", choices=LEVELS, metavar="LEVEL",
                   help="FF++: only these levels (default: all found)")
    c.add_argument("--videos", metavar="DIR", help="source videos (FF++ video tree for an FF++ dataset, else "
                   "found by file name) to compare frame counts")
    c.add_argument("--block-size", type=block_size, default=30, metavar="B", help="frames per block (default: 30)")
    c.add_argument("--card-dir", metavar="DIR", help="where to write the dataset card (default: ROOT)")
    c.add_argument("--no-card", action="store_true", help="do not write the dataset card")
    c.add_argument("-j", "--workers", type=int_range(0, 4096), default=0, metavar="N",
                   help="reader processes (default 0: automatic)")
    c.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    add_talk_flags(c)
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    import sys

    from ..dataset_check import check_dataset, format_table, write_card

    with configure_logging("dataset check", args.quiet, args.verbose):
        report = check_dataset(args.root, dataset=args.dataset, levels=args.level, videos=args.videos,
                               block_size=args.block_size, workers=args.workers, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_table(report))
        for line in report.problems:
            print(f"problem: {line}")
        for line in report.warnings:
            print(f"warning: {line}")
        print("no problem found" if report.ok else f"{len(report.problems)} problem(s) found")
    if not args.no_card:
        json_path, md_path = write_card(report, args.card_dir)
        print(f"dataset card: {json_path}, {md_path}", file=sys.stderr if args.json else sys.stdout)
    return 0 if report.ok else 1
