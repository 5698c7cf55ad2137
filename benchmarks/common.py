"""Pieces shared by the benchmark scripts: the FF++-sized synthetic dataset and the naive baseline loader.

Import from a script in this folder (``from common import make_ffpp_sized, naive_load_split``) or
with ``benchmarks`` on ``sys.path``. Signatures are kept stable for the other benchmark scripts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

FFPP_SIZED = {
    "videos_per_split": {"train": 720, "val": 140, "test": 140},
    "manipulations": ("DF",),
    "levels": ("raw",),
    "frames": (300, 700),
    "seed": 0,
    "difficulty": "medium",
}


def default_root() -> Path:
    """Where the benchmarks keep their data: ``$LRNET_BENCH_DATA`` or ``benchmarks/data/ffpp-synthetic``."""
    env = os.environ.get("LRNET_BENCH_DATA")
    return Path(env) if env else Path(__file__).resolve().parent / "data" / "ffpp-synthetic"


def make_ffpp_sized(root: PathLike = None, verbose: bool = True) -> Path:
    """Generate (or reuse) the FF++-sized synthetic set: Origin + DF, raw, 720/140/140 videos per split,
    300-700 frames each (about 23,000 training blocks of 30 frames). Returns the dataset root.

    An existing set is reused when its synthetic-data marker records the same parameters.
    """
    from lrnet.synthetic import GENERATOR_VERSION, MARKER_NAME, generate_ffpp

    root = Path(root) if root is not None else default_root()
    marker = root / MARKER_NAME
    wanted = {
        "videos_per_split": FFPP_SIZED["videos_per_split"],
        "manipulations": list(FFPP_SIZED["manipulations"]),
        "levels": list(FFPP_SIZED["levels"]),
        "frames": list(FFPP_SIZED["frames"]),
        "seed": FFPP_SIZED["seed"],
        "difficulty": FFPP_SIZED["difficulty"],
        "generator_version": GENERATOR_VERSION,
    }
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except ValueError:
            info = {}
        if all(info.get(k) == v for k, v in wanted.items()):
            if verbose:
                print(f"reusing synthetic FF++-sized dataset at {root}")
            return root
    if verbose:
        print(f"generating the synthetic FF++-sized dataset at {root} ...", flush=True)
    t0 = time.perf_counter()
    generate_ffpp(root, **FFPP_SIZED)
    if verbose:
        print(f"  generated in {time.perf_counter() - t0:.1f} s")
    return root


def naive_folders(root: PathLike, dataset: str, level: str) -> List[Tuple[Path, int]]:
    """(folder, label) pairs the reference reads for an FF++ `dataset` (FF_all: Origin once per manipulation)."""
    root = Path(root)
    fakes = ["DF", "NT", "F2F", "FS"] if dataset == "FF_all" else [dataset]
    pairs = [(root / "Origin" / level, 0) for _ in fakes]
    pairs += [(root / f / level, 1) for f in fakes]
    return pairs


def naive_load_split(root: PathLike, dataset: str, level: str, split: str,
                     block_size: int = 30) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference loader, faithfully: per-file ``np.loadtxt`` (float64), per-block Python lists of
    slices and padded differences, then ``np.array`` of the lists.

    Returns ``(x, x_diff, y)``: ``(n, B, 136)`` float64 blocks, ``(n, B - 1, 136)`` float64
    differences and ``(n,)`` int64 labels, real folders first (as the reference concatenates them).
    Files are taken in sorted order (the reference uses ``os.listdir`` order).
    """
    xs, diffs, ys = [], [], []
    for folder, label in naive_folders(root, dataset, level):
        path = folder / split
        x, x_diff, y = [], [], []
        for name in sorted(os.listdir(path)):
            vectors = np.loadtxt(path / name)
            for i in range(0, vectors.shape[0] - block_size, block_size):
                vec = vectors[i:i + block_size, :]
                x.append(vec)
                vec_next = vectors[i + 1:i + block_size, :]
                vec_next = np.pad(vec_next, ((0, 1), (0, 0)), "constant", constant_values=(0, 0))
                x_diff.append((vec_next - vec)[:block_size - 1, :])
                y.append(label)
        xs.append(np.array(x))
        diffs.append(np.array(x_diff))
        ys.append(np.array(y))
    # The reference concatenates folder by folder, holding both copies meanwhile.
    return np.concatenate(xs), np.concatenate(diffs), np.concatenate(ys)


def naive_load(root: PathLike, dataset: str = "DF", level: str = "raw",
               splits=("train", "val"), block_size: int = 30) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`naive_load_split` for several splits."""
    return {s: naive_load_split(root, dataset, level, s, block_size) for s in splits}
