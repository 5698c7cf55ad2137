"""lrnet's shared vocabulary: the names, lists and tiny helpers every layer uses, defined once.

Imports nothing heavier than NumPy (no torch, no OpenCV), so the CLI's argument parser, the
server's form check and the workers all read the same lists:

- `PathLike`: what a file argument may be (``str`` or ``os.PathLike``).
- `VIDEO_SUFFIXES`: file extensions lrnet takes as videos when it searches a folder (lower case).
  `WRITABLE_VIDEO_SUFFIXES` is the subset lrnet can also *write* (``--visualize``, ``lrnet
  compress``); ``.webm``, ``.mpg`` ... are read but never written.
- `AGGREGATIONS` / `DEFAULT_AGGREGATION`: how block scores become one video score (see
  `lrnet.scoring`, which computes them).
- `jsonable`: a value made fit for `json.dumps` (NaN and infinity become null).
"""

from __future__ import annotations

import math
import os
from typing import Any, Union

import numpy as np

__all__ = ["PathLike", "VIDEO_SUFFIXES", "WRITABLE_VIDEO_SUFFIXES", "AGGREGATIONS", "DEFAULT_AGGREGATION",
           "jsonable"]

PathLike = Union[str, "os.PathLike[str]"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
# Containers both of lrnet's writers produce (OpenCV's for --visualize, PyAV's for compress).
WRITABLE_VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v")

AGGREGATIONS = ("vote", "mean-prob", "mean-logit")
DEFAULT_AGGREGATION = "vote"


def jsonable(obj: Any) -> Any:
    """`obj` with NaN/inf as None, NumPy scalars as Python numbers, tuples as lists and dict keys
    as strings, recursively (JSON has no NaN; ``json.dumps`` would write the invalid ``NaN``)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
