"""Training of the LRNet branches (the reference's ``train.py``, fixed and faster).

`train_branch` trains one branch (g1 on blocks, g2 on their frame differences) on a training
`BlockSet` and keeps the weights with the best validation accuracy; `train` trains g1 and g2 (at
the same time on a multi-core CPU, since they are independent) and writes a run folder::

    OUT/g1.pth, OUT/g2.pth          best weights, plain state dicts in the official key format
    OUT/lrnet.json                  model config, block size, frame rate, dataset and training config
                                    (read by lrnet.weights.resolve_weights(OUT); see lrnet.runs)
    OUT/g1.ckpt, OUT/g2.ckpt        resume state (last epoch: weights, optimizer, RNG, history)
    OUT/history_g1.json / .csv      loss, train accuracy, validation accuracy per epoch
    OUT/training_curves.png         the histories plotted

One branch is trained in the steps torchvision's and timm's reference scripts use:
`resolve_settings` (explicit arguments over the `TrainConfig`), `start_branch` (a `BranchState`:
model, optimizer, seeded random streams, history; restored from the checkpoint on resume),
`train_one_epoch`, `validation_accuracy`, `end_epoch` (history, best weights, checkpoint) and
`finish_branch`.

Per epoch, as the reference: shuffled mini-batches over ``train.sample_index``, Adam, NLL loss
(``cross_entropy`` on logits, i.e. log-softmax, never ``log(softmax)``), then block accuracy on
the validation set; the best weights are saved when the validation accuracy is >= the best so far.
A non-finite loss stops training with `LrnetError` (the best weights so far stay valid).

Data stay in one tensor on the training device; each batch is gathered by index there and g2
differences are computed per batch, so no host round trip or second copy of the data is made.
When g1 and g2 train at the same time on the CPU, `CoreShare` splits the intra-op threads
between the branches still training, so the one left running gets every core.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_path, atomic_write_bytes
from .config import TrainConfig
from .errors import LrnetError
from .fastgru import native_bf16, release_workspace
from .features import BRANCHES, branch_input
from .model import ModelConfig, build_model
from .runs import RunFolder, dataset_fps, open_run, resume_conflicts, save_torch, write_text, writing
from .weights.runfile import read_meta, update_meta

__all__ = ["History", "BranchResult", "TrainResult", "BranchSettings", "BranchState", "CoreShare", "train",
           "train_branch", "resolve_settings", "start_branch", "train_one_epoch", "validation_accuracy",
           "end_epoch", "write_checkpoint", "finish_branch", "train_step", "gru_recurrence", "EpochData",
           "EpochHooks", "gather_batch", "plot_histories", "run_metadata", "input_folders"]

log = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]

# Dropout masks come from PyTorch's global CPU generator. Each branch keeps its own generator
# state and swaps it in, under this lock, around each of its dropout modules only, so branches
# trained concurrently in threads stay reproducible while everything else runs in parallel.
_RNG_LOCK = threading.Lock()
_BRANCH_SEED_OFFSET = {"g1": 0, "g2": 1_000_003}
CHECKPOINT_INTERVAL_S = 30.0  # at most one resume-checkpoint write per this many seconds (see end_epoch)


def _draws_random_numbers(module: nn.Module) -> bool:
    from .model import LandmarkDropout

    if isinstance(module, (nn.modules.dropout._DropoutNd, LandmarkDropout)):
        return True
    return isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1


class _BranchRNG:
    """A branch's own stream of dropout randomness: forward hooks swap its state into the global
    CPU generator (under `_RNG_LOCK`) for exactly the modules that draw random numbers."""

    def __init__(self, state: torch.Tensor):
        self.state = state
        self.handles: List[Any] = []

    def attach(self, model: nn.Module) -> "_BranchRNG":
        for m in model.modules():
            if _draws_random_numbers(m):
                self.handles.append(m.register_forward_pre_hook(self._enter))
                self.handles.append(m.register_forward_hook(self._leave, always_call=True))
        return self

    def _enter(self, module, args):
        _RNG_LOCK.acquire()
        torch.set_rng_state(self.state)

    def _leave(self, module, args, output):
        try:
            self.state = torch.get_rng_state()
        finally:
            _RNG_LOCK.release()

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class CoreShare:
    """Intra-op threads shared by branches that train at the same time in threads of one process.

    ``torch.set_num_threads`` acts on the calling thread's OpenMP team, so each branch thread sets
    its own count; `apply` (called before every batch and validation) gives each branch still
    training an equal part of `total`, so when one branch finishes the other takes every core.
    The thread count does not change the numbers (the products split rows and columns between
    threads, never a sum), so results do not depend on when the hand-over happens.
    """

    def __init__(self, total: int, branches: Sequence[str]):
        self.total = max(1, int(total))
        self._active = list(branches)
        self._lock = threading.Lock()

    def threads(self, branch: str) -> int:
        with self._lock:
            if branch not in self._active:
                return self.total
            n, i = len(self._active), self._active.index(branch)
        return max(1, self.total // n + (1 if i < self.total % n else 0))

    def apply(self, branch: str) -> None:
        n = self.threads(branch)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def leave(self, branch: str) -> None:
        with self._lock:
            if branch in self._active:
                self._active.remove(branch)


@dataclass
class History:
    """Per-epoch record of one branch (lists aligned with ``epoch``)."""

    branch: str
    epoch: List[int] = field(default_factory=list)
    loss: List[float] = field(default_factory=list)
    train_acc: List[float] = field(default_factory=list)
    val_acc: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)  # wall time of the epoch (training + validation)
    best_val_acc: float = -1.0
    best_epoch: int = 0  # last epoch whose val accuracy was >= every earlier one (its weights are saved)
    improved_epoch: int = 0  # last epoch whose val accuracy was > every earlier one (for early stopping)
    stopped: str = ""  # "completed", "early stopping ...", "" while running

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "History":
        values: Dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**values)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["epoch", "loss", "train_acc", "val_acc", "seconds"])
        for row in zip(self.epoch, self.loss, self.train_acc, self.val_acc, self.seconds):
            w.writerow([row[0]] + [f"{v:.6g}" for v in row[1:]])
        return buf.getvalue()


@dataclass
class BranchResult:
    """One trained branch: the model (best weights loaded, eval mode) and its history."""

    branch: str
    model: nn.Module
    history: History
    weights: Optional[Path] = None  # OUT/<branch>.pth
    checkpoint: Optional[Path] = None  # OUT/<branch>.ckpt


@dataclass
class TrainResult:
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


class _Stop(Exception):
    """Raised inside a branch's loop when another branch failed (concurrent training)."""


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


