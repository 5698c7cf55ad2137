"""lrnet: landmark-based deepfake video detection (LRNet, Sun et al., CVPR 2021).

Pipeline, one module per stage::

    video (decode files, streams, cameras) -> tracking + landmarker (faces, 68 landmarks, cuts)
          -> segments -> calibration (optical flow + Kalman) -> features (blocks, differences)
          -> model (g1/g2 bidirectional-GRU branches) -> scoring (block -> video score)
          -> detector (the verdict: weights + threshold + aggregation)
    stream: all of it one frame at a time (detect, watch, serve); extract: offline, for datasets;
    landmarks (frames x 136 files) -> datasets / training / evaluate (metrics)

The names a user needs are importable from here and loaded on first use, so ``import lrnet``
(and ``lrnet --help``) stays fast::

    import lrnet
    detector = lrnet.load_detector("dfo")          # weights + threshold + aggregation: the verdict
    result = detector.score_sequence(lrnet.read_landmarks("clip.txt"), name="clip.txt")
    result = lrnet.detect_video("clip.mp4", detector)

The command line lives in `lrnet.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it, or (module, name there); imported lazily by __getattr__.
# `evaluate_model`: a plain `evaluate` would clash with the submodule of that name; `train_model` matches it.
_EXPORTS = {
    "LrnetError": "errors",
    "read_landmarks": "landmarks",
    "write_landmarks": "landmarks",
    "cut_blocks": "features",
    "load_split": "datasets",
    "BlockSet": "datasets",
    "resolve_weights": "weights",
    "LoadedWeights": "weights",
    "list_weights": "weights",
    "score_sequence": "detector",
    "Detector": "detector",
    "load_detector": "detector",
    "VideoResult": "scoring",
    "detect_video": "detect",
    "extract_video": "extract",
    "calibrate": "calibration",
    "load_config": "config",
    "train_model": ("training", "train"),
    "evaluate_model": ("evaluate", "evaluate"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from .calibration import calibrate
    from .config import load_config
    from .datasets import BlockSet, load_split
    from .detect import detect_video
    from .errors import LrnetError
    from .evaluate import evaluate as evaluate_model
    from .extract import extract_video
    from .features import cut_blocks
    from .landmarks import read_landmarks, write_landmarks
    from .detector import Detector, load_detector, score_sequence
    from .scoring import VideoResult
    from .training import train as train_model
    from .weights import LoadedWeights, list_weights, resolve_weights


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'lrnet' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
