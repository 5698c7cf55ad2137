"""Process pools that stop, for lrnet's per-file and per-video jobs, and the one-function-over-many-
inputs helper.

Used by the video jobs (`lrnet.batch`: extract, compress) and, through `map_in_processes`, by
landmark reading, ``lrnet dataset check`` and synthetic data. Not by the web server, whose
long-lived workers are `lrnet.serve.workers`, nor by Dask, whose workers `lrnet.cluster` drives.

`worker_pool` is a `concurrent.futures.ProcessPoolExecutor` whose workers

* ignore SIGINT: a Ctrl-C (sent by the terminal to the whole process group) reaches the parent
  alone; when it leaves the ``with worker_pool(...)`` block, queued work is cancelled and the
  workers are ended (SIGTERM, then SIGKILL after 2 s) instead of being waited for;
* die with their parent whatever kills it (``kill -9`` included): on Linux the worker asks the
  kernel for SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``; strictly, when the
  thread that started it ends, and workers are started by the thread that submits work), and
  on every platform a watchdog thread checks every 0.5 s and ends the worker once its parent
  process id has changed;
* can check, before publishing a result (the final rename of an atomic write), that the parent is
  still there (`require_parent`), so nothing appears after the job that asked for it is gone.

`map_in_processes` runs one function over many inputs in this process or such a pool.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, TypeVar

__all__ = ["ParentGone", "worker_pool", "map_in_processes", "parent_alive", "require_parent", "die_with_parent"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_WATCH_SECONDS = 0.5  # how often a worker's watchdog looks for its parent
_STOP_SECONDS = 2.0  # grace between SIGTERM and SIGKILL when ending workers
_parent_pid: Optional[int] = None  # set in pool workers only


class ParentGone(RuntimeError):
    """Raised in a pool worker whose parent process has exited: its result has no reader."""


def parent_alive() -> bool:
    """False only in a pool worker whose parent has exited (always True outside pool workers)."""
    return _parent_pid is None or os.getppid() == _parent_pid


def require_parent() -> None:
    """Raise `ParentGone` when this is a pool worker whose parent has exited.

    Call it just before publishing an output (inside `lrnet.atomic.atomic_path`, before the
    rename), so a worker outliving its job never leaves a file the job's log does not record.
    """
    if not parent_alive():
        raise ParentGone(f"parent process {_parent_pid} has exited")


def die_with_parent(parent: int, every: float = _WATCH_SECONDS) -> None:
    """End this process (exit status 1) when its parent `parent` (a process id) exits.

    On Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``); on every
    platform a daemon thread also checks the parent id every `every` seconds. For pool workers
    here and the server's workers (`lrnet.serve.workers`).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="lrnet-parent-watch", daemon=True).start()


def _init_worker(parent_pid: int, initializer: Optional[Callable[..., Any]], initargs: Tuple) -> None:
    global _parent_pid
    _parent_pid = parent_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent alone handles Ctrl-C
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def _end_processes(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM, then SIGKILL for those still alive after a short grace."""
    for p in processes:
        with contextlib.suppress(OSError, ValueError):
            p.terminate()
    deadline = time.monotonic() + _STOP_SECONDS
    for p in processes:
        with contextlib.suppress(OSError, ValueError):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Optional[Callable[..., Any]] = None, initargs: Tuple = (),
                context: Optional[str] = None) -> Iterator[ProcessPoolExecutor]:
    """A process pool of `workers` processes that stops at once when the block is left by an exception.

    On a clean exit the pool is shut down normally (waiting for submitted work). On any exception
    (KeyboardInterrupt, an error while collecting results, a closed generator) queued work is
    cancelled and the workers are terminated, so the caller never waits for work nobody will
    read. `context`: a multiprocessing start method ("spawn" for workers that run threaded native
    code such as OpenCV or dlib; None: the platform default).
    """
    mp_context = multiprocessing.get_context(context)
    existing = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp_context, initializer=_init_worker,
                               initargs=(os.getpid(), initializer, initargs))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _end_processes([p for p in multiprocessing.active_children() if p not in existing])
        raise
    pool.shutdown(wait=True)


def map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int = 0, *, min_items: int,
                     chunks_per_worker: int, max_chunk: int, progress: bool = False, desc: str = "",
                     unit: str = "it") -> Iterator[R]:
    """Yield ``fn(item)`` for each of `items`, in order, as results become available.

    ``workers=0`` picks ``min(os.cpu_count(), 8)`` processes when there are at least `min_items`
    items (enough to pay for the pool start-up), else 1; ``workers <= 1`` runs in this process.
    With a pool (`worker_pool`: stops on Ctrl-C, dies with this process), items go out in chunks
    of ``max(1, min(max_chunk, len(items) // (workers * chunks_per_worker)))``. `progress` shows
    a tqdm bar (`desc`, `unit`) that disappears when done.
    """
    if workers == 0:
        workers = min(os.cpu_count() or 1, 8) if len(items) >= min_items else 1
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit=unit, leave=False, disable=None)  # off when not a TTY
    try:
        if workers <= 1:
            for item in items:
                yield fn(item)
                if bar is not None:
                    bar.update(1)
            return
        chunk = max(1, min(max_chunk, len(items) // (workers * chunks_per_worker)))
        with worker_pool(workers) as pool:
            for result in pool.map(fn, items, chunksize=chunk):
                yield result
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