def _check_sets(train: Any, val: Any, branch: str) -> None:
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


# ------------------------------------------------------------------------------ one branch, step by step

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


@dataclass
class BranchState:
    """Everything that changes while a branch trains, and all a checkpoint needs to resume it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator  # batch order
    dropout: torch.Tensor  # CPU generator state of the branch's dropout stream (swapped in by _BranchRNG)
    seed: int
    history: History
    start_epoch: int = 0  # epochs already done (resume)
    best_state: Optional[Dict[str, torch.Tensor]] = None  # CPU copy of the best weights
    rng_swap: Optional[_BranchRNG] = None  # attached while training on CPU
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


def _seeded_cpu_state(seed: int) -> torch.Tensor:
    """A CPU generator state seeded with `seed`, made without disturbing the global generator."""
    with _RNG_LOCK:
        saved = torch.get_rng_state()
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        torch.set_rng_state(saved)
    return state


def _new_model(model_or_config: Union[nn.Module, ModelConfig, None], cfg: TrainConfig, settings: BranchSettings,
               seed: int, checkpoint: Optional[Dict[str, Any]]) -> nn.Module:
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    model_cfg = model_or_config or cfg.model
    if checkpoint is not None:
        model_cfg = ModelConfig.from_dict(checkpoint["model_config"])
    with _RNG_LOCK:  # initial weights from the branch's seed, global generator left as it was
        saved = torch.get_rng_state()
        torch.manual_seed(seed)
        model = build_model(model_cfg, gru=settings.gru, bf16=settings.bf16)
        torch.set_rng_state(saved)
    return model


def start_branch(model_or_config: Union[nn.Module, ModelConfig, None], settings: BranchSettings,
                 cfg: TrainConfig, resume: bool = False) -> BranchState:
    """A seeded `BranchState`, or the one saved in ``<branch>.ckpt`` when `resume` and it exists."""
    ckpt = None
    path = settings.checkpoint_path
    if resume and path is not None and path.is_file():
        ckpt = _load_checkpoint(path, settings.branch)
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
    state = BranchState(model, optimizer, shuffle, _seeded_cpu_state(branch_seed + 1), int(seed),
                        History(settings.branch), built=not isinstance(model_or_config, nn.Module))
    if ckpt is not None:
        _restore(state, ckpt, settings)
    return state


def _restore(state: BranchState, ckpt: Dict[str, Any], settings: BranchSettings) -> None:
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
        from .weights import load_state_dict

        state.best_state = load_state_dict(settings.weights_path)


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
    def of(cls, train: Any, val: Any, device: torch.device) -> "EpochData":
        blocks = _as_tensor(train.blocks, device)
        return cls(blocks.view(-1, blocks.shape[-1]),
                   torch.as_tensor(train.block_labels, dtype=torch.int64, device=device),
                   torch.as_tensor(train.sample_index, dtype=torch.int64, device=device), int(train.block_size),
                   _as_tensor(val.blocks, device), torch.as_tensor(val.block_labels, dtype=torch.int64, device=device))


@dataclass
class EpochHooks:
    """What runs around the batches: stop requests, per-batch callback, thread sharing."""

    stop: Optional[threading.Event] = None  # set: stop before the next batch (raises _Stop)
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
            raise _Stop()
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

    The checkpoint and history files are written for the first and last epoch and otherwise at
    most every `CHECKPOINT_INTERVAL_S` seconds (each write is fsync'ed: tens of ms, a few percent
    of an epoch); the latest epoch's checkpoint is kept in memory and `write_checkpoint` (called
    by `train_branch` on every exit, Ctrl-C included, and by `finish_branch`) writes it."""
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
        state.best_state = _cpu_state(state.model)
        if settings.weights_path is not None:
            save_torch(state.best_state, settings.weights_path)
    if settings.checkpoint_path is not None:
        state.pending = _checkpoint(state, epoch, cfg, settings.branch)
        if epoch >= settings.epochs or time.monotonic() - state.written_at >= CHECKPOINT_INTERVAL_S:
            write_checkpoint(state, settings)
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
            ck = _load_checkpoint(ckpt_path, settings.branch)
            ck["history"] = h.to_dict()
            save_torch(ck, ckpt_path)
        _write_history(out, h)
        extra = settings.extra_weights_name
        if weights is not None and weights.is_file() and extra and extra != weights.name:
            with writing(out / extra):  # the reference's weights_name_g*, as an extra copy
                atomic_write_bytes(out / extra, weights.read_bytes())
    model = state.model
    if state.built and getattr(model, "gru_impl", "torch") != "torch":
        # Hand back the plain nn.GRU model (exact fp32 inference, as the saved weights load). Building
        # it draws initial weights from the global generator: under the lock, and the generator
        # restored, or it would shift a concurrent branch's dropout stream mid-forward.
        with _RNG_LOCK:
            saved = torch.get_rng_state()
            model = build_model(getattr(model, "config")).to(settings.device)
            torch.set_rng_state(saved)
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


