"""``lrnet compress``: H.264 copies of a video tree as FF++ made c23/c40, or degraded for robustness studies."""

from __future__ import annotations

import argparse

from .common import configure_logging, float_range, int_range, positive_float
from .jobflags import add_job_flags, job_settings, print_summary

crf_value = int_range(0, 51, "an integer between 0 (lossless) and 51")  # a libx264 constant rate factor


def register(sub) -> None:
    from ..ffpp import LEVELS

    c = sub.add_parser("compress", help="re-encode a video tree with H.264 (FF++ c23/c40 levels, degradations)",
                       description="Write H.264 (libx264, yuv420p) copies of every video under INPUT_DIR into "
                                   "OUTPUT_DIR (as .mp4, mirroring the tree), the way FaceForensics++ made c23 "
                                   "and c40: same frame rate and size, constant rate factor --crf. Optional "
                                   "degradations for robustness studies. Resumable, atomic, one writer per "
                                   "OUTPUT_DIR, local or on Dask, logged.")
    c.add_argument("input_dir", metavar="INPUT_DIR")
    c.add_argument("output_dir", metavar="OUTPUT_DIR")
    c.add_argument("--crf", type=crf_value, default=23, metavar="N",
                   help="constant rate factor 0 (lossless) .. 51 (FF++: c23 = 23, c40 = 40; default: 23)")
    c.add_argument("--scale", type=int_range(16, 16384), metavar="HEIGHT", help="output height in px (width follows)")
    c.add_argument("--fps", type=float_range(0.1, 1000), metavar="F", help="output frame rate (frames dropped or repeated)")
    c.add_argument("--blur", type=positive_float, metavar="SIGMA", help="Gaussian blur, sigma in px")
    c.add_argument("--noise", type=positive_float, metavar="SIGMA", help="Gaussian noise, sigma in 8-bit levels")
    c.add_argument("--layout", choices=("flat", "ffpp"), default="flat",
                   help="flat: mirror the tree; ffpp: read <subset>/<--from-level>/videos of an FF++ tree and "
                        "write <subset>/c<crf>/videos (OUTPUT_DIR may be INPUT_DIR) (default: flat)")
    c.add_argument("--from-level", choices=LEVELS, default="raw", help="with --layout ffpp: level to read "
                   "(default: raw)")
    add_job_flags(c, "compress")
    c.set_defaults(func=run_compress)


def run_compress(args: argparse.Namespace) -> int:
    from ..compress import compress_folder

    settings = job_settings(args)
    with configure_logging("compress", args.quiet, args.verbose):
        summary = compress_folder(args.input_dir, args.output_dir, crf=args.crf, scale=args.scale, fps=args.fps,
                                  blur=args.blur, noise=args.noise, layout=args.layout,
                                  source_level=args.from_level, **settings)
    print_summary(summary, "compressed")
    return 1 if summary.failed else 0
