"""Training one branch (g1 on blocks, g2 on their frame differences): `train_branch` and its steps.

The steps are those torchvision's and timm's reference scripts use: `resolve_settings` (explicit
arguments over the `TrainConfig`), `start_branch` (a `BranchState`: model, optimizer, seeded
random streams, history; restored from the checkpoint on resume), `train_one_epoch` (made of
`train_step`), `validation_accuracy`, `end_epoch` (history, best weights, checkpoint) and
`finish_branch`.

Per epoch, as the reference: shuffled mini-batches over ``train.sample_index``, Adam, NLL loss
(``cross_entropy`` on logits, i.e. log-softmax, never ``log(softmax)``), then block accuracy on
the validation set; the best weights are saved when the validation accuracy is >= the best so far.
A non-finite loss stops training with `LrnetError` (the best weights so far stay valid).

Data stay in one tensor on the training device (`EpochData`); each batch is gathered by index
there and g2 differences are computed per batch (`gather_batch`), so no host round trip or second
copy of the data is made.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write_bytes
from ..config import TrainConfig
from ..errors import LrnetError
from ..fastgru import native_bf16, release_workspace
from ..features import BRANCHES, branch_input
from ..model import ModelConfig, build_model
from ..runs import save_torch, writing
from ..vocab import PathLike
from .checkpoint import cpu_state, keep_checkpoint, load_checkpoint, mark_finished, restore, write_checkpoint
from .history import History, write_history
from .sharing import BranchRNG, CoreShare, Stop, isolated_global_rng, seeded_cpu_state
from .state import BranchSettings, BranchState

if TYPE_CHECKING:
    from ..datasets import LabelledBlocks

__all__ = ["BranchResult", "BranchSettings", "BranchState", "EpochData", "EpochHooks", "train_branch",
           "resolve_settings", "resolve_bf16", "start_branch", "train_one_epoch", "train_step", "gather_batch",
           "validation_accuracy", "end_epoch", "finish_branch"]

log = logging.getLogger(__name__)

_BRANCH_SEED_OFFSET = {"g1": 0, "g2": 1_000_003}


@dataclass
class BranchResult:
    """One trained branch: the model (best weights loaded, eval mode) and its history."""

    branch: str
    model: nn.Module
    history: History
    weights: Optional[Path] = None  # OUT/<branch>.pth
    checkpoint: Optional[Path] = None  # OUT/<branch>.ckpt


def _as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The blocks as a float32 tensor on `device` without a copy on CPU (read-only maps included)."""
    import warnings

    arr = np.asarray(array)
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-writable memory map: we never write to it
        t = torch.from_numpy(arr)
    return t.to(device) if device.type != "cpu" else t


