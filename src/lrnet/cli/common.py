"""Flags shared by several sub-commands, spelled as in the reference code, the flag types that
check numbers and paths at parse time (a bad value stops with ``argument --x: ...``, exit 2), and
the one way a command shows lrnet's log records (`configure_logging`, ``-q``/``-v``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from typing import Any, Dict, Iterator, Union

from ..ffpp import LEVELS

__all__ = ["DEFAULT_WEIGHTS", "CompactHelpFormatter", "ConsoleHandler", "Flags", "add_branch_flag",
           "add_dataset_flags", "add_gpu_flag", "add_talk_flags", "add_weights_flag", "block_size", "branches_of",
           "configure_logging", "dataset_warnings", "device_name", "float_range", "fraction", "int_range",
           "nonempty_path", "nonneg_float", "nonneg_int", "port_number", "positive_float", "positive_int", "seed"]


DEFAULT_WEIGHTS = "dfo"  # the one default of every command that takes --weights (detect, predict, serve, ...)

# A parser or one of its argument groups: the add_*_flag helpers put their flags in either.
Flags = Union[argparse.ArgumentParser, "argparse._ArgumentGroup"]


class CompactHelpFormatter(argparse.HelpFormatter):
    """``--help`` that fits a screen: ``-g, --gpu [DEVICE]`` names the value once (``--real PATH ...``
    for several values), and a usage that would wrap past three lines becomes ``lrnet CMD [options] ARGS``
    (the options are all listed, by group, below it)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width=None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        default = self._get_default_metavar_for_optional(action)
        if action.nargs == argparse.ONE_OR_MORE:
            value = f"{self._metavar_formatter(action, default)(1)[0]} ..."
        else:
            value = self._format_args(action, default)
        return f"{', '.join(action.option_strings)} {value}"

    def _format_usage(self, usage, actions, groups, prefix) -> str:
        full = super()._format_usage(usage, actions, groups, prefix)
        if usage is not None or full.strip().count("\n") < 3:
            return full
        words = ["%(prog)s", "[options]"]
        for action in actions:
            if action.option_strings and action.required:
                words.append(f"{action.option_strings[0]} "
                             f"{self._format_args(action, self._get_default_metavar_for_optional(action))}")
            elif not action.option_strings:
                words.append(self._format_args(action, self._get_default_metavar_for_positional(action)))
        return super()._format_usage(" ".join(words), actions, groups, prefix)


_DEVICE = re.compile(r"(\d+|(cpu|cuda|mps|xpu)(:\d+)?)")


def device_name(text: str) -> str:
    """A torch device as ``-g`` takes it: ``1``, ``cuda``, ``cuda:1``, ``cpu``, ``mps``, ``xpu:0``."""
    if not _DEVICE.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (examples: 0, cuda, cuda:1, cpu)")
    return text.strip()


def add_gpu_flag(parser: Flags) -> None:
    parser.add_argument("-g", "--gpu", nargs="?", const=True, default=False, metavar="DEVICE", type=device_name,
                        help="run on a GPU (cuda:0, or the one given: -g 1, cuda:1)")


def add_weights_flag(parser: Flags, default: str = DEFAULT_WEIGHTS) -> None:
    parser.add_argument("--weights", default=default, metavar="NAME|DIR",
                        help=f"dfo, ffpp-raw, a training run, a folder of g1/g2 .pth or TF-era .h5 files, or "
                             f"G1.h5,G2.h5 (default: {default})")


def add_face_flags(parser) -> None:
    """``--faces all|largest`` and ``--min-face PX`` (detect, watch): which faces are followed."""
    parser.add_argument("--faces", choices=("all", "largest"), default="all",
                        help="every face, the verdict being the most suspicious one's (default), or the largest")
    parser.add_argument("--min-face", type=positive_int, default=80, metavar="PX",
                        help="other faces must be at least PX pixels tall (default: 80)")


def add_branch_flag(parser: Flags) -> None:
    parser.add_argument("-b", "--branch", choices=("g1", "g2", "all"), default="all", metavar="WHICH",
                        help="branch(es) to use: g1, g2 or all (default: all)")


def branches_of(choice: str):
    return ("g1", "g2") if choice == "all" else (choice,)


def add_dataset_flags(parser: Flags, multiple: bool = False) -> None:
    """``-d/--dataset``, ``-l/--level``, ``--root`` as in the reference training code.

    With ``multiple=True`` (``lrnet evaluate``'s protocol mode) ``-d`` and ``-l`` take one or
    more values and parse to lists.
    """
    many: Dict[str, Any] = {"nargs": "+"} if multiple else {}
    parser.add_argument("-d", "--dataset", default=["DF"] if multiple else "DF", metavar="NAME", **many,
                        help="DF, F2F, FS, NT, FF_all, a dataset under --root, or a YAML file (default: DF)")
    parser.add_argument("-l", "--level", default=["raw"] if multiple else "raw", choices=LEVELS, metavar="LEVEL",
                        **many, help=f"FF++ compression: {', '.join(LEVELS)} (default: raw)")
    parser.add_argument("--root", default="./datasets", metavar="DIR", help="dataset root (default: ./datasets)")


