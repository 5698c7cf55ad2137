"""The ``lrnet`` command line: one sub-command module per job, dispatched from `main`.

Each module in `COMMAND_MODULES` exposes ``register(subparsers)``, which adds its sub-command(s)
and sets ``func(args) -> int`` as the handler. Modules import torch and friends inside their
handlers, so ``lrnet --help`` stays fast.

Exit status: 0 success; 1 the job ran but some inputs failed (each reported on its own line);
2 a user error (bad flag, missing or malformed file), reported on one line without a traceback;
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ..errors import LrnetError

COMMAND_MODULES = ("demo", "predict", "weights", "convert", "evaluate", "generate", "video", "extract", "compress", "dataset", "train")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="lrnet",
        description="Landmark-based deepfake video detection (LRNet).",
    )
    parser.add_argument("--version", action="version", version=f"lrnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LrnetError as exc:
        print(f"lrnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lrnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
