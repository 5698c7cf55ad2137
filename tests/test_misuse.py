"""What lrnet promises under misuse: the list, and the tests of the cross-command promises.

Every test that encodes one of these promises is marked ``@pytest.mark.misuse`` and named after
it (``test_<promise>_<case>``); ``pytest -m misuse`` runs them all, here and in the module test
files of the commands that own them. Tests run the real thing: ``python -m lrnet`` subprocesses
with short timeouts, real signals, real pipes, a real full disk (a tiny tmpfs filled up, see
tests/fulldisk.py; skipped with the reason where mounting is not permitted).

1. **Worker pools stop** (``worker_pools_stop``): Ctrl-C, SIGTERM or a failing worker ends every
   worker process within seconds; no orphan keeps running. Here: SIGTERM/SIGINT/SIGHUP end a
   command cleanly; pools: test_extract.py, test_synthetic.py.
2. **Never overwrite what the user did not ask to** (``never_overwrite``): an output is never an
   input (`lrnet.atomic.ensure_not_input`), a finished output needs ``--overwrite``/``--resume``, a
   failed write leaves the old file. Here and test_atomic.py; per command: test_train.py,
   test_detect.py, test_extract.py.
3. **One writer per output** (``one_writer``): a second process writing the same output folder is
   stopped naming the holder (`lrnet.locks.output_lock`): test_train.py, test_extract.py.
4. **Resume does not change the run** (``resume``): a killed and resumed job ends with what an
   uninterrupted one writes: test_train.py, test_extract.py.
5. **Derived data never takes a run down** (``derived_data``): a damaged cache is rebuilt, never
   used: test_datasets.py.
6. **Non-finite numbers are rejected** (``non_finite``): NaN, Inf and values that overflow float32
   (1e39, 3.5e38) in landmark files stop with file, line and column. Here and test_landmarks.py.
7. **Bounded memory on absurd input** (``bounded_memory``): a landmark file over 2 GiB is refused
   before it is read; others are parsed in 16 MiB chunks and refused past 1,000,000 frames, at a
   NUL byte (binary) or at a line over 1 MiB; ``/dev/zero`` and a FIFO without a writer do not hang.
8. **Every write failure is one line** (``write_failure``): a full disk, a read-only file system,
   a file-size limit, a file where a folder should be, a name too long: ``lrnet CMD: error: FILE:
   reason``, exit 2, no partial file, no temporary. Here and test_atomic.py.
9. **Exit codes mean what the README says** (``exit_codes``): 0 ok; 1 some inputs failed; 2 user
   error (bad flag at parse time, missing/malformed file, refused write, out of memory); 130 Ctrl-C;
   143 SIGTERM; 129 SIGHUP; 141 stdout closed by its reader (quiet). Genuine bugs keep their
   traceback. Here and test_cli.py.
10. **One line means one line** (``one_line``): every error is exactly one line on stderr, control
    characters in file names or messages escaped; no "Exception ignored" after a broken pipe.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fulldisk import file_size_limit, full_disk_dir, read_only_dir
from lrnet.atomic import TEMP_GLOBS
from lrnet.errors import LrnetError
from lrnet.landmarks import FEATURE_SIZE, read_landmarks, write_landmarks

SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT = 90

pytestmark = pytest.mark.misuse


# ------------------------------------------------------------------------------------------ helpers
def lrnet(*args, cwd=None, stdout=subprocess.PIPE, preexec_fn=None, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python -m lrnet ARGS`` with this checkout's sources."""
    return subprocess.run([sys.executable, "-m", "lrnet", *map(str, args)], cwd=cwd, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, env=_env(), preexec_fn=preexec_fn)


def _env():
    return {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "default"}


def assert_one_line_error(proc, code: int, command: str, *needles: str) -> str:
    """Exit `code`, exactly one line on stderr, ``lrnet COMMAND: error: ...``, no traceback."""
    lines = error_lines(proc.stderr)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"lrnet {command}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def error_lines(stderr: str):
    """stderr without progress bars (tqdm's ``\r``-separated updates and blank clears)."""
    pieces = [piece for line in stderr.split("\n") for piece in line.split("\r")]
    return [p for p in pieces if p.strip() and "%|" not in p]


