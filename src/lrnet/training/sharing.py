"""What branches trained at the same time in threads of one process share, and how they run.

`CoreShare` splits the intra-op threads between the branches still training, so the one left
running gets every core. `BranchRNG` gives each branch its own dropout stream although PyTorch
draws dropout masks from one global CPU generator: its state is swapped in, under `RNG_LOCK`,
around exactly the modules that draw random numbers; `isolated_global_rng` is the same lock for
code that seeds or consumes the global generator (initial weights), leaving it as it was. With
these, results do not depend on whether the branches run one after the other or together, nor on
the thread counts. `run_concurrently` runs one callable per branch in threads and stops them all
at the first failure (`Stop` is what the others raise then).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TypeVar

import torch
from torch import nn

from ..config import TrainConfig

__all__ = ["RNG_LOCK", "BranchRNG", "CoreShare", "Stop", "isolated_global_rng", "run_concurrently",
           "use_concurrency"]

R = TypeVar("R")

# Dropout masks come from PyTorch's global CPU generator. Each branch keeps its own generator
# state and swaps it in, under this lock, around each of its dropout modules only, so branches
# trained concurrently in threads stay reproducible while everything else runs in parallel.
RNG_LOCK = threading.Lock()


@contextlib.contextmanager
def isolated_global_rng(seed: Optional[int] = None) -> Iterator[None]:
    """Hold `RNG_LOCK`, seed the global CPU generator with `seed` (None: leave its state), and
    restore its previous state at the end: a concurrent branch's dropout stream never sees the draws."""
    with RNG_LOCK:
        saved = torch.get_rng_state()
        try:
            if seed is not None:
                torch.manual_seed(seed)
            yield
        finally:
            torch.set_rng_state(saved)


def seeded_cpu_state(seed: int) -> torch.Tensor:
    """A CPU generator state seeded with `seed`, made without disturbing the global generator."""
    with isolated_global_rng(seed):
        return torch.get_rng_state()


def _draws_random_numbers(module: nn.Module) -> bool:
    from ..model import LandmarkDropout

    if isinstance(module, (nn.modules.dropout._DropoutNd, LandmarkDropout)):
        return True
    return isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1


class BranchRNG:
    """A branch's own stream of dropout randomness: forward hooks swap its state into the global
    CPU generator (under `RNG_LOCK`) for exactly the modules that draw random numbers."""

    def __init__(self, state: torch.Tensor):
        self.state = state
        self.handles: List[Any] = []

    def attach(self, model: nn.Module) -> "BranchRNG":
        for m in model.modules():
            if _draws_random_numbers(m):
                self.handles.append(m.register_forward_pre_hook(self._enter))
                self.handles.append(m.register_forward_hook(self._leave, always_call=True))
        return self

    def _enter(self, module, args):
        RNG_LOCK.acquire()
        torch.set_rng_state(self.state)

    def _leave(self, module, args, output):
        try:
            self.state = torch.get_rng_state()
        finally:
            RNG_LOCK.release()

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class CoreShare:
    """Intra-op threads shared by branches that train at the same time in threads of one process.

    ``torch.set_num_threads`` acts on the calling thread's OpenMP team, so each branch thread sets
    its own count; `apply` (called before every batch and validation) gives each branch still
    training an equal part of `total`, so when one branch finishes the other takes every core.
    The thread count does not change the numbers (the products split rows and columns between
    threads, never a sum), so results do not depend on when the hand-over happens.
    """

    def __init__(self, total: int, branches: Sequence[str]):
        self.total = max(1, int(total))
        self._active = list(branches)
        self._lock = threading.Lock()

    def threads(self, branch: str) -> int:
        with self._lock:
            if branch not in self._active:
                return self.total
            n, i = len(self._active), self._active.index(branch)
        return max(1, self.total // n + (1 if i < self.total % n else 0))

    def apply(self, branch: str) -> None:
        n = self.threads(branch)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def leave(self, branch: str) -> None:
        with self._lock:
            if branch in self._active:
                self._active.remove(branch)


class Stop(Exception):
    """Raised inside a branch's loop when another branch failed (concurrent training)."""


def use_concurrency(cfg: TrainConfig, branches: Sequence[str], device: torch.device) -> bool:
    """Whether `branches` train at the same time: ``cfg.concurrent`` on/off, or auto (two or more
    branches on a CPU with at least two cores)."""
    if len(branches) < 2:
        return False
    if cfg.concurrent == "on":
        return True
    if cfg.concurrent == "off":
        return False
    return device.type == "cpu" and (os.cpu_count() or 1) >= 2


def run_concurrently(run: Callable[[str, int, Optional[threading.Event]], R],
                     branches: Sequence[str]) -> Dict[str, R]:
    """``run(branch, position, stop)`` for each branch in its own thread; the first failure (or
    Ctrl-C) sets `stop`, which stops the others at their next batch (they raise `Stop`).
    Returns the results in branch order, not finish order; re-raises the first failure."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: Dict[str, R] = {}
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=len(branches), thread_name_prefix="lrnet-train") as pool:
        futures = {pool.submit(run, b, i, stop): b for i, b in enumerate(branches)}
        try:
            errors = []
            for fut in as_completed(futures):  # completion order: a failure stops the other branch at once
                try:
                    results[futures[fut]] = fut.result()
                except Stop:
                    pass
                except BaseException as exc:
                    stop.set()
                    errors.append(exc)
            if errors:
                raise errors[0]
        except BaseException:  # Ctrl-C lands here, in the main thread: stop the branch threads first
            stop.set()
            raise
    return {b: results[b] for b in branches if b in results}
