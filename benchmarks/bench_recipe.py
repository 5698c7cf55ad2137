"""Issue-14 benchmark: the reference's default training recipe, shortened, lrnet vs the reference's train.py.

Usage::

    python benchmarks/bench_recipe.py [--epochs-g1 30 --epochs-g2 16] [--threads N] [--json FILE]
                                      [--lrnet-args "--no-bf16"] [--naive-json FILE]

The full recipe (``lrnet train -d DF -l raw``: 750 epochs g1 + 400 epochs g2, batch 1024, block 30,
Adam 1e-3) takes hours, so both sides run a proxy with the same 750:400 ratio (default 30 + 16
epochs) on the FF++-sized synthetic set (Origin + DF raw, 720/140/140 videos, 300-700 frames;
made by `common.make_ffpp_sized`), each in its own process:

* reference: the naive baseline of `common` (per-file ``np.loadtxt``, float64 lists, DataLoaders,
  nn.GRU, ``NLLLoss(log(softmax))``), g1 then g2, validation after every epoch, as its train.py;
* lrnet: the real command, ``python -m lrnet train -d DF -l raw --root ROOT --set EPOCHS_g1=.. --set
  EPOCHS_g2=.. --seed 0 -o TMP -q`` (dataset cache warmed first), its wall time and the per-epoch
  times and validation accuracies it records in ``history_g*.json``.

Full-recipe estimate (per-epoch extrapolation; medians, so one slow epoch does not count):

* reference: ``load + 750 * t_g1 + 400 * t_g2`` (t = median seconds per epoch incl. validation);
* lrnet: g1 and g2 run at the same time until g2 ends, then g1 alone with every core:
  ``overhead + 400 * c_g2 + max(0, 750 - 400 * c_g2 / c_g1) * s_g1``, where ``c_g1, c_g2`` are the
  median epoch times while both branches run, ``s_g1`` g1's median epoch time once alone, and
  ``overhead`` = wall time of the command minus the time spent in epochs (start-up, loading, plots).

The machine's load (``os.getloadavg``) is printed before and after: other work on it slows
either side; rerun when it is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

FULL_G1, FULL_G2 = 750, 400


def run_reference(root: Path, epochs_g1: int, epochs_g2: int, threads: int) -> Dict[str, object]:
    """The reference's train.py on the proxy recipe, in this process (a fresh worker process)."""
    import torch

    from common import naive_load_split, naive_loaders, naive_train

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = {s: naive_load_split(root, "DF", "raw", s, 30) for s in ("train", "val")}
    train_a, train_b = naive_loaders(data, "train", True)
    val_a, val_b = naive_loaders(data, "val", False)
    out: Dict[str, object] = {"load_s": time.perf_counter() - t0}
    for branch, tr, va, epochs in (("g1", train_a, val_a, epochs_g1), ("g2", train_b, val_b, epochs_g2)):
        res = naive_train(tr, va, epochs)
        out[f"{branch}_epoch_s"] = res["epoch_s"]
        out[f"{branch}_val_acc"] = res["val_acc"]
        out[f"{branch}_nan_epoch"] = res["nan_epoch"]
    out["wall_s"] = time.perf_counter() - t0
    return out