def temporaries(folder: Path):
    return [p for pattern in TEMP_GLOBS for p in Path(folder).rglob(pattern)]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """A weights folder in the official layout (g1.pth, g2.pth), randomly initialised."""
    torch = pytest.importorskip("torch")
    from lrnet.model import ModelConfig, build_model

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for branch in ("g1", "g2"):
        torch.save(build_model(ModelConfig()).state_dict(), folder / f"{branch}.pth")
    return folder


@pytest.fixture(scope="module")
def landmark_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("landmarks")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_landmarks(folder / f"v{i}.txt", rng.uniform(-1, 1, size=(100, FEATURE_SIZE)))
    return folder


@pytest.fixture(scope="module")
def many_blocks_dir(tmp_path_factory) -> Path:
    """With ``--json --blocks --block-size 2`` about 180 KB of output: more than a pipe holds (64 KB)."""
    folder = tmp_path_factory.mktemp("long")
    frames = np.random.default_rng(1).uniform(-1, 1, size=(3000, FEATURE_SIZE))
    for i in range(4):
        write_landmarks(folder / f"long{i}.txt", frames)
    return folder


def _wait_until_open(proc: subprocess.Popen, path: Path, timeout: float = 60) -> None:
    """Wait until `proc` has `path` open (it is then blocked reading it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        try:
            if any(os.readlink(fd_dir / fd) == str(path) for fd in os.listdir(fd_dir)):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} was never opened")


# ------------------------------------------------------------------ 1 + 9: signals end cleanly
@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated"),
                                              (signal.SIGHUP, 129, "hung up")])
def test_worker_pools_stop_signal_ends_command_cleanly(tmp_path, weights_dir, signum, code, word):
    """A command blocked on its input (a FIFO whose writer never writes) ends on the signal with
    its exit code and one line, through the same clean-up path as Ctrl-C."""
    fifo = tmp_path / "stuck.txt"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never writes
    try:
        proc = subprocess.Popen([sys.executable, "-m", "lrnet", "predict", str(fifo), "--weights", str(weights_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                preexec_fn=_default_stop_signals)
        _wait_until_open(proc, fifo)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(writer)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"lrnet predict: {word}"]


def _default_stop_signals() -> None:
    """In the child before exec: Ctrl-C, SIGTERM and SIGHUP at their defaults, whatever the test run
    inherited (under ``nohup`` SIGHUP is ignored, and lrnet then rightly keeps ignoring it)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


