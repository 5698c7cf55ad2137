"""lrnet.cli: the `main` wrapper's help and the parse-time flag types of lrnet.cli.common.

The misuse behaviour of `main` (one line, exit codes, signals, pipes, full disks) is tested through
real processes in tests/test_misuse.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrnet.cli import build_parser
from lrnet.cli.common import (block_size, device_name, float_range, fraction, int_range, nonempty_path, nonneg_float,
                              nonneg_int, port_number, positive_float, positive_int, seed)

SRC = Path(__file__).resolve().parents[1] / "src"


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = []
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        names += [[name, child] for child in nested[0].choices] if nested else [[name]]
    return names


@pytest.mark.misuse
def test_exit_codes_help_of_every_command_is_exit_0():
    """Promise 9: ``--help`` works on every sub-command (and nested action), exit 0, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    commands = _commands()
    assert ["predict"] in commands and ["weights", "list"] in commands
    for command in [[], *commands]:
        proc = subprocess.run([sys.executable, "-m", "lrnet", *command, "--help"], capture_output=True, text=True,
                              timeout=60, env=env)
        assert proc.returncode == 0, (command, proc.stderr)
        assert "usage: lrnet" in proc.stdout and proc.stderr == ""


BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e400", "abc", "", "1.5.2", "0x10"]


@pytest.mark.misuse
@pytest.mark.parametrize("kind,good,bad", [
    (positive_int, {"1": 1, "7": 7, " 3 ": 3}, ["0", "-1", "1.5", "1e3", *BAD_NUMBERS, "9" * 5000]),
    (nonneg_int, {"0": 0, "5": 5}, ["-1", "2.0", *BAD_NUMBERS]),
    (positive_float, {"0.5": 0.5, "1e-3": 1e-3}, ["0", "-0.0", "-1", *BAD_NUMBERS]),
    (nonneg_float, {"0": 0.0, "2.5": 2.5}, ["-1e-9", *BAD_NUMBERS]),
    (fraction, {"0": 0.0, "1": 1.0, "0.5": 0.5}, ["1.0001", "-0.1", *BAD_NUMBERS]),
    (port_number, {"0": 0, "8080": 8080, "65535": 65535}, ["65536", "-1", "80.5", *BAD_NUMBERS]),
    (block_size, {"2": 2, "30": 30, "100000": 100000}, ["1", "0", "-30", "100001", "30.0", *BAD_NUMBERS]),
    (seed, {"0": 0, "4294967295": 2 ** 32 - 1}, ["-1", "4294967296", *BAD_NUMBERS]),
    (int_range(1, 64), {"1": 1, "64": 64}, ["0", "65", "1000000", *BAD_NUMBERS]),
    (float_range(0.5, 2.0), {"0.5": 0.5, "2": 2.0}, ["0.49", "2.01", *BAD_NUMBERS]),
])
def test_exit_codes_numeric_flag_types_reject_careless_values(kind, good, bad):
    """Promise 9: 0, negative, NaN, inf, huge and non-numeric values stop at parse time."""
    for text, value in good.items():
        assert kind(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)


