"""``lrnet robustness``: how much verdicts move under degraded input, as a table, JSON, CSV and a PNG.

Three inputs: a landmark dataset split (``-d/-l/--root/--split``, as ``lrnet evaluate``), labelled
landmark files (``--real ... --fake ...``), or a folder of labelled videos (``--videos DIR`` with
``real/`` and ``fake/``; ``--real``/``--fake`` video files work too). Landmark inputs get landmark
noise, dropped and duplicated frames and frame-rate changes over several seeds; videos are
re-encoded, downscaled, re-timed, blurred and noised, then run through ``lrnet detect``
(resumable: per-item results are cached in the output folder).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..ffpp import SPLITS
from ..vocab import AGGREGATIONS, DEFAULT_AGGREGATION
from .common import (
    add_dataset_flags,
    add_gpu_flag,
    add_operating_flags,
    add_talk_flags,
    add_weights_flag,
    configure_logging,
    float_range,
    fraction,
    int_range,
    positive_float,
    seed,
)


def register(sub) -> None:
    p = sub.add_parser(
        "robustness", help="measure how verdicts change under landmark noise, frame drops, re-timing, compression",
        description="Score labelled landmarks or videos clean and perturbed: AUC, accuracy, score change and "
                    "verdict flips per perturbation and strength (table, JSON, CSV, PNG).")
    add_gpu_flag(p)
    add_talk_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    data = p.add_argument_group("input: a dataset split (as lrnet evaluate), --real/--fake, or --videos")
    add_dataset_flags(data)
    data.add_argument("--split", choices=SPLITS, default="test", metavar="SPLIT",
                      help="train, val or test (default: test)")
    data.add_argument("--real", nargs="+", default=[], metavar="PATH", help="real landmark files / videos / folders")
    data.add_argument("--fake", nargs="+", default=[], metavar="PATH", help="fake landmark files / videos / folders")
    data.add_argument("--videos", metavar="DIR", help="a folder of videos in real/ and fake/ sub-folders")
    data.add_argument("--no-cache", action="store_true", help="re-read landmark files, ignoring lrnet's cache")
    model = p.add_argument_group("weights and scoring")
    add_weights_flag(model)
    model.add_argument("--offline", action="store_true", help="never download pretrained weights")
    model.add_argument("--aggregate", choices=AGGREGATIONS, default=DEFAULT_AGGREGATION, metavar="HOW",
                       help="vote (default), mean-prob or mean-logit")
    add_operating_flags(model)
    g = p.add_argument_group("landmark perturbations (landmark inputs)")
    g.add_argument("--noise", type=positive_float, nargs="+", default=None, metavar="PX",
                   help="jitter sigma in px, 400-px crop (default: 0.5 1 2 4)")
    g.add_argument("--drop", type=fraction, nargs="+", default=None, metavar="F",
                   help="fraction of frames dropped (default: 0.1 0.25 0.5)")
    g.add_argument("--duplicate", type=fraction, nargs="+", default=None, metavar="F",
                   help="fraction of frames shown twice (default: 0.1 0.25 0.5)")
    g.add_argument("--seeds", type=int_range(1, 1000), default=3, metavar="N",
                   help="seeds per random perturbation (default: 3)")
    g.add_argument("--seed", type=seed, default=0, help="first seed (default: 0)")
    v = p.add_argument_group("video perturbations (video inputs)")
    v.add_argument("--crf", type=int_range(0, 51), nargs="+", default=None, metavar="CRF",
                   help="H.264 re-encoding quality (default: 23 32 40)")
    v.add_argument("--height", type=int_range(16, 16384), nargs="+", default=None, metavar="PX",
                   help="downscale to this height (default: 360)")
    v.add_argument("--blur", type=positive_float, nargs="+", default=None, metavar="SIGMA",
                   help="Gaussian blur sigma in pixels (default: 1.5)")
    v.add_argument("--pixel-noise", type=positive_float, nargs="+", default=None, metavar="SD",
                   help="Gaussian pixel noise, 8-bit levels (default: 5)")
    both = p.add_argument_group("both kinds, and output")
    both.add_argument("--fps-factor", type=float_range(0.01, 100), nargs="+", default=None, metavar="X",
                      help="re-time to X times the frame rate (default: 0.5 2)")
    both.add_argument("--only", nargs="+", default=None, metavar="KIND",
                      help="only these: noise drop duplicate fps (landmarks), crf height fps blur pixel-noise "
                           "(videos)")
    both.add_argument("--output", metavar="DIR", default=None, help="output folder (default: ./robustness/NAME)")
    both.add_argument("--overwrite", action="store_true", help="replace a finished report and cached results")
    both.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.set_defaults(func=run)


def _grid(args, defaults, mapping):
    grid = {kind: tuple(getattr(args, attr)) if getattr(args, attr) is not None else defaults[kind]
            for kind, attr in mapping.items()}
    if args.only:
        unknown = sorted(set(args.only) - set(grid))
        if unknown:
            from ..errors import LrnetError

            raise LrnetError(f"--only: unknown perturbation {', '.join(unknown)}; expected {' '.join(grid)}")
        grid = {k: v for k, v in grid.items() if k in args.only}
    return grid


def _mode(args) -> str:
    from ..errors import LrnetError

    if args.videos and (args.real or args.fake):
        raise LrnetError("give either --videos DIR or --real/--fake, not both")
    if args.videos:
        return "videos"
    if bool(args.real) != bool(args.fake):
        raise LrnetError("--real and --fake go together (both classes are needed for AUC and accuracy)")
    if args.real:
        paths = [Path(x) for x in args.real + args.fake]
        is_text = [p.is_dir() or p.suffix.lower() == ".txt" for p in paths]
        if all(is_text):
            return "files"
        if any(is_text):
            raise LrnetError("--real/--fake mix landmark files and videos; give one kind")
        return "video-files"
    return "dataset"


def _progress(args: argparse.Namespace) -> bool:
    return not (args.no_progress or args.quiet or args.json)


def run(args: argparse.Namespace) -> int:
    with configure_logging("robustness", args.quiet, args.verbose):
        return _robustness(args)


def _robustness(args: argparse.Namespace) -> int:
    from ..errors import LrnetError
    from ..locks import output_lock
    from ..device import select_device
    from ..robustness import format_robustness, save_robustness
    from ..weights import resolve_weights

    mode = _mode(args)
    device = select_device(args.gpu)
    name = Path(args.videos).name if args.videos else "files" if mode != "dataset" else f"{args.dataset}_{args.level}"
    out = Path(args.output or Path("robustness") / name)
    with output_lock(out, "robustness"):
        if mode in ("dataset", "files") and (out / "robustness.json").exists() and not args.overwrite:
            raise LrnetError(f"{out}: holds a finished robustness report; use --overwrite or another --output")
        weights = resolve_weights(args.weights, device=device, download=not args.offline)
        if mode in ("dataset", "files"):
            report = _landmark_report(args, weights, mode, device)
        else:
            report = _video_report(args, weights, mode, out, device)
        paths = save_robustness(report, out)
    if args.json:
        import json

        print(json.dumps({**report.to_dict(), "files": {k: str(v) for k, v in paths.items() if v}}, indent=1))
    else:
        print(format_robustness(report))
        print(f"files: {paths['json']}  {paths['csv']}  {paths['videos']}  {paths['png']}")
    return 0


def _landmark_report(args, weights, mode, device):
    from ..landmarks import find_landmark_files, read_many
    from ..robustness import (
        DEFAULT_LANDMARK_GRID,
        landmark_conditions,
        landmark_robustness,
    )

    if mode == "dataset":
        from ..datasets import find_files, resolve_split

        files = find_files(resolve_split(args.root, args.dataset, args.level, args.split))
        paths, labels, names, source = files.paths, list(files.labels), files.videos, files.spec.name
    else:
        real, fake = find_landmark_files(args.real), find_landmark_files(args.fake)
        paths, labels = real + fake, [0] * len(real) + [1] * len(fake)
        names, source = [str(p) for p in paths], "labelled landmark files"
    sequences = read_many(paths, progress=_progress(args))
    grid = _grid(args, DEFAULT_LANDMARK_GRID, {"noise": "noise", "drop": "drop", "duplicate": "duplicate",
                                                "fps": "fps_factor"})

    seeds = list(range(args.seed, args.seed + args.seeds))
    bar = None
    if _progress(args):
        from tqdm import tqdm

        bar = tqdm(total=len(landmark_conditions(grid, seeds)), unit="condition", desc="robustness", leave=False,
                   disable=None)
    try:
        return landmark_robustness(weights, sequences, labels, names, grid, seeds=seeds, aggregation=args.aggregate,
                                   threshold=args.threshold, uncertain=args.uncertain, device=device, source=source,
                                   on_condition=(lambda _: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _video_report(args, weights, mode, out, device):
    from ..robustness import DEFAULT_VIDEO_GRID, video_robustness

    if args.overwrite and (out / "items").is_dir():
        shutil.rmtree(out / "items")
    folder = Path(args.videos) if args.videos else _labelled_folder(args, out)
    grid = _grid(args, DEFAULT_VIDEO_GRID, {"crf": "crf", "height": "height", "fps": "fps_factor", "blur": "blur",
                                             "pixel-noise": "pixel_noise"})
    return video_robustness(weights, folder, out, grid, aggregation=args.aggregate, threshold=args.threshold,
                            uncertain=args.uncertain, device=device, progress=_progress(args))


def _labelled_folder(args, out: Path) -> Path:
    """``--real``/``--fake`` video files as ``OUT/inputs/{real,fake}/`` symbolic links."""
    from ..errors import LrnetError

    folder = out / "inputs"
    for label, paths in (("real", args.real), ("fake", args.fake)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for raw in paths:
            src = Path(raw).resolve()
            if not src.is_file():
                raise LrnetError(f"{raw}: no such video file")
            link = folder / label / src.name
            if link.is_symlink() and link.resolve() != src:
                link.unlink()
            if not link.is_symlink():
                link.symlink_to(src)
    return folder
