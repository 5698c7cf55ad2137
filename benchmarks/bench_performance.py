"""Issue-5 benchmark in one run: the naive reference path vs lrnet, on the FF++-sized synthetic set.

Usage::

    python benchmarks/bench_performance.py [--epochs 3] [--root DIR] [--threads N] [--json FILE]

Generates (or reuses) the FF++-sized synthetic dataset (Origin + DF, raw, 720/140/140 videos,
300-700 frames: about 23,000 training blocks), then runs each path in its own fresh subprocess so
peak memory (``ru_maxrss``) does not mix:

* naive: the reference training package, faithfully: per-file ``np.loadtxt`` (float64), per-block
  Python lists, g2 differences stored as a second array, ``TensorDataset`` + ``DataLoader``
  (shuffle, batch 1024), the same LRNet model with a softmax output and ``NLLLoss(log(softmax))``,
  g1 then g2, validation accuracy after every epoch (its ``evaluate``), then the test split scored
  through DataLoaders;
* lrnet: `lrnet.datasets.load_split` cold (text files, writing a fresh cache) and warm (from that
  cache), `lrnet.training.train` with the same hyper-parameters (block 30, batch 1024, Adam 1e-3,
  fp32), first one branch after the other (per-branch epoch time), then g1 and g2 concurrently
  (the default when both are trained on a multi-core CPU), and `lrnet.evaluate.evaluate` on the
  test split.

Epoch times are medians over the epochs and include the validation pass, as the reference's loop does. "Final val acc" is the
validation accuracy after the last epoch (same number of epochs for both). Timings depend on the
machine's other load: rerun on an idle machine for the README.
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------ naive path

def run_naive(root: Path, epochs: int, threads: int, bf16: bool = False) -> dict:
    import numpy as np
    import torch
    import torch.utils.data as Data

    from common import naive_load_split, naive_loaders, naive_train

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {}
    t0 = time.perf_counter()
    data = {s: naive_load_split(root, "DF", "raw", s, 30) for s in ("train", "val")}
    out["load_s"] = time.perf_counter() - t0
    train_a, train_b = naive_loaders(data, "train", True)
    val_a, val_b = naive_loaders(data, "val", False)
    out["train_blocks"] = len(train_a.dataset)
    out["load_total_s"] = time.perf_counter() - t0

    models = {}
    for branch, tr, va in (("g1", train_a, val_a), ("g2", train_b, val_b)):
        res = naive_train(tr, va, epochs)
        out[f"{branch}_epoch_s"] = res["epoch_s"]
        out[f"{branch}_val_acc"] = res["val_acc"][-1]
        out[f"{branch}_nan_epoch"] = res["nan_epoch"]
        models[branch] = res["model"]
    del data, train_a, train_b, val_a, val_b

    # Test split: the reference's loader, then both branches through DataLoaders and the AUC.
    from sklearn.metrics import roc_auc_score

    t = time.perf_counter()
    x, x_diff, y = naive_load_split(root, "DF", "raw", "test", 30)
    test_a = Data.DataLoader(Data.TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y)), 1024)
    test_b = Data.DataLoader(Data.TensorDataset(torch.tensor(x_diff, dtype=torch.float32), torch.tensor(y)), 1024)
    out["test_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = []
    for branch, it in (("g1", test_a), ("g2", test_b)):
        models[branch].eval()
        with torch.no_grad():
            probs.append(torch.cat([torch.softmax(models[branch](X), dim=1)[:, 1] for X, _ in it]).numpy())
    merged = (probs[0] + probs[1]) / 2
    if np.isfinite(merged).all():  # a collapsed (NaN) reference model has no AUC
        roc_auc_score(y, merged)
    out["eval_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


# ------------------------------------------------------------------------------------------ lrnet path

def run_lrnet(root: Path, epochs: int, threads: int, bf16: bool = False) -> dict:
    import torch

    from lrnet.config import load_config
    from lrnet.datasets import load_split
    from lrnet.evaluate import evaluate
    from lrnet.training import train
    from lrnet.weights import resolve_weights

    torch.set_num_threads(threads)
    out = {}
    work = Path(tempfile.mkdtemp(prefix="lrnet-bench-"))
    cache = work / "cache"
    # Cold load (parse the text files, write a fresh cache) in its own process, so that its
    # parsing buffers do not count in this process's peak memory.
    cold = _child("lrnet-cold", root, epochs, threads, False, ["--cache", str(cache)])
    out["load_cold_s"] = cold["load_cold_s"]
    out["load_cold_peak_rss_mb"] = cold["peak_rss_mb"]
    t = time.perf_counter()
    sets = {s: load_split(root, "DF", "raw", s, 30, cache=cache) for s in ("train", "val")}
    out["load_warm_s"] = time.perf_counter() - t
    out["cache_status"] = sets["train"].cache_status
    out["train_blocks"] = int(sets["train"].sample_index.size)

    base = load_config("reference", values={"epochs_g1": epochs, "epochs_g2": epochs, "seed": 0, "bf16": False})
    from dataclasses import replace

    seq = train(replace(base, concurrent="off"), sets["train"], sets["val"], output=work / "seq", progress=False)
    for b in ("g1", "g2"):
        out[f"{b}_epoch_s"] = seq.histories[b].seconds
        out[f"{b}_val_acc"] = seq.histories[b].val_acc[-1]
    t = time.perf_counter()
    con = train(replace(base, concurrent="on"), sets["train"], sets["val"], output=work / "con", progress=False)
    out["concurrent_wall_s"] = time.perf_counter() - t
    for b in ("g1", "g2"):
        out[f"concurrent_{b}_epoch_s"] = con.histories[b].seconds
        out[f"concurrent_{b}_val_acc"] = con.histories[b].val_acc[-1]

    if bf16:
        t = time.perf_counter()
        low = train(replace(base, concurrent="on", bf16=True), sets["train"], sets["val"], output=work / "bf16",
                    progress=False)
        out["bf16_wall_s"] = time.perf_counter() - t
        for b in ("g1", "g2"):
            out[f"bf16_{b}_epoch_s"] = low.histories[b].seconds
            out[f"bf16_{b}_val_acc"] = low.histories[b].val_acc[-1]

    out["train_peak_rss_mb"] = _child("lrnet-mem", root, epochs, threads, False, ["--cache", str(cache)])["peak_rss_mb"]

    t = time.perf_counter()
    test = load_split(root, "DF", "raw", "test", 30, cache=cache)
    out["test_load_s"] = time.perf_counter() - t
    weights = resolve_weights(str(work / "con"))
    report = evaluate(weights, test)
    out["eval_s"] = report.seconds
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def run_lrnet_mem(root: Path, epochs: int, threads: int, cache: Path) -> dict:
    """Peak memory of the plain job the target is about: load train + val (warm), train g1 + g2."""
    import torch

    from lrnet.config import load_config
    from lrnet.datasets import load_split
    from lrnet.training import train

    torch.set_num_threads(threads)
    sets = {s: load_split(root, "DF", "raw", s, 30, cache=cache) for s in ("train", "val")}
    cfg = load_config("reference", values={"epochs_g1": epochs, "epochs_g2": epochs, "seed": 0, "bf16": False})
    train(cfg, sets["train"], sets["val"], progress=False)
    return {"peak_rss_mb": _peak_rss_mb()}


def run_lrnet_cold(root: Path, cache: Path) -> dict:
    from lrnet.datasets import load_split

    t = time.perf_counter()
    for s in ("train", "val"):
        load_split(root, "DF", "raw", s, 30, cache=cache)
    return {"load_cold_s": time.perf_counter() - t, "peak_rss_mb": _peak_rss_mb()}


# ------------------------------------------------------------------------------------------ driver

def _child(mode: str, root: Path, epochs: int, threads: int, bf16: bool, extra=()) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--root", str(root),
           "--epochs", str(epochs), "--threads", str(threads)] + (["--bf16"] if bf16 else []) + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mean(xs):
    """Median epoch time: robust to the first epoch's one-time costs and to other load on the machine."""
    import statistics

    return statistics.median(list(xs))


