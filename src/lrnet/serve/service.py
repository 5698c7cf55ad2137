"""The server's state in one object: settings, job store and worker pool, and how a server runs.

`Service` is created and started before the HTTP socket is bound, so a bad weights folder or a
data folder held by another server stops ``lrnet serve`` with one line, before anything listens.
`serve_forever` binds the socket (port 0: any free port), reports the URL through a callback and
runs uvicorn until a signal stops it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from ..locks import output_lock
from .store import JobStore
from .workers import WorkerPool

__all__ = ["ServeConfig", "Service", "default_data_dir", "is_loopback", "running_service"]

log = logging.getLogger(__name__)


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
    jobs: int = 1
    queue: int = 32
    max_upload_mb: float = 500.0
    max_seconds: float = 600.0
    keep_hours: float = 24.0
    job_timeout: float = 1800.0
    token: Optional[str] = None
    download: bool = True
    max_live: int = 2  # live (WebRTC) sessions at once, each with its own worker process

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Service:
    """Store + pool for one data folder (which the caller has locked)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.store = JobStore(config.data_dir, config.queue, config.keep_hours)
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
    """Lock the data folder, start a `Service`, and close it at the end."""
    with output_lock(config.data_dir, "serve"):
        service = Service(config)
        try:
            service.start()
            yield service
        finally:
            service.close()
