"""``lrnet train``: train the g1 / g2 branches on a landmark dataset (the reference's train.py).

Settings come from a preset (``--preset``), YAML files with the reference's keys (``--config``,
repeatable: the reference's ``args_train.yaml`` and ``args_model.yaml`` work unchanged),
``--set KEY=VALUE`` overrides and the short flags (``--epochs`` ...), in that order. The run
folder is locked for the run, never inside the dataset, and an earlier run in it is continued
(``--resume``) or replaced (``--overwrite``), never silently overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .common import (
    Flags,
    add_branch_flag,
    add_dataset_flags,
    add_gpu_flag,
    add_talk_flags,
    block_size,
    branches_of,
    configure_logging,
    dataset_warnings,
    int_range,
    positive_float,
    seed,
)

COUNT = int_range(1, 1_000_000)  # epochs, batch size, patience: an upper bound keeps typos off the machine

# (flag attribute, config key) pairs copied into the configuration when given.
_FLAG_KEYS = (("batch_size", "batch_size"), ("block_size", "block_size"), ("seed", "seed"), ("patience", "patience"),
              ("threads", "threads"), ("concurrent", "concurrent"), ("gru", "gru"), ("bf16", "bf16"))


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train LRNet branches (g1, g2) on a landmark dataset",
        description="Train the LRNet branches on a landmark dataset's train split, keeping the weights with the best "
                    "val accuracy. Writes OUT/g1.pth, OUT/g2.pth (official format), OUT/lrnet.json, checkpoints, "
                    "histories and OUT/training_curves.png.")
    add_gpu_flag(p)
    add_talk_flags(p, "also log every epoch, and lrnet's debug lines")
    p.add_argument("--list-presets", action="store_true", help="print the presets side by side and exit")
    data = p.add_argument_group("data")
    add_dataset_flags(data)
    p.set_defaults(root=None)  # None: the config's add_dataset_root (./datasets by default)
    data.add_argument("--no-cache", action="store_true", help="re-read the landmark files, ignoring lrnet's cache")
    data.add_argument("--fps", type=positive_float, default=None,
                      help="the videos' frame rate, for lrnet.json (default: extract_log.csv's, else 30)")
    _add_setting_flags(p.add_argument_group("settings (preset, then --config files, --set, then these flags)"))
    _add_speed_flags(p.add_argument_group("speed"))
    folder = p.add_argument_group("run folder")
    folder.add_argument("--output", "-o", default=None, metavar="DIR",
                     help="run folder, OUT (default: add_weights of the config, else ./runs/DATASET_LEVEL)")
    folder.add_argument("--resume", action="store_true", help="continue the run in OUT with its recorded settings")
    folder.add_argument("--overwrite", action="store_true", help="replace the training run already in OUT")
    p.set_defaults(func=run)


def _add_setting_flags(p: Flags) -> None:
    p.add_argument("--preset", default="reference", metavar="NAME",
                   help="reference (default), paper, tf-legacy (--list-presets)")
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="settings with the reference's keys (BLOCK_SIZE, EPOCHS_g1, ...); repeatable")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="one setting, e.g. --set rnn_unit=64; repeatable")
    add_branch_flag(p)
    p.add_argument("--epochs", type=COUNT, default=None, metavar="N", help="epochs of every trained branch")
    p.add_argument("--batch-size", type=COUNT, default=None, metavar="N", help="mini-batch size")
    p.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate of every branch")
    p.add_argument("--block-size", type=block_size, default=None, metavar="N", help="frames per block (>= 2)")
    p.add_argument("--seed", type=seed, default=None, help="random seed: same seed, same weights (on CPU)")
    p.add_argument("--patience", type=COUNT, default=None, metavar="N",
                   help="stop a branch after N epochs without improving")


def _add_speed_flags(p: Flags) -> None:
    p.add_argument("--threads", type=int_range(1, 4096), default=None, metavar="N",
                   help="PyTorch threads per branch (default: automatic)")
    p.add_argument("--concurrent", choices=("auto", "on", "off"), default=None, metavar="WHEN",
                   help="train g1 and g2 at once: auto (default: on a multi-core CPU), on, off")
    p.add_argument("--gru", choices=("fused", "torch"), default=None,
                   help="CPU GRU: fused (default; same maths, a C++ loop built on first use) or torch")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 GRU products on CPU, fp32 states (default: on a CPU with native bfloat16)")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _config(args: argparse.Namespace, branches: Sequence[str]):
    from ..config import load_config

    values: Dict[str, Any] = {}
    if args.epochs is not None:
        values.update({f"epochs_{b}": args.epochs for b in branches})
    if args.lr is not None:
        values.update({f"lr_{b}": args.lr for b in branches})
    values.update({key: getattr(args, flag) for flag, key in _FLAG_KEYS if getattr(args, flag) is not None})
    if args.root is not None:
        values["dataset_root"] = args.root
    return load_config(args.preset, args.config, args.overrides, values)


def _dataset_folders(root: str, dataset: str) -> List[Path]:
    """Folders the dataset's files live in, known before loading it (an output must not be inside them)."""
    from ..ffpp import DATASETS, SUBSETS

    if dataset.endswith((".yaml", ".yml")):
        return [Path(dataset)]
    if dataset in DATASETS:
        return [Path(root) / name for name in SUBSETS]
    return [Path(root) / dataset]


