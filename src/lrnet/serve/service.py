"""The server's state in one object: settings (`ServeConfig`), job store and worker pool (`Service`).

`running_service` locks the data folder (one server per folder), recovers the jobs a previous
server left there (unfinished ones are marked failed), and starts the workers, waiting until every
one has loaded the weights. All of this happens before the HTTP socket is bound, so a data folder
held by another server, weights that cannot be loaded, or workers that do not load them within
300 s stop ``lrnet serve`` with one line before anything listens. Binding the socket and running
uvicorn is `lrnet.serve.app.serve_forever`.

The jobs run in local worker processes (`lrnet.serve.workers.WorkerPool`) or, with a scheduler, on
a Dask cluster (`lrnet.serve.dask_pool.DaskPool`); both have one interface.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

from ..locks import output_lock
from .dask_pool import DaskPool
from .store import JobStore
from .workers import WorkerPool

__all__ = ["ServeConfig", "Service", "default_data_dir", "is_loopback", "running_service"]

log = logging.getLogger(__name__)


DEFAULT_JOBS = max(1, (os.cpu_count() or 2) // 2)  # worker processes: half the CPU cores


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/lrnet/serve`` (default ``~/.local/share/lrnet/serve``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "lrnet" / "serve"


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """Settings of `lrnet serve` (sizes in MB, durations in seconds or hours as named)."""

    data_dir: Path
    weights: str = "dfo"
    jobs: int = DEFAULT_JOBS
    queue: int = 32
    max_upload_mb: float = 500.0
    max_seconds: float = 600.0
    keep_hours: float = 24.0
    job_timeout: float = 1800.0
    token: Optional[str] = None
    download: bool = True
    scheduler: Optional[str] = None  # run the jobs on Dask (local:N or tcp://HOST:8786) instead of local workers
    retries: int = 2  # with a scheduler: re-runs of a job whose worker died
    max_live: int = 2  # live (WebRTC) sessions at once, each with its own worker process

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Service:
    """Store + pool for one data folder (which the caller has locked: see `running_service`).

    `info`, filled by `start`: what the workers loaded (``weights`` offered, ``aggregations``,
    ``default`` weights name)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.store = JobStore(config.data_dir, config.queue, config.keep_hours)
        self.pool: Union[WorkerPool, DaskPool]
        if config.scheduler:
            self.pool = DaskPool(self.store, config.weights, config.scheduler, config.download, config.job_timeout,
                                 config.retries)
        else:
            self.pool = WorkerPool(self.store, config.weights, config.jobs, config.download, config.job_timeout)
        self.info: Dict[str, Any] = {}

    def start(self) -> Dict[str, int]:
        """Recover the previous server's jobs and start the workers; returns the recovery counts."""
        counts = self.store.recover()
        self.info = self.pool.start()
        return counts

    def weight_names(self) -> set:
        return {w["name"] for w in self.info.get("weights", [])}

    def close(self) -> None:
        self.pool.close()


@contextlib.contextmanager
def running_service(config: ServeConfig) -> Iterator[Service]:
    """Lock the data folder, start a `Service` (jobs recovered, workers ready), and close it at the
    end (the workers are stopped, the lock released). Raises `LrnetError` when the folder is locked
    by another server or the workers cannot load the weights."""
    with output_lock(config.data_dir, "serve"):
        service = Service(config)
        try:
            service.start()
            yield service
        finally:
            service.close()
