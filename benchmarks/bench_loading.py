"""Loading benchmark (issue 5): FF++-sized synthetic train + val, naive reference loader vs lrnet.

Usage::

    python benchmarks/bench_loading.py [--root DIR] [--dataset DF] [--repeat 1] [--json]

Generates (or reuses) the FF++-sized synthetic dataset (Origin + DF, raw, 720/140/140 videos,
300-700 frames), then times, each path in its own fresh subprocess so peak memory does not mix:

* naive: the reference loader (per-file ``np.loadtxt``, float64, per-block Python lists, the g2
  differences stored as a second array), `common.naive_load_split`;
* cold: `lrnet.datasets.load_split` from the text files, cache off;
* cold+cache: the same, writing the cache (first run after a change);
* warm: from the cache written by cold+cache (read into memory, CRC-checked);
* warm-mmap: the same cache memory-mapped read-only (``mmap=True``; pages load on first use).

Peak RSS of warm-mmap counts only the pages touched. Large fresh allocations may stall on
transparent-huge-page compaction when the machine is busy; use ``--repeat`` (best of N).

Prints seconds and peak RSS (``ru_maxrss`` of the child) per path and the ratios. The text files
are in the OS page cache for every path (they are read once before timing), so "cold" means
"parsed from text", not "read from disk".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import default_root, make_ffpp_sized, naive_load_split  # noqa: E402

SPLITS = ("train", "val")


def _child(mode: str, root: str, dataset: str, cache: str) -> dict:
    if mode != "naive":
        # Outside the timing: module imports (lrnet.datasets needs neither torch nor lrnet.weights:
        # its cache folder comes from lrnet.paths).
        import lrnet.datasets  # noqa: F401
    t0 = time.perf_counter()
    if mode == "naive":
        out = {s: naive_load_split(root, dataset, "raw", s, 30) for s in SPLITS}
        n_blocks = sum(x.shape[0] for x, _, _ in out.values())
    else:
        from lrnet.datasets import load_split

        cache_arg = False if mode == "cold" else cache
        out = {s: load_split(root, dataset, "raw", s, 30, cache=cache_arg, mmap=(mode == "warm-mmap"))
               for s in SPLITS}
        n_blocks = sum(b.n_blocks for b in out.values())
        status = {s: b.cache_status for s, b in out.items()}
    elapsed = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    result = {"mode": mode, "seconds": elapsed, "peak_rss_mb": rss_mb, "blocks": int(n_blocks)}
    if mode != "naive":
        result["cache_status"] = status
    return result


def run_child(mode: str, root: Path, dataset: str, cache: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--root", str(root),
           "--dataset", dataset, "--cache", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} benchmark failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _warm_page_cache(root: Path) -> None:
    for p in root.rglob("*.txt"):
        with open(p, "rb") as fh:
            while fh.read(1 << 20):
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="dataset root (default: benchmarks/data/ffpp-synthetic)")
    ap.add_argument("--dataset", default="DF")
    ap.add_argument("--repeat", type=int, default=1, help="runs per lrnet path (best is reported)")
    ap.add_argument("--skip-naive", action="store_true", help="skip the slow reference loader")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, str(args.root), args.dataset, args.cache)))
        return 0

    root = make_ffpp_sized(args.root or default_root())
    _warm_page_cache(root)
    results = {}
    with tempfile.TemporaryDirectory(prefix="lrnet-bench-cache-") as tmp:
        cache = Path(tmp)
        if not args.skip_naive:
            results["naive"] = run_child("naive", root, args.dataset, cache)
        for mode in ("cold", "cold+cache", "warm", "warm-mmap"):
            runs = []
            for _ in range(args.repeat if mode != "cold+cache" else 1):
                if mode == "cold+cache":
                    for p in cache.iterdir():
                        p.unlink()
                runs.append(run_child(mode, root, args.dataset, cache))
            results[mode] = min(runs, key=lambda r: r["seconds"])
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    blocks = results["cold"]["blocks"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nloading {args.dataset}/raw train + val ({blocks} blocks of 30 frames), {os.cpu_count()} CPUs, "
          f"load average at the end {load} (other processes slow every path alike)")
    print(f"{'path':<12} {'seconds':>8} {'peak RSS MB':>12} {'speed-up':>9}")
    base = results.get("naive")
    for mode, r in results.items():
        ratio = f"{base['seconds'] / r['seconds']:.1f}x" if base else "-"
        print(f"{mode:<12} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12.0f} {ratio:>9}")
    if base:
        print(f"\ncold load vs np.loadtxt baseline: {base['seconds'] / results['cold']['seconds']:.1f}x faster; "
              f"warm (cache): {results['warm']['seconds']:.2f} s; peak RSS cold/naive: "
              f"{results['cold']['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
