"""``lrnet convert-weights``: turn the TF-era Keras ``g1.h5`` / ``g2.h5`` into a lrnet weights folder."""

from __future__ import annotations

import argparse

from .common import nonempty_path


def register(sub) -> None:
    p = sub.add_parser("convert-weights", help="convert TF-era Keras .h5 branch weights to PyTorch",
                       description="Convert the reference's Keras 2 weights (g1.h5, g2.h5; architecture lrnet-tf) "
                                   "into DIR/g1.pth, DIR/g2.pth and DIR/lrnet.json, usable as `--weights DIR`.")
    p.add_argument("g1", metavar="G1_H5", type=nonempty_path, help="Keras weights of the g1 branch (block positions)")
    p.add_argument("g2", metavar="G2_H5", type=nonempty_path,
                   help="Keras weights of the g2 branch (frame differences)")
    p.add_argument("--out", required=True, metavar="DIR", type=nonempty_path,
                   help="output folder (created; the three files in it are replaced)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..atomic import atomic_open, ensure_not_input, same_file
    from ..errors import LrnetError
    from ..weights import load_branch
    from ..weights.keras import block_size_of, read_keras_branch
    from ..weights.runfile import RUN_FILE, write_meta

    branches = {"g1": read_keras_branch(args.g1), "g2": read_keras_branch(args.g2)}
    if same_file(args.g1, args.g2):
        raise LrnetError(f"{args.g1}, {args.g2}: the same file given for both branches; g1 and g2 are trained "
                         "separately (g1.h5 and g2.h5)")
    configs = {name: b.config.to_dict() for name, b in branches.items()}
    if configs["g1"] != configs["g2"]:
        diff = {k: (configs["g1"][k], configs["g2"][k]) for k in configs["g1"] if configs["g1"][k] != configs["g2"][k]}
        raise LrnetError(f"{args.g1}, {args.g2}: the two branches have different settings {diff}; "
                         "lrnet.json holds one model config")
    block_size = block_size_of(branches)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LrnetError(f"{out}: exists and is not a folder")
    targets = {name: out / f"{name}.pth" for name in branches}
    for target in [*targets.values(), out / RUN_FILE]:
        ensure_not_input(target, [args.g1, args.g2], what="converted file", reread=False)
    for name, branch in branches.items():
        with atomic_open(targets[name], "wb") as fh:  # a file object: a full disk is an OSError, not torch's
            torch.save(branch.state_dict, fh)
    meta = {"model": configs["g1"], "block_size": block_size,
            "converted_from": {name: str(b.path) for name, b in branches.items()}}
    write_meta(out, meta)
    # Read back what was written, as `--weights DIR` will.
    for name, branch in branches.items():
        load_branch(targets[name], branch.config)
        print(f"{name}: {branch.path} -> {targets[name]}")
    print(f"model: {configs['g1']['arch']} (GRU {configs['g1']['rnn_unit']}, dense {configs['g1']['res_hidden']}), "
          f"block size {block_size}; use with --weights {out}")
    return 0
