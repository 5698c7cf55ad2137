"""Flags and console output shared by the per-video job commands (``extract``, ``compress``).

`add_job_flags` adds where the job runs (``-j/--workers``, ``--scheduler``, ``--retries``), its log
and resume flags, and ``-q/--quiet`` / ``-v/--verbose`` (shown with `lrnet.cli.common.configure_logging`:
per-video failures, and per-video progress with ``--verbose``); `print_summary` prints the final counts.
"""

from __future__ import annotations

import argparse

from .common import Flags, add_talk_flags, int_range


def scheduler_address(text: str) -> str:
    """``local:N`` or a Dask scheduler address, checked at parse time."""
    from ..cluster import parse_scheduler

    try:
        parse_scheduler(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_job_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Two argument groups: where the job runs, and its log and console output."""
    p: Flags = parser.add_argument_group("where it runs")
    p.add_argument("-j", "--workers", type=int_range(1, 4096), default=None, metavar="N",
                   help="worker processes on this machine (default: 1)")
    p.add_argument("--scheduler", type=scheduler_address, metavar="local:N|tcp://HOST:8786",
                   help="run on Dask: local:N starts N worker processes here; an address uses your cluster "
                        "(inputs and outputs must be on a file system every worker sees; needs lrnet[cluster])")
    p.add_argument("--retries", type=int_range(0, 100), default=2, metavar="N",
                   help="with --scheduler: re-runs of a video whose task crashed (default: 2; content "
                        "failures such as no face are never retried)")
    p = parser.add_argument_group("log and output")
    p.add_argument("--log", metavar="CSV", help=f"per-video log (default: OUTPUT_DIR/{command}_log.csv)")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose output already exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_talk_flags(p, "also one line per finished video, and lrnet's debug lines")


def job_settings(args: argparse.Namespace) -> dict:
    """Keyword arguments of `lrnet.batch.run_jobs`-based jobs from the parsed flags."""
    from ..errors import LrnetError

    if args.scheduler and args.workers is not None:
        raise LrnetError("--workers is for this machine's process pool; with --scheduler use local:N or size "
                         "your Dask cluster")
    return {"workers": args.workers or 1, "scheduler": args.scheduler, "retries": args.retries,
            "log_path": args.log, "overwrite": args.overwrite,
            "progress": not (args.no_progress or args.quiet)}


def print_summary(summary, verb: str) -> None:
    """``N videos: D <verb>, S already done, F failed; X frames/s; log: PATH``."""
    rate = f"; {summary.frames_per_second:.0f} frames/s" if summary.frames else ""
    print(f"{summary.total} videos: {summary.done} {verb}, {summary.skipped_existing} already done, "
          f"{summary.failed} failed{rate}; log: {summary.log}")