def add_operating_flags(p: Flags) -> None:
    """``--threshold`` and ``--no-uncertain`` (evaluate, predict, detect, robustness)."""
    p.add_argument("--threshold", type=fraction, default=None, metavar="T",
                   help="fake at a score >= T (default: the weights', else 0.5)")
    p.add_argument("--no-uncertain", dest="uncertain", action="store_false",
                   help="always real/fake, even if the 95%% interval holds T")


def verdict_text(row) -> str:
    """A result row's verdict for a table: "uncertain (fake)" keeps the call it would have had."""
    return row["verdict"] if row["verdict"] != "uncertain" else f"uncertain ({row['call']})"


def interval_text(row) -> str:
    """A result row's 95% interval as "[lo, hi]", or "-"."""
    return "-" if row.get("interval") is None else f"[{row['interval'][0]:.3f}, {row['interval'][1]:.3f}]"


# ---------------------------------------------------------------- numeric flag types (parse-time checks)
# argparse turns the ArgumentTypeError into "argument --x: ..." and exit status 2.

def _number(kind, text: str, low=None, high=None, low_open: bool = False, what: str = ""):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if low is not None and (value <= low if low_open else value < low):
        raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: epochs, workers, frames, block size)."""
    return _number(int, text, 1, what="an integer >= 1")


def nonneg_int(text: str) -> int:
    """An integer >= 0 (0 usually means "auto" or "off")."""
    return _number(int, text, 0, what="an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (rates, sizes, seconds)."""
    return _number(float, text, 0.0, low_open=True, what="a number > 0")


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    return _number(float, text, 0.0, what="a number >= 0")


def fraction(text: str) -> float:
    """A finite number in [0, 1] (probabilities, thresholds, rates)."""
    return _number(float, text, 0.0, 1.0, what="a number between 0 and 1")


def port_number(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    return _number(int, text, 0, 65535, what="a port between 0 and 65535")


def int_range(low: int, high: int, what: str = ""):
    """A flag type: an integer in ``[low, high]`` (an upper bound keeps a typo like ``--workers
    1000000`` from reaching the machine)."""
    def parse(text: str) -> int:
        return _number(int, text, low, high, what=what or f"an integer between {low} and {high}")
    parse.__name__ = f"int_{low}_{high}"
    return parse


def float_range(low: float, high: float, what: str = ""):
    """A flag type: a finite number in ``[low, high]``."""
    def parse(text: str) -> float:
        return _number(float, text, low, high, what=what or f"a number between {low:g} and {high:g}")
    parse.__name__ = f"float_{low:g}_{high:g}"
    return parse


def block_size(text: str) -> int:
    """Frames per block: an integer from 2 (one frame difference for g2) to 100000."""
    return _number(int, text, 2, 100_000, what="an integer between 2 and 100000 (frames per block)")


def seed(text: str) -> int:
    """A random seed, 0 to 2**32 - 1 (what NumPy and PyTorch both accept)."""
    return _number(int, text, 0, 2 ** 32 - 1, what="an integer between 0 and 4294967295")


def nonempty_path(text: str) -> str:
    """A path that is not the empty string (``--out ""`` would otherwise mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return text


# ---------------------------------------------------------------- console output of long jobs
def add_talk_flags(p: Flags, verbose_help: str = "also lrnet's debug lines") -> None:
    """``-q/--quiet`` and ``-v/--verbose``, the same on every long job (train, demo, extract,
    compress, generate, robustness, evaluate, dataset check); they exclude each other."""
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="only errors and the final summary (no progress)")
    talk.add_argument("-v", "--verbose", action="store_true", help=verbose_help)


class ConsoleHandler(logging.Handler):
    """``lrnet CMD: [error: |warning: ]message`` on stderr, written around any tqdm bar."""

    def __init__(self, command: str):
        super().__init__()
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        kind = ("error: " if record.levelno >= logging.ERROR
                else "warning: " if record.levelno >= logging.WARNING else "")
        tqdm.write(f"lrnet {self.command}: {kind}{record.getMessage()}", file=sys.stderr)


@contextlib.contextmanager
def configure_logging(command: str, quiet: bool = False, verbose: bool = False,
                      default: int = logging.WARNING) -> Iterator[logging.Handler]:
    """While the command runs, show the ``lrnet`` loggers' records on stderr as ``lrnet COMMAND:
    ...`` lines: errors only with `quiet`, everything down to DEBUG with `verbose`, else from
    `default` up (WARNING; INFO for commands whose steps are their output, such as ``demo``).

    A context manager, so that the logger is as it was afterwards (tests run several commands in
    one process); the records do not also reach the root logger's handlers meanwhile.
    """
    logger = logging.getLogger("lrnet")
    handler = ConsoleHandler(command)
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else default)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def dataset_warnings(command: str, root, dataset: str, level: str) -> None:
    """Print `lrnet.dataset_check.quick_warnings` (duplicated files, video ids in two splits) as
    ``lrnet COMMAND: warning: ...`` lines on stderr."""
    from ..dataset_check import quick_warnings

    for line in quick_warnings(root, dataset, level):
        print(f"lrnet {command}: warning: {line}", file=sys.stderr, flush=True)
