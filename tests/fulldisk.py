"""A real full disk for tests, and a file-size limit as the fallback.

Any test module can use it (pytest puts ``tests/`` on ``sys.path``, there is no ``__init__.py``)::

    from fulldisk import file_size_limit, full_disk_dir, read_only_dir

    def test_x(tmp_path):
        with full_disk_dir(tmp_path) as full:          # skips the test when mounting is not permitted
            proc = subprocess.run([... , str(full / "out")], ...)

    # where mounting is not possible: every write past 4 KiB fails with EFBIG in the child
    subprocess.run(cmd, preexec_fn=file_size_limit(4096))

`full_disk_dir` mounts a tiny tmpfs (needs root and a mount namespace that allows it; the test is
skipped with the reason otherwise), fills it to the last byte with a hidden filler file (``free``
bytes can be left, rounded to pages), yields the folder and unmounts it afterwards. Creating an
empty file still works there (inodes are free); writing one byte of data fails with ENOSPC, as on a
real full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

__all__ = ["FILLER", "file_size_limit", "full_disk_dir", "mount_unavailable", "read_only_dir"]

FILLER = ".filler"


def mount_unavailable(base: Path) -> "str | None":
    """Why a tmpfs cannot be mounted here (None when it can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = base / ".mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return f"mount -t tmpfs is not permitted here: {proc.stderr.strip() or proc.returncode}"
    subprocess.run(["umount", str(probe)], capture_output=True, timeout=10)
    probe.rmdir()
    return None


def _fill(folder: Path, free: int) -> None:
    chunk = b"\0" * 65536
    filler = folder / FILLER
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    # a partial chunk may still fit: fill byte by byte-ish until nothing fits
    with open(filler, "ab", buffering=0) as fh:
        for size in (4096, 512, 1):
            with contextlib.suppress(OSError):
                while fh.write(b"\0" * size):
                    pass
    if free:
        os.truncate(filler, max(0, filler.stat().st_size - free))


@contextlib.contextmanager
def _tmpfs(base: Path, name: str, options: str) -> Iterator[Path]:
    """Mount a tmpfs with `options` at ``base/name``, yield it, unmount (lazily if busy). Skips the
    calling test when mounting is not permitted."""
    base = Path(base)
    reason = mount_unavailable(base)
    if reason:
        pytest.skip(reason)
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, capture_output=True,
                   timeout=10)
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10)


@contextlib.contextmanager
def full_disk_dir(base: Path, size: str = "256k", free: int = 0, name: str = "full") -> Iterator[Path]:
    """Mount a tmpfs of `size` at ``base/name``, fill it (leaving about `free` bytes), yield it."""
    with _tmpfs(base, name, f"size={size},mode=1777") as folder:
        _fill(folder, free)
        yield folder


@contextlib.contextmanager
def read_only_dir(base: Path, name: str = "readonly") -> Iterator[Path]:
    """Mount an empty read-only tmpfs at ``base/name`` (root ignores file permissions, so a
    read-only file system is the way to refuse a write here)."""
    with _tmpfs(base, name, "size=64k,ro") as folder:
        yield folder


def file_size_limit(nbytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` for `subprocess`: files the child writes cannot grow past `nbytes`; the write
    that would fails with EFBIG (SIGXFSZ, which would kill the child, is ignored)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit
