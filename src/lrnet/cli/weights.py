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
    ls.add_argument("--json", action="store_true", help="one JSON object per pair (as lrnet.list_weights())")
    ls.set_defaults(func=run_list)
    show = wsub.add_parser("show", help="show the model card of a registry name or a weights folder (offline)",
                           description="Show a model card and, for a registry pair, what of it is cached. "
                                       "Never downloads.")
    show.add_argument("spec", metavar="NAME|DIR", help="registry name (ffpp-raw, dfo) or a weights / run folder")
    show.add_argument("--json", action="store_true", help="print the card as JSON")
    show.add_argument("--offline", action="store_true", help=argparse.SUPPRESS)  # show never downloads
    show.set_defaults(func=run_show)
    dl = wsub.add_parser("download", help="download a named pair into the cache")
    dl.add_argument("name", help="registry name (ffpp-raw, dfo)")
    dl.add_argument("--from", dest="mirror", metavar="DIR|URL",
                    help="take g1.pth/g2.pth from this folder or URL instead of the official location "
                         "(still verified against the registry's SHA-256; when the pair is already cached, "
                         "a folder's files are checked against it)")
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
    from ..weights import cache_dir, list_weights

    if not args.json:
        print(f"cache: {cache_dir()}")
    for row in list_weights():
        if args.json:
            print(json.dumps(row))  # name, description, folder, files, cached, card
            continue
        print(f"{row['name']:<10} {' '.join(f'{b}:{s}' for b, s in row['files'].items()):<28} {row['description']}")
        print(format_card(row["card"], indent=" " * 11))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..weights import weights_card

    shown = weights_card(args.spec)  # never downloads (--offline is kept for old scripts)
    card = {k: v for k, v in shown["card"].items() if k != "threshold_record"}
    cache = shown["cache"]
    if args.json:
        print(json.dumps({"source": shown["source"], **shown["card"], **({"cache": cache} if cache else {})},
                         indent=1))
        return 0
    print(shown["source"])
    print(format_card(card))
    if cache:
        files = ", ".join(f"{b} {s}" for b, s in cache["files"].items())
        todo = "" if all(s == "cached" for s in cache["files"].values()) else \
            f"; `lrnet weights download {cache['name']}` fetches what is missing"
        print(f"  cache: {files} ({cache['folder']}){todo}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import LrnetError
    from ..weights import cache_dir, cache_state, check_source, fetch_pretrained

    root = Path(args.cache_dir) / args.name if args.cache_dir else cache_dir() / args.name
    before = cache_state(args.name, root)
    cached = [b for b, s in before.items() if s == "cached"]
    matched = None
    if args.mirror and cached:  # --from is not ignored when cached: its files must be the registry's too
        try:
            matched = check_source(args.name, args.mirror)
        except LrnetError as exc:
            raise LrnetError(f"{exc} (the cached {'/'.join(cached)} in {root} are intact and kept)") from None
    paths = fetch_pretrained(args.name, root=root, mirror=args.mirror, progress=True)
    for branch, path in paths.items():
        if branch not in cached:
            print(f"{args.name} {branch}: {path} (SHA-256 verified)")
        elif not args.mirror:
            print(f"{args.name} {branch}: {path} (already cached, SHA-256 verified)")
        elif matched is not None:
            print(f"{args.name} {branch}: {path} (already cached, SHA-256 verified; "
                  f"{matched[branch]} matches it, nothing copied)")
        else:
            print(f"{args.name} {branch}: {path} (already cached, SHA-256 verified; {args.mirror} not read)")
    return 0
