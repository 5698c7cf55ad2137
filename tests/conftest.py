"""Shared fixtures and the `reference` rule.

Reference data comes from ../shared (never copied into the repository); tests that need it take
the `reference` fixture, are marked ``reference`` automatically, and skip with a reason when it is
absent, as in a user's clone. Where the data IS present and ``LRNET_REQUIRE_REFERENCE=1`` (set by
CI), a skipped reference test fails the run: a silently skipped parity test is a missing test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "lrnet-official"
# Where each part of the reference data comes from in the official LRNet repository (MIT licence).
REFERENCE_SOURCE = "https://github.com/frederickszk/LRNet"
REFERENCE_LAYOUT = (("training/weights/torch/g1.pth, g2.pth", "weights/ffpp_raw/"),
                    ("demo/model_weights/g1.pth, g2.pth", "weights/dfo/"),
                    ("training/weights/tf/g1.h5, g2.h5", "weights/tf_df_c23/"),
                    ("demo/landmarks/{ff,dfo}_{real,fake}.txt", "landmarks/"),
                    ("demo/input/{ff,dfo}_{real,fake}.mp4", "videos/"),
                    ("calibrator/example/000_003.mp4, .csv", "calibrator/"))
_SKIPPED_REFERENCE: list = []


def reference_missing_reason() -> str:
    """Why a reference test skips, and how to get the data: one line (pytest -ra prints it once)."""
    layout = "; ".join(f"{source} -> {target}" for source, target in REFERENCE_LAYOUT)
    return (f"reference data not found at {REFERENCE}: copy the weights, landmark files and sample videos of "
            f"the official LRNet repository ({REFERENCE_SOURCE}) there as {layout}")


@pytest.fixture(scope="session")
def reference() -> Path:
    """Root of the official LRNet reference data (weights, landmarks, videos, calibrator)."""
    if not REFERENCE.is_dir():
        pytest.skip(reference_missing_reason())
    return REFERENCE


@pytest.fixture(scope="session", autouse=True)
def _kernel_dir(tmp_path_factory):
    """One build of the fused GRU's C++ kernel per test session, in a temporary folder that the test
    processes started from here share (the user's kernel cache is never touched)."""
    old = os.environ.get("LRNET_KERNEL_DIR")
    os.environ["LRNET_KERNEL_DIR"] = str(tmp_path_factory.mktemp("kernels"))
    yield Path(os.environ["LRNET_KERNEL_DIR"])
    if old is None:
        os.environ.pop("LRNET_KERNEL_DIR", None)
    else:
        os.environ["LRNET_KERNEL_DIR"] = old


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real weight/dataset cache from tests."""
    monkeypatch.setenv("LRNET_CACHE", str(tmp_path_factory.mktemp("lrnet-cache")))


@pytest.fixture(scope="session")
def tiny_ffpp(tmp_path_factory) -> Path:
    """A tiny synthetic FF++ tree (Origin + DF, raw; 4/2/2 videos of 61-90 frames): read it, never write
    into it (it is shared by the whole session)."""
    from lrnet.synthetic import generate_ffpp

    root = tmp_path_factory.mktemp("tiny-ffpp")
    generate_ffpp(root, {"train": 4, "val": 2, "test": 2}, frames=(61, 90), workers=1)
    return root


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "reference" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reference)


def pytest_runtest_logreport(report):
    if report.skipped and "reference" in report.keywords:
        _SKIPPED_REFERENCE.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    required = os.environ.get("LRNET_REQUIRE_REFERENCE") == "1"
    if required and REFERENCE.is_dir() and _SKIPPED_REFERENCE:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: {len(_SKIPPED_REFERENCE)} reference test(s) were skipped although "
                                f"{REFERENCE} exists: {', '.join(_SKIPPED_REFERENCE[:5])}", red=True)
        session.exitstatus = 1
