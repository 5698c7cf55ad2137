"""Atomic file writes, the one-line error of a failed write, and the check that an output is not an input.

Every write goes to a temporary file beside the target (``.NAME.XXXXXXXX.tmp``, or
``.NAME.XXXXXXXX.tmp.EXT`` when the writer needs an extension), is flushed and fsync'ed, and is
then renamed over the target. A reader (or a resumed job) therefore sees either the old file or the
complete new one, never a truncated file left behind by a crash, Ctrl-C or a full disk. When a
write fails the temporary is removed and the error names the *target* (an `OSError` whose
``filename`` is the target, e.g. ``out/g1.pth: No space left on device``), so that the CLI can
report it on one line. Only SIGKILL or a power cut can leave a temporary behind:
`remove_temporaries` deletes those (they match `TEMP_GLOBS`). Matplotlib figures are written with
`save_figure` (format from the extension, a failure as a one-line `LrnetError`).

Written files get the usual permissions (``0666 & ~umask``), or keep the mode of the file they
replace.

`writing` turns an `OSError` of a write into lrnet's one-line ``PATH: cannot write (reason)``;
`ensure_not_input` / `ensure_not_inputs` are lrnet's only "this output would destroy an input"
check (they compare paths as `same_file` does).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import stat
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Dict, Iterable, Iterator, Optional, Tuple

from .errors import LrnetError
from .vocab import PathLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TEMP_GLOBS", "atomic_path", "atomic_open", "atomic_write_bytes", "atomic_write_text",
           "ensure_not_input", "ensure_not_inputs", "remove_temporaries", "same_file", "save_figure", "writing"]

TEMP_GLOBS = (".*.tmp", ".*.tmp.*")  # what atomic_path's temporaries look like


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; the renamed file should get the usual permissions (0666 & ~umask).
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; when the block ends cleanly, fsync it and rename
    it onto `target`.

    For writers that want a file name (``torch.save``, ``np.save``, ``savefig``, ``cv2.VideoWriter``).
    With `suffix` (e.g. ``".mp4"``) the temporary's name ends with it, for writers that pick the
    format from the extension. On any error (Ctrl-C included) the temporary is removed, `target`
    is left as it was, and an `OSError` names `target`.
    """
    target = Path(target)
    try:
        _make_parent(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix, dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise _naming(exc, target, None) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.chmod(tmp_path, _mode_for(target))
        os.replace(tmp_path, target)
    except BaseException as exc:
        error = _as_named_error(exc, tmp_path, target)  # while the temporary still exists
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if error is None or error is exc:
            raise
        raise error from exc


@contextlib.contextmanager
def atomic_open(target: PathLike, mode: str = "w", suffix: str = "", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing that replaces `target` when the block ends cleanly."""
    with atomic_path(target, suffix) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()


def atomic_write_bytes(target: PathLike, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_open(target, "wb") as fh:
        fh.write(data)


def atomic_write_text(target: PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    with atomic_open(target, "w", encoding="utf-8") as fh:
        fh.write(text)


def save_figure(fig: "Figure", target: PathLike) -> Path:
    """Save the Matplotlib figure `fig` to `target` atomically, in the format its extension names
    (``.png``, ``.pdf``, ``.svg``, ``.jpg`` ...; no extension: PNG). Returns `target`.

    Raises ``LrnetError("TARGET: cannot write (reason)")`` when the write fails (full disk, no
    permission, a file in the way) and a one-line `LrnetError` for an extension Matplotlib cannot
    write; `target` is then left as it was.
    """
    target = Path(target)
    suffix = target.suffix or ".png"
    kinds = fig.canvas.get_supported_filetypes()
    if suffix[1:].lower() not in kinds:
        raise LrnetError(f"{target}: Matplotlib cannot write {suffix} files; use one of "
                         f"{', '.join('.' + k for k in sorted(kinds))}")
    try:
        with atomic_path(target, suffix=suffix) as tmp:
            fig.savefig(tmp, format=suffix[1:].lower())
    except OSError as exc:
        raise LrnetError(f"{target}: cannot write ({exc.strerror or str(exc) or type(exc).__name__})") from None
    return target


def remove_temporaries(folder: PathLike, recursive: bool = False) -> int:
    """Delete temporaries left in `folder` by writes that were killed (SIGKILL, power cut).

    Only call it on a folder this process owns (e.g. under `lrnet.locks.output_lock`): another
    writer's temporary in flight would be deleted too. Returns how many were removed.
    """
    folder = Path(folder)
    removed = 0
    for pattern in TEMP_GLOBS:
        for p in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
            if p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
    return removed


@contextlib.contextmanager
def writing(path: PathLike) -> Iterator[None]:
    """Turn an `OSError` raised while writing `path` (a full disk, no permission) into
    ``LrnetError("PATH: cannot write (reason)")``, one line."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise LrnetError(f"{path}: cannot write ({reason})") from None


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether `a` and `b` name one file: the same path after resolving symlinks and ``..``, or
    the same inode (a hard link). Paths that do not exist yet compare by their resolved form."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    key = _inode(Path(a))
    return key is not None and key == _inode(Path(b))


def ensure_not_input(output: PathLike, inputs: Iterable[Optional[PathLike]], what: str = "output",
                     reread: bool = True, fix: Optional[str] = None) -> None:
    """Raise `LrnetError` when writing `output` would destroy or feed back into one of `inputs`.

    Refused: `output` is an input (`same_file`: same resolved path, or a hard link to it); with
    `reread`, `output` lies inside an input folder that is read recursively (its files would be
    taken as inputs by the next run). None among `inputs` is skipped. The message names `output`,
    ``the {what}`` and the input, and ends with `fix` (default: choose another {what} path, or one
    outside the folder).
    """
    ensure_not_inputs([output], inputs, what, reread, fix)


def ensure_not_inputs(outputs: Iterable[PathLike], inputs: Iterable[Optional[PathLike]], what: str = "output",
                      reread: bool = True, fix: Optional[str] = None) -> None:
    """`ensure_not_input` for many outputs at once, in time linear in their number (a folder job
    checks thousands of outputs against thousands of inputs); the first offending output is named."""
    sources = [Path(s) for s in inputs if s is not None]
    by_path: Dict[str, Path] = {}
    by_inode: Dict[Tuple[int, int], Path] = {}
    for source in sources:
        by_path.setdefault(os.path.realpath(source), source)
        key = _inode(source)
        if key is not None:
            by_inode.setdefault(key, source)
    folders = [(Path(os.path.realpath(s)), s) for s in sources if reread and s.is_dir()]
    same_fix, inside_fix = fix or f"choose another {what} path", fix or f"choose an {what} outside it"
    for raw in outputs:
        out = Path(raw)
        real = os.path.realpath(out)
        key = _inode(out)
        same = by_path.get(real) or (by_inode.get(key) if key is not None else None)
        if same is not None:
            raise LrnetError(f"{out}: the {what} is the input {same}; {same_fix} (lrnet never overwrites its input)")
        parents = Path(real).parents
        for folder, source in folders:
            if folder in parents:
                raise LrnetError(f"{out}: the {what} is inside the input folder {source}, which is read "
                                 f"recursively; {inside_fix}")


# ---------------------------------------------------------------------------------------- helpers
def _make_parent(target: Path) -> None:
    """Create the target's folder; a *file* in the way is reported as ``FILE: Not a directory``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (target.parent, *target.parent.parents) if p.exists() and not p.is_dir()),
                       target.parent)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)) from None


def _inode(path: Path) -> "Tuple[int, int] | None":
    """``(device, inode)`` of an existing file (hard links share it), None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _mode_for(target: Path) -> int:
    """Keep the permissions of a file being replaced; else the usual ones."""
    try:
        st = os.stat(target)
    except OSError:
        return _FILE_MODE
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else _FILE_MODE


def _fsync_file(path: Path) -> None:
    """Make the data durable before the rename publishes it (else a power cut can leave an
    empty file under the target's name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _naming(exc: OSError, target: Path, tmp: "Path | None") -> OSError:
    """The same error, naming `target` instead of the temporary (or nothing)."""
    unnamed = exc.filename is None or (tmp is not None and os.fsdecode(exc.filename) == str(tmp))
    if not unnamed or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target))


def _as_named_error(exc: BaseException, tmp: Path, target: Path) -> "BaseException | None":
    """The error to raise for a failed write: an OSError naming `target`.

    Writers that do their own I/O (``torch.save`` to a path) turn a full disk or a file-size
    limit into an opaque RuntimeError; those two are recognised and reported as what they are.
    """
    if isinstance(exc, OSError):
        return _naming(exc, target, tmp)
    if not isinstance(exc, RuntimeError):
        return None
    with contextlib.suppress(OSError):
        fs = os.statvfs(target.parent)
        if fs.f_bavail * fs.f_frsize < 64 * 1024:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    with contextlib.suppress(OSError):
        if limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit:
            return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(target))
    return None
