"""Dask for lrnet's per-video jobs: scheduler specs, a client, one task per video with retries.

``--scheduler local:N`` starts a `distributed.LocalCluster` of N single-threaded worker processes
on this machine (scheduler and its HTTP status page on 127.0.0.1, free ports);
``--scheduler tcp://HOST:8786`` (any address `distributed.Client` accepts) uses a cluster the user
already runs (``dask scheduler`` / ``dask worker``). Nothing here schedules: tasks go out with
`Client.submit` and come back with `distributed.as_completed`; Dask re-runs a task whose worker died (up to the scheduler's
``distributed.scheduler.allowed-failures``) and one that raised (``retries``).

Workers must see the input and output paths under the same names (one shared file system) and
run the same lrnet version. Needs the ``cluster`` extra (``pip install 'lrnet[cluster]'``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, TypeVar

from .errors import LrnetError

T = TypeVar("T")

__all__ = ["LOCAL_PREFIX", "SchedulerSpec", "parse_scheduler", "dask_client", "run_on_dask"]

log = logging.getLogger(__name__)

LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT = "10s"
_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://)?[^\s/:]+(:\d+)?/?$")


@dataclass(frozen=True)
class SchedulerSpec:
    """Either ``local_workers`` (start a LocalCluster) or ``address`` (connect to a scheduler)."""

    local_workers: Optional[int] = None
    address: Optional[str] = None


def parse_scheduler(text: str) -> SchedulerSpec:
    """``"local:N"`` (N >= 1) or a scheduler address such as ``tcp://10.0.0.5:8786``; `ValueError` otherwise."""
    text = text.strip()
    if text.startswith(LOCAL_PREFIX):
        count = text[len(LOCAL_PREFIX):]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{text!r}: expected local:N with N >= 1 worker processes")
        return SchedulerSpec(local_workers=int(count))
    if not _ADDRESS.match(text):
        raise ValueError(f"{text!r}: expected local:N or a Dask scheduler address such as tcp://HOST:8786")
    return SchedulerSpec(address=text)


def _check_reachable(address: str) -> None:
    """Fail fast (one line) when a tcp:// scheduler refuses connections, instead of Dask's retry loop."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port or 8786), timeout=5):
            pass
    except OSError as exc:
        raise LrnetError(f"{address}: cannot reach the Dask scheduler ({exc.strerror or exc})") from None


def _distributed():
    try:
        import distributed
    except ImportError:
        raise LrnetError("--scheduler needs Dask: pip install 'lrnet[cluster]' (dask[distributed])") from None
    return distributed


@contextlib.contextmanager
def dask_client(scheduler: str, allowed_failures: int = 3) -> Iterator[Any]:
    """A `distributed.Client` for `scheduler` (see `parse_scheduler`), closed (with its LocalCluster) on exit.

    `allowed_failures`: for a LocalCluster, how many worker deaths one task may survive.
    """
    spec = parse_scheduler(scheduler)
    distributed = _distributed()
    import dask

    cluster = None
    try:
        if spec.local_workers is not None:
            with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
                cluster = distributed.LocalCluster(n_workers=spec.local_workers, threads_per_worker=1, processes=True,
                                                   host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                                   silence_logs=logging.ERROR)
            client = distributed.Client(cluster)
        else:
            _check_reachable(str(spec.address))
            try:
                client = distributed.Client(spec.address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise LrnetError(f"{spec.address}: cannot reach the Dask scheduler ({exc})") from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def run_on_dask(items: Sequence[T], fn: Callable[..., Any], arguments: Callable[[T], tuple], scheduler: str,
                retries: int) -> Iterator[Tuple[T, Any]]:
    """Yield ``(item, fn(*arguments(item)))`` as each item's task finishes on the cluster, or
    ``(item, exception)`` for a task that still raised after `retries` retries or whose worker died
    too often (``KilledWorker``). Leaving the generator early cancels the tasks not yet collected.
    """
    distributed = _distributed()
    with dask_client(scheduler, allowed_failures=max(1, retries + 1)) as client:
        futures = {client.submit(fn, *arguments(item), retries=retries, pure=False): item for item in items}
        log.info("%d tasks sent to %s", len(futures), scheduler)
        try:
            for future in distributed.as_completed(list(futures)):
                item = futures.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # raised after its retries, or KilledWorker
                    result = exc
                future.release()
                yield item, result
        finally:
            if futures:
                client.cancel(list(futures))