def run_lrnet(root: Path, epochs_g1: int, epochs_g2: int, threads: int, extra: List[str]) -> Dict[str, object]:
    """``lrnet train`` on the proxy recipe as a user runs it (the dataset cache warmed first)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS=str(threads))
    warm = [sys.executable, "-c", "import sys; from lrnet.datasets import load_split; "
            "[load_split(sys.argv[1], 'DF', 'raw', s, 30, progress=False) for s in ('train', 'val')]", str(root)]
    subprocess.run(warm, env=env, check=True)
    out_dir = Path(tempfile.mkdtemp(prefix="lrnet-recipe-")) / "run"
    cmd = [sys.executable, "-m", "lrnet", "train", "-d", "DF", "-l", "raw", "--root", str(root),
           "--set", f"EPOCHS_g1={epochs_g1}", "--set", f"EPOCHS_g2={epochs_g2}", "--seed", "0", "-o", str(out_dir),
           "-q", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"lrnet train failed ({shlex.join(cmd)}):\n{proc.stderr[-3000:]}")
    out: Dict[str, object] = {"wall_s": wall, "command": shlex.join(cmd)}
    for b in ("g1", "g2"):
        h = json.loads((out_dir / f"history_{b}.json").read_text())
        out[f"{b}_epoch_s"] = h["seconds"]
        out[f"{b}_val_acc"] = h["val_acc"]
    return out


def _median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def estimate_reference(ref: Dict) -> Dict[str, float]:
    t1, t2 = _median(ref["g1_epoch_s"]), _median(ref["g2_epoch_s"])
    return {"t_g1": t1, "t_g2": t2, "full_s": ref["load_s"] + FULL_G1 * t1 + FULL_G2 * t2}


def estimate_lrnet(lr: Dict) -> Dict[str, float]:
    """Split g1's epochs into those that overlapped g2 (ended before g2's last epoch) and those after."""
    g1, g2 = lr["g1_epoch_s"], lr["g2_epoch_s"]
    g2_end = sum(g2)
    ends, acc = [], 0.0
    for s in g1:
        acc += s
        ends.append(acc)
    both = [s for s, e in zip(g1, ends) if e <= g2_end]
    alone = [s for s, e in zip(g1, ends) if e > g2_end]
    c1, c2 = _median(both or g1), _median(g2)
    s1 = _median(alone) if alone else c1
    overhead = lr["wall_s"] - max(sum(g1), g2_end)
    g1_left = max(0.0, FULL_G1 - FULL_G2 * c2 / c1)
    return {"c_g1": c1, "c_g2": c2, "s_g1": s1, "overhead_s": overhead,
            "full_s": overhead + FULL_G2 * c2 + g1_left * s1}


def report(ref: Dict, lr: Dict, e1: int, e2: int, threads: int, loads) -> str:
    r, l_ = estimate_reference(ref), estimate_lrnet(lr)
    lines = [
        f"proxy recipe: {e1} epochs g1 + {e2} epochs g2 (750:400 = {FULL_G1 / FULL_G2:.3f}, here {e1 / e2:.3f}), "
        f"{threads} thread(s); load average before {loads[0]:.2f}, after {loads[1]:.2f}",
        f"lrnet command: {lr['command']}",
        "",
        "| measure | reference train.py | lrnet train | ratio (lrnet / reference) |",
        "|---|---|---|---|",
        f"| proxy recipe, wall | {ref['wall_s']:.1f} s | {lr['wall_s']:.1f} s | {lr['wall_s'] / ref['wall_s']:.3f} |",
        f"| g1 s/epoch (median; lrnet: with g2 / alone) | {r['t_g1']:.2f} s | {l_['c_g1']:.2f} / {l_['s_g1']:.2f} s | |",
        f"| g2 s/epoch (median; lrnet: with g1) | {r['t_g2']:.2f} s | {l_['c_g2']:.2f} s | |",
        f"| load / start-up overhead | {ref['load_s']:.1f} s | {l_['overhead_s']:.1f} s | |",
        f"| full recipe 750 + 400 epochs, estimated | {r['full_s'] / 60:.1f} min | {l_['full_s'] / 60:.1f} min | "
        f"{l_['full_s'] / r['full_s']:.3f} |",
        f"| final val acc g1 | {ref['g1_val_acc'][-1]:.4f} | {lr['g1_val_acc'][-1]:.4f} | |",
        f"| final val acc g2 | {ref['g2_val_acc'][-1]:.4f} | {lr['g2_val_acc'][-1]:.4f} | |",
        f"| best val acc g1 / g2 | {max(ref['g1_val_acc']):.4f} / {max(ref['g2_val_acc']):.4f} | "
        f"{max(lr['g1_val_acc']):.4f} / {max(lr['g2_val_acc']):.4f} | |",
    ]
    for b in ("g1", "g2"):
        if ref.get(f"{b}_nan_epoch"):
            lines.append(f"| reference {b}: loss NaN (log(softmax) underflow) from epoch | {ref[f'{b}_nan_epoch']} | "
                         "never | |")
    lines += ["", "estimate maths: reference = load + 750 t_g1 + 400 t_g2; lrnet = overhead + 400 c_g2 + "
              "max(0, 750 - 400 c_g2 / c_g1) s_g1 (see the module docstring)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="dataset root (default: benchmarks/data/ffpp-synthetic)")
    p.add_argument("--epochs-g1", type=int, default=30, help="proxy epochs of g1 (default 30)")
    p.add_argument("--epochs-g2", type=int, default=16, help="proxy epochs of g2 (default 16; keep 750:400)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    p.add_argument("--lrnet-args", default="", help="extra `lrnet train` flags, e.g. \"--no-bf16\"")
    p.add_argument("--naive-json", default=None, help="reuse the reference run stored in this JSON (skip it)")
    p.add_argument("--json", default=None, help="also write the raw numbers to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_reference(Path(args.root), args.epochs_g1, args.epochs_g2, args.threads)))
        return 0
    from common import make_ffpp_sized

    root = make_ffpp_sized(args.root)
    before = os.getloadavg()[0]
    if args.naive_json:
        ref = json.loads(Path(args.naive_json).read_text())["reference"]
    else:
        print(f"reference train.py ({args.epochs_g1} + {args.epochs_g2} epochs) ...", flush=True)
        cmd = [sys.executable, __file__, "--worker", "--root", str(root), "--epochs-g1", str(args.epochs_g1),
               "--epochs-g2", str(args.epochs_g2), "--threads", str(args.threads)]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"reference worker failed:\n{proc.stderr[-3000:]}")
        ref = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"lrnet train ({args.epochs_g1} + {args.epochs_g2} epochs) ...", flush=True)
    lr = run_lrnet(root, args.epochs_g1, args.epochs_g2, args.threads, shlex.split(args.lrnet_args))
    loads = (before, os.getloadavg()[0])
    print()
    print(report(ref, lr, args.epochs_g1, args.epochs_g2, args.threads, loads))
    if args.json:
        Path(args.json).write_text(json.dumps({"reference": ref, "lrnet": lr, "epochs": [args.epochs_g1, args.epochs_g2],
                                               "threads": args.threads, "load": loads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
