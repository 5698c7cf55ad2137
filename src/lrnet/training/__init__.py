"""Training of the LRNet branches (the reference's ``train.py``, fixed and faster).

`train_branch` trains one branch (g1 on blocks, g2 on their frame differences) on a training
`lrnet.datasets.BlockSet` and keeps the weights with the best validation accuracy; `train` trains
g1 and g2 (at the same time on a multi-core CPU, since they are independent) and writes a run
folder::

    OUT/g1.pth, OUT/g2.pth          best weights, plain state dicts in the official key format
    OUT/lrnet.json                  model config, block size, frame rate, dataset and training config
                                    (read by lrnet.weights.resolve_weights(OUT); see lrnet.runs)
    OUT/g1.ckpt, OUT/g2.ckpt        resume state (last epoch: weights, optimizer, RNG, history)
    OUT/history_g1.json / .csv      loss, train accuracy, validation accuracy per epoch
    OUT/training_curves.png         the histories plotted

Modules, one concern each:

* `branch`: one branch's training in steps (settings, state, epoch, validation, best weights);
* `checkpoint`: its resume state ``<branch>.ckpt`` (contents, throttled writes, restore);
* `history`: the per-epoch `History`, its JSON/CSV files and the training-curves figure;
* `sharing`: cores and dropout randomness shared by branches trained at the same time in
  threads, and running them so (the first failure stops the others);
* `run`: both branches into a run folder (`train`, ``lrnet.json``'s training keys).

Every public name is importable from here (``from lrnet.training import train, train_branch``).
"""

from __future__ import annotations

from .branch import (BranchResult, BranchSettings, BranchState, EpochData, EpochHooks, end_epoch, finish_branch,
                     gather_batch, resolve_bf16, resolve_settings, start_branch, train_branch, train_one_epoch,
                     train_step, validation_accuracy)
from .checkpoint import write_checkpoint
from .history import History, plot_histories
from .run import TrainResult, gru_recurrence, input_folders, run_metadata, train
from .sharing import CoreShare

__all__ = ["History", "BranchResult", "TrainResult", "BranchSettings", "BranchState", "CoreShare", "train",
           "train_branch", "resolve_settings", "resolve_bf16", "start_branch", "train_one_epoch",
           "validation_accuracy", "end_epoch", "write_checkpoint", "finish_branch", "train_step", "gru_recurrence",
           "EpochData", "EpochHooks", "gather_batch", "plot_histories", "run_metadata", "input_folders"]
