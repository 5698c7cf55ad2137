"""The state of one branch's training: its resolved settings and everything that changes while it
trains (what a checkpoint saves). Shared by `lrnet.training.branch` (the loop) and
`lrnet.training.checkpoint` (the resume file), so neither imports the other for these types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from .history import History
from .sharing import BranchRNG

__all__ = ["BranchSettings", "BranchState"]


@dataclass
class BranchSettings:
    """The resolved settings of one branch's training (explicit arguments over the `TrainConfig`)."""

    branch: str
    epochs: int
    lr: float
    batch_size: int
    patience: Optional[int]  # epochs without a strictly better val accuracy before stopping; None: off
    seed: Optional[int]  # None: drawn at start (and recorded in the checkpoint)
    device: torch.device
    output: Optional[Path]  # run folder; None: nothing written
    gru: str  # "fused" or "torch"
    bf16: bool  # bfloat16 GRU input projections (fused GRU on CPU)
    val_batch_size: int
    extra_weights_name: str  # the reference's weights_name_g*: an extra copy of the best weights

    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.output / f"{self.branch}.ckpt" if self.output else None

    @property
    def weights_path(self) -> Optional[Path]:
        return self.output / f"{self.branch}.pth" if self.output else None


@dataclass
class BranchState:
    """Everything that changes while a branch trains, and all a checkpoint needs to resume it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator  # batch order
    dropout: torch.Tensor  # CPU generator state of the branch's dropout stream (swapped in by BranchRNG)
    seed: int
    history: History
    start_epoch: int = 0  # epochs already done (resume)
    best_state: Optional[Dict[str, torch.Tensor]] = None  # CPU copy of the best weights
    rng_swap: Optional[BranchRNG] = None  # attached while training on CPU
    built: bool = True  # the model was built here (not passed in by the caller)
    pending: Optional[Dict[str, Any]] = None  # the last epoch's checkpoint, not written yet
    written_at: float = -math.inf  # time.monotonic() of the last checkpoint write

    def rng(self) -> Dict[str, Any]:
        """The random streams as saved in a checkpoint."""
        dropout = self.rng_swap.state if self.rng_swap is not None else self.dropout
        out = {"shuffle": self.shuffle.get_state(), "dropout": dropout}
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(device)
        return out