def gather_batch(frames: torch.Tensor, idx: torch.Tensor, block_size: int, branch: str,
                 workspace: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """Blocks `idx` of ``frames`` (all blocks as ``(n_blocks * B, 136)`` rows) as the model input of
    `branch`, batch-first ``(n, B or B - 1, 136)`` but stored time-major (a transposed view of a
    contiguous ``(B, n, 136)`` tensor), which the fused GRU reads without a copy. One gather of
    rows; g2 differences are taken on the gathered batch (never stored for the whole set).

    `workspace`: a dict kept by the caller across batches; the batch is then written into buffers
    held there (no fresh multi-megabyte tensor, and its page faults, per batch) and stays valid
    only until the next call with the same dict."""
    if branch not in BRANCHES:
        raise LrnetError(f"unknown branch {branch!r}; expected one of {', '.join(BRANCHES)}")
    steps = torch.arange(block_size, device=idx.device)
    rows = (idx.unsqueeze(0) * block_size + steps.unsqueeze(1)).reshape(-1)
    shape = (block_size, idx.numel(), frames.shape[-1])
    if workspace is None:
        xt = frames.index_select(0, rows).view(shape)  # (B, n, F)
        if branch == "g2":
            xt = xt[1:] - xt[:-1]
    else:
        xt = torch.index_select(frames, 0, rows, out=_reused(workspace, "rows", (rows.numel(), shape[2]), frames))
        xt = xt.view(shape)
        if branch == "g2":
            xt = torch.sub(xt[1:], xt[:-1], out=_reused(workspace, "diff", (shape[0] - 1,) + shape[1:], frames))
    return xt.transpose(0, 1)


def _reused(workspace: Dict[str, torch.Tensor], name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """A contiguous `shape` view of the buffer `name` in `workspace`, grown when too small."""
    numel = math.prod(shape)
    buf = workspace.get(name)
    if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
        buf = workspace[name] = like.new_empty(numel)
    return buf[:numel].view(shape)


def validation_accuracy(model: nn.Module, blocks: torch.Tensor, labels: torch.Tensor, branch: str,
                        batch_size: int = 4096) -> float:
    """Block-level argmax accuracy of `model` on ``blocks (n, B, 136)`` (eval mode, no autograd)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=blocks.device)
    with torch.inference_mode():
        for i in range(0, blocks.shape[0], batch_size):
            logits = model(branch_input(blocks[i:i + batch_size], branch))
            correct += (logits.argmax(dim=1) == labels[i:i + batch_size]).sum()
    model.train(was_training)
    return float(correct.item()) / max(1, blocks.shape[0])


def _check_sets(train: LabelledBlocks, val: LabelledBlocks, branch: str) -> None:
    if branch not in BRANCHES:
        raise LrnetError(f"unknown branch {branch!r}; expected one of {', '.join(BRANCHES)}")
    if train.block_size != val.block_size:
        raise LrnetError(f"training set {train.name} has {train.block_size}-frame blocks but validation set "
                         f"{val.name} has {val.block_size}-frame blocks")
    if len(train.sample_index) == 0:
        raise LrnetError(f"training set {train.name}: no blocks (every video has <= {train.block_size} frames)")
    if val.n_blocks == 0:
        raise LrnetError(f"validation set {val.name}: no blocks (every video has <= {val.block_size} frames)")
    labels = np.unique(train.sample_labels)
    if labels.size < 2:
        raise LrnetError(f"training set {train.name}: only {'real' if labels[0] == 0 else 'fake'} blocks; "
                         "training needs both classes")


# ------------------------------------------------------------------------------ settings and state

def resolve_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """``cfg.bf16`` with None ("auto") resolved: on for the fused GRU on a CPU with native bfloat16."""
    if cfg.bf16 is not None:
        if cfg.bf16 and cfg.gru != "fused":
            raise LrnetError("bf16 applies to the fused GRU only (set gru=fused)")
        return bool(cfg.bf16)
    return cfg.gru == "fused" and device.type == "cpu" and native_bf16()


def resolve_settings(cfg: TrainConfig, branch: str, *, epochs: Optional[int] = None, lr: Optional[float] = None,
                     batch_size: Optional[int] = None, seed: Optional[int] = None, patience: Optional[int] = None,
                     device: Union[str, torch.device] = "cpu", output: Optional[PathLike] = None) -> BranchSettings:
    """`BranchSettings` of `branch`: each argument given wins over the config's value."""
    if branch not in BRANCHES:
        raise LrnetError(f"unknown branch {branch!r}; expected one of {', '.join(BRANCHES)}")
    device = torch.device(device)
    settings = BranchSettings(
        branch=branch, epochs=cfg.epochs(branch) if epochs is None else int(epochs),
        lr=cfg.lr(branch) if lr is None else float(lr),
        batch_size=cfg.batch_size if batch_size is None else int(batch_size),
        patience=cfg.patience if patience is None else patience, seed=cfg.seed if seed is None else seed,
        device=device, output=Path(output) if output is not None else None, gru=cfg.gru,
        bf16=resolve_bf16(cfg, device), val_batch_size=cfg.val_batch_size,
        extra_weights_name=cfg.weights_name(branch))
    if settings.epochs < 1 or settings.batch_size < 1 or not settings.lr > 0:
        raise LrnetError(f"branch {branch}: epochs and batch size must be >= 1 and the learning rate > 0 "
                         f"(got {settings.epochs}, {settings.batch_size}, {settings.lr})")
    return settings


def _new_model(model_or_config: Union[nn.Module, ModelConfig, None], cfg: TrainConfig, settings: BranchSettings,
               seed: int, checkpoint: Optional[Dict[str, Any]]) -> nn.Module:
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    model_cfg = model_or_config or cfg.model
    if checkpoint is not None:
        model_cfg = ModelConfig.from_dict(checkpoint["model_config"])
    with isolated_global_rng(seed):  # initial weights from the branch's seed, global generator left as it was
        return build_model(model_cfg, gru=settings.gru, bf16=settings.bf16)


def start_branch(model_or_config: Union[nn.Module, ModelConfig, None], settings: BranchSettings,
                 cfg: TrainConfig, resume: bool = False) -> BranchState:
    """A seeded `BranchState`, or the one saved in ``<branch>.ckpt`` when `resume` and it exists."""
    ckpt = None
    path = settings.checkpoint_path
    if resume and path is not None and path.is_file():
        ckpt = load_checkpoint(path, settings.branch)
    seed = ckpt["seed"] if ckpt is not None else settings.seed
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")  # recorded, so any run can be repeated
    branch_seed = int(seed) + _BRANCH_SEED_OFFSET[settings.branch]
    model = _new_model(model_or_config, cfg, settings, branch_seed, ckpt).to(settings.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    shuffle = torch.Generator(device=settings.device)
    shuffle.manual_seed(branch_seed)
    if settings.device.type == "cuda":
        torch.cuda.manual_seed(branch_seed + 1)
    state = BranchState(model, optimizer, shuffle, seeded_cpu_state(branch_seed + 1), int(seed),
                        History(settings.branch), built=not isinstance(model_or_config, nn.Module))
    if ckpt is not None:
        restore(state, ckpt, settings)
    return state


# ------------------------------------------------------------------------------ epochs

@dataclass
class EpochData:
    """The training and validation data as tensors on the training device (views, no copies on CPU)."""

    frames: torch.Tensor  # (n_blocks * B, 136): every block's rows
    block_labels: torch.Tensor  # (n_blocks,) int64
    samples: torch.Tensor  # (n_samples,) int64 block indices of one epoch
    block_size: int
    val_blocks: torch.Tensor  # (n_val, B, 136)
    val_labels: torch.Tensor  # (n_val,) int64

    @classmethod
    def of(cls, train: LabelledBlocks, val: LabelledBlocks, device: torch.device) -> "EpochData":
        blocks = _as_tensor(train.blocks, device)
        return cls(blocks.view(-1, blocks.shape[-1]),
                   torch.as_tensor(train.block_labels, dtype=torch.int64, device=device),
                   torch.as_tensor(train.sample_index, dtype=torch.int64, device=device), int(train.block_size),
                   _as_tensor(val.blocks, device), torch.as_tensor(val.block_labels, dtype=torch.int64, device=device))


@dataclass
class EpochHooks:
    """What runs around the batches: stop requests, per-batch callback, thread sharing."""

    stop: Optional[threading.Event] = None  # set: stop before the next batch (raises sharing.Stop)
    on_batch: Optional[Callable[[int, int], None]] = None  # on_batch(epoch, batch), before each batch
    cores: Optional[CoreShare] = None
    workspace: Dict[str, torch.Tensor] = field(default_factory=dict)  # batch buffers (see gather_batch)


def train_one_epoch(state: BranchState, data: EpochData, settings: BranchSettings, epoch: int,
                    hooks: Optional[EpochHooks] = None) -> Tuple[float, float]:
    """One pass over the shuffled samples; returns (mean loss, train accuracy) of the epoch."""
    hooks = hooks or EpochHooks()
    model, optimizer, device = state.model, state.optimizer, settings.device
    model.train()
    n = data.samples.numel()
    order = data.samples[torch.randperm(n, generator=state.shuffle, device=device)]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for b, i in enumerate(range(0, n, settings.batch_size)):
        if hooks.stop is not None and hooks.stop.is_set():
            raise Stop()
        if hooks.cores is not None:
            hooks.cores.apply(settings.branch)
        if hooks.on_batch is not None:
            hooks.on_batch(epoch, b)
        loss, hits = train_step(model, optimizer, data, order[i:i + settings.batch_size], settings.branch,
                                hooks.workspace)
        loss_sum += loss.double() * min(settings.batch_size, n - i)
        correct += hits
    return float(loss_sum.item()) / n, float(correct.item()) / n


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: EpochData, idx: torch.Tensor, branch: str,
               workspace: Optional[Dict[str, torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One Adam step on the blocks `idx` (on the data's device); returns (mean loss, correct
    predictions) as 0-d tensors on that device, so the epoch never waits on a device sync."""
    xb = gather_batch(data.frames, idx, data.block_size, branch, workspace)
    yb = data.block_labels.index_select(0, idx)
    logits = model(xb)
    loss = F.cross_entropy(logits, yb)  # log-softmax + NLL, stable
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == yb).sum()


def end_epoch(state: BranchState, settings: BranchSettings, cfg: TrainConfig, epoch: int, loss: float,
              train_acc: float, val_acc: float, seconds: float) -> None:
    """Record the epoch; keep (and save) the weights when val accuracy >= best; checkpoint the epoch.

    The checkpoint is kept in memory and written at most every
    `lrnet.training.checkpoint.CHECKPOINT_INTERVAL_S` seconds (`keep_checkpoint`);
    `write_checkpoint` (called by `train_branch` on every exit, Ctrl-C included, and by
    `finish_branch`) writes the latest one."""
    h = state.history
    if not math.isfinite(loss):
        raise LrnetError(f"branch {settings.branch}: the training loss became {loss} at epoch {epoch}; stopped "
                         f"(best weights so far, val acc {h.best_val_acc:.4f} at epoch {h.best_epoch}, are kept); "
                         "try a lower learning rate")
    h.epoch.append(epoch)
    h.loss.append(loss)
    h.train_acc.append(train_acc)
    h.val_acc.append(val_acc)
    h.seconds.append(seconds)
    if val_acc > h.best_val_acc:
        h.improved_epoch = epoch
    if val_acc >= h.best_val_acc:  # as the reference: ties move the checkpoint forward
        h.best_val_acc, h.best_epoch = val_acc, epoch
        state.best_state = cpu_state(state.model)
        if settings.weights_path is not None:
            save_torch(state.best_state, settings.weights_path)
    keep_checkpoint(state, settings, cfg, epoch)
    log.info("%s epoch %d/%d: loss %.4f, train acc %.4f, val acc %.4f (best %.4f at %d), %.2f s", settings.branch,
             epoch, settings.epochs, loss, train_acc, val_acc, h.best_val_acc, h.best_epoch, seconds)


def finish_branch(state: BranchState, settings: BranchSettings, cfg: TrainConfig) -> BranchResult:
    """Record the final status (checkpoint, history, the reference's extra weights copy); load the best weights."""
    write_checkpoint(state, settings)
    h = state.history
    if not h.stopped:
        h.stopped = "completed"
    out, ckpt_path, weights = settings.output, settings.checkpoint_path, settings.weights_path
    if out is not None:
        if ckpt_path is not None and ckpt_path.is_file():  # a finished run resumes as finished
            mark_finished(ckpt_path, settings.branch, h)
        write_history(out, h)
        extra = settings.extra_weights_name
        if weights is not None and weights.is_file() and extra and extra != weights.name:
            with writing(out / extra):  # the reference's weights_name_g*, as an extra copy
                atomic_write_bytes(out / extra, weights.read_bytes())
    model = state.model
    if state.built and getattr(model, "gru_impl", "torch") != "torch":
        # Hand back the plain nn.GRU model (exact fp32 inference, as the saved weights load). Building
        # it draws initial weights from the global generator: isolated, or it would shift a
        # concurrent branch's dropout stream mid-forward.
        with isolated_global_rng():
            model = build_model(getattr(model, "config")).to(settings.device)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    elif model is not state.model:
        model.load_state_dict(state.model.state_dict())
    model.eval()
    return BranchResult(settings.branch, model, h, weights, ckpt_path)


def _epochs_since_best(history: History) -> int:
    """Epochs since the validation accuracy last strictly improved (equal is no progress)."""
    if not history.epoch:
        return 0
    return history.epoch[-1] - history.improved_epoch


def _run_epochs(state: BranchState, data: EpochData, settings: BranchSettings, cfg: TrainConfig,
                hooks: EpochHooks, bar: Any, callback: Optional[Callable[[int, History], None]]) -> None:
    h = state.history
    for epoch in range(state.start_epoch + 1, settings.epochs + 1):
        if settings.patience is not None and _epochs_since_best(h) >= settings.patience:
            h.stopped = f"early stopping: val accuracy did not improve for {settings.patience} epochs"
            return
        t0 = time.perf_counter()
        loss, acc = train_one_epoch(state, data, settings, epoch, hooks)
        if hooks.cores is not None:
            hooks.cores.apply(settings.branch)
        val_acc = (validation_accuracy(state.model, data.val_blocks, data.val_labels, settings.branch,
                                       settings.val_batch_size) if math.isfinite(loss) else float("nan"))
        end_epoch(state, settings, cfg, epoch, loss, acc, val_acc, time.perf_counter() - t0)
        bar.set_postfix(loss=f"{loss:.4f}", train=f"{acc:.4f}", val=f"{val_acc:.4f}", best=f"{h.best_val_acc:.4f}",
                        refresh=False)
        bar.update(1)
        if callback is not None:
            callback(epoch, h)


def train_branch(model_or_config: Union[nn.Module, ModelConfig, None], train: LabelledBlocks, val: LabelledBlocks,
                 branch: str = "g1", *, config: Optional[TrainConfig] = None, epochs: Optional[int] = None,
                 lr: Optional[float] = None, batch_size: Optional[int] = None,
                 device: Union[str, torch.device] = "cpu", seed: Optional[int] = None,
                 output: Optional[PathLike] = None, resume: bool = False, patience: Optional[int] = None,
                 progress: bool = True, position: int = 0, callback: Optional[Callable[[int, History], None]] = None,
                 on_batch: Optional[Callable[[int, int], None]] = None,
                 stop_event: Optional[threading.Event] = None, cores: Optional[CoreShare] = None) -> BranchResult:
    """Train one branch and return it with its history; the returned model holds the best weights.

    `model_or_config`: a model to train in place, or a `ModelConfig` (None: ``config.model``) to
    build one (with ``config.gru`` / ``config.bf16``). `train` / `val`: `lrnet.datasets.BlockSet`
    (or anything with the fields of `lrnet.datasets.LabelledBlocks`).
    Settings not given explicitly come from `config` (default `TrainConfig()`, the reference's).
    `output`: folder for ``<branch>.pth`` (best weights), ``<branch>.ckpt`` (resume state) and
    ``history_<branch>.json/.csv``; None keeps everything in memory (no lock or refusal rules
    here: `lrnet.training.train` applies them). `resume`: continue from ``output/<branch>.ckpt``
    when it exists. `callback(epoch, history)` runs after each epoch; `on_batch(epoch, batch)`
    before each batch. `stop_event` / `cores`: set by `lrnet.training.train` when branches train
    at the same time (stop at the next batch; thread sharing). Raises `LrnetError` on a
    non-finite loss, unusable data or a failed write.
    """
    cfg = config or TrainConfig()
    _check_sets(train, val, branch)
    settings = resolve_settings(cfg, branch, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                patience=patience, device=device, output=output)
    state = start_branch(model_or_config, settings, cfg, resume)
    data = EpochData.of(train, val, settings.device)
    hooks = EpochHooks(stop_event, on_batch, cores)
    if settings.device.type == "cpu":
        state.rng_swap = BranchRNG(state.dropout).attach(state.model)
    from tqdm.auto import tqdm

    bar = tqdm(total=settings.epochs, initial=min(state.start_epoch, settings.epochs), desc=f"train {branch}",
               unit="epoch", position=position, leave=True, disable=None if progress else True, dynamic_ncols=True)
    try:
        _run_epochs(state, data, settings, cfg, hooks, bar, callback)
    finally:
        bar.close()
        write_checkpoint(state, settings)  # the last finished epoch, also on Ctrl-C or an error
        hooks.workspace.clear()
        release_workspace()  # this thread's pooled GRU buffers
        if state.rng_swap is not None:
            state.dropout = state.rng_swap.state
            state.rng_swap.detach()
            state.rng_swap = None
        if cores is not None:
            cores.leave(branch)
    return finish_branch(state, settings, cfg)
