"""``lrnet weights``: list the pretrained registry and download (or import) named weight pairs."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("weights", help="list or download pretrained weights",
                       description="Manage pretrained weight pairs (verified by SHA-256, cached).")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    wsub.required = True
    ls = wsub.add_parser("list", help="show the registry and what is cached")
    ls.set_defaults(func=run_list)
    dl = wsub.add_parser("download", help="download a named pair into the cache")
    dl.add_argument("name", help="registry name (ffpp-raw, dfo)")
    dl.add_argument("--from", dest="mirror", metavar="DIR|URL",
                    help="take g1.pth/g2.pth from this folder or URL instead of the official location "
                         "(still verified against the registry's SHA-256)")
    dl.add_argument("--cache-dir", default=None, help="cache folder (default: $LRNET_CACHE or ~/.cache/lrnet)")
    dl.set_defaults(func=run_download)


def run_list(args: argparse.Namespace) -> int:
    from ..weights import PRETRAINED, cache_dir, sha256_of

    root = cache_dir()
    print(f"cache: {root}")
    for name, pair in PRETRAINED.items():
        state = []
        for branch, wf in pair.files.items():
            path = root / name / f"{branch}.pth"
            ok = path.exists() and sha256_of(path) == wf.sha256
            state.append(f"{branch}:{'cached' if ok else 'missing'}")
        print(f"{name:<10} {' '.join(state):<28} {pair.description}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..weights import cache_dir, fetch_pretrained

    root = Path(args.cache_dir) / args.name if args.cache_dir else cache_dir() / args.name
    paths = fetch_pretrained(args.name, root=root, mirror=args.mirror, progress=True)
    for branch, path in paths.items():
        print(f"{args.name} {branch}: {path} (SHA-256 verified)")
    return 0
