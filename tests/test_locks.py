"""lrnet.locks: one writer per output folder, released whatever ends the holder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lrnet.errors import LrnetError
from lrnet.locks import LOCK_NAME, output_lock

HOLD = textwrap.dedent("""
    import sys, time
    from lrnet.locks import output_lock
    with output_lock(sys.argv[1], "extract"):
        print("locked", flush=True)
        time.sleep(60)
""")


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.misuse
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_a_second_writer_is_stopped_naming_the_holder_until_the_holder_dies(tmp_path, kill):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LrnetError) as err:
            with output_lock(tmp_path, "train"):
                pass
        message = str(err.value)
        assert f"in use by `lrnet extract` (pid {proc.pid}" in message and str(tmp_path) in message
    finally:
        proc.send_signal(kill)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while True:  # the kernel drops the lock with the process, even on kill -9: no stale marker blocks us
        try:
            with output_lock(tmp_path, "train") as path:
                assert json.loads(path.read_text())["command"] == "train"
            break
        except LrnetError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_the_lock_is_reentrant_across_runs_and_leaves_no_holder_behind(tmp_path):
    target = tmp_path / "new" / "folder"
    with output_lock(target, "generate") as path:
        assert path == target / LOCK_NAME and json.loads(path.read_text())["command"] == "generate"
    assert path.read_text() == ""  # released: the holder's name is cleared
    with output_lock(target, "generate"):
        pass


@pytest.mark.misuse
def test_a_folder_that_cannot_be_created_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LrnetError, match="cannot create the output folder's lock"):
        with output_lock(blocker / "sub", "extract"):
            pass