def _check_output(output: Path, args: argparse.Namespace, cfg) -> None:
    """Early one-line refusals, before any data is read (`lrnet.runs.open_run` checks again under the lock)."""
    from ..errors import LrnetError
    from ..atomic import ensure_not_input
    from ..runs import RunFolder

    if output.exists() and not output.is_dir():
        raise LrnetError(f"{output}: exists and is not a folder; --output takes the run folder")
    ensure_not_input(output, _dataset_folders(cfg.dataset_root, args.dataset) + list(args.config),
                     fix="choose another --output")
    if args.resume and args.overwrite:
        raise LrnetError("--resume and --overwrite exclude each other: continue the run or replace it")
    found = RunFolder(output).existing_run() if output.is_dir() else []
    if found and not (args.resume or args.overwrite):
        raise LrnetError(f"{output}: holds a training run ({', '.join(found)}); add --resume to continue it, "
                         "--overwrite to replace it, or choose another --output")


def _describe(args: argparse.Namespace, cfg, branches: Sequence[str], tr, va, device, output: Path) -> None:
    _say(args, f"lrnet train: {tr!r}")
    _say(args, f"lrnet train: {va!r}")
    if tr.synthetic:
        _say(args, "lrnet train: NOTE: this dataset is SYNTHETIC (written by `lrnet generate`), not real FF++ landmarks")
    epochs = ", ".join(f"{b} {cfg.epochs(b)} epochs lr {cfg.lr(b):g}" for b in branches)
    _say(args, f"lrnet train: preset {cfg.preset}, block {cfg.block_size}, batch {cfg.batch_size}, {epochs}, "
               f"arch {cfg.model.arch} GRU {cfg.model.rnn_unit}, device {device}, output {output}"
               + (" (resuming)" if args.resume else ""))


def _report(args: argparse.Namespace, cfg, result, output: Path) -> None:
    for b, r in result.branches.items():
        h = r.history
        mean_s = sum(h.seconds) / len(h.seconds) if h.seconds else float("nan")
        _say(args, f"{b}: best val acc {h.best_val_acc:.4f} at epoch {h.best_epoch} of {len(h.epoch)} ({h.stopped}); "
                   f"{mean_s:.2f} s/epoch; weights {r.weights}")
    if result.curves is not None:
        _say(args, f"training curves: {result.curves}")
    root = f" --root {cfg.dataset_root}" if cfg.dataset_root != "./datasets" else ""
    print(f"run folder: {output}  (evaluate with: lrnet evaluate -d {args.dataset} -l {args.level}{root} "
          f"--weights {output})")


def run(args: argparse.Namespace) -> int:
    from ..config import PRESET_NOTES, presets_table

    if args.list_presets:
        print(presets_table() + "\n\n" + "\n".join(f"{name}: {note}" for name, note in PRESET_NOTES.items()))
        return 0
    with configure_logging("train", args.quiet, args.verbose):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from ..datasets import load_split
    from ..errors import LrnetError
    from ..device import select_device
    from ..runs import open_run
    from ..training import input_folders, train

    branches = branches_of(args.branch)
    cfg = _config(args, branches)
    device = select_device(args.gpu)
    output = Path(args.output or cfg.output or Path("runs") / f"{Path(args.dataset).stem}_{args.level}")
    _check_output(output, args, cfg)
    if not args.quiet:
        dataset_warnings("train", cfg.dataset_root, args.dataset, args.level)
    progress = not args.quiet
    tr, va = (load_split(cfg.dataset_root, args.dataset, args.level, split, block_size=cfg.block_size,
                         cache=not args.no_cache, progress=progress) for split in ("train", "val"))
    _describe(args, cfg, branches, tr, va, device, output)
    try:
        with open_run(output, resume=args.resume, overwrite=args.overwrite,
                      inputs=input_folders(tr, va) + list(args.config)) as run_folder:
            result = train(cfg, tr, va, branches, output=run_folder, device=device, fps=args.fps, progress=progress)
    except KeyboardInterrupt:
        print(f"lrnet train: interrupted; continue with the same command plus --resume (state in {output})",
              file=sys.stderr)
        raise
    _report(args, cfg, result, output)
    if any(b not in result.branches for b in branches):
        raise LrnetError("some branches did not finish")
    return 0
