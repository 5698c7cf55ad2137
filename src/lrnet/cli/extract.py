"""``lrnet extract``: a tree of videos -> landmark files, on this machine or a Dask cluster."""

from __future__ import annotations

import argparse

from .common import Flags, configure_logging, int_range, positive_int
from .jobflags import add_job_flags, job_settings, print_summary


def add_extract_flags(p: Flags) -> None:
    """The face detector's settings (shared with ``lrnet detect``)."""
    p.add_argument("--detect-every", type=positive_int, default=10, metavar="N",
                   help="run the face detector every N frames, carrying the box forward in between (default: 10)")
    p.add_argument("--detect-width", type=int_range(64, 8192), default=640, metavar="PX",
                   help="longer side of the downscaled copy the detector sees (default: 640)")
    p.add_argument("--upsample", type=int_range(0, 3), default=0, metavar="K",
                   help="dlib detector upsampling steps, 0-3, for small faces (each step is ~4x slower; default: 0)")


def extract_options(args: argparse.Namespace, max_frames=None):
    """`lrnet.extract.ExtractOptions` from the flags of `add_extract_flags`."""
    from ..extract import ExtractOptions

    return ExtractOptions(detect_every=args.detect_every, detect_width=args.detect_width,
                          upsample=args.upsample, max_frames=max_frames)


def register(sub) -> None:
    e = sub.add_parser("extract", help="turn a folder of videos into landmark files (dataset building)",
                       description="Extract and calibrate landmarks for every video under INPUT_DIR into .txt "
                                   "files under OUTPUT_DIR: resumable, atomic, in local processes or on a Dask "
                                   "cluster, with a per-video CSV log. Exit status 1 when some videos failed.")
    e.add_argument("input_dir", metavar="INPUT_DIR", help="folder of videos (searched recursively)")
    e.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder for the landmark files and the log")
    layout = e.add_argument_group("layout")
    layout.add_argument("--layout", choices=("flat", "ffpp"), default="flat",
                        help="flat: mirror the input tree (default); ffpp: map the FaceForensics++ tree onto "
                             "OUTPUT_DIR/{Origin,DF,F2F,FS,NT}/{raw,c23,c40}/{train,val,test}/")
    layout.add_argument("--splits", metavar="DIR",
                        help="folder of the FF++ train.json, val.json, test.json (default: INPUT_DIR/splits)")
    layout.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                        help="only the first N frames of each video (quick trials)")
    add_extract_flags(e.add_argument_group("face detector"))
    add_job_flags(e, "extract")
    e.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from ..batch import extract_folder
    from ..errors import LrnetError

    if args.splits and args.layout != "ffpp":
        raise LrnetError("--splits only applies with --layout ffpp")
    settings = job_settings(args)
    with configure_logging("extract", args.quiet, args.verbose):
        summary = extract_folder(args.input_dir, args.output_dir, layout=args.layout, split_dir=args.splits,
                                 options=extract_options(args, args.max_frames), **settings)
    print_summary(summary, "extracted")
    return 1 if summary.failed else 0
