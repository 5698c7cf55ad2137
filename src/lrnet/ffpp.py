"""FaceForensics++ vocabulary and layout: the one place that spells subsets, methods, levels, splits.

Two trees are involved:

* the FF++ *video* tree as downloaded::

      FFPP/original_sequences/youtube/{raw,c23,c40}/videos/NNN.mp4
      FFPP/manipulated_sequences/{Deepfakes,Face2Face,FaceSwap,NeuralTextures}/{raw,c23,c40}/videos/NNN_MMM.mp4
      FFPP/splits/{train,val,test}.json      (official split: lists of [NNN, MMM] pairs)

* the LRNet *landmark* dataset built from it::

      ROOT/{Origin,DF,F2F,FS,NT}/{raw,c23,c40}/{train,val,test}/<video>.txt

``Origin`` is the real subset; ``DF/F2F/FS/NT`` are the fakes, ``FF_all`` all four together.
A fake ``NNN_MMM`` shows target video ``NNN`` driven by source ``MMM``; both belong to the split of
the pair.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

from .errors import LrnetError
from .vocab import PathLike

__all__ = [
    "REAL", "FAKES", "ALL", "DATASETS", "SUBSETS", "METHODS", "SUBSET_OF_METHOD", "LEVELS", "SPLITS",
    "ORIGINAL_DIR", "MANIPULATED_DIR", "SPLIT_DIR", "landmark_dir", "video_dir", "read_splits",
    "source_ids", "level_for_crf",
]


REAL = "Origin"  # landmark subset of the real videos
FAKES = ("DF", "F2F", "FS", "NT")  # landmark subsets of the four manipulations
ALL = "FF_all"  # all four manipulations against Origin
DATASETS = FAKES + (ALL,)  # names `-d/--dataset` accepts for FF++
SUBSETS = (REAL,) + FAKES
METHODS = {"DF": "Deepfakes", "F2F": "Face2Face", "FS": "FaceSwap", "NT": "NeuralTextures"}  # video tree folder
SUBSET_OF_METHOD = {method: subset for subset, method in METHODS.items()}
LEVELS = ("raw", "c23", "c40")  # raw: lossless H.264 (crf 0); cNN: libx264 at crf NN
SPLITS = ("train", "val", "test")

ORIGINAL_DIR = Path("original_sequences") / "youtube"
MANIPULATED_DIR = Path("manipulated_sequences")
SPLIT_DIR = "splits"

_PAIR_ID = re.compile(r"^(\d+)_(\d+)$")


def landmark_dir(root: PathLike, subset: str, level: str, split: str) -> Path:
    """``ROOT/<subset>/<level>/<split>``: the landmark folder of one subset, level and split."""
    return Path(root) / subset / level / split


def video_dir(ffpp_root: PathLike, subset: str, level: str) -> Path:
    """The FF++ video folder of `subset` (``Origin`` or a fake) at `level`.

    ``Origin`` -> ``original_sequences/youtube/<level>/videos``; ``DF`` ->
    ``manipulated_sequences/Deepfakes/<level>/videos``, and so on.
    """
    base = Path(ffpp_root)
    if subset == REAL:
        return base / ORIGINAL_DIR / level / "videos"
    if subset not in METHODS:
        raise ValueError(f"unknown FF++ subset {subset!r}; expected one of {', '.join(SUBSETS)}")
    return base / MANIPULATED_DIR / METHODS[subset] / level / "videos"


def read_splits(split_dir: PathLike) -> Dict[str, str]:
    """Map each FF++ video stem (``000``, ``000_003``) to its split, from train/val/test.json.

    Each JSON file is a list of ``[a, b]`` pairs: originals ``a`` and ``b`` and manipulated
    ``a_b`` and ``b_a`` belong to that split. Raises `LrnetError` naming a missing or malformed file.
    """
    split_dir = Path(split_dir)
    split_of: Dict[str, str] = {}
    for split in SPLITS:
        path = split_dir / f"{split}.json"
        if not path.is_file():
            raise LrnetError(f"{path}: FF++ split file not found (give --splits DIR with train/val/test.json)")
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LrnetError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise LrnetError(f"{path}: expected a list of [a, b] pairs of video ids")
        for a, b in pairs:
            for stem in (str(a), str(b), f"{a}_{b}", f"{b}_{a}"):
                split_of[stem] = split
    return split_of


def source_ids(stem: str) -> Tuple[str, ...]:
    """The real videos a file shows: ``"000_003"`` -> ``("000", "003")``, ``"000"`` -> ``("000",)``.

    Used to find identity leakage between splits (a fake in test made from a training video).
    """
    match = _PAIR_ID.match(stem)
    return (match.group(1), match.group(2)) if match else (stem,)


def level_for_crf(crf: Optional[int]) -> str:
    """The FF++ level name of a constant rate factor: None or 0 -> ``raw``, 23 -> ``c23``."""
    return "raw" if not crf else f"c{int(crf)}"
