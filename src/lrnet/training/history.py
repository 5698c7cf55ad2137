"""A branch's per-epoch record (`History`) and the files made from it.

``OUT/history_<branch>.json`` (the record as JSON) and ``.csv`` (epoch, loss, train_acc,
val_acc, seconds), written atomically by `write_history`; ``OUT/training_curves.png``, the loss
and accuracy curves of every branch, drawn by `plot_histories`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ..atomic import save_figure
from ..runs import write_text
from ..vocab import PathLike

__all__ = ["History", "write_history", "plot_histories"]



@dataclass
class History:
    """Per-epoch record of one branch (lists aligned with ``epoch``)."""

    branch: str
    epoch: List[int] = field(default_factory=list)
    loss: List[float] = field(default_factory=list)  # mean NLL loss over the epoch's samples
    train_acc: List[float] = field(default_factory=list)  # block accuracy on the epoch's samples, 0-1
    val_acc: List[float] = field(default_factory=list)  # block accuracy on the validation set, 0-1
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


def write_history(out: Optional[Path], history: History) -> None:
    """Write ``out/history_<branch>.json`` and ``.csv`` atomically (nothing when `out` is None)."""
    if out is None:
        return
    write_text(out / f"history_{history.branch}.json", json.dumps(history.to_dict(), indent=1) + "\n")
    write_text(out / f"history_{history.branch}.csv", history.to_csv())


def plot_histories(histories: Mapping[str, History], path: PathLike) -> Path:
    """Loss and accuracy curves of each branch to `path` (Agg canvas, format from the extension,
    atomic write; `lrnet.atomic.save_figure`)."""
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
    return save_figure(fig, path)
