"""One writer per output: an exclusive OS file lock on an output folder.

`output_lock(folder, command)` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``folder/.lrnet.lock``
and writes who holds it (command, pid, host, start time) into that file. The kernel releases the
lock when the holder exits for any reason, kill -9 included, so a stale lock file never blocks a
later run; a second writer is stopped with an `LrnetError` naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import LrnetError
from .vocab import PathLike

__all__ = ["LOCK_NAME", "output_lock"]

LOCK_NAME = ".lrnet.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another lrnet process"
    if not info:
        return "another lrnet process"
    return (f"`lrnet {info.get('command', '?')}` (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"since {info.get('since', '?')})")


@contextlib.contextmanager
def output_lock(folder: PathLike, command: str) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if needed) for the duration of the block.

    Raises `LrnetError` at once, without waiting, when another process holds it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LrnetError(f"{folder}: cannot create the output folder's lock ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LrnetError(f"{folder}: in use by {_holder(path)}; wait for it to finish or choose another "
                             "output") from None
        info = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        with contextlib.suppress(OSError):  # the holder's name is a courtesy: a full disk must not stop the job here
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