@pytest.mark.misuse
def test_exit_codes_path_and_device_types():
    assert nonempty_path("a b/é.txt") == "a b/é.txt"
    for text in ("", "  "):
        with pytest.raises(argparse.ArgumentTypeError):
            nonempty_path(text)
    for text in ("0", "1", "cuda", "cuda:1", "cpu", "mps", "xpu:0"):
        assert device_name(text) == text
    for text in ("foo", "cuda:", "cuda:x", "gpu", "-1", "a.txt", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            device_name(text)


@pytest.mark.misuse
def test_exit_codes_argparse_error_is_exit_2_on_stderr():
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-m", "lrnet", "predict", "x.txt", "-g", "foo"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["lrnet predict: error: argument -g/--gpu: 'foo' is not a device (examples: 0, "
                                        "cuda, cuda:1, cpu) (see: lrnet predict --help)"]


@pytest.mark.misuse
@pytest.mark.parametrize("argv,needle", [
    ([], "lrnet: error: the following arguments are required: COMMAND"),
    (["nope"], "lrnet: error: argument COMMAND: invalid choice: 'nope'"),
    (["weights"], "lrnet weights: error: the following arguments are required: ACTION"),
    (["predict"], "lrnet predict: error: the following arguments are required: PATH"),
    (["predict", "a.txt", "--block-size", "nan"], "lrnet predict: error: argument --block-size:"),
    (["convert-weights", "a.h5", "b.h5", "--out", "\n"], "lrnet convert-weights: error: argument --out: an empty path"),
])
def test_one_line_usage_errors(argv, needle):
    """Promise 10: a usage error is one line (with where to find the usage), exit 2."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-m", "lrnet", *argv], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(needle), proc.stderr


def test_configure_logging_levels_and_restores_the_logger(capsys):
    """One way to show lrnet's log records: ``lrnet CMD: [warning: |error: ]message`` on stderr;
    --quiet keeps errors only, --verbose adds debug lines; the logger is as before afterwards."""
    import logging

    from lrnet.cli.common import configure_logging

    log = logging.getLogger("lrnet.somewhere")
    before = (logging.getLogger("lrnet").level, logging.getLogger("lrnet").propagate)
    for quiet, verbose, shown in ((False, False, ["warning: w", "error: e"]), (True, False, ["error: e"]),
                                  (False, True, ["d", "i", "warning: w", "error: e"])):
        with configure_logging("cmd", quiet=quiet, verbose=verbose):
            log.debug("d")
            log.info("i")
            log.warning("w")
            log.error("e")
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.splitlines() == [f"lrnet cmd: {line}" for line in shown]
    assert (logging.getLogger("lrnet").level, logging.getLogger("lrnet").propagate) == before
    with configure_logging("demo", default=logging.INFO):
        log.info("[1/3] step")
    assert capsys.readouterr().err == "lrnet demo: [1/3] step\n"


def _parsers():
    """Every (sub-)command's parser, keyed by its words (``("weights", "list")``)."""
    found = {}

    def walk(parser, words):
        found[words] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, words + (name,))

    walk(build_parser(), ())
    return found


SCREEN_LINES = 60  # an 80x60 terminal; most commands stay near 50


def test_help_of_every_command_fits_a_screen(monkeypatch):
    """``lrnet CMD --help`` at 80 columns is at most a screenful, long commands in argument groups."""
    monkeypatch.setenv("COLUMNS", "80")
    parsers = _parsers()
    assert {("train",), ("evaluate",), ("robustness",), ("extract",), ("serve",), ("detect",)} <= set(parsers)
    lengths = {" ".join(words): len(parser.format_help().splitlines()) for words, parser in parsers.items()}
    too_long = {name: n for name, n in lengths.items() if n > SCREEN_LINES}
    assert not too_long, f"--help longer than {SCREEN_LINES} lines at 80 columns: {too_long}"
    for words in (("train",), ("evaluate",), ("robustness",), ("extract",), ("serve",)):
        assert len(parsers[words]._action_groups) >= 4, words  # options, positionals and at least two groups
    help_text = parsers[("evaluate",)].format_help()
    assert help_text.startswith("usage: lrnet evaluate [options]\n")  # not ten lines of every flag
    assert "-g, --gpu [DEVICE]" in help_text and "-d, --dataset NAME ..." in help_text  # the value named once


def test_every_weights_flag_defaults_to_dfo():
    """One default everywhere: the same clip gets the same verdict from detect, predict and serve."""
    import inspect

    from lrnet.cli.common import DEFAULT_WEIGHTS
    from lrnet.detect import detect_video
    from lrnet.serve.service import ServeConfig

    assert DEFAULT_WEIGHTS == "dfo"
    defaults = {" ".join(words): action.default for words, parser in _parsers().items()
                for action in parser._actions if "--weights" in action.option_strings}
    assert {"predict", "detect", "serve", "evaluate", "robustness"} <= set(defaults)
    assert set(defaults.values()) == {"dfo"}, defaults
    assert inspect.signature(detect_video).parameters["weights"].default == "dfo"
    assert ServeConfig.__dataclass_fields__["weights"].default == "dfo"
