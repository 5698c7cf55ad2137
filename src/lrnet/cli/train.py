"""``lrnet train``: train the g1 / g2 branches on a landmark dataset (the reference's train.py).

Settings come from a preset (``--preset``), YAML files with the reference's keys (``--config``,
repeatable: the reference's ``args_train.yaml`` and ``args_model.yaml`` work unchanged),
``--set KEY=VALUE`` overrides and the short flags (``--epochs`` ...), in that order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_branch_flag, add_dataset_flags, add_gpu_flag, branches_of


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train LRNet branches (g1, g2) on a landmark dataset",
        description="Train the LRNet branches on the train split of a landmark dataset, keeping the weights with the "
                    "best validation accuracy. Writes OUT/g1.pth, OUT/g2.pth (official format), OUT/lrnet.json, "
                    "resume checkpoints, per-epoch histories (JSON/CSV) and OUT/training_curves.png.",
        epilog="Presets: reference (the reference code's defaults), paper (GRU 64, block 60, dropout 0.25, 500 "
               "epochs), tf-legacy (the TensorFlow-era branch). `lrnet train --list-presets` prints them side by side.")
    add_gpu_flag(p)
    add_dataset_flags(p)
    p.set_defaults(root=None)  # None: the config's add_dataset_root (./datasets by default)
    add_branch_flag(p)
    p.add_argument("--preset", default="reference", help="named settings: reference (default), paper, tf-legacy")
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="YAML file of settings (reference keys such as BLOCK_SIZE, EPOCHS_g1, rnn_unit); repeatable")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one setting, e.g. --set EPOCHS_g1=100 --set rnn_unit=64; repeatable")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every trained branch (EPOCHS_g1/EPOCHS_g2)")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (BATCH_SIZE)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate of every branch (LEARNING_RATE_g*)")
    p.add_argument("--block-size", type=int, default=None, help="frames per block (BLOCK_SIZE)")
    p.add_argument("--seed", type=int, default=None, help="random seed: same seed, same weights (on CPU)")
    p.add_argument("--patience", type=int, default=None,
                   help="stop a branch after this many epochs without a better val accuracy (default: off)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/g*.ckpt")
    p.add_argument("--output", "-o", default=None, metavar="DIR",
                   help="run folder (default: add_weights from the config, else ./runs/DATASET_LEVEL)")
    p.add_argument("--threads", type=int, default=None,
                   help="PyTorch threads (per branch when g1 and g2 train concurrently; default: automatic)")
    p.add_argument("--concurrent", choices=("auto", "on", "off"), default=None,
                   help="train g1 and g2 at the same time (default auto: on a multi-core CPU when both are trained)")
    p.add_argument("--gru", choices=("fused", "torch"), default=None,
                   help="GRU implementation for training on CPU (default fused: same maths, faster)")
    p.add_argument("--bf16", action="store_true", default=None,
                   help="bfloat16 GRU input projections on CPU (faster where AVX512-BF16/AMX exist; changes numerics "
                        "slightly, off by default)")
    p.add_argument("--no-cache", action="store_true", help="re-read the landmark text files, ignoring lrnet's cache")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--list-presets", action="store_true", help="print the presets side by side and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import PRESET_NOTES, load_config, presets_table

    if args.list_presets:
        print(presets_table())
        print()
        for name, note in PRESET_NOTES.items():
            print(f"{name}: {note}")
        return 0

    from ..datasets import load_split
    from ..errors import LrnetError
    from ..model import select_device
    from ..train import train

    branches = branches_of(args.branch)
    values = {}
    if args.epochs is not None:
        values.update({f"epochs_{b}": args.epochs for b in branches})
    if args.lr is not None:
        values.update({f"lr_{b}": args.lr for b in branches})
    for flag, key in (("batch_size", "batch_size"), ("block_size", "block_size"), ("seed", "seed"),
                      ("patience", "patience"), ("threads", "threads"), ("concurrent", "concurrent"),
                      ("gru", "gru"), ("bf16", "bf16")):
        if getattr(args, flag) is not None:
            values[key] = getattr(args, flag)
    if args.root is not None:
        values["dataset_root"] = args.root
    cfg = load_config(args.preset, args.config, args.overrides, values)
    device = select_device(args.gpu)
    output = Path(args.output or cfg.output or Path("runs") / f"{Path(args.dataset).stem}_{args.level}")

    progress = not args.quiet
    splits = {}
    for split in ("train", "val"):
        splits[split] = load_split(cfg.dataset_root, args.dataset, args.level, split, block_size=cfg.block_size,
                                   cache=not args.no_cache, progress=progress)
    tr, va = splits["train"], splits["val"]
    print(f"lrnet train: {tr!r}")
    print(f"lrnet train: {va!r}")
    if tr.synthetic:
        print("lrnet train: NOTE: this dataset is SYNTHETIC (written by `lrnet generate`), not real FF++ landmarks")
    epochs = ", ".join(f"{b} {cfg.epochs(b)} epochs lr {cfg.lr(b):g}" for b in branches)
    print(f"lrnet train: preset {cfg.preset}, block {cfg.block_size}, batch {cfg.batch_size}, {epochs}, "
          f"arch {cfg.model.arch} GRU {cfg.model.rnn_unit}, device {device}, output {output}"
          + (" (resuming)" if args.resume else ""))
    try:
        result = train(cfg, tr, va, branches, output=output, device=device, resume=args.resume, progress=progress)
    except KeyboardInterrupt:
        print(f"lrnet train: interrupted; continue with the same command plus --resume (state in {output})",
              file=sys.stderr)
        raise
    for b, r in result.branches.items():
        h = r.history
        mean_s = sum(h.seconds) / len(h.seconds) if h.seconds else float("nan")
        print(f"{b}: best val acc {h.best_val_acc:.4f} at epoch {h.best_epoch} of {len(h.epoch)} ({h.stopped}); "
              f"{mean_s:.2f} s/epoch; weights {r.weights}")
    if result.curves is not None:
        print(f"training curves: {result.curves}")
    root = f" --root {cfg.dataset_root}" if cfg.dataset_root != "./datasets" else ""
    print(f"run folder: {output}  (evaluate with: lrnet evaluate -d {args.dataset} -l {args.level}{root} "
          f"--weights {output})")
    if any(b not in result.branches for b in branches):
        raise LrnetError("some branches did not finish")
    return 0
