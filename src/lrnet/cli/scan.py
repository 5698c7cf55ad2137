"""``lrnet detect DIR|LIST.txt --report FILE``: the scan mode of ``lrnet detect`` (`lrnet.scan`).

`add_scan_flags` adds the flags to ``detect``'s parser; `is_scan` tells a scan from plain detection
(a folder or a list file among the inputs, or any scan flag); `run_scan` runs it and prints a
summary table (fake / real / uncertain / failed, this run and the whole report).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import List

from .common import int_range
from .jobflags import scheduler_address

__all__ = ["add_scan_flags", "is_scan", "run_scan"]

_PLAIN_ONLY = (("visualize", "--visualize"), ("plot", "--plot"), ("json", "--json"), ("blocks", "--blocks"))


def add_scan_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scans (VIDEO may be a folder or a list file of paths, one a line)")
    g.add_argument("--report", metavar="FILE.jsonl|FILE.csv",
                   help="one line per video as each finishes; a re-run skips those it holds")
    g.add_argument("-j", "--workers", type=int_range(1, 4096), default=None, metavar="N",
                   help="N worker processes on this machine (default: 1)")
    g.add_argument("--scheduler", type=scheduler_address, metavar="local:N|tcp://HOST:8786",
                   help="scan on Dask: local:N workers here, or your cluster (files every worker sees)")
    g.add_argument("--retries", type=int_range(0, 100), default=2, metavar="N",
                   help="re-runs of a video whose worker died (default: 2; no face is not retried)")
    g.add_argument("--retry-failed", action="store_true",
                   help="also re-run the videos the report holds as failed (their new line wins)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def is_scan(args: argparse.Namespace) -> bool:
    """A scan: a folder or list file among the videos, or a scan flag given."""
    from ..scan import LIST_SUFFIXES

    if args.report or args.workers or args.scheduler or args.retry_failed:
        return True
    return any(Path(v).is_dir() or Path(v).suffix.lower() in LIST_SUFFIXES for v in args.videos)


def _weights_spec(spec: str) -> str:
    """The weights as a worker elsewhere can name them: existing paths made absolute."""
    if Path(spec).exists():
        return os.path.abspath(spec)
    parts = spec.split(",")
    if len(parts) > 1 and all(Path(x).exists() for x in parts):
        return ",".join(os.path.abspath(x) for x in parts)
    return spec


def _table(summary) -> List[str]:
    report, now = summary.report, summary.now
    lines = [f"{'outcome':<10} {'this run':>9} {'report':>9}"]
    for key in ("fake", "real", "uncertain", "failed"):
        lines.append(f"{key:<10} {now.get(key, 0):>9} {report.get(key, 0):>9}")
    lines.append(f"{'total':<10} {sum(now.values()):>9} {sum(report.values()):>9}")
    return lines


def run_scan(args: argparse.Namespace) -> int:
    """Run a scan from ``detect``'s parsed flags; exit status 1 when a video of this run failed."""
    from ..errors import LrnetError

    for name, flag in _PLAIN_ONLY:
        if getattr(args, name, None):
            raise LrnetError(f"{flag} is for videos scored one by one; a scan writes --report (drop {flag})")
    if not args.report:
        raise LrnetError(f"{args.videos[0]}: a folder or list scan writes its results to --report FILE.jsonl or "
                         "FILE.csv")
    if args.scheduler and args.workers is not None:
        raise LrnetError("--workers is for this machine's process pool; with --scheduler use local:N or size "
                         "your Dask cluster")
    for source in args.videos:
        if not Path(source).exists():
            raise LrnetError(f"{source}: no such video, folder or list file")
    report_path = Path(args.report)
    if report_path.suffix.lower() not in (".jsonl", ".csv"):
        raise LrnetError(f"{report_path}: a report is a .jsonl or .csv file (by its extension)")
    if args.save_landmarks and Path(args.save_landmarks).is_file():
        raise LrnetError(f"{args.save_landmarks}: with a scan --save-landmarks names a folder receiving <video>.txt")

    from ..device import select_device
    from ..scan import ScanOptions, load_scan_detector, report_header, scan, scan_jobs, weights_digest
    from .extract import extract_options

    jobs = scan_jobs(args.videos, args.save_landmarks)
    if any(j.video.resolve() == report_path.resolve() for j in jobs):
        raise LrnetError(f"{report_path}: the report would overwrite an input")
    device = select_device(args.gpu)
    extract = extract_options(args, args.max_frames)
    extract.max_reused = args.max_reused
    options = ScanOptions(weights=_weights_spec(args.weights), weights_sha256="", aggregation=args.aggregate,
                          threshold=args.threshold, uncertain=args.uncertain, fps_policy=args.fps_policy,
                          extract=extract, device=str(device), download=not args.offline,
                          save_landmarks=bool(args.save_landmarks))
    detector = load_scan_detector(options, device="cpu")  # the workers load their own, on options.device
    options = replace(options, weights_sha256=weights_digest(detector))
    header = report_header(detector, options)
    print(f"weights: {detector.source}   aggregation: {detector.aggregation}   threshold: {detector.threshold:.4f} "
          f"({detector.threshold_source})   {len(jobs)} videos -> {report_path}", flush=True)

    def failed(message: str) -> None:
        print(f"lrnet detect: error: {message}", file=sys.stderr, flush=True)

    summary = scan(jobs, report_path, options, header, workers=args.workers or 1, scheduler=args.scheduler,
                   retries=args.retries, retry_failed=args.retry_failed,
                   progress=not args.no_progress, on_failure=failed)
    if summary.repaired:
        print(f"{report_path}: a partial last line (an interrupted write) was cut off")
    if summary.skipped:
        more = (f" ({summary.skipped_failed} of them failed; --retry-failed runs those again)"
                if summary.skipped_failed else "")
        print(f"{summary.skipped} of {summary.total} videos already in {report_path}: skipped{more}")
    rate = f", {summary.frames / summary.seconds:.0f} frames/s" if summary.seconds and summary.frames else ""
    print(f"{summary.total - summary.skipped} videos scanned in {summary.seconds:.1f} s{rate}; report: {report_path}")
    print(os.linesep.join(_table(summary)))
    return 1 if summary.failed else 0
