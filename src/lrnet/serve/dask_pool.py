"""The service's jobs on a Dask cluster (``lrnet serve --scheduler local:N|tcp://HOST:8786``).

`DaskPool` has the interface of `lrnet.serve.workers.WorkerPool` (start, wake, ready_workers,
pids, close), so the page and the API do not change. A dispatcher thread sends queued jobs to the
cluster, as many as the workers have threads (the others stay "queued" in the store, so the
queue limit and ``/readyz`` mean what they mean with local workers), and collects results.

**How an upload reaches the worker: shared storage.** The job folder ``DATA/jobs/<id>/`` must be
visible to every worker under the same path (with ``local:N`` it is; on a cluster, mount the data
folder at the same path on every machine, e.g. NFS). `start` checks it: each worker must read a
probe file the server just wrote there, or the server stops with one line naming the worker. Why
not through the scheduler: uploads go up to ``--max-upload-mb`` (500 MB by default) and a job
also writes files the page reads (landmarks, a transcoded H.264 copy of about the upload's size);
Dask keeps task arguments and results in the memory of the scheduler and workers and warns above
a few MB, so those bytes would travel twice and sit in memory; and the job folder is already the
unit the store cleans, expires and recovers.

The worker also uses that folder to talk back: the task writes its progress to
``.progress.json`` (atomically, at most every 0.3 s) and reads the job's record (``job.json``,
rewritten by the server on every change of status) at most every 0.5 s: a job the server has
cancelled, deleted or stopped at its time limit makes the task stop at its next progress step.
A task that does not stop within `STOP_GRACE` seconds (a stage without progress steps) has its
worker restarted. A worker that dies (killed, out of memory) is replaced by its nanny and Dask runs
the job again elsewhere, up to ``retries + 1`` deaths, after which the job fails with a message
saying so. Content failures (no face, unreadable) come back as values and are never retried.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..atomic import atomic_write_text
from ..errors import LrnetError
from .store import RECORD, JobStore, Task

__all__ = ["DaskPool", "PROGRESS", "run_job"]

log = logging.getLogger(__name__)

PROGRESS = ".progress.json"
PROBE = ".lrnet-probe"
PROGRESS_EVERY = 0.3  # seconds between progress writes of a task
STATUS_EVERY = 0.5  # seconds between a task's reads of its job record
POLL = 0.2  # seconds between the dispatcher's rounds
STOP_GRACE = 30.0  # seconds a cancelled task has to stop by itself before its worker is restarted
EXPIRE_EVERY = 60.0


# ------------------------------------------------------------------------------ worker side

class _Stopped(Exception):
    """The server no longer wants this job (cancelled, deleted, timed out)."""


_weights: Dict[Tuple[str, bool], Any] = {}  # per worker process: (spec, download) -> LoadedWeights


def _load(spec: str, download: bool):
    key = (spec, download)
    if key not in _weights:
        import torch

        from ..weights import resolve_weights
        from .runner import warm_up

        torch.set_num_threads(1)  # one job per worker thread: Dask sizes the cluster in threads
        _weights[key] = resolve_weights(spec, download=download)
        warm_up(_weights[key])
    return _weights[key]


class _Reporter:
    """The progress callback of a task: writes `PROGRESS`, and raises `_Stopped` once the job's
    record says the server gave up on it (or the record is gone)."""

    def __init__(self, task: Task):
        self.folder = Path(task.folder)
        self._written = self._checked = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if now - self._checked >= STATUS_EVERY:
            self._checked = now
            self.check()
        if now - self._written >= PROGRESS_EVERY or fraction >= 1.0:
            self._written = now
            try:
                atomic_write_text(self.folder / PROGRESS, json.dumps({"stage": stage, "fraction": float(fraction)}))
            except OSError:
                self.check()  # the folder went away: stop; otherwise progress is a courtesy
                log.debug("cannot write progress to %s", self.folder)

    def check(self) -> None:
        try:
            status = json.loads((self.folder / RECORD).read_text()).get("status")
        except (OSError, ValueError):
            raise _Stopped() from None
        if status != "running":
            raise _Stopped()


def run_job(task: Task, weights: str, download: bool) -> Tuple[str, Any]:
    """Task run on a Dask worker: ``("done", result)``, ``("failed", message)`` or ``("stopped", "")``."""
    from .runner import run_task

    reporter = _Reporter(task)
    try:
        reporter.check()
        loaded = _load(task.weights, download and task.weights == weights)  # the server never downloads others
        return "done", run_task(task, loaded, reporter)
    except _Stopped:
        return "stopped", ""
    except LrnetError as exc:
        return "failed", str(exc)
    except Exception as exc:  # a bug: keep the server alive, say what happened
        log.exception("job %s failed", task.job_id)
        return "failed", f"{task.filename}: internal error ({type(exc).__name__}: {exc})"


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def _info(weights: str, download: bool) -> Dict[str, Any]:
    """Run on one worker at start: load the default weights, say what it offers (as WorkerPool's ready message)."""
    from ..scoring import AGGREGATIONS
    from .workers import _available_weights

    loaded = _load(weights, download)
    return {"weights": _available_weights(weights, loaded), "aggregations": list(AGGREGATIONS), "default": weights}


# ------------------------------------------------------------------------------ server side

@dataclass
class _Running:
    future: Any
    started: float  # monotonic
    stopping: Optional[float] = None  # monotonic time the stop was asked


class DaskPool:
    """Jobs of `store` run on the Dask cluster of `scheduler` (see the module doc)."""

    def __init__(self, store: JobStore, weights: str, scheduler: str, download: bool = True,
                 job_timeout: float = 1800.0, retries: int = 2):
        self.store, self.weights, self.scheduler = store, weights, scheduler
        # the default weights as a worker on another machine can name them (a folder: its absolute path)
        self.spec = os.path.abspath(weights) if Path(weights).exists() else weights
        self.download, self.job_timeout, self.retries = download, job_timeout, retries
        self.info: Dict[str, Any] = {}
        self._client: Any = None
        self._context: Any = None
        self._running: Dict[str, _Running] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrnet-dask-dispatch", daemon=True)

    # ------------------------------------------------------------------ public
    def start(self, timeout: float = 300.0) -> Dict[str, Any]:
        """Connect (or start the LocalCluster), check the shared job folders, load the weights on a worker."""
        from ..cluster import dask_client

        self._context = dask_client(self.scheduler, allowed_failures=self.retries + 1)
        self._client = self._context.__enter__()
        try:
            self._wait_for_workers(timeout)
            self._check_shared_storage()
            future = self._client.submit(_info, self.spec, self.download, pure=False)
            try:
                self.info = future.result(timeout=timeout)
                self.info["default"] = self.info["weights"][0]["name"] = self.weights  # the name clients use
            except LrnetError:
                raise
            except TimeoutError:
                raise LrnetError(f"{self.scheduler}: no worker loaded the weights within {timeout:.0f} s") from None
        except BaseException:
            self._close_client()
            raise
        self._thread.start()
        return self.info

    def wake(self) -> None:
        self._wake.set()

    def ready_workers(self) -> int:
        try:
            return len(self._client.scheduler_info(n_workers=-1)["workers"]) if self._client is not None else 0
        except Exception:  # the scheduler is unreachable right now
            return 0

    def pids(self) -> List[int]:
        try:
            return [int(p) for p in self._client.run(os.getpid).values()]
        except Exception:
            return []

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(15)
        self._close_client()

    # ------------------------------------------------------------------ start-up checks
    def _close_client(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            try:
                context.__exit__(None, None, None)
            except Exception:  # closing a cluster that is already gone
                log.debug("closing the Dask client", exc_info=True)
        self._client = None

    def _wait_for_workers(self, timeout: float) -> None:
        try:
            self._client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise LrnetError(f"{self.scheduler}: no Dask worker joined within {timeout:.0f} s") from None

    def _check_shared_storage(self) -> None:
        probe = self.store.root / PROBE
        token = f"{socket.gethostname()}:{os.getpid()}:{time.time()}"
        atomic_write_text(probe, token)
        try:
            seen = self._client.run(_sees, str(probe), token)
        finally:
            probe.unlink(missing_ok=True)
        blind = sorted(worker for worker, ok in seen.items() if not ok)
        if blind:
            raise LrnetError(f"{self.store.root}: the Dask worker{'s' if len(blind) > 1 else ''} {', '.join(blind)} "
                             "cannot read the job folders here; mount the data folder at the same path on every "
                             "worker (--data-dir)")

    # ------------------------------------------------------------------ dispatcher thread
    def _slots(self) -> int:
        try:
            workers = self._client.scheduler_info(n_workers=-1)["workers"].values()
            return sum(int(w.get("nthreads", 1)) for w in workers)
        except Exception:
            return 0

    def _run(self) -> None:
        last_expire = time.monotonic()
        try:
            while not self._stop.is_set():
                self._collect()
                self._watch()
                self._dispatch()
                if time.monotonic() - last_expire > EXPIRE_EVERY:
                    self.store.expire()
                    last_expire = time.monotonic()
                self._wake.wait(POLL)
                self._wake.clear()
        except Exception:  # pragma: no cover - a dispatcher bug must not hang the server silently
            log.exception("dispatcher stopped")
        finally:
            if self._running and self._client is not None:
                try:
                    self._client.cancel([r.future for r in self._running.values()])
                except Exception:
                    log.debug("cancelling on close", exc_info=True)

    def _dispatch(self) -> None:
        free = self._slots() - len(self._running)
        while free > 0:
            job = self.store.next_queued()
            if job is None:
                return
            folder = self.store.folder(job.id)
            task = Task(job.id, job.kind, str(folder / job.upload), str(folder), job.filename,
                        self.spec if job.weights == self.weights else job.weights, job.aggregation, job.playable)
            if self.store.update(job.id, status="running", started=time.time(), stage="starting") is None:
                continue  # cancelled meanwhile
            future = self._client.submit(run_job, task, self.spec, self.download, pure=False,
                                         key=f"lrnet-job-{job.id}-{time.time_ns()}")
            self._running[job.id] = _Running(future, time.monotonic())
            free -= 1

    def _collect(self) -> None:
        for job_id, run in list(self._running.items()):
            status = run.future.status
            if status not in ("finished", "error", "cancelled"):  # pending, or lost and being computed again
                self._progress(job_id)
                continue
            del self._running[job_id]
            if status == "finished":
                try:
                    kind, value = run.future.result(timeout=60)
                except Exception as exc:  # the result was lost with its worker before it reached us
                    kind, value = "failed", f"its result could not be fetched ({type(exc).__name__}: {exc})"
            elif status == "cancelled":
                kind, value = "stopped", ""
            else:
                error = run.future.exception()
                kind = "failed"
                value = (f"the Dask worker running it died {self.retries + 1} times (out of memory or killed)"
                         if type(error).__name__ == "KilledWorker"
                         else f"internal error ({type(error).__name__}: {error})")
                job = self.store.get(job_id)
                if job is not None:
                    value = f"{job.filename}: {value}"
            run.future.release()
            job = self.store.get(job_id)
            if kind == "stopped" and job is not None and job.status == "running":  # its record was unreadable
                kind, value = "failed", f"{job.filename}: the worker could not read the job's record"
            finished = None
            if kind == "done":
                finished = self.store.finish(job_id, "done", result=value)
            elif kind == "failed":
                finished = self.store.finish(job_id, "failed", error=value)
            if finished is None:  # cancelled, deleted or timed out while it ran: whatever it wrote goes
                self.store.discard_files(job_id)
            else:
                (self.store.folder(job_id) / PROGRESS).unlink(missing_ok=True)

    def _progress(self, job_id: str) -> None:
        try:
            data = json.loads((self.store.folder(job_id) / PROGRESS).read_text())
            self.store.progress(job_id, str(data["stage"]), float(data["fraction"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not written yet, or being replaced

    def _watch(self) -> None:
        """Stop jobs the store no longer wants running: cancelled, deleted, or past the time limit."""
        now = time.monotonic()
        for job_id, run in self._running.items():
            job = self.store.get(job_id)
            if job is not None and job.status == "running" and now - run.started > self.job_timeout:
                self.store.finish(job_id, "failed",
                                  error=f"{job.filename}: stopped after the time limit of {self.job_timeout:g} s")
                job = self.store.get(job_id)
            if job is not None and job.status == "running":
                continue
            if run.stopping is None:
                run.stopping = now  # the task sees the record at its next progress step and returns
            elif now - run.stopping > STOP_GRACE:
                self._restart_worker_of(run)

    def _restart_worker_of(self, run: _Running) -> None:
        key = run.future.key
        try:
            processing = self._client.processing()
            workers = [w for w, keys in processing.items() if key in keys]
            self._client.cancel([run.future])
            if workers:
                log.warning("a stopped job did not end within %g s: restarting worker %s", STOP_GRACE, workers[0])
                self._client.restart_workers(workers)
        except Exception:
            log.exception("could not restart the worker of a stopped job")
        run.stopping = time.monotonic() + 3600.0  # do not ask again soon
