"""The fused GRU's time steps, C++ loop against Python loop: one LRNet g1 GRU forward + backward, and
one full g1 training step (gather, model, loss, Adam), at batch 1024 on 1 and 2 threads.

Usage::

    python benchmarks/bench_gru_step.py [--repeats 30] [--root DIR]

Each figure is the minimum and the 25th percentile over `--repeats` calls after warm-up (the machine's
other load only ever adds time). Modes: the Python loop (``LRNET_GRU_KERNEL=python``) and the C++ loop
(`lrnet.gru_kernel`, built on first use), each in fp32 and with bf16 GEMMs (``bf16=True``: the
Python loop rounds the input projections only, the C++ loop the hidden products too). The training
step uses the FF++-sized synthetic set of `common.make_ffpp_sized` (generated on first use).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _timed(fn, repeats: int) -> str:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return f"{times[0] * 1e3:6.1f} / {times[len(times) // 4] * 1e3:6.1f} ms"


def gru_pass(bf16: bool):
    """One bigru_last_hidden forward + backward on a (1024, 30, 136) batch, LRNet's GRU shape."""
    import torch
    from torch import nn

    from lrnet.fastgru import bigru_last_hidden

    torch.manual_seed(0)
    gru = nn.GRU(136, 32, batch_first=True, bidirectional=True)
    x = (torch.randn(30, 1024, 136) * 0.3).transpose(0, 1)  # time-major storage, as training gathers it
    h0 = torch.randn(2, 1, 32, requires_grad=True)
    w = torch.randn(2, 1024, 32)
    params = list(gru.parameters()) + [h0]

    def run():
        out = bigru_last_hidden(gru, x, h0.expand(-1, 1024, -1), bf16=bf16)
        torch.autograd.grad((out * w).sum(), params)

    return run


def train_step(root: Path, bf16: bool):
    """One g1 training step as `lrnet train` runs it (training.train_step on the synthetic FF++ set)."""
    import torch

    from lrnet import training as T
    from lrnet.config import TrainConfig
    from lrnet.datasets import load_split

    tr = load_split(root, "DF", "raw", "train", 30, progress=False)
    va = load_split(root, "DF", "raw", "val", 30, progress=False)
    cfg = TrainConfig(bf16=bf16)
    settings = T.resolve_settings(cfg, "g1", seed=0)
    state = T.start_branch(None, settings, cfg)
    data = T.EpochData.of(tr, va, settings.device)
    order = data.samples[torch.randperm(data.samples.numel())]
    workspace: dict = {}
    batches = data.samples.numel() // 1024
    step = [0]

    def run():
        i = step[0] % batches
        step[0] += 1
        T.train_step(state.model, state.optimizer, data, order[i * 1024:(i + 1) * 1024], "g1", workspace)

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30, help="timed calls per figure (default 30)")
    p.add_argument("--root", default=None, help="dataset root (default: benchmarks/data/ffpp-synthetic)")
    args = p.parse_args(argv)
    import torch

    from common import make_ffpp_sized

    from lrnet import gru_kernel

    root = make_ffpp_sized(args.root)
    os.environ[gru_kernel.KERNEL_ENV] = "cpp"
    gru_kernel.load()  # build (or load) before timing
    print(f"load average {os.getloadavg()[0]:.2f}; figures: min / 25th percentile over {args.repeats} calls")
    print(f"{'what':<34} {'threads':>7}  {'Python loop':>19}  {'C++ loop':>19}")
    for label, make in (("GRU forward + backward, fp32", lambda: gru_pass(False)),
                        ("GRU forward + backward, bf16", lambda: gru_pass(True)),
                        ("g1 training step, fp32", lambda: train_step(root, False)),
                        ("g1 training step, bf16", lambda: train_step(root, True))):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cells = []
            for mode in ("python", "cpp"):
                os.environ[gru_kernel.KERNEL_ENV] = mode
                cells.append(_timed(make(), args.repeats))
            print(f"{label:<34} {threads:>7}  {cells[0]:>19}  {cells[1]:>19}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