def table(naive: dict, lrnet: dict, epochs: int, threads: int) -> str:
    def row(name, a, b, unit="s", better="lower"):
        if a is None or b is None:
            return f"| {name} | {a if a is not None else '-'} | {b if b is not None else '-'} | |"
        ratio = a / b if better == "lower" else b / a
        return f"| {name} | {a:.3g} {unit} | {b:.3g} {unit} | {ratio:.2f}x |"

    n1, n2 = _mean(naive["g1_epoch_s"]), _mean(naive["g2_epoch_s"])
    l1, l2 = _mean(lrnet["g1_epoch_s"]), _mean(lrnet["g2_epoch_s"])
    c_pair = max(_mean(lrnet["concurrent_g1_epoch_s"]), _mean(lrnet["concurrent_g2_epoch_s"]))
    lines = [
        f"FF++-sized synthetic set (Origin + DF raw, {lrnet['train_blocks']} training blocks), {epochs} epochs, "
        f"{threads} thread(s), batch 1024, block 30, fp32",
        "",
        "| measure | naive (reference) | lrnet | speed-up |",
        "|---|---|---|---|",
        row("load train+val, cold (text)", naive["load_total_s"], lrnet["load_cold_s"]),
        row("load train+val, warm (lrnet cache)", naive["load_total_s"], lrnet["load_warm_s"]),
        row("peak RSS: load + train g1, g2 (lrnet: concurrent)", naive["peak_rss_mb"], lrnet["train_peak_rss_mb"], "MB"),
        row("peak RSS: whole benchmark process", naive["peak_rss_mb"], lrnet["peak_rss_mb"], "MB"),
        row("peak RSS: cold load (text -> cache)", naive["peak_rss_mb"], lrnet["load_cold_peak_rss_mb"], "MB"),
        row("g1 s/epoch (incl. val)", n1, l1),
        row("g2 s/epoch (incl. val)", n2, l2),
        row("g1 + g2 epoch, wall (lrnet: concurrent)", n1 + n2, c_pair),
        row("score test split (after loading)", naive["eval_s"], lrnet["eval_s"]),
    ]
    if "bf16_wall_s" in lrnet:
        b_pair = max(_mean(lrnet["bf16_g1_epoch_s"]), _mean(lrnet["bf16_g2_epoch_s"]))
        lines.append(row("g1 + g2 epoch, wall (lrnet: concurrent, --bf16)", n1 + n2, b_pair))
    lines += [
        f"| final val acc g1 | {naive['g1_val_acc']:.4f} | {lrnet['g1_val_acc']:.4f} "
        f"(concurrent {lrnet['concurrent_g1_val_acc']:.4f}) | |",
        f"| final val acc g2 | {naive['g2_val_acc']:.4f} | {lrnet['g2_val_acc']:.4f} "
        f"(concurrent {lrnet['concurrent_g2_val_acc']:.4f}) | |",
    ]
    for b in ("g1", "g2"):
        if naive.get(f"{b}_nan_epoch"):
            lines.append(f"| naive {b}: loss became NaN (log(softmax) underflow) at epoch | "
                         f"{naive[f'{b}_nan_epoch']} | never (log-softmax) | |")
    if "bf16_wall_s" in lrnet:
        lines.append(f"| final val acc g1 / g2 with --bf16 | | {lrnet['bf16_g1_val_acc']:.4f} / "
                     f"{lrnet['bf16_g2_val_acc']:.4f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="dataset root (default: benchmarks/data/ffpp-synthetic)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per branch for both paths (default 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all CPUs)")
    p.add_argument("--json", default=None, help="also write the raw numbers to this JSON file")
    p.add_argument("--bf16", action="store_true", help="also time lrnet's --bf16 option (concurrent)")
    p.add_argument("--worker", choices=("naive", "lrnet", "lrnet-cold", "lrnet-mem"), help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "lrnet-mem":
        print(json.dumps(run_lrnet_mem(Path(args.root), args.epochs, args.threads, Path(args.cache))))
        return 0
    if args.worker == "lrnet-cold":
        print(json.dumps(run_lrnet_cold(Path(args.root), Path(args.cache))))
        return 0
    if args.worker:
        fn = run_naive if args.worker == "naive" else run_lrnet
        print(json.dumps(fn(Path(args.root), args.epochs, args.threads, args.bf16)))
        return 0
    from common import make_ffpp_sized

    root = make_ffpp_sized(args.root)
    print(f"naive reference path ({args.epochs} epochs per branch) ...", flush=True)
    naive = _child("naive", root, args.epochs, args.threads, False)
    print(f"lrnet path ({args.epochs} epochs per branch, sequential then concurrent) ...", flush=True)
    lrnet = _child("lrnet", root, args.epochs, args.threads, args.bf16)
    print()
    print(table(naive, lrnet, args.epochs, args.threads))
    if args.json:
        Path(args.json).write_text(json.dumps({"naive": naive, "lrnet": lrnet, "epochs": args.epochs,
                                               "threads": args.threads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
