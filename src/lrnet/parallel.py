"""Run one function over many inputs, in this process or a process pool, with an optional progress bar."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int = 0, *, min_items: int,
                     chunks_per_worker: int, max_chunk: int, progress: bool = False, desc: str = "",
                     unit: str = "it") -> Iterator[R]:
    """Yield ``fn(item)`` for each of `items`, in order, as results become available.

    ``workers=0`` picks ``min(os.cpu_count(), 8)`` processes when there are at least `min_items`
    items (enough to pay for the pool start-up), else 1; ``workers <= 1`` runs in this process.
    With a pool, items go out in chunks of ``max(1, min(max_chunk, len(items) // (workers *
    chunks_per_worker)))``. `progress` shows a tqdm bar (`desc`, `unit`) that disappears when done.
    """
    if workers == 0:
        workers = min(os.cpu_count() or 1, 8) if len(items) >= min_items else 1
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit=unit, leave=False)
    try:
        if workers <= 1:
            for item in items:
                yield fn(item)
                if bar is not None:
                    bar.update(1)
            return
        chunk = max(1, min(max_chunk, len(items) // (workers * chunks_per_worker)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(fn, items, chunksize=chunk):
                yield result
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
