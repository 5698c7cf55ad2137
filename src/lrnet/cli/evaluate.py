"""``lrnet evaluate``: metrics of branch weights on a landmark dataset split, or a protocol table.

One dataset and level (``-d DF -l raw``) prints the reference's result lines and lrnet's extras and
writes ``metrics.json``, ``videos.csv`` and ``roc.png``. Several (``-d DF F2F FS NT -l raw c23
c40``, or ``--protocol`` for a single one) evaluate every combination with the same weights and
print a table of video AUC / accuracy; a dataset that is not prepared is reported as missing and
the others still run (exit status 1 then; 2 when none could be evaluated).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_branch_flag, add_dataset_flags, add_gpu_flag, add_weights_flag, branches_of

SPLITS = ("test", "val", "train")


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate weights on a dataset split (accuracy, AUC, EER, ROC) or a protocol table",
        description="Evaluate LRNet weights on the test split of a landmark dataset (FF++ layout or custom), "
                    "as the reference evaluate.py, plus EER, average precision, sample-level AUC and per-video "
                    "scores. Give several -d/-l values (or --protocol) for a cross-manipulation / "
                    "cross-compression / cross-dataset table.",
)
    add_gpu_flag(p)
    add_dataset_flags(p, multiple=True)
    add_branch_flag(p)
    add_weights_flag(p, "ffpp-raw")
    p.add_argument("--split", choices=SPLITS, default="test", help="which split to evaluate (default: test)")
    p.add_argument("--block-size", type=int, default=None,
                   help="frames per block (default: the weights' own, 30 for the official ones)")
    p.add_argument("--aggregate", choices=("vote", "mean-prob", "mean-logit"), default="vote",
                   help="block scores -> video score (default: vote = fraction of fake blocks, as the reference)")
    p.add_argument("--batch-size", type=int, default=512, help="blocks per forward pass (default: 512, the fastest on CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice, one per core; 1 is faster when "
                        "other jobs keep the cores busy)")
    p.add_argument("--protocol", action="store_true",
                   help="table mode even for a single dataset/level (implied by several -d or -l values)")
    p.add_argument("--output", metavar="DIR", default=None,
                   help="folder for metrics.json, videos.csv and roc.png (protocol mode: protocol.json/.csv and "
                        "one sub-folder per cell); default: ./evaluation/DATASET_LEVEL_SPLIT or "
                        "./evaluation/protocol_SPLIT")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    p.add_argument("--no-cache", action="store_true", help="re-read the landmark text files, ignoring lrnet's cache")
    p.add_argument("--offline", action="store_true", help="never download pretrained weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LrnetError
    from ..evaluate import (evaluate, evaluate_protocols, format_report, report_json, save_protocol_table,
                            save_report, _safe)
    from ..model import select_device
    from ..weights import resolve_weights

    if args.block_size is not None and args.block_size < 2:
        raise LrnetError(f"--block-size must be at least 2 frames, got {args.block_size}")
    if args.batch_size < 1:
        raise LrnetError(f"--batch-size must be positive, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise LrnetError(f"--threads must be positive, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    datasets = list(dict.fromkeys(args.dataset))
    levels = list(dict.fromkeys(args.level))
    device = select_device(args.gpu)
    branches = branches_of(args.branch)
    weights = resolve_weights(args.weights, branches, device=device, download=not args.offline)
    block_size = args.block_size or weights.block_size
    load_kwargs = {"cache": not args.no_cache}

    if args.protocol or len(datasets) > 1 or len(levels) > 1:
        out = Path(args.output or Path("evaluation") / f"protocol_{args.split}")

        def progress(cell):
            state = "missing" if cell.report is None else f"AUC {cell.auc:.4f}" if cell.auc is not None else "AUC n/a"
            print(f"evaluated {cell.dataset}/{cell.level}: {state}", file=sys.stderr)

        table = evaluate_protocols(weights, args.root, datasets, levels, split=args.split, branches=branches,
                                   aggregation=args.aggregate, device=device, block_size=block_size,
                                   batch_size=args.batch_size, on_cell=progress, **load_kwargs)
        if len(table.missing) == len(table.cells):
            reasons = "; ".join(f"{c.dataset}/{c.level}: {c.missing}" for c in table.missing)
            raise LrnetError(f"no dataset could be evaluated ({reasons})")
        paths = save_protocol_table(table, out)
        if args.json:
            print(json.dumps({**table.to_dict(), "files": {k: str(v) for k, v in paths.items()}}, indent=2))
        else:
            print(table.format())
            print(f"table: {paths['csv']}  {paths['json']}  (per-cell reports and ROC curves in {out}/)")
        return 1 if table.missing else 0

    from ..datasets import load_split

    dataset, level = datasets[0], levels[0]
    test = load_split(args.root, dataset, level, args.split, block_size=block_size, progress=not args.json,
                      **load_kwargs)
    report = evaluate(weights, test, branches, args.aggregate, device, batch_size=args.batch_size)
    out = Path(args.output or Path("evaluation") / f"{_safe(dataset)}_{level}_{args.split}")
    paths = save_report(report, out)
    print(report_json(report, paths) if args.json else format_report(report, paths))
    return 0
