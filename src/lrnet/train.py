"""Training of the LRNet branches (the reference's ``train.py``, fixed and faster).

`train_branch` trains one branch (g1 on blocks, g2 on their frame differences) on a training
`BlockSet` and keeps the weights with the best validation accuracy; `train` trains g1 and g2 (at
the same time on a multi-core CPU, since they are independent) and writes a run folder::

    OUT/g1.pth, OUT/g2.pth          best weights, plain state dicts in the official key format
    OUT/lrnet.json                  model config, block size, dataset and training config
                                    (read by lrnet.weights.resolve_weights(OUT))
    OUT/g1.ckpt, OUT/g2.ckpt        resume state (last epoch: weights, optimizer, RNG, history)
    OUT/history_g1.json / .csv      loss, train accuracy, validation accuracy per epoch
    OUT/training_curves.png         the histories plotted

Per epoch, as the reference: shuffled mini-batches over ``train.sample_index``, Adam, NLL loss
(``cross_entropy`` on logits, i.e. log-softmax, never ``log(softmax)``), then block accuracy on
the validation set; the best weights are saved when the validation accuracy is >= the best so far.
A non-finite loss stops training with `LrnetError` (the best weights so far stay valid).

Data stay in one tensor on the training device; each batch is gathered by index there and g2
differences are computed per batch, so no host round trip or second copy of the data is made.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_path, atomic_write_text
from .config import TrainConfig
from .errors import LrnetError
from .fastgru import release_workspace
from .features import BRANCHES, branch_input
from .model import ModelConfig, build_model

PathLike = Union[str, "os.PathLike[str]"]

# Dropout masks come from PyTorch's global CPU generator. Each branch keeps its own generator
# state and swaps it in, under this lock, around each of its dropout modules only, so branches
# trained concurrently in threads stay reproducible while everything else runs in parallel.
_RNG_LOCK = threading.Lock()


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
        self.handles = []

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
_BRANCH_SEED_OFFSET = {"g1": 0, "g2": 1_000_003}


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
        return cls(**{k: (list(v) if isinstance(v, list) else v) for k, v in d.items()})

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


def _save_state_dict(state: Dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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


def train_branch(model_or_config: Union[nn.Module, ModelConfig, None], train: Any, val: Any, branch: str = "g1", *,
                 config: Optional[TrainConfig] = None, epochs: Optional[int] = None, lr: Optional[float] = None,
                 batch_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                 seed: Optional[int] = None, output: Optional[PathLike] = None, resume: bool = False,
                 patience: Optional[int] = None, progress: bool = True, position: int = 0,
                 callback: Optional[Callable[[int, History], None]] = None,
                 on_batch: Optional[Callable[[int, int], None]] = None,
                 stop_event: Optional[threading.Event] = None) -> BranchResult:
    """Train one branch and return it with its history; the returned model holds the best weights.

    `model_or_config`: a model to train in place, or a `ModelConfig` (None: ``config.model``) to
    build one. `train` / `val`: `lrnet.datasets.BlockSet`. Settings not given explicitly come from
    `config` (default `TrainConfig()`, the reference's): epochs, lr, batch size, seed, patience.
    `output`: folder for ``<branch>.pth`` (best weights), ``<branch>.ckpt`` (resume state) and
    ``history_<branch>.json/.csv``; None keeps everything in memory. `resume`: continue from
    ``output/<branch>.ckpt`` when it exists. `callback(epoch, history)` runs after each epoch;
    `on_batch(epoch, batch)` before each batch (monitoring, tests). Raises `LrnetError` on a
    non-finite loss or unusable data.
    """
    cfg = config or TrainConfig()
    _check_sets(train, val, branch)
    epochs = cfg.epochs(branch) if epochs is None else int(epochs)
    lr = cfg.lr(branch) if lr is None else float(lr)
    batch_size = cfg.batch_size if batch_size is None else int(batch_size)
    patience = cfg.patience if patience is None else patience
    seed = cfg.seed if seed is None else seed
    device = torch.device(device)
    out = Path(output) if output is not None else None
    ckpt_path = out / f"{branch}.ckpt" if out else None
    weights_path = out / f"{branch}.pth" if out else None

    state = None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, branch)
        seed = state["seed"]
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")  # recorded, so any run can be repeated
    branch_seed = int(seed) + _BRANCH_SEED_OFFSET[branch]

    if isinstance(model_or_config, nn.Module):
        model = model_or_config
    else:
        model_cfg = model_or_config or cfg.model
        if state is not None:
            model_cfg = ModelConfig.from_dict(state["model_config"])
        with _RNG_LOCK:
            saved = torch.get_rng_state()
            torch.manual_seed(branch_seed)
            model = build_model(model_cfg)
            torch.set_rng_state(saved)
    if cfg.bf16 and cfg.gru != "fused":
        raise LrnetError("bf16 applies to the fused GRU only (set gru=fused)")
    if hasattr(model, "gru_impl"):
        model.gru_impl = ("fused-bf16" if cfg.bf16 else "fused") if cfg.gru == "fused" else "torch"
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    # Per-branch random streams: shuffling (explicit generator) and dropout (swapped-in CPU state).
    shuffle = torch.Generator(device=device)
    shuffle.manual_seed(branch_seed)
    swap_rng = device.type == "cpu"
    with _RNG_LOCK:
        saved = torch.get_rng_state()
        torch.manual_seed(branch_seed + 1)
        dropout_rng = torch.get_rng_state()
        torch.set_rng_state(saved)
    if device.type == "cuda":
        torch.cuda.manual_seed(branch_seed + 1)

    history = History(branch)
    best_state = None
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History.from_dict(state["history"])
        start_epoch = int(state["epoch"])
        shuffle.set_state(state["rng"]["shuffle"])
        dropout_rng = state["rng"]["dropout"]
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        if weights_path is not None and weights_path.is_file():
            from .weights import load_state_dict

            best_state = load_state_dict(weights_path)
        history.stopped = ""

    X = _as_tensor(train.blocks, device)
    frames = X.view(-1, X.shape[-1])  # (n_blocks * B, 136) rows, a view
    y_blocks = torch.as_tensor(train.block_labels, dtype=torch.int64, device=device)
    samples = torch.as_tensor(train.sample_index, dtype=torch.int64, device=device)
    Xv = _as_tensor(val.blocks, device)
    yv = torch.as_tensor(val.block_labels, dtype=torch.int64, device=device)
    n = samples.numel()

    from tqdm.auto import tqdm

    branch_rng = _BranchRNG(dropout_rng).attach(model) if swap_rng else None
    bar = tqdm(total=epochs, initial=min(start_epoch, epochs), desc=f"train {branch}", unit="epoch",
               position=position, leave=True, disable=not progress, dynamic_ncols=True)
    since_best = _epochs_since_best(history)
    batch_buffers: Dict[str, torch.Tensor] = {}  # reused by every batch (see gather_batch)
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            if patience is not None and since_best >= patience:
                history.stopped = f"early stopping: val accuracy did not improve for {patience} epochs"
                break
            t0 = time.perf_counter()
            model.train()
            order = samples[torch.randperm(n, generator=shuffle, device=device)]
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for b, i in enumerate(range(0, n, batch_size)):
                if stop_event is not None and stop_event.is_set():
                    raise _Stop()
                if on_batch is not None:
                    on_batch(epoch, b)
                idx = order[i:i + batch_size]
                xb = gather_batch(frames, idx, train.block_size, branch, batch_buffers)
                yb = y_blocks.index_select(0, idx)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)  # log-softmax + NLL, stable
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach().double() * idx.numel()
                correct += (logits.detach().argmax(dim=1) == yb).sum()
            train_loss = float(loss_sum.item()) / n
            if not math.isfinite(train_loss):
                raise LrnetError(f"branch {branch}: the training loss became {train_loss} at epoch {epoch}; "
                                 f"stopped (best weights so far, val acc {history.best_val_acc:.4f} at epoch "
                                 f"{history.best_epoch}, are kept); try a lower learning rate")
            val_acc = validation_accuracy(model, Xv, yv, branch, cfg.val_batch_size)
            history.epoch.append(epoch)
            history.loss.append(train_loss)
            history.train_acc.append(float(correct.item()) / n)
            history.val_acc.append(val_acc)
            history.seconds.append(time.perf_counter() - t0)
            if val_acc > history.best_val_acc:
                history.improved_epoch = epoch
                since_best = 0
            else:
                since_best += 1
            if val_acc >= history.best_val_acc:  # as the reference: ties move the checkpoint forward
                history.best_val_acc = val_acc
                history.best_epoch = epoch
                best_state = _cpu_state(model)
                if weights_path is not None:
                    _save_state_dict(best_state, weights_path)
            if ckpt_path is not None:
                rng = {"shuffle": shuffle.get_state(),
                       "dropout": branch_rng.state if branch_rng is not None else dropout_rng}
                if device.type == "cuda":
                    rng["cuda"] = torch.cuda.get_rng_state(device)
                _save_checkpoint(ckpt_path, model, optimizer, epoch, history, rng, seed, cfg, branch)
                _write_history(out, history)
            bar.set_postfix(loss=f"{train_loss:.4f}", train=f"{history.train_acc[-1]:.4f}", val=f"{val_acc:.4f}",
                            best=f"{history.best_val_acc:.4f}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback(epoch, history)
        if not history.stopped:
            history.stopped = "completed"
    finally:
        bar.close()
        batch_buffers.clear()
        release_workspace()  # this thread's pooled GRU buffers
        if branch_rng is not None:
            dropout_rng = branch_rng.state
            branch_rng.detach()
    if ckpt_path is not None:
        # Record the final status in the checkpoint too (a finished run resumes as finished).
        if ckpt_path.is_file():
            ck = _load_checkpoint(ckpt_path, branch)
            ck["history"] = history.to_dict()
            with atomic_path(ckpt_path) as tmp:
                torch.save(ck, tmp)
        _write_history(out, history)
        extra = cfg.weights_name(branch)
        if weights_path is not None and weights_path.is_file() and extra and extra != weights_path.name:
            import shutil

            with atomic_path(out / extra) as tmp:  # the reference's weights_name_g*, as an extra copy
                shutil.copyfile(weights_path, tmp)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return BranchResult(branch, model, history, weights_path, ckpt_path)


def _epochs_since_best(history: History) -> int:
    """Epochs since the validation accuracy last strictly improved (equal is no progress)."""
    if not history.epoch:
        return 0
    return history.epoch[-1] - history.improved_epoch


def _save_checkpoint(path: Path, model: nn.Module, optimizer, epoch: int, history: History, rng: Dict[str, Any],
                     seed: int, cfg: TrainConfig, branch: str) -> None:
    model_cfg = getattr(model, "config", None)
    state = {
        "format": "lrnet-checkpoint-1",
        "branch": branch,
        "epoch": epoch,
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "history": history.to_dict(),
        "rng": rng,
        "seed": int(seed),
        "model_config": model_cfg.to_dict() if isinstance(model_cfg, ModelConfig) else {},
        "config": cfg.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    atomic_write_text(out / f"history_{history.branch}.json", json.dumps(history.to_dict(), indent=1) + "\n")
    atomic_write_text(out / f"history_{history.branch}.csv", history.to_csv())


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
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _use_concurrency(cfg: TrainConfig, branches: Sequence[str], device: torch.device) -> bool:
    if len(branches) < 2:
        return False
    if cfg.concurrent == "on":
        return True
    if cfg.concurrent == "off":
        return False
    return device.type == "cpu" and (os.cpu_count() or 1) >= 2


def run_metadata(cfg: TrainConfig, train: Any, val: Any, branches: Sequence[str]) -> Dict[str, Any]:
    """What ``OUT/lrnet.json`` holds (read back by `lrnet.weights.resolve_weights`)."""
    def describe(s):
        return {"name": s.name, "root": getattr(s, "root", None), "synthetic": bool(getattr(s, "synthetic", False)),
                "counts": s.counts() if hasattr(s, "counts") else {}}

    from . import __version__

    return {"model": cfg.model.to_dict(), "block_size": int(train.block_size), "branches": list(branches),
            "dataset": {"train": describe(train), "val": describe(val)}, "config": cfg.to_dict(),
            "lrnet_version": __version__}


def train(config: Optional[TrainConfig], train_set: Any, val_set: Any, branches: Sequence[str] = BRANCHES, *,
          output: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu", resume: bool = False,
          progress: bool = True, callback: Optional[Callable[[str, int, History], None]] = None) -> TrainResult:
    """Train `branches` (g1 then g2, or both at once on a multi-core CPU) and write the run folder.

    `config`: a `TrainConfig` (None: the reference preset). `output`: run folder (None:
    ``config.output``; both None: nothing is written). The data are shared by the branches
    (one copy); load them once and call `train` as often as you like with different configs.
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
    out = Path(output) if output is not None else (Path(cfg.output) if cfg.output else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "lrnet.json", json.dumps(run_metadata(cfg, train_set, val_set, branches), indent=1) + "\n")

    concurrent = _use_concurrency(cfg, branches, device)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        threads = cfg.threads
    else:
        threads = max(1, old_threads // 2) if concurrent else old_threads
    torch.set_num_threads(threads)
    results: Dict[str, BranchResult] = {}
    try:
        def run(branch: str, position: int, stop: Optional[threading.Event]) -> BranchResult:
            cb = (lambda e, h: callback(branch, e, h)) if callback else None
            # In a worker thread too: OpenMP's thread count is per calling thread, and a fresh
            # thread may otherwise run its GEMMs on every core (two branches oversubscribe).
            torch.set_num_threads(threads)
            return train_branch(None, train_set, val_set, branch, config=cfg, device=device, output=out,
                                resume=resume, progress=progress, position=position, callback=cb, stop_event=stop)

        if concurrent:
            from concurrent.futures import ThreadPoolExecutor, as_completed

            stop = threading.Event()
            with ThreadPoolExecutor(max_workers=len(branches), thread_name_prefix="lrnet-train") as pool:
                futures = {pool.submit(run, b, i, stop): b for i, b in enumerate(branches)}
                try:
                    errors = []
                    # In completion order, so that a branch that fails stops the other one at once.
                    for fut in as_completed(futures):
                        try:
                            results[futures[fut]] = fut.result()
                        except _Stop:
                            pass
                        except BaseException as exc:  # stop the other branch, then re-raise
                            stop.set()
                            errors.append(exc)
                    if errors:
                        raise errors[0]
                except KeyboardInterrupt:
                    stop.set()
                    raise
            results = {b: results[b] for b in branches if b in results}  # branch order, not finish order
        else:
            for b in branches:
                results[b] = run(b, 0, None)
    finally:
        torch.set_num_threads(old_threads)
    curves = None
    if out is not None:
        histories = {b: results[b].history for b in branches if b in results}
        curves = plot_histories(histories, out / "training_curves.png")
    return TrainResult(out, results, cfg, curves)
