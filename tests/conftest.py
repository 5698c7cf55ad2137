"""Shared fixtures. Reference data comes from ../shared (never copied into the repository);
tests that need it skip with a reason when it is absent, as in a user's clone."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "lrnet-official"


@pytest.fixture(scope="session")
def reference() -> Path:
    """Root of the official LRNet reference data (weights, landmarks, videos, calibrator)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE} (only present in the lrnet workspace)")
    return REFERENCE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real weight/dataset cache from tests."""
    monkeypatch.setenv("LRNET_CACHE", str(tmp_path_factory.mktemp("lrnet-cache")))
