"""The shared vocabulary (lrnet.vocab): one list each, used by every reader of it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from lrnet import vocab
from lrnet.cli import build_parser

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _option(parser, flag: str):
    return next(a for a in parser._actions if flag in a.option_strings)


def test_every_aggregate_flag_offers_the_vocabulary():
    import lrnet.scoring as scoring

    assert scoring.AGGREGATIONS is vocab.AGGREGATIONS and scoring.DEFAULT_AGGREGATION == vocab.DEFAULT_AGGREGATION
    for command in ("predict", "detect", "evaluate", "robustness"):
        flag = _option(_subcommand(command), "--aggregate")
        assert tuple(flag.choices) == vocab.AGGREGATIONS and flag.default == vocab.DEFAULT_AGGREGATION, command


def test_serve_flags_default_to_serve_config():
    from lrnet.serve.service import ServeConfig

    serve = _subcommand("serve")
    assert _option(serve, "--jobs").default is None  # None: ServeConfig.jobs, and refused with --scheduler
    for flag, field in (("--weights", "weights"), ("--queue", "queue"),
                        ("--max-upload-mb", "max_upload_mb"), ("--max-seconds", "max_seconds"),
                        ("--job-timeout", "job_timeout"), ("--keep-hours", "keep_hours")):
        assert _option(serve, flag).default == getattr(ServeConfig, field), flag


def test_the_cli_parser_needs_neither_torch_nor_the_serve_extra():
    code = ("import sys; from lrnet.cli import build_parser; build_parser(); "
            "assert not {'torch', 'fastapi', 'uvicorn', 'cv2', 'av'} & set(sys.modules), sorted(sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC})
    assert run.returncode == 0, run.stderr


def test_jsonable():
    data = {1: (np.int64(2), np.float32(0.5)), "x": [float("nan"), np.inf, "s", None]}
    assert vocab.jsonable(data) == {"1": [2, 0.5], "x": [None, None, "s", None]}
    assert type(vocab.jsonable(np.int64(3))) is int


def test_writable_containers_are_read_too():
    assert set(vocab.WRITABLE_VIDEO_SUFFIXES) < set(vocab.VIDEO_SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in vocab.VIDEO_SUFFIXES)
