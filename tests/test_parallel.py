"""Process pools that stop (lrnet.parallel): order of results, Ctrl-C, kill -9 of the parent, and no
output published by a worker whose parent is gone. Real processes and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers_jobs import all_gone, descendants, kill_survivors, lrnet_env, wait_for
from lrnet.parallel import map_in_processes, parent_alive, require_parent, worker_pool


def _square(x: int) -> int:
    return x * x


def _worker_state(_: int) -> tuple:
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN, parent_alive(), os.getpid()


def test_results_come_back_in_order_from_a_pool():
    assert list(map_in_processes(_square, list(range(50)), 2, min_items=1, chunks_per_worker=2, max_chunk=4)) == \
        [x * x for x in range(50)]


def test_workers_ignore_ctrl_c_and_see_their_parent():
    with worker_pool(2) as pool:
        states = list(pool.map(_worker_state, range(4)))
    assert all(ignored and alive and pid != os.getpid() for ignored, alive, pid in states)
    assert parent_alive()
    require_parent()  # outside a pool worker it never raises


def test_a_worker_whose_parent_is_gone_publishes_nothing(tmp_path, monkeypatch):
    import lrnet.parallel as parallel
    from lrnet.atomic import atomic_path

    monkeypatch.setattr(parallel, "_parent_pid", os.getppid() + 1_000_000)  # as seen by an orphaned worker
    assert not parent_alive()
    with pytest.raises(parallel.ParentGone):
        with atomic_path(tmp_path / "result.txt") as tmp:
            tmp.write_text("computed for nobody")
            require_parent()
    assert list(tmp_path.iterdir()) == []


def test_leaving_the_pool_early_ends_its_workers():
    pytest.importorskip("psutil")
    before = {p.pid for p in descendants(os.getpid())}
    with pytest.raises(KeyError):
        with worker_pool(2) as pool:
            pool.submit(_square, 2).result()
            raise KeyError("the caller failed")
    wait_for(lambda: not ({p.pid for p in descendants(os.getpid())} - before), 5, "the workers to end")


SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lrnet.atomic import atomic_path
    from lrnet.parallel import map_in_processes, require_parent

    OUT = Path(sys.argv[1])

    def slow(i):
        Path(OUT, f"started-{i}").touch()
        time.sleep(3)
        with atomic_path(OUT / f"result-{i}") as tmp:
            tmp.write_text("done")
            require_parent()
        return i

    if __name__ == "__main__":
        for _ in map_in_processes(slow, list(range(8)), 2, min_items=1, chunks_per_worker=1, max_chunk=1):
            pass
""")


def _start(tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path)], stderr=subprocess.PIPE, text=True,
                            env=lrnet_env(), start_new_session=True)


def _workers_busy(tmp_path: Path, proc: subprocess.Popen) -> list:
    """Wait until both workers run a task; their processes."""
    wait_for(lambda: len(list(tmp_path.glob("started-*"))) >= 2, 30, "both workers to start a task")
    return descendants(proc.pid)


@pytest.mark.misuse
def test_ctrl_c_stops_the_pool_at_once(tmp_path):
    pytest.importorskip("psutil")
    proc = _start(tmp_path)
    workers = []
    try:
        workers = _workers_busy(tmp_path, proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode != 0 and "KeyboardInterrupt" in err  # a plain script: Python's own report
        assert err.count("KeyboardInterrupt") == 1, "a worker reported the Ctrl-C too"
        assert all_gone(workers, 5)
        assert not list(tmp_path.glob("result-*")), "queued work ran after Ctrl-C"
    finally:
        kill_survivors([*workers, proc])


@pytest.mark.misuse
def test_kill_9_of_the_parent_ends_the_workers_before_they_publish(tmp_path):
    pytest.importorskip("psutil")
    proc = _start(tmp_path)
    workers = []
    try:
        workers = _workers_busy(tmp_path, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert all_gone(workers, 5), "workers outlived their parent"
        time.sleep(3.5)  # past the moment the tasks would have written their results
        assert not list(tmp_path.glob("result-*")) and not list(tmp_path.glob(".result-*"))
    finally:
        kill_survivors([*workers, proc])
