"""The ``lrnet`` command line: one sub-command module per job, dispatched from `main`.

Each module in `COMMAND_MODULES` exposes ``register(subparsers)``, which adds its sub-command(s)
and sets ``func(args) -> int`` as the handler. Modules import torch and friends inside their
handlers, so ``lrnet --help`` stays fast.

`main` is where every failure a user can cause becomes ONE line on stderr (``lrnet CMD: error:
...``, control characters escaped) and an exit status; anything else is a bug and keeps its
traceback. Exit status:

- 0 success; 1 the job ran but some inputs failed (each reported on its own line);
- 2 a user error: bad flag, missing or malformed file (`LrnetError`), or the system refused what
  the user asked for (disk full, quota, read-only file system, permission denied, no such folder,
  name too long, file too large: ``FILE: strerror``), or out of memory;
- 130 interrupted (Ctrl-C); 143 terminated (SIGTERM), 129 hung up (SIGHUP): both end through the
  same clean-up as Ctrl-C (`lrnet.errors.Terminated` is a KeyboardInterrupt);
- 141 standard output was closed by its reader (``lrnet predict ... | head -1``): quiet, as a Unix
  tool killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import resource
import select
import signal
import stat
import sys
import threading
from typing import Iterator, List, Optional

from ..errors import LrnetError, Terminated, one_line

COMMAND_MODULES = ("demo", "predict", "weights", "convert", "evaluate", "generate", "detect", "watch", "extract",
                   "compress", "dataset", "train", "robustness", "serve")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141

# OSErrors that mean the system refused what the user asked for, not a bug in lrnet.
USER_OS_ERRORS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENAMETOOLONG,
    errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.EEXIST, errno.ELOOP, errno.EIO, errno.ENXIO,
    errno.ETXTBSY, errno.EMLINK, errno.ENOTEMPTY, errno.EXDEV,
})
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``lrnet CMD: error: ... (see lrnet CMD
    --help)``), exit 2. Sub-command parsers are of the same class (argparse uses the parent's)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, one_line(f"{self.prog}: error: {message} (see: {self.prog} --help)") + "\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(
        prog="lrnet",
        description="Landmark-based deepfake video detection (LRNet).",
    )
    parser.add_argument("--version", action="version", version=f"lrnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    _compact_help(parser)
    return parser


def _compact_help(parser: argparse.ArgumentParser) -> None:
    """Every (sub-)command's ``--help`` in the screen-sized layout of `CompactHelpFormatter`."""
    from .common import CompactHelpFormatter

    parser.formatter_class = CompactHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _compact_help(child)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``lrnet`` command; returns its exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _keep_raw_file_names(sys.stdout)
    with _stop_signals_as_interrupt():
        return _run(args, f"lrnet {args.command}")


def _run(args: argparse.Namespace, prefix: str) -> int:
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a full disk or a closed pipe on stdout is reported below
        return code
    except LrnetError as exc:
        return _fail(prefix, str(exc), EXIT_USAGE)
    except Terminated as exc:
        return _fail(prefix, "terminated" if exc.signum == signal.SIGTERM else "hung up", 128 + exc.signum)
    except KeyboardInterrupt:
        return _fail(prefix, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        if not _stdout_broken():
            raise
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except MemoryError as exc:
        return _fail(prefix, f"out of memory{': ' + str(exc) if str(exc) else ''} (is the input absurdly large?)",
                     EXIT_USAGE)
    except OSError as exc:
        if exc.errno not in USER_OS_ERRORS:
            raise
        return _fail(prefix, describe_os_error(exc), EXIT_USAGE)
    except RuntimeError as exc:
        if not _is_out_of_memory(exc):
            raise
        return _fail(prefix, f"out of memory: {str(exc).splitlines()[0] if str(exc) else ''}", EXIT_USAGE)


def describe_os_error(exc: OSError) -> str:
    """``FILE: strerror`` (``A -> B: strerror`` for a rename); a write to a full standard output
    has no file name and is named ``standard output``."""
    reason = exc.strerror or os.strerror(exc.errno or 0)
    if exc.filename is not None:
        name = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            name = f"{name} -> {os.fsdecode(exc.filename2)}"
        return f"{name}: {reason}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and _stdout_is_full():
        return f"standard output: {reason}"
    return reason


def _fail(prefix: str, message: str, code: int) -> int:
    if _stdout_fails():
        _silence_stdout()
    with contextlib.suppress(OSError, ValueError):
        print(one_line(f"{prefix}: error: {message}" if code == EXIT_USAGE else f"{prefix}: {message}"),
              file=sys.stderr, flush=True)
    return code


def _is_out_of_memory(exc: RuntimeError) -> bool:
    """torch reports a failed allocation as a RuntimeError (CPU) or torch.cuda.OutOfMemoryError."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text


# ---------------------------------------------------------------------------------------- stdout
def _keep_raw_file_names(stream) -> None:
    """Print file names that are not valid UTF-8 as their original bytes instead of failing."""
    if hasattr(stream, "reconfigure") and str(getattr(stream, "encoding", "")).lower().replace("-", "") == "utf8":
        with contextlib.suppress(Exception):
            stream.reconfigure(errors="surrogateescape")


def _stdout_fails() -> bool:
    """True when flushing standard output raises (a full disk, a closed pipe)."""
    try:
        sys.stdout.flush()
    except OSError:
        return True
    except ValueError:  # closed
        return False
    return _stdout_broken()


def _stdout_is_full() -> bool:
    """True when standard output is a file on a full file system or at the file-size limit (a
    failed flush does not keep its data, so asking the stream again proves nothing)."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe or a terminal is never "full"
            return False
        fs = os.fstatvfs(fd)
        if fs.f_bavail * fs.f_frsize < 64 * 1024:
            return True
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return limit != resource.RLIM_INFINITY and os.fstat(fd).st_size >= limit
    except (OSError, ValueError, AttributeError):
        return False


def _stdout_broken() -> bool:
    """True when standard output is a pipe whose reader has gone."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that the flush at interpreter exit cannot fail
    again (the recipe of the Python documentation for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# ---------------------------------------------------------------------------------------- signals
@contextlib.contextmanager
def _stop_signals_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into `Terminated` in this process while the command runs.

    A signal that is ignored (``nohup``) stays ignored. A forked worker inherits the handler but
    dies of the signal as it would by default, so worker pools can still be stopped with SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    main_pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
