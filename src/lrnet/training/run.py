"""Training g1 and g2 into a run folder: `train`.

`train` checks the data against the config, opens the run folder (`lrnet.runs.open_run`: one
writer, never inside the dataset, refused when it holds a run unless resumed or overwritten),
writes its keys of ``OUT/lrnet.json`` (`run_metadata`; a resumed run must keep its recorded
settings), trains the branches one after the other or at the same time (`lrnet.training.sharing`),
and draws ``OUT/training_curves.png``. The branches share one copy of the data.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import LrnetError
from ..features import BRANCHES
from ..atomic import ensure_not_input
from ..runs import RunFolder, dataset_fps, open_run, resume_conflicts
from ..weights.runfile import read_meta, update_meta
from ..vocab import PathLike
from .branch import BranchResult, train_branch
from .history import History, plot_histories
from .sharing import CoreShare, run_concurrently, use_concurrency

if TYPE_CHECKING:
    from ..datasets import LabelledBlocks

__all__ = ["TrainResult", "train", "run_metadata", "input_folders", "gru_recurrence"]

log = logging.getLogger(__name__)
EpochCallback = Callable[[str, int, History], None]  # callback(branch, epoch, history), after each epoch


@dataclass
class TrainResult:
    """What `train` returns: the run folder (None: nothing written), each branch's result, the config."""

    output: Optional[Path]
    branches: Dict[str, BranchResult]
    config: TrainConfig
    curves: Optional[Path] = None  # training_curves.png

    @property
    def models(self) -> Dict[str, nn.Module]:
        return {b: r.model for b, r in self.branches.items()}

    @property
    def histories(self) -> Dict[str, History]:
        return {b: r.history for b, r in self.branches.items()}


def run_metadata(cfg: TrainConfig, train: LabelledBlocks, val: LabelledBlocks, branches: Sequence[str],
                 fps: Optional[float] = None, fps_source: str = "unknown") -> Dict[str, Any]:
    """The keys of ``OUT/lrnet.json`` that training manages (read back by `lrnet.weights.resolve_weights`)."""
    def describe(s: LabelledBlocks) -> Dict[str, Any]:
        return {"name": s.name, "root": s.root, "synthetic": bool(s.synthetic), "counts": s.counts()}

    from .. import __version__

    return {"model": cfg.model.to_dict(), "block_size": int(train.block_size), "branches": list(branches),
            "fps": fps, "fps_source": fps_source,
            "dataset": {"train": describe(train), "val": describe(val)}, "config": cfg.to_dict(),
            "lrnet_version": __version__}


def input_folders(*sets: LabelledBlocks) -> List[Path]:
    """The folders the landmark files of `sets` were read from (an output must not be inside one)."""
    folders: set = set()
    for s in sets:
        if s.root:
            folders.update(Path(s.root) / Path(v).parent for v in s.videos)
    return sorted(folders)


def gru_recurrence(cfg: TrainConfig, device: torch.device) -> str:
    """How the GRU's time steps run in this training: ``"cpp"`` (the fused GRU's C++ kernel),
    ``"python (why)"`` (its Python loop) or ``"nn.GRU"``. Builds the kernel when needed (logged)."""
    if cfg.gru != "fused" or device.type != "cpu":
        return "nn.GRU"
    from .. import gru_kernel

    return gru_kernel.status()


def _record_run(run: RunFolder, cfg: TrainConfig, train_set: LabelledBlocks, val_set: LabelledBlocks,
                branches: Sequence[str], fps: Optional[float], device: torch.device) -> None:
    """Write the run's keys into ``lrnet.json`` (others kept); a resumed run must keep its settings."""
    recorded = read_meta(run.path)
    fps, source = dataset_fps(train_set, fps)
    if fps is None and recorded.get("fps"):
        fps, source = recorded["fps"], recorded.get("fps_source", "recorded")
    if fps is None:
        log.warning("frame rate of the training videos unknown (no --fps, no extraction log in the dataset root, "
                    "not synthetic): lrnet.json records fps null")
    meta = run_metadata(cfg, train_set, val_set, branches, fps, source)
    if run.resume and recorded:
        differ = resume_conflicts(recorded, meta)
        if differ:
            raise LrnetError(f"{run.path}: --resume with settings that differ from the recorded run "
                             f"({', '.join(differ)}); use the original settings or start a new --output")
        meta["branches"] = sorted(set(recorded.get("branches", [])) | set(branches))
    # Not a setting (a resumed run may continue on another machine): recorded, never compared.
    meta["gru_recurrence"] = gru_recurrence(cfg, device)
    log.info("GRU recurrence: %s", meta["gru_recurrence"])
    if run.overwrite and not run.resume:
        if "threshold" in recorded:
            log.warning("%s: keeps the threshold calibrated for the replaced weights; recalibrate with "
                        "lrnet evaluate --calibrate", run.path / "lrnet.json")
        run.clear(branches)
    update_meta(run.path, meta)


