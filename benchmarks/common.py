"""Pieces shared by the benchmark scripts: the FF++-sized synthetic dataset and the naive baseline loader.

Import from a script in this folder (``from common import make_ffpp_sized, naive_load_split``) or
with ``benchmarks`` on ``sys.path``. Signatures are kept stable for the other benchmark scripts.
"""

from __future__ import annotations

import json
import os
import resource
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


# ------------------------------------------------------------------------------------------ naive training

def naive_loaders(data, split: str, shuffle: bool, batch_size: int = 1024):
    """The reference's DataLoaders of one split: ``(g1 loader, g2 loader)`` over float32 copies of
    ``naive_load_split``'s arrays (``TensorDataset`` + ``DataLoader``, as its train.py builds them)."""
    import torch
    import torch.utils.data as Data

    x, x_diff, y = data[split]
    xa = torch.tensor(x, dtype=torch.float32)
    xb = torch.tensor(x_diff, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    return (Data.DataLoader(Data.TensorDataset(xa, yt), batch_size, shuffle=shuffle),
            Data.DataLoader(Data.TensorDataset(xb, yt), batch_size, shuffle=shuffle))


def naive_train(train_loader, val_loader, epochs: int, lr: float = 1e-3) -> Dict[str, object]:
    """The reference's loop for one branch: the LRNet model (nn.GRU), softmax output,
    ``NLLLoss(log(softmax))``, Adam, validation accuracy after every epoch.

    Returns ``{"epoch_s": [...], "val_acc": [...], "nan_epoch": int|None, "model": model}``; epoch
    times include the validation pass, as the reference's loop does.
    """
    import torch
    from torch import nn

    from lrnet.model import LRNet, ModelConfig

    model = LRNet(ModelConfig())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.NLLLoss()
    times, val_accs, nan_epoch = [], [], None
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        model.train()
        for X, y in train_loader:
            output = torch.softmax(model(X), dim=1)
            loss = loss_fn(torch.log(output), y)  # the reference's log(softmax)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if nan_epoch is None and not torch.isfinite(loss):
                nan_epoch = epoch  # the reference's bug: a probability underflowed to 0
        val_accs.append(naive_accuracy(model, val_loader))
        times.append(time.perf_counter() - t)
    return {"epoch_s": times, "val_acc": val_accs, "nan_epoch": nan_epoch, "model": model}


def naive_accuracy(model, loader) -> float:
    """The reference's ``evaluate``: argmax accuracy over a DataLoader (eval mode, no autograd)."""
    import torch

    model.eval()
    correct = n = 0
    with torch.no_grad():
        for X, y in loader:
            out = torch.softmax(model(X), dim=1)
            correct += (out.argmax(dim=1) == y).sum().item()
            n += y.shape[0]
    model.train()
    return correct / n


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and all its children, finished or running."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            live += t.user + t.system
        except psutil.Error:
            continue
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + live
