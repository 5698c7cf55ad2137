"""The test suite's own promises: a skipped reference test says where the data comes from, and a long
run shows its progress and its slowest tests."""

from __future__ import annotations

from pathlib import Path

from conftest import REFERENCE, REFERENCE_LAYOUT, REFERENCE_SOURCE, reference_missing_reason

REPO = Path(__file__).resolve().parents[1]


def test_reference_skip_reason_says_how_to_get_the_data():
    reason = reference_missing_reason()
    assert str(REFERENCE) in reason and "github.com/frederickszk/LRNet" in reason and "\n" not in reason
    for folder in ("weights/dfo/", "weights/ffpp_raw/", "landmarks/", "videos/", "calibrator/"):
        assert f"-> {folder}" in reason, folder
    assert REFERENCE_SOURCE == "https://github.com/frederickszk/LRNet"
    if REFERENCE.is_dir():  # the layout described is the one the tests read
        for _, folder in REFERENCE_LAYOUT:
            assert any((REFERENCE / folder).iterdir()), folder


def test_a_run_shows_progress_per_file_and_its_slowest_tests():
    import re

    text = (REPO / "pyproject.toml").read_text()  # (tomllib is 3.11+; lrnet supports 3.10)
    addopts = re.search(r'^addopts = "([^"]*)"$', text, re.M)
    assert addopts and "--durations=15" in addopts.group(1).split() and "-ra" in addopts.group(1).split()
    assert re.search(r'^console_output_style = "count"$', text, re.M)
    assert "pytest -q" not in (REPO / "scripts" / "test.sh").read_text()  # -q would hide the file names