def _train_branches(cfg: TrainConfig, train_set: LabelledBlocks, val_set: LabelledBlocks, branches: Sequence[str],
                    device: torch.device, out: Optional[Path], resume: bool, progress: bool,
                    callback: Optional[EpochCallback]) -> Dict[str, BranchResult]:
    """Train `branches` one after the other or, on a multi-core CPU, at the same time in threads."""
    concurrent = use_concurrency(cfg, branches, device)
    total = torch.get_num_threads()
    cores = CoreShare(total, branches) if concurrent and not cfg.threads and device.type == "cpu" else None
    fixed = cfg.threads or total

    def run(branch: str, position: int, stop: Optional[threading.Event]) -> BranchResult:
        cb = (lambda e, h: callback(branch, e, h)) if callback else None
        # In a worker thread too: OpenMP's thread count is per calling thread.
        torch.set_num_threads(cores.threads(branch) if cores is not None else fixed)
        return train_branch(None, train_set, val_set, branch, config=cfg, device=device, output=out, resume=resume,
                            progress=progress, position=position, callback=cb, stop_event=stop, cores=cores)

    try:
        if not concurrent:
            return {b: run(b, 0, None) for b in branches}
        return run_concurrently(run, branches)
    finally:
        torch.set_num_threads(total)


def train(config: Optional[TrainConfig], train_set: LabelledBlocks, val_set: LabelledBlocks,
          branches: Sequence[str] = BRANCHES, *, output: Union[PathLike, RunFolder, None] = None,
          device: Union[str, torch.device] = "cpu", resume: bool = False, overwrite: bool = False,
          fps: Optional[float] = None, progress: bool = True,
          callback: Optional[EpochCallback] = None) -> TrainResult:
    """Train `branches` (g1 then g2, or both at once on a multi-core CPU) and write the run folder.

    `config`: a `TrainConfig` (None: the reference preset). `train_set` / `val_set`:
    `lrnet.datasets.BlockSet` (or anything with the fields of `lrnet.datasets.LabelledBlocks`).
    `output`: run folder, or a `RunFolder` already opened with `lrnet.runs.open_run` (None:
    ``config.output``; both None: nothing is written). A folder is locked for the run (one
    writer), must not be inside the dataset, and may hold an earlier run only with `resume`
    (continue it; its recorded settings must match) or `overwrite` (replace it). `fps`: frame
    rate of the training videos to record (default: from the dataset's extraction log or
    synthetic marker, see `lrnet.runs.dataset_fps`). `callback(branch, epoch, history)` runs after
    each epoch. The data are shared by the branches (one copy); load them once and call `train`
    as often as you like with different configs.
    """
    cfg = config or TrainConfig()
    branches = tuple(branches)
    for b in branches:
        if b not in BRANCHES:
            raise LrnetError(f"unknown branch {b!r}; expected one of {', '.join(BRANCHES)}")
    if train_set.block_size != cfg.block_size:
        raise LrnetError(f"the data were cut into {train_set.block_size}-frame blocks but the configuration says "
                         f"BLOCK_SIZE {cfg.block_size}; load the dataset with block_size={cfg.block_size}")
    device = torch.device(device)
    if output is None and cfg.output:
        output = cfg.output
    if output is None:
        results = _train_branches(cfg, train_set, val_set, branches, device, None, False, progress, callback)
        return TrainResult(None, results, cfg, None)
    if isinstance(output, RunFolder):
        return _train_in(output, cfg, train_set, val_set, branches, device, fps, progress, callback)
    with open_run(output, resume=resume, overwrite=overwrite, inputs=input_folders(train_set, val_set)) as run:
        return _train_in(run, cfg, train_set, val_set, branches, device, fps, progress, callback)


def _train_in(run: RunFolder, cfg: TrainConfig, train_set: LabelledBlocks, val_set: LabelledBlocks,
              branches: Sequence[str], device: torch.device, fps: Optional[float], progress: bool,
              callback: Optional[EpochCallback]) -> TrainResult:
    ensure_not_input(run.path, input_folders(train_set, val_set))
    _record_run(run, cfg, train_set, val_set, branches, fps, device)
    results = _train_branches(cfg, train_set, val_set, branches, device, run.path, run.resume, progress, callback)
    histories = {b: r.history for b, r in results.items()}
    curves = plot_histories(histories, run.path / "training_curves.png")
    return TrainResult(run.path, results, cfg, curves)
