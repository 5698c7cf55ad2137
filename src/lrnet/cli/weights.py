"""``lrnet weights``: list the pretrained registry with model cards, show one card, download named pairs."""

from __future__ import annotations

import argparse
import json

CARD_FIELDS = (("training_data", "training data"), ("domain", "domain"), ("fps", "frame rate"),
               ("block_size", "block size"), ("architecture", "architecture"), ("threshold", "threshold"))


def register(sub) -> None:
    p = sub.add_parser("weights", help="list, show or download pretrained weights",
                       description="Manage pretrained weight pairs (verified by SHA-256, cached) and show model "
                                   "cards (training data, domain, frame rate, block size, threshold).")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    wsub.required = True
    ls = wsub.add_parser("list", help="show the registry, what is cached, and each pair's model card")
    ls.add_argument("--json", action="store_true", help="one JSON object per pair")
    ls.set_defaults(func=run_list)
    show = wsub.add_parser("show", help="show the model card of a registry name or a weights folder")
    show.add_argument("spec", metavar="NAME|DIR", help="registry name (ffpp-raw, dfo) or a weights / run folder")
    show.add_argument("--json", action="store_true", help="print the card as JSON")
    show.add_argument("--offline", action="store_true", help="never download pretrained weights")
    show.set_defaults(func=run_show)
    dl = wsub.add_parser("download", help="download a named pair into the cache")
    dl.add_argument("name", help="registry name (ffpp-raw, dfo)")
    dl.add_argument("--from", dest="mirror", metavar="DIR|URL",
                    help="take g1.pth/g2.pth from this folder or URL instead of the official location "
                         "(still verified against the registry's SHA-256)")
    dl.add_argument("--cache-dir", default=None, help="cache folder (default: $LRNET_CACHE or ~/.cache/lrnet)")
    dl.set_defaults(func=run_download)


def format_card(card, indent: str = "  ") -> str:
    """The card as ``label: value`` lines (frame rate with its source, threshold with its source)."""
    lines = []
    for key, label in CARD_FIELDS:
        value = card.get(key)
        if key == "fps":
            value = "unknown" if value is None else f"{value:g} fps ({card.get('fps_source') or 'source unknown'})"
        elif key == "threshold":
            value = f"{value if value is not None else 0.5:g} ({card.get('threshold_source', 'default')})"
        elif key == "block_size":
            value = f"{value} frames"
        lines.append(f"{indent}{label}: {value}")
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    from ..weights import PRETRAINED, cache_dir, sha256_of

    root = cache_dir()
    if not args.json:
        print(f"cache: {root}")
    for name, pair in PRETRAINED.items():
        state = {}
        for branch, wf in pair.files.items():
            path = root / name / f"{branch}.pth"
            state[branch] = "cached" if path.exists() and sha256_of(path) == wf.sha256 else "missing"
        card = {**pair.card(), "threshold": 0.5, "threshold_source": "default"}
        if args.json:
            print(json.dumps({"name": name, "description": pair.description, "files": state, "card": card}))
            continue
        print(f"{name:<10} {' '.join(f'{b}:{s}' for b, s in state.items()):<28} {pair.description}")
        print(format_card(card, indent=" " * 11))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..weights import resolve_weights

    weights = resolve_weights(args.spec, download=not args.offline)
    card = {k: v for k, v in weights.card.items() if k != "threshold_record"}
    if args.json:
        print(json.dumps({"source": weights.source, **weights.card}, indent=1))
        return 0
    print(f"{weights.source}")
    print(format_card(card))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..weights import cache_dir, fetch_pretrained

    root = Path(args.cache_dir) / args.name if args.cache_dir else cache_dir() / args.name
    paths = fetch_pretrained(args.name, root=root, mirror=args.mirror, progress=True)
    for branch, path in paths.items():
        print(f"{args.name} {branch}: {path} (SHA-256 verified)")
    return 0