_TGKILL = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)
BYSTANDER = """
import sys, threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # a thread that takes signals
from lrnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(_TGKILL is None, reason="tgkill's system call number is known here for x86_64 and aarch64 only")
def test_worker_pools_stop_signal_sent_to_another_thread_still_ends_command(tmp_path, weights_dir):
    """The kernel may hand a process-wide signal to any thread that does not block it (torch, for
    one, starts a native thread), and Python runs the handler only when the main thread next
    returns to the interpreter. Sent to another thread on purpose (tgkill), SIGHUP must still end a
    command blocked reading a FIFO: its read wakes up every 0.2 s (a plain blocking read() would
    stay blocked forever)."""
    import ctypes

    fifo = tmp_path / "stuck.txt"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never writes
    try:
        proc = subprocess.Popen([sys.executable, "-c", BYSTANDER, "predict", str(fifo), "--weights", str(weights_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                preexec_fn=_default_stop_signals)
        _wait_until_open(proc, fifo)
        others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert others, "the bystander thread is missing"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(_TGKILL, proc.pid, others[0], signal.SIGHUP) == 0, os.strerror(ctypes.get_errno())
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(writer)
    assert proc.returncode == 129, err
    assert err.strip().splitlines() == ["lrnet predict: hung up"]


def test_worker_pools_stop_ignored_sighup_stays_ignored(tmp_path):
    """``nohup lrnet ...``: a SIGHUP that was ignored when lrnet started stays ignored."""
    script = textwrap.dedent("""
        import os, signal, sys
        from lrnet.cli import _stop_signals_as_interrupt
        with _stop_signals_as_interrupt():
            os.kill(os.getpid(), signal.SIGHUP)
            print("still running", signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)
        print("restored", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT,
                          env=_env(), preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert proc.stdout.split() == ["still", "running", "True", "restored", "True"], proc.stderr


# ------------------------------------------------------------------ 9 + 10: pipes, bugs, memory
def test_exit_codes_broken_pipe_head_is_quiet(many_blocks_dir, weights_dir):
    """``lrnet predict ... --json --blocks | head -1``: the first line arrives, lrnet exits 141
    (as a tool killed by SIGPIPE) without a word on stderr."""
    script = (f'set -o pipefail; "{sys.executable}" -m lrnet predict "{many_blocks_dir}" --weights "{weights_dir}" '
              '--json --blocks --block-size 2 2>err.txt | head -1 > first.txt; echo "$?"')
    proc = subprocess.run(["bash", "-c", script], cwd=many_blocks_dir.parent, capture_output=True, text=True,
                          timeout=TIMEOUT, env=_env())
    assert proc.stdout.strip() == "141"
    assert (many_blocks_dir.parent / "first.txt").read_text().startswith('{"video": ')
    assert (many_blocks_dir.parent / "err.txt").read_text() == ""


def test_exit_codes_reader_gone_before_first_write(landmark_dir, weights_dir):
    proc = subprocess.Popen([sys.executable, "-m", "lrnet", "predict", str(landmark_dir), "--weights",
                             str(weights_dir), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=TIMEOUT) == 141 and err == ""


def _run_broken_command(body: str) -> subprocess.CompletedProcess:
    """Run `main` with the predict handler replaced by `body` (a stand-in for a bug or a failure
    deep inside a command)."""
    script = textwrap.dedent(f"""
        import sys
        import lrnet.cli.predict as predict
        def run(args):
        {textwrap.indent(textwrap.dedent(body), '    ')}
        predict.run = run
        from lrnet.cli import main
        sys.exit(main(["predict", "x.txt"]))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT, env=_env())


@pytest.mark.parametrize("body,exc_name", [("return 1 / 0", "ZeroDivisionError"),
                                           ("raise OSError(9, 'Bad file descriptor')", "OSError"),
                                           ("raise RuntimeError('index out of range in self')", "RuntimeError")])
def test_exit_codes_genuine_bug_keeps_traceback(body, exc_name):
    proc = _run_broken_command(body)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and exc_name in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("body,needle", [
    ("raise MemoryError()", "lrnet predict: error: out of memory"),
    ("raise MemoryError('Unable to allocate 23.3 GiB for an array')", "out of memory: Unable to allocate 23.3 GiB"),
    ("raise RuntimeError(\"DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes\")",
     "out of memory"),
    ("raise OSError(28, 'No space left on device')", "lrnet predict: error: No space left on device"),
    ("raise PermissionError(13, 'Permission denied', '/root/x.txt')", "error: /root/x.txt: Permission denied"),
    ("raise OSError(18, 'Invalid cross-device link', 'a', None, 'b')", "error: a -> b: Invalid cross-device link"),
    ("import lrnet.errors; raise lrnet.errors.LrnetValueError('block size must be at least 2')",
     "error: block size must be at least 2"),
])
def test_one_line_for_user_caused_failures(body, needle):
    proc = _run_broken_command(body)
    assert_one_line_error(proc, 2, "predict", needle)


def test_one_line_escapes_control_characters_in_file_names(tmp_path, weights_dir):
    name = tmp_path / "bad\nname\r.txt"
    proc = lrnet("predict", name, "--weights", weights_dir)  # does not exist
    line = assert_one_line_error(proc, 2, "predict", "bad\\nname\\r.txt", "no such file")
    assert "\r" not in line
    name.write_text("1 2 3\n")
    proc = lrnet("predict", name, "--weights", weights_dir)  # exists, malformed: exit 1, one line per file
    assert proc.returncode == 1
    assert [ln for ln in proc.stderr.splitlines() if "error" in ln] == proc.stderr.splitlines()
    assert "bad\\nname\\r.txt: line 1: expected 136 values" in proc.stderr


def test_one_line_non_utf8_file_name_is_printed(tmp_path, landmark_dir, weights_dir):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff.txt"
    with open(raw, "wb") as fh:
        fh.write((landmark_dir / "v0.txt").read_bytes())
    proc = subprocess.run([sys.executable.encode(), b"-m", b"lrnet", b"predict", raw, b"--weights",
                           os.fsencode(weights_dir)], capture_output=True, timeout=TIMEOUT, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert b"caf\xe9 \xff.txt" in proc.stdout  # the name's own bytes, as ls prints them


# ------------------------------------------------------------------ 8: every write failure is one line
def test_write_failure_predict_stdout_to_full_disk(tmp_path, landmark_dir, weights_dir):
    with full_disk_dir(tmp_path) as full:
        with open(full / "out.json", "w") as out:
            proc = lrnet("predict", landmark_dir, "--weights", weights_dir, "--json", stdout=out)
        assert_one_line_error(proc, 2, "predict", "standard output: No space left on device")


def test_write_failure_predict_stdout_file_size_limit(tmp_path, landmark_dir, weights_dir):
    """Fallback without mounting: RLIMIT_FSIZE makes the write to stdout fail with EFBIG."""
    with open(tmp_path / "out.json", "w") as out:
        proc = lrnet("predict", landmark_dir, "--weights", weights_dir, "--json", stdout=out,
                     preexec_fn=file_size_limit(100))
    assert_one_line_error(proc, 2, "predict", "standard output: File too large")


def test_write_failure_generate_into_full_disk(tmp_path):
    with full_disk_dir(tmp_path) as full:
        proc = lrnet("generate", full / "ds", "--videos", "6", "--frames", "40", "60", "--workers", "1")
        line = assert_one_line_error(proc, 2, "generate", str(full / "ds"), "No space left on device")
        assert proc.stderr == line + "\n"  # stderr is a pipe: no progress bar, no blank clears
        assert temporaries(full) == []
        assert [p for p in (full / "ds").rglob("*.txt") if p.stat().st_size == 0] == []


def test_write_failure_generate_into_read_only_file_system(tmp_path):
    with read_only_dir(tmp_path) as ro:
        proc = lrnet("generate", ro / "ds", "--videos", "6", "--frames", "40", "60")
        assert_one_line_error(proc, 2, "generate", str(ro / "ds"), "Read-only file system")


def test_write_failure_name_too_long(tmp_path):
    proc = lrnet("generate", tmp_path / ("x" * 300), "--videos", "6", "--frames", "40", "60")
    assert_one_line_error(proc, 2, "generate", "File name too long")


def test_write_failure_write_landmarks_full_disk_leaves_nothing(tmp_path):
    frames = np.random.default_rng(0).uniform(-1, 1, size=(200, FEATURE_SIZE))
    with full_disk_dir(tmp_path) as full:
        with pytest.raises(OSError) as err:
            write_landmarks(full / "v.txt", frames)
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(full / "v.txt")
        assert sorted(p.name for p in full.iterdir()) == [".filler"]


def test_write_failure_write_landmarks_replacing_keeps_old(tmp_path):
    frames = np.random.default_rng(0).uniform(-1, 1, size=(200, FEATURE_SIZE))
    with full_disk_dir(tmp_path, size="256k", free=0) as full:
        old = full / "v.txt"
        with open(full / ".filler", "r+b") as fh:  # make room for the old file only
            fh.truncate(max(0, os.fstat(fh.fileno()).st_size - 8192))
        old.write_text("old landmarks")
        with pytest.raises(OSError) as err:
            write_landmarks(old, frames)
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(old)
        assert old.read_text() == "old landmarks" and temporaries(full) == []


@pytest.mark.reference
def test_write_failure_convert_weights_into_full_disk(tmp_path, reference):
    tf = reference / "weights" / "tf_df_c23"
    with full_disk_dir(tmp_path) as full:
        proc = lrnet("convert-weights", tf / "g1.h5", tf / "g2.h5", "--out", full / "converted")
        assert_one_line_error(proc, 2, "convert-weights", str(full / "converted" / "g1.pth"),
                              "No space left on device")
        assert temporaries(full) == [] and list((full / "converted").iterdir()) == []


@pytest.mark.reference
def test_write_failure_convert_weights_out_is_under_a_file(tmp_path, reference):
    tf = reference / "weights" / "tf_df_c23"
    (tmp_path / "file").write_text("x")
    proc = lrnet("convert-weights", tf / "g1.h5", tf / "g2.h5", "--out", tmp_path / "file" / "a" / "b")
    assert_one_line_error(proc, 2, "convert-weights", f"{tmp_path / 'file'}: Not a directory")


# ------------------------------------------------------------------ 2 + 9: convert-weights misuse
@pytest.mark.reference
@pytest.mark.parametrize("args,needle", [
    (["{tf}/g1.h5", "{tf}/g1.h5", "--out", "{tmp}/c"], "the same file given for both branches"),
    (["{tf}/g1.h5", "{tf}/g2.h5", "--out", ""], "argument --out: an empty path"),
    (["{tf}/g1.h5", "{tf}/g2.h5"], "the following arguments are required: --out"),
    (["{tmp}/missing.h5", "{tf}/g2.h5", "--out", "{tmp}/c"], "missing.h5: Keras weight file not found"),
    (["{tmp}", "{tf}/g2.h5", "--out", "{tmp}/c"], "Keras weight file not found"),
    (["{tmp}/text.h5", "{tf}/g2.h5", "--out", "{tmp}/c"], "text.h5: not an HDF5 file"),
    (["{tf}/g1.h5", "{tf}/g2.h5", "--out", "{tmp}/text.h5"], "text.h5: exists and is not a folder"),
])
def test_exit_codes_convert_weights_careless_arguments(tmp_path, reference, args, needle):
    (tmp_path / "text.h5").write_text("not hdf5")
    args = [a.format(tf=reference / "weights" / "tf_df_c23", tmp=tmp_path) for a in args]
    proc = lrnet("convert-weights", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "c").exists()


@pytest.mark.reference
def test_never_overwrite_convert_weights_into_a_folder_with_spaces_and_unicode(tmp_path, reference):
    tf = reference / "weights" / "tf_df_c23"
    out = tmp_path / "conv é d"
    proc = lrnet("convert-weights", tf / "g1.h5", tf / "g2.h5", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["g1.pth", "g2.pth", "lrnet.json"]


# ------------------------------------------------------------------ 6: non-finite numbers
def test_non_finite_predict_reports_file_line_column(tmp_path, weights_dir):
    """A value that overflows float32 is an error naming file, line and column (more spellings
    and parse paths: test_landmarks.py)."""
    path = tmp_path / "v.txt"
    good = " ".join(["0.10000"] * FEATURE_SIZE)
    path.write_text("\n".join([good] * 40 + [" ".join(["0.10000"] * 7 + ["3.5e38"] + ["0.10000"] * 128)]) + "\n")
    proc = lrnet("predict", path, "--weights", weights_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    assert f"{path}: line 41, column 8: non-finite value '3.5e38'" in proc.stderr


# ------------------------------------------------------------------ 7: bounded memory
def _read_in_child(path: str, extra: str = "") -> "tuple[str, float]":
    """Read `path` with read_landmarks in a fresh process; (error message, peak RSS in MB)."""
    script = textwrap.dedent(f"""
        import resource, sys
        from lrnet.errors import LrnetError
        from lrnet import landmarks
        {extra}
        try:
            landmarks.read_landmarks({path!r})
            message = "read"
        except LrnetError as exc:
            message = str(exc)
        print(message)
        # VmHWM: this process image's peak RSS. (getrusage's ru_maxrss survives exec on Linux, so it
        # would report the forking pytest process's size, not the child's.)
        hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
        print(int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    message, rss = proc.stdout.splitlines()
    return message, float(rss)


def test_bounded_memory_huge_sparse_file_refused_before_reading(tmp_path):
    big = tmp_path / "huge.txt"
    with open(big, "wb") as fh:
        fh.truncate(3 * 1024 ** 3)  # sparse: no disk used
    message, rss = _read_in_child(str(big))
    assert "3.0 GiB is too large for a landmark file" in message
    assert rss < 1024


def test_bounded_memory_binary_file_under_the_limit_read_in_chunks(tmp_path):
    mid = tmp_path / "mid.txt"
    with open(mid, "wb") as fh:
        fh.write(b"0.10000 " * 100)  # text first, then a sparse hole of NUL bytes
        fh.truncate(300 * 1024 ** 2)
    message, rss = _read_in_child(str(mid))
    assert "NUL byte at offset 800: binary content" in message
    assert rss < 1024


def test_bounded_memory_long_file_refused_past_the_frame_limit(tmp_path):
    """The frame limit, lowered to 1000 so that the file stays small: refused while streaming."""
    path = tmp_path / "long.txt"
    write_landmarks(path, np.zeros((3000, FEATURE_SIZE)))
    message, rss = _read_in_child(str(path), "landmarks.CHUNK_BYTES = 65536; "
                                             "landmarks.read_landmarks.__defaults__ = (1000,)")
    assert message == f"{path}: more than 1000 frames (the limit for one landmark file); split the video"


def test_bounded_memory_line_without_end(tmp_path):
    path = tmp_path / "oneline.txt"
    path.write_bytes(b"1" * (3 * 1024 * 1024))
    with pytest.raises(LrnetError, match="line 1 is longer than 1048576 bytes"):
        read_landmarks(path)


@pytest.mark.parametrize("device,needle", [("/dev/zero", "NUL byte at offset 0"), ("/dev/null", "empty landmark file")])
def test_bounded_memory_devices_do_not_hang(device, needle):
    message, rss = _read_in_child(device)
    assert needle in message and rss < 1024


def test_bounded_memory_fifo_without_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "f.txt"
    os.mkfifo(fifo)
    message, _ = _read_in_child(str(fifo))
    assert "empty landmark file" in message


def test_bounded_memory_predict_on_dev_zero(weights_dir):
    proc = lrnet("predict", "/dev/zero", "--weights", weights_dir)
    assert proc.returncode == 1 and "/dev/zero: NUL byte at offset 0" in proc.stderr


def test_bounded_memory_current_process_unaffected():
    """The RSS figures above are per child: this process never read the big files."""
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 < 4096


# ------------------------------------------------------------- numeric flags at parse time (issue 10)
@pytest.mark.parametrize("command,args,flag", [
    ("generate", ["ROOT", "--workers", "-1"], "--workers"),
    ("generate", ["ROOT", "--seed", "-1"], "--seed"),
    ("generate", ["ROOT", "--seed", "4294967296"], "--seed"),
    ("generate", ["ROOT", "--videos", "99999999999"], "--videos"),
    ("generate", ["ROOT", "--videos", "2"], "--videos"),
    ("generate", ["ROOT", "--frames", "40", "99999999999"], "--frames"),
    ("generate", ["ROOT", "--difficulty", "inf"], "--difficulty"),
    ("demo", ["--seed", "-1"], "--seed"),
    ("demo", ["--epochs", "0"], "--epochs"),
    ("demo", ["--videos", "99999999999"], "--videos"),
    ("train", ["--lr", "inf"], "--lr"),
    ("train", ["--seed", "-1"], "--seed"),
    ("train", ["--batch-size", "0"], "--batch-size"),
    ("train", ["--block-size", "1"], "--block-size"),
    ("train", ["--patience", "0"], "--patience"),
    ("train", ["--threads", "99999999"], "--threads"),
    ("evaluate", ["--batch-size", "99999999999"], "--batch-size"),
    ("evaluate", ["--threads", "0"], "--threads"),
    ("dataset check", ["ROOT", "--block-size", "1"], "--block-size"),
    ("dataset check", ["ROOT", "--workers", "-1"], "--workers"),
    ("robustness", ["--seed", "-1"], "--seed"),
    ("robustness", ["--crf", "52"], "--crf"),
    ("compress", ["IN", "OUT", "--crf", "52"], "--crf"),
    ("extract", ["IN", "OUT", "--workers", "0"], "--workers"),
])
def test_exit_codes_numeric_flags_refused_at_parse_time(tmp_path, command, args, flag):
    args = [str(tmp_path / a) if a in ("ROOT", "IN", "OUT") else a for a in args]
    proc = lrnet(*command.split(), *args)
    assert_one_line_error(proc, 2, command, "argument ", f"{flag}: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setting", [["--set", "LEARNING_RATE_g1=inf"], ["--set", "lr_g2=.nan"],
                                     ["--set", "BATCH_SIZE=.inf"], ["--config", "CONFIG"]])
def test_exit_codes_train_non_finite_settings_refused(tmp_path, setting):
    """``--lr`` refuses inf at parse time; the same value through --set or YAML stops in the config check."""
    (tmp_path / "c.yaml").write_text("LEARNING_RATE_g2: .inf\n")
    setting = [str(tmp_path / "c.yaml") if a == "CONFIG" else a for a in setting]
    proc = lrnet("train", "--root", tmp_path / "none", "-o", tmp_path / "run", *setting)
    assert_one_line_error(proc, 2, "train", "must be")
    assert not (tmp_path / "run").exists()


def test_never_overwrite_train_output_that_is_a_file(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me\n")
    proc = lrnet("train", "--root", tmp_path, "-o", afile)
    assert_one_line_error(proc, 2, "train", f"{afile}: exists and is not a folder")
    assert afile.read_text() == "keep me\n"


# ---------------------------------------------------- detect output names, checked before any work
@pytest.mark.parametrize("videos,flag,value,needle", [
    (1, "--plot", "out.xyz", "--plot writes"),
    (1, "--plot", "out", "got a name without one"),
    (1, "--visualize", "out.xyz", "--visualize writes mp4, avi, mkv"),
    (2, "--save-landmarks", "one.txt", "looks like a file extension"),
    (2, "--visualize", "clip.mp4", "looks like a file extension"),
])
def test_exit_codes_detect_output_names_refused_before_work(tmp_path, videos, flag, value, needle):
    """A bad output name stops before weights are loaded or a frame is read (the videos here are not
    even videos), and nothing is created (no folder named one.txt)."""
    inputs = []
    for i in range(videos):
        inputs.append(tmp_path / f"v{i}.mp4")
        inputs[-1].write_bytes(b"not a video")
    proc = lrnet("detect", *inputs, flag, tmp_path / value, "--offline")
    assert_one_line_error(proc, 2, "detect", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in inputs)


# --------------------------------------------------------------- console output of long jobs
LONG_JOBS = (["train"], ["demo"], ["extract"], ["compress"], ["generate"], ["robustness"], ["evaluate"],
             ["dataset", "check"])


@pytest.mark.parametrize("command", LONG_JOBS, ids=" ".join)
def test_exit_codes_quiet_and_verbose_on_every_long_job(tmp_path, command):
    """``-q`` and ``-v`` exist on every long job and exclude each other (a usage error, exit 2)."""
    positional = {"extract": ["IN", "OUT"], "compress": ["IN", "OUT"], "generate": ["ROOT"], "check": ["ROOT"]}
    args = [str(tmp_path / a) for a in positional.get(command[-1], [])]
    proc = lrnet(*command, *args, "-q", "-v")
    assert_one_line_error(proc, 2, " ".join(command), "not allowed with argument")


def test_one_line_generate_into_a_pipe_shows_no_progress_bar(tmp_path):
    """stderr is not a terminal: no progress bar or its clearing lines, even with a worker pool."""
    proc = lrnet("generate", tmp_path / "ds", "--videos", "6", "--frames", "40", "60", "-j", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "wrote" in proc.stdout


# ------------------------------------------------------- duplicates and leakage warned about before use
def _tiny_ffpp(root: Path) -> Path:
    """Origin + DF at raw, 40 frames per file, and one DF file a byte copy of an Origin file."""
    rng = np.random.default_rng(7)
    for split, ids in {"train": ["000", "001"], "val": ["002", "003"], "test": ["004", "005"]}.items():
        for vid in ids:
            write_landmarks(root / "Origin" / "raw" / split / f"{vid}.txt", rng.uniform(-0.5, 0.5, (40, FEATURE_SIZE)))
            write_landmarks(root / "DF" / "raw" / split / f"{vid}_{int(vid) + 100:03d}.txt",
                            rng.uniform(-0.5, 0.5, (40, FEATURE_SIZE)))
    copy = root / "DF" / "raw" / "test" / "005_105.txt"
    copy.write_bytes((root / "Origin" / "raw" / "test" / "004.txt").read_bytes())
    return root


def test_exit_codes_train_and_evaluate_warn_about_duplicated_files(tmp_path):
    root = _tiny_ffpp(tmp_path / "ds")
    run = tmp_path / "run"
    train = lrnet("train", "--root", root, "-d", "DF", "-l", "raw", "-o", run, "--epochs", "1", "--batch-size", "4",
                  "--fps", "30", "--seed", "0")
    assert train.returncode == 0, train.stderr
    warnings = [line for line in train.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, train.stderr
    assert warnings[0].startswith("lrnet train: warning: dataset DF/raw: 1 landmark files are byte-identical")
    evaluate = lrnet("evaluate", "--root", root, "-d", "DF", "-l", "raw", "--weights", run, "--output",
                     tmp_path / "eval")
    assert evaluate.returncode == 0, evaluate.stderr
    assert [line for line in evaluate.stderr.splitlines() if "warning" in line] == [
        warnings[0].replace("lrnet train:", "lrnet evaluate:")]
    quiet = lrnet("evaluate", "--root", root, "-d", "DF", "-l", "raw", "--weights", run, "--output",
                  tmp_path / "eval2", "-q")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