def train_branch(model_or_config: Union[nn.Module, ModelConfig, None], train: Any, val: Any, branch: str = "g1", *,
                 config: Optional[TrainConfig] = None, epochs: Optional[int] = None, lr: Optional[float] = None,
                 batch_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                 seed: Optional[int] = None, output: Optional[PathLike] = None, resume: bool = False,
                 patience: Optional[int] = None, progress: bool = True, position: int = 0,
                 callback: Optional[Callable[[int, History], None]] = None,
                 on_batch: Optional[Callable[[int, int], None]] = None,
                 stop_event: Optional[threading.Event] = None, cores: Optional[CoreShare] = None) -> BranchResult:
    """Train one branch and return it with its history; the returned model holds the best weights.

    `model_or_config`: a model to train in place, or a `ModelConfig` (None: ``config.model``) to
    build one (with ``config.gru`` / ``config.bf16``). `train` / `val`: `lrnet.datasets.BlockSet`.
    Settings not given explicitly come from `config` (default `TrainConfig()`, the reference's).
    `output`: folder for ``<branch>.pth`` (best weights), ``<branch>.ckpt`` (resume state) and
    ``history_<branch>.json/.csv``; None keeps everything in memory (no lock or refusal rules
    here: `train` applies them). `resume`: continue from ``output/<branch>.ckpt`` when it exists.
    `callback(epoch, history)` runs after each epoch; `on_batch(epoch, batch)` before each batch.
    `cores`: thread sharing with concurrently trained branches. Raises `LrnetError` on a
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
        state.rng_swap = _BranchRNG(state.dropout).attach(state.model)
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


def _cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def write_checkpoint(state: BranchState, settings: BranchSettings) -> None:
    """Write the checkpoint and history kept by `end_epoch`, if any is pending."""
    pending, state.pending = state.pending, None
    if pending is None or settings.checkpoint_path is None:
        return
    save_torch(pending, settings.checkpoint_path)
    _write_history(settings.output, History.from_dict(pending["history"]))
    state.written_at = time.monotonic()


def _checkpoint(state: BranchState, epoch: int, cfg: TrainConfig, branch: str) -> Dict[str, Any]:
    """The resume state after `epoch`, as copies (training goes on changing the live tensors)."""
    import copy

    model_cfg = getattr(state.model, "config", None)
    return {
        "format": "lrnet-checkpoint-1",
        "branch": branch,
        "epoch": epoch,
        "model": _cpu_state(state.model),
        "optimizer": copy.deepcopy(state.optimizer.state_dict()),
        "history": state.history.to_dict(),
        "rng": state.rng(),
        "seed": int(state.seed),
        "model_config": model_cfg.to_dict() if isinstance(model_cfg, ModelConfig) else {},
        "config": cfg.to_dict(),
    }


def _load_checkpoint(path: Path, branch: str) -> Dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LrnetError(f"{path}: not a readable lrnet checkpoint ({str(exc).splitlines()[0][:200]}); "
                         "delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != "lrnet-checkpoint-1":
        raise LrnetError(f"{path}: not an lrnet training checkpoint; delete it to start over")
    if state.get("branch") != branch:
        raise LrnetError(f"{path}: checkpoint of branch {state.get('branch')}, expected {branch}")
    return state


def _write_history(out: Optional[Path], history: History) -> None:
    if out is None:
        return
    import json

    write_text(out / f"history_{history.branch}.json", json.dumps(history.to_dict(), indent=1) + "\n")
    write_text(out / f"history_{history.branch}.csv", history.to_csv())


def plot_histories(histories: Dict[str, History], path: PathLike) -> Path:
    """Loss and accuracy curves of each branch to a PNG (Agg backend, atomic write)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for branch, h in histories.items():
        ax_loss.plot(h.epoch, h.loss, label=f"{branch} train loss")
        ax_acc.plot(h.epoch, h.train_acc, label=f"{branch} train acc", alpha=0.7)
        ax_acc.plot(h.epoch, h.val_acc, label=f"{branch} val acc")
        if h.best_epoch:
            ax_acc.axvline(h.best_epoch, linestyle=":", linewidth=0.8)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("NLL loss")
    ax_loss.set_yscale("log")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("block accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with writing(path), atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path



# ------------------------------------------------------------------------------ both branches, run folder

def _use_concurrency(cfg: TrainConfig, branches: Sequence[str], device: torch.device) -> bool:
    if len(branches) < 2:
        return False
    if cfg.concurrent == "on":
        return True
    if cfg.concurrent == "off":
        return False
    return device.type == "cpu" and (os.cpu_count() or 1) >= 2


def run_metadata(cfg: TrainConfig, train: Any, val: Any, branches: Sequence[str],
                 fps: Optional[float] = None, fps_source: str = "unknown") -> Dict[str, Any]:
    """The keys of ``OUT/lrnet.json`` that training manages (read back by `lrnet.weights.resolve_weights`)."""
    def describe(s):
        return {"name": s.name, "root": getattr(s, "root", None), "synthetic": bool(getattr(s, "synthetic", False)),
                "counts": s.counts() if hasattr(s, "counts") else {}}

    from . import __version__

    return {"model": cfg.model.to_dict(), "block_size": int(train.block_size), "branches": list(branches),
            "fps": fps, "fps_source": fps_source,
            "dataset": {"train": describe(train), "val": describe(val)}, "config": cfg.to_dict(),
            "lrnet_version": __version__}


def input_folders(*sets: Any) -> List[Path]:
    """The folders the landmark files of `sets` were read from (an output must not be inside one)."""
    folders: set = set()
    for s in sets:
        root = getattr(s, "root", None)
        if root:
            folders.update(Path(root) / Path(v).parent for v in getattr(s, "videos", []))
    return sorted(folders)


def gru_recurrence(cfg: TrainConfig, device: torch.device) -> str:
    """How the GRU's time steps run in this training: ``"cpp"`` (the fused GRU's C++ kernel),
    ``"python (why)"`` (its Python loop) or ``"nn.GRU"``. Builds the kernel when needed (logged)."""
    if cfg.gru != "fused" or device.type != "cpu":
        return "nn.GRU"
    from . import gru_kernel

    return gru_kernel.status()


def _record_run(run: RunFolder, cfg: TrainConfig, train_set: Any, val_set: Any, branches: Sequence[str],
                fps: Optional[float], device: torch.device) -> None:
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


def _train_branches(cfg: TrainConfig, train_set: Any, val_set: Any, branches: Sequence[str], device: torch.device,
                    out: Optional[Path], resume: bool, progress: bool,
                    callback: Optional[Callable[[str, int, History], None]]) -> Dict[str, BranchResult]:
    """Train `branches` one after the other or, on a multi-core CPU, at the same time in threads."""
    concurrent = _use_concurrency(cfg, branches, device)
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
        return _run_concurrently(run, branches)
    finally:
        torch.set_num_threads(total)


def _run_concurrently(run: Callable[[str, int, Optional[threading.Event]], BranchResult],
                      branches: Sequence[str]) -> Dict[str, BranchResult]:
    """`run` each branch in its own thread; the first failure (or Ctrl-C) stops the others at their next batch."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: Dict[str, BranchResult] = {}
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=len(branches), thread_name_prefix="lrnet-train") as pool:
        futures = {pool.submit(run, b, i, stop): b for i, b in enumerate(branches)}
        try:
            errors = []
            for fut in as_completed(futures):  # completion order: a failure stops the other branch at once
                try:
                    results[futures[fut]] = fut.result()
                except _Stop:
                    pass
                except BaseException as exc:
                    stop.set()
                    errors.append(exc)
            if errors:
                raise errors[0]
        except BaseException:  # Ctrl-C lands here, in the main thread: stop the branch threads first
            stop.set()
            raise
    return {b: results[b] for b in branches if b in results}  # branch order, not finish order


def train(config: Optional[TrainConfig], train_set: Any, val_set: Any, branches: Sequence[str] = BRANCHES, *,
          output: Union[PathLike, RunFolder, None] = None, device: Union[str, torch.device] = "cpu",
          resume: bool = False, overwrite: bool = False, fps: Optional[float] = None, progress: bool = True,
          callback: Optional[Callable[[str, int, History], None]] = None) -> TrainResult:
    """Train `branches` (g1 then g2, or both at once on a multi-core CPU) and write the run folder.

    `config`: a `TrainConfig` (None: the reference preset). `output`: run folder, or a `RunFolder`
    already opened with `lrnet.runs.open_run` (None: ``config.output``; both None: nothing is
    written). A folder is locked for the run (one writer), must not be inside the dataset, and
    may hold an earlier run only with `resume` (continue it; its recorded settings must match)
    or `overwrite` (replace it). `fps`: frame rate of the training videos to record (default:
    from the dataset's extraction log or synthetic marker, see `lrnet.runs.dataset_fps`). The
    data are shared by the branches (one copy); load them once and call `train` as often as you
    like with different configs.
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


def _train_in(run: RunFolder, cfg: TrainConfig, train_set: Any, val_set: Any, branches: Sequence[str],
              device: torch.device, fps: Optional[float], progress: bool,
              callback: Optional[Callable[[str, int, History], None]]) -> TrainResult:
    from .runs import check_not_input

    check_not_input(run.path, input_folders(train_set, val_set))
    _record_run(run, cfg, train_set, val_set, branches, fps, device)
    results = _train_branches(cfg, train_set, val_set, branches, device, run.path, run.resume, progress, callback)
    histories = {b: r.history for b, r in results.items()}
    curves = plot_histories(histories, run.path / "training_curves.png")
    return TrainResult(run.path, results, cfg, curves)
