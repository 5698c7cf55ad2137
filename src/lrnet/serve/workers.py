"""Worker processes: the CPU-bound part of every job, off the server's event loop.

`WorkerPool` keeps ``jobs`` worker processes (spawned, so no thread state is inherited), each
holding its own loaded weights and running one job at a time. A dispatcher thread in the server
hands queued jobs to idle workers and collects their messages (progress, result, failure) over
one pipe per worker. To cancel a running job, or stop one past its time limit, the dispatcher
kills that worker's process and starts a fresh one; a worker that dies is replaced the same way.

Workers die with the server: they ask the kernel for SIGKILL when their parent goes
(``PR_SET_PDEATHSIG``) and also check their parent id every second.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Dict, List, Optional

from ..errors import LrnetError
from ..parallel import die_with_parent
from .store import JobStore, Task

__all__ = ["WorkerPool", "worker_main"]

log = logging.getLogger(__name__)

EXPIRE_EVERY = 60.0  # seconds between sweeps of expired jobs
RESPAWN_DELAY = 5.0  # seconds before replacing a worker that died while loading


# ------------------------------------------------------------------------------ worker side

def _available_weights(default: str, loaded) -> List[Dict[str, Any]]:
    from ..weights import PRETRAINED, fetch_pretrained
    from .runner import describe_weights

    out = [describe_weights(default, loaded)]
    for name, pair in PRETRAINED.items():
        if name == default:
            continue
        try:
            fetch_pretrained(name, download=False)
        except LrnetError:
            continue  # not in the cache: not offered (the server never downloads on request)
        out.append({"name": name, "source": f"pretrained:{name}", "block_size": pair.block_size,
                    "fps": pair.fps, "description": pair.description})
    return out


def _send_progress(conn: Connection, job_id: str, stage: str, fraction: float) -> None:
    conn.send(("progress", job_id, stage, fraction))


def worker_main(conn: Connection, parent: int, default: str, download: bool, threads: int) -> None:
    """Entry of a worker process: load the weights, then run the tasks received on `conn`."""
    die_with_parent(parent, every=1.0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    import torch

    from ..weights import resolve_weights
    from .runner import run_task, warm_up

    torch.set_num_threads(threads)
    try:
        cache = {default: resolve_weights(default, download=download)}
        warm_up(cache[default])
        conn.send(("ready", {"weights": _available_weights(default, cache[default]),
                             "default": default}))
    except LrnetError as exc:
        conn.send(("fatal", str(exc)))
        return
    while True:
        try:
            task: Task = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if task.weights not in cache:
                cache[task.weights] = resolve_weights(task.weights, download=False)
            result = run_task(task, cache[task.weights], functools.partial(_send_progress, conn, task.job_id))
            conn.send(("done", task.job_id, result))
        except LrnetError as exc:
            conn.send(("failed", task.job_id, str(exc)))
        except Exception as exc:  # a bug: keep the server alive, say what happened
            log.exception("job %s failed", task.job_id)
            conn.send(("failed", task.job_id, f"{task.filename}: internal error ({type(exc).__name__}: {exc})"))


# ------------------------------------------------------------------------------ server side

@dataclass
class _Slot:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    job_id: Optional[str] = None
    started: float = 0.0  # monotonic time the current job was sent
    spawned: float = 0.0  # monotonic time the process was started


class WorkerPool:
    """`jobs` worker processes fed from `store` by a dispatcher thread.

    Call `start` (blocks until every worker has loaded its weights, raises `LrnetError` if one
    cannot), then `wake` after queueing or cancelling a job, and `close` at shutdown.
    """

    def __init__(self, store: JobStore, weights: str, jobs: int = 1, download: bool = True,
                 job_timeout: float = 1800.0):
        self.store, self.weights, self.jobs = store, weights, jobs
        self.download, self.job_timeout = download, job_timeout
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.info: Dict[str, Any] = {}
        self._slots: List[_Slot] = []
        self._context = multiprocessing.get_context("spawn")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop = threading.Event()
        self._started = threading.Event()
        self._fatal: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name="lrnet-dispatch", daemon=True)

    # ------------------------------------------------------------------ public
    def start(self, timeout: float = 300.0) -> Dict[str, Any]:
        """Start the workers; returns what they loaded (the weights offered)."""
        self._thread.start()
        if not self._started.wait(timeout):
            self.close()
            raise LrnetError(f"the worker processes did not load the weights within {timeout:.0f} s")
        if self._fatal:
            self.close()
            raise LrnetError(self._fatal)
        return self.info

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the dispatcher is awake already

    def ready_workers(self) -> int:
        return sum(1 for s in self._slots if s.ready)

    def pids(self) -> List[int]:
        return [s.process.pid for s in self._slots if s.process.pid]

    def close(self) -> None:
        self._stop.set()
        self.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(10)

    # ------------------------------------------------------------------ dispatcher thread
    def _spawn(self) -> _Slot:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(target=worker_main, name="lrnet-serve-worker", daemon=True,
                                        args=(child_end, os.getpid(), self.weights, self.download, self.threads))
        process.start()
        child_end.close()
        return _Slot(process, parent_end, spawned=time.monotonic())

    def _run(self) -> None:
        try:
            self._slots = [self._spawn() for _ in range(self.jobs)]
            last_expire = time.monotonic()
            while not self._stop.is_set():
                self._dispatch()
                live = [s for s in self._slots if s.process.is_alive()]
                waitables = [s.conn for s in live] + [s.process.sentinel for s in live] + [self._wake_r]
                for ready in wait(waitables, timeout=1.0):
                    if ready == self._wake_r:
                        self._drain_wake()
                    else:
                        self._receive(ready)
                self._check_slots()
                if time.monotonic() - last_expire > EXPIRE_EVERY:
                    self.store.expire()
                    last_expire = time.monotonic()
        except Exception:  # pragma: no cover - a dispatcher bug must not leave workers behind
            log.exception("dispatcher stopped")
        finally:
            for slot in self._slots:
                self._kill(slot)
            self._started.set()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not slot.ready or slot.job_id is not None:
                continue
            job = self.store.next_queued()
            if job is None:
                return
            folder = self.store.folder(job.id)
            task = Task(job.id, job.kind, str(folder / job.upload), str(folder), job.filename, job.weights,
                        job.aggregation, job.playable)
            if self.store.update(job.id, status="running", started=time.time(), stage="starting") is None:
                continue  # cancelled meanwhile
            slot.job_id, slot.started = job.id, time.monotonic()
            slot.conn.send(task)

    def _receive(self, conn) -> None:
        slot = next((s for s in self._slots if s.conn is conn), None)
        if slot is None:
            return  # a dead worker's sentinel: handled by _check_slots
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "ready":
            slot.ready = True
            self.info = self.info or message[1]
            if all(s.ready for s in self._slots):
                self._started.set()
        elif kind == "fatal" and not self._started.is_set():
            self._fatal = message[1]
            self._stop.set()
        elif kind == "fatal":
            log.error("a replacement worker cannot load the weights: %s", message[1])
        elif kind == "progress" and message[1] == slot.job_id:
            self.store.progress(message[1], message[2], message[3])
        elif kind in ("done", "failed") and message[1] == slot.job_id:
            job_id, slot.job_id = message[1], None
            if kind == "done":
                finished = self.store.finish(job_id, "done", result=message[2])
            else:
                finished = self.store.finish(job_id, "failed", error=message[2])
            if finished is None:  # cancelled or deleted while the worker was finishing it
                self.store.discard_files(job_id)

    def _check_slots(self) -> None:
        for i, slot in enumerate(self._slots):
            reason = None
            if slot.job_id is not None:
                job = self.store.get(slot.job_id)
                if job is None or job.status == "cancelled":
                    reason = "cancelled"
                elif time.monotonic() - slot.started > self.job_timeout:
                    reason = f"{job.filename}: stopped after the time limit of {self.job_timeout:g} s"
            if reason is None and slot.process.is_alive():
                continue
            if reason is None:
                reason = f"the worker process stopped unexpectedly (exit code {slot.process.exitcode})"
            self._replace(i, reason)

    def _replace(self, index: int, reason: str) -> None:
        slot = self._slots[index]
        self._kill(slot)
        if slot.job_id is not None:
            if reason != "cancelled":
                self.store.finish(slot.job_id, "failed", error=reason)
            self.store.discard_files(slot.job_id)  # whatever the killed worker had written
            slot.job_id = None
        elif not slot.ready:  # died while loading the weights
            if not self._started.is_set():
                self._fatal = self._fatal or f"a worker process exited while loading the weights ({reason})"
                self._stop.set()
                return
            if time.monotonic() - slot.spawned < RESPAWN_DELAY:
                return  # do not spin on weights that cannot load any more
        log.info("replacing worker %s: %s", slot.process.pid, reason)
        self._slots[index] = self._spawn()

    @staticmethod
    def _kill(slot: _Slot) -> None:
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(5)
        slot.conn.close()
