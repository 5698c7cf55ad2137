"""The ``-g/--gpu`` flag as a torch device, with no silent CPU fallback."""

from __future__ import annotations

import torch

from .errors import LrnetError

__all__ = ["select_device"]


def select_device(gpu: "bool | str | None" = None) -> torch.device:
    """Map the ``-g/--gpu`` flag to a device: False/None -> CPU; True -> cuda:0; a string as given.

    Raises `LrnetError` when a GPU is asked for and none is available (no silent CPU fallback).
    """
    if not gpu:
        return torch.device("cpu")
    name = "cuda" if gpu is True else str(gpu)
    if name.isdigit():
        name = f"cuda:{name}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LrnetError("a GPU was requested (-g/--gpu) but PyTorch sees no CUDA device")
    return device
