"""Helpers for the tests of lrnet's per-video jobs (batch, compress, cluster, parallel): small
videos, `lrnet` subprocesses in their own process group, and their child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_video(path: Path, frames: int, size=(160, 120), fps: float = 25.0, seed: int = 0) -> Path:
    """A video of random noise (no face anywhere), written with OpenCV's mp4v."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def lrnet_env(**extra: str) -> dict:
    """The environment for an `lrnet` subprocess that runs this checkout's code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def start_lrnet(args: List[str], **extra_env: str) -> subprocess.Popen:
    """``python -m lrnet ARGS`` in a new session (its own process group, as a shell job would be)."""
    return subprocess.Popen([sys.executable, "-m", "lrnet", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=lrnet_env(**extra_env), start_new_session=True, cwd=REPO)


def run_lrnet(args: List[str], timeout: float = 120, preexec_fn: Optional[Callable[[], None]] = None,
              **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrnet", *args], capture_output=True, text=True, timeout=timeout,
                          env=lrnet_env(**extra_env), cwd=REPO, preexec_fn=preexec_fn)


def descendants(pid: int) -> list:
    """Live descendant processes of `pid` (psutil objects)."""
    import psutil

    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.is_running()]
    except psutil.NoSuchProcess:
        return []


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.1):
    """Poll `predicate` until it returns something true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def all_gone(procs: list, timeout: float) -> bool:
    """True when every process in `procs` has exited (zombies count as gone) within `timeout`."""
    import psutil

    def gone() -> bool:
        return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)

    try:
        wait_for(gone, timeout, "processes to exit")
        return True
    except AssertionError:
        return False


def interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
    os.killpg(proc.pid, signal.SIGINT)


def kill_survivors(procs: list) -> None:
    """Clean-up after a failed test: SIGKILL the given processes (ours only) that still run."""
    for p in procs:
        try:
            p.kill()
        except Exception:  # noqa: BLE001 -- already gone
            pass
