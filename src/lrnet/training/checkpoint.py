"""The resume state of one branch, ``OUT/<branch>.ckpt``: what it holds, when it is written, how
a branch is restored from it.

A checkpoint (``format: lrnet-checkpoint-1``, a dict saved with ``torch.save`` and read with
``weights_only=True``) holds the branch, the last finished epoch, the model and Adam state, the
`History`, the random streams (batch order, dropout, CUDA), the seed, the model config and the
training config. `keep_checkpoint` takes it after every epoch but writes it (with the history
files) for the first and last epoch and otherwise at most every `CHECKPOINT_INTERVAL_S` seconds;
`write_checkpoint` writes the one kept back, and is called on every exit of a branch, Ctrl-C
included, so a resumed run continues from the last finished epoch.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import LrnetError
from ..model import ModelConfig
from ..runs import save_torch
from .history import History, write_history

from .state import BranchSettings, BranchState

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_INTERVAL_S", "cpu_state", "keep_checkpoint", "write_checkpoint",
           "load_checkpoint", "restore", "mark_finished"]

CHECKPOINT_FORMAT = "lrnet-checkpoint-1"
CHECKPOINT_INTERVAL_S = 30.0  # at most one resume-checkpoint write per this many seconds (see keep_checkpoint)


def cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """A CPU copy of `model`'s state dict (training goes on changing the live tensors)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _checkpoint(state: "BranchState", epoch: int, cfg: TrainConfig, branch: str) -> Dict[str, Any]:
    """The resume state after `epoch`, as copies (training goes on changing the live tensors)."""
    model_cfg = getattr(state.model, "config", None)
    return {
        "format": CHECKPOINT_FORMAT,
        "branch": branch,
        "epoch": epoch,
        "model": cpu_state(state.model),
        "optimizer": copy.deepcopy(state.optimizer.state_dict()),
        "history": state.history.to_dict(),
        "rng": state.rng(),
        "seed": int(state.seed),
        "model_config": model_cfg.to_dict() if isinstance(model_cfg, ModelConfig) else {},
        "config": cfg.to_dict(),
    }


def keep_checkpoint(state: "BranchState", settings: "BranchSettings", cfg: TrainConfig, epoch: int) -> None:
    """Keep the state after `epoch` as the pending checkpoint; write it now for the last epoch or
    when the last write is `CHECKPOINT_INTERVAL_S` old (each write is fsync'ed: tens of ms, a few
    percent of an epoch). Nothing when the branch has no run folder."""
    if settings.checkpoint_path is None:
        return
    state.pending = _checkpoint(state, epoch, cfg, settings.branch)
    if epoch >= settings.epochs or time.monotonic() - state.written_at >= CHECKPOINT_INTERVAL_S:
        write_checkpoint(state, settings)


def write_checkpoint(state: "BranchState", settings: "BranchSettings") -> None:
    """Write the checkpoint and history kept by `keep_checkpoint`, if any is pending."""
    pending, state.pending = state.pending, None
    if pending is None or settings.checkpoint_path is None:
        return
    save_torch(pending, settings.checkpoint_path)
    write_history(settings.output, History.from_dict(pending["history"]))
    state.written_at = time.monotonic()


def load_checkpoint(path: Path, branch: str) -> Dict[str, Any]:
    """The checkpoint at `path`, checked to be an lrnet checkpoint of `branch` (else `LrnetError`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LrnetError(f"{path}: not a readable lrnet checkpoint ({str(exc).splitlines()[0][:200]}); "
                         "delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LrnetError(f"{path}: not an lrnet training checkpoint; delete it to start over")
    if state.get("branch") != branch:
        raise LrnetError(f"{path}: checkpoint of branch {state.get('branch')}, expected {branch}")
    return state


def restore(state: "BranchState", ckpt: Dict[str, Any], settings: "BranchSettings") -> None:
    """Put the checkpoint `ckpt` into a freshly started `state`; the best weights so far come from
    ``OUT/<branch>.pth`` when it exists."""
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.history = History.from_dict(ckpt["history"])
    state.history.stopped = ""
    state.start_epoch = int(ckpt["epoch"])
    state.shuffle.set_state(ckpt["rng"]["shuffle"])
    state.dropout = ckpt["rng"]["dropout"]
    if settings.device.type == "cuda" and "cuda" in ckpt["rng"]:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], settings.device)
    if settings.weights_path is not None and settings.weights_path.is_file():
        from ..weights import load_state_dict

        state.best_state = load_state_dict(settings.weights_path)


def mark_finished(path: Path, branch: str, history: History) -> None:
    """Store the final `history` (its ``stopped`` reason) in the checkpoint at `path`, so a
    finished run resumes as finished."""
    ck = load_checkpoint(path, branch)
    ck["history"] = history.to_dict()
    save_torch(ck, path)
