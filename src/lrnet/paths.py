"""Where lrnet keeps per-user derived data (downloaded weights, dataset caches, check caches).

One function, importable without torch, so that light modules (datasets, dataset checks) can find
the cache folder without importing the weights machinery.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "LRNET_CACHE"


def cache_dir() -> Path:
    """The lrnet cache folder: ``$LRNET_CACHE``, else ``$XDG_CACHE_HOME/lrnet``, else ``~/.cache/lrnet``.

    Not created here; writers create the sub-folder they need.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lrnet"
