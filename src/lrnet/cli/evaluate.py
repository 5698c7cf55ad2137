"""``lrnet evaluate``: metrics of branch weights on a landmark dataset split, or a protocol table.

One dataset and level (``-d DF -l raw``) prints the reference's result lines and lrnet's extras and
writes ``metrics.json``, ``videos.csv`` and ``roc.png``. Several (``-d DF F2F FS NT -l raw c23
c40``, or ``--protocol`` for a single one) evaluate every combination with the same weights and
print a table of video AUC / accuracy; a dataset that is not prepared is reported as missing and
the others still run (exit status 1 then; 2 when none could be evaluated).

``--calibrate`` first chooses a threshold on the validation split (EER, or ``--target-fpr``) and
stores it with the weights (their folder's ``lrnet.json``, or ``--calibrate-to DIR`` for registry
weights), then evaluates with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..ffpp import SPLITS
from ..vocab import AGGREGATIONS, DEFAULT_AGGREGATION
from .common import (
    add_branch_flag,
    add_dataset_flags,
    add_gpu_flag,
    add_operating_flags,
    add_talk_flags,
    add_weights_flag,
    block_size,
    branches_of,
    configure_logging,
    dataset_warnings,
    fraction,
    int_range,
)


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate weights on a dataset split (accuracy, AUC, EER, ROC) or a protocol table",
        description="Metrics of LRNet weights on a landmark dataset split (FF++ layout or custom), as the "
                    "reference evaluate.py and more. Several -d/-l values give a cross-dataset table.")
    add_gpu_flag(p)
    add_talk_flags(p)
    data = p.add_argument_group("data")
    add_dataset_flags(data, multiple=True)
    data.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate (default: test)")
    data.add_argument("--no-cache", action="store_true", help="re-read the landmark files, ignoring lrnet's cache")
    model = p.add_argument_group("weights and scoring")
    add_weights_flag(model)
    model.add_argument("--offline", action="store_true", help="never download pretrained weights")
    add_branch_flag(model)
    model.add_argument("--block-size", type=block_size, default=None, metavar="N",
                       help="frames per block (default: the weights' own, 30)")
    model.add_argument("--aggregate", choices=AGGREGATIONS, default=DEFAULT_AGGREGATION, metavar="HOW",
                       help="vote (default), mean-prob or mean-logit")
    add_operating_flags(model)
    run_flags = p.add_argument_group("run and output")
    run_flags.add_argument("--batch-size", type=int_range(1, 1_000_000), default=512, metavar="N",
                           help="blocks per forward pass (default: 512)")
    run_flags.add_argument("--threads", type=int_range(1, 4096), default=None, metavar="N",
                           help="PyTorch CPU threads (default: one per core)")
    run_flags.add_argument("--protocol", action="store_true",
                           help="table mode for a single dataset and level too")
    run_flags.add_argument("--output", metavar="DIR", default=None,
                           help="report folder (default: one under ./evaluation)")
    run_flags.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    cal = p.add_argument_group("threshold calibration")
    cal.add_argument("--calibrate", action="store_true",
                     help="choose the threshold on the val split (EER, or --target-fpr), store it with the "
                          "weights, evaluate with it")
    cal.add_argument("--target-fpr", type=fraction, default=None, metavar="F",
                     help="the threshold with the best TPR at a false positive rate <= F (e.g. 0.05)")
    cal.add_argument("--calibrate-to", metavar="DIR", default=None,
                     help="for registry weights (dfo, ffpp-raw): the folder to store the threshold in (then use "
                          "--weights DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with configure_logging("evaluate", args.quiet, args.verbose):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from ..errors import LrnetError
    from ..device import select_device
    from ..weights import resolve_weights

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.target_fpr is not None and not args.calibrate:
        raise LrnetError("--target-fpr only applies with --calibrate")
    if args.calibrate_to and not args.calibrate:
        raise LrnetError("--calibrate-to only applies with --calibrate")
    datasets = list(dict.fromkeys(args.dataset))
    levels = list(dict.fromkeys(args.level))
    protocol = args.protocol or len(datasets) > 1 or len(levels) > 1
    if args.calibrate:
        if protocol:
            raise LrnetError("--calibrate takes one dataset and one level (its validation split)")
        calibration_target(args.weights, args.calibrate_to)  # refuse before any work
    if not args.quiet:
        for dataset in datasets:
            for level in levels:
                dataset_warnings("evaluate", args.root, dataset, level)
    device = select_device(args.gpu)
    branches = branches_of(args.branch)
    weights = resolve_weights(args.weights, branches, device=device, download=not args.offline)
    block_size = args.block_size or weights.block_size
    if protocol:
        return _run_protocol(args, weights, datasets, levels, branches, device, block_size)
    return _run_single(args, weights, datasets[0], levels[0], branches, device, block_size)


def _progress(args: argparse.Namespace) -> bool:
    return not (args.json or args.quiet)


def calibration_target(spec: str, calibrate_to):
    """``(folder, pretrained name or None)`` where ``--calibrate`` stores its threshold, or a one-line refusal."""
    from ..errors import LrnetError
    from ..weights import PRETRAINED, calibration_folder
    from ..weights.runfile import run_file

    folder = calibration_folder(spec)
    if spec in PRETRAINED:
        if not calibrate_to:
            raise LrnetError(f"--calibrate: {spec} is a registry name with no run folder to store a threshold in; "
                             f"add --calibrate-to DIR (then use --weights DIR)")
        return Path(calibrate_to), spec
    if folder is None:
        raise LrnetError(f"--calibrate: {spec} is not a weights folder, so there is no lrnet.json to store a threshold "
                         "in; put the weights in a folder and pass that")
    if calibrate_to and Path(calibrate_to).resolve() != folder.resolve():
        raise LrnetError(f"--calibrate-to is for registry weights; the threshold of {spec} is stored in "
                         f"{run_file(folder)}")
    return folder, None


def _calibrate(args, weights, dataset, level, branches, device, block_size, load_kwargs) -> None:
    """Choose the threshold on the val split, store it, and make `weights` use it."""
    from ..datasets import load_split
    from ..evaluate import calibrate_threshold, evaluate
    from ..weights import describe_threshold, save_threshold

    folder, pretrained = calibration_target(args.weights, args.calibrate_to)
    val = load_split(args.root, dataset, level, "val", block_size=block_size, progress=_progress(args),
                     **load_kwargs)
    report = evaluate(weights, val, branches, args.aggregate, device, batch_size=args.batch_size, threshold=0.5)
    method = "target-fpr" if args.target_fpr is not None else "eer"
    record = calibrate_threshold(report, method, args.target_fpr, dataset, level, "val")
    path = save_threshold(folder, record, pretrained=pretrained)
    weights.threshold = record["value"]
    weights.threshold_source = f"{path} ({describe_threshold(record)})"
    weights.card = {**weights.card, "threshold_record": record, "threshold": weights.threshold,
                    "threshold_source": weights.threshold_source}
    print(f"calibrated threshold {record['value']:.4f} ({describe_threshold(record)}: FPR {record['fpr']:.4f}, "
          f"TPR {record['tpr']:.4f} on {record['videos']} videos) stored in {path}", file=sys.stderr)


def _run_single(args, weights, dataset, level, branches, device, block_size) -> int:
    from ..datasets import load_split
    from ..errors import LrnetError
    from ..evaluate import (
        evaluate,
        format_report,
        no_block_reason,
        report_json,
        safe_name,
        save_report,
    )

    load_kwargs = {"cache": not args.no_cache}
    if args.calibrate:
        _calibrate(args, weights, dataset, level, branches, device, block_size, load_kwargs)
    test = load_split(args.root, dataset, level, args.split, block_size=block_size, progress=_progress(args),
                      **load_kwargs)
    report = evaluate(weights, test, branches, args.aggregate, device, batch_size=args.batch_size,
                      threshold=args.threshold, uncertain=args.uncertain)
    reason = no_block_reason(report)
    if reason:
        raise LrnetError(reason)
    out = Path(args.output or Path("evaluation") / f"{safe_name(dataset)}_{level}_{args.split}")
    paths = save_report(report, out)
    print(report_json(report, paths) if args.json else format_report(report, paths))
    return 0


def _run_protocol(args, weights, datasets, levels, branches, device, block_size) -> int:
    from ..errors import LrnetError
    from ..evaluate import evaluate_protocols, save_protocol_table

    out = Path(args.output or Path("evaluation") / f"protocol_{args.split}")

    def progress(cell):
        if args.quiet:
            return
        state = "missing" if cell.report is None else f"AUC {cell.auc:.4f}" if cell.auc is not None else "AUC n/a"
        print(f"evaluated {cell.dataset}/{cell.level}: {state}", file=sys.stderr)

    table = evaluate_protocols(weights, args.root, datasets, levels, split=args.split, branches=branches,
                               aggregation=args.aggregate, device=device, block_size=block_size,
                               batch_size=args.batch_size, on_cell=progress, threshold=args.threshold,
                               uncertain=args.uncertain, cache=not args.no_cache)
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
