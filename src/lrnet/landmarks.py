"""Landmark files: the published LRNet/FF++ text format, read fast and validated, written atomically.

A landmark file holds one line per frame with 136 whitespace-separated floats: the 68 facial
points as interleaved (x, y) pairs, ``x0 y0 x1 y1 ...``, normalised to about [-1, 1] (pixel
coordinates of a 400 x 400 face crop mapped by ``(p - 200) / 200``). In memory a sequence is a
``(frames, 136)`` float32 array.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import stat
import warnings
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Tuple

import numpy as np

from .atomic import atomic_open
from .errors import LrnetError
from .parallel import map_in_processes
from .vocab import PathLike

__all__ = ["FEATURE_SIZE", "LANDMARK_SUFFIX", "MAX_FILE_BYTES", "MAX_FRAMES", "NUM_POINTS", "find_landmark_files",
           "iter_landmarks", "read_landmarks", "read_many", "write_landmarks"]

NUM_POINTS = 68
FEATURE_SIZE = 2 * NUM_POINTS  # 136 values per frame
LANDMARK_SUFFIX = ".txt"


MAX_FRAMES = 1_000_000  # 9 h 15 min at 30 fps; the array is at most 544 MB
MAX_FILE_BYTES = 2 * 1024 ** 3  # refused before reading (1M frames in the published format: 1.1 GB)
CHUNK_BYTES = 16 * 1024 ** 2  # parsed a chunk at a time: working memory about 10 x this
MAX_LINE_BYTES = 1024 ** 2  # 136 values need a few KB; a longer line is not a landmark file


def read_landmarks(path: PathLike, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Read one landmark file into a ``(frames, 136)`` float32 array.

    Files in the published ``%1.5f`` format are decoded by a vectorised fixed-format parser (about
    6-10x faster than ``np.loadtxt``), other spellings by pandas' C tokenizer (about 3x); both are
    bit-identical to ``np.loadtxt`` followed by a float32 cast. Anything unexpected falls back to a
    line-by-line check that raises `LrnetError` naming the file and the first bad line: wrong
    column count, a non-numeric token, a value that is not finite as float32 (NaN, Inf, 1e39), an
    empty file or an unreadable one.

    Memory stays bounded on absurd input: a file over `MAX_FILE_BYTES` is refused before it is
    read, the rest is parsed in chunks of `CHUNK_BYTES` and refused as soon as it passes
    `max_frames` frames, a NUL byte (binary content) or a line over `MAX_LINE_BYTES`. A FIFO or a
    device is read the same way (a FIFO without a writer reads as empty instead of hanging).
    """
    path = Path(path)
    parts: List[np.ndarray] = []
    total = 0
    with _open_landmark_file(path) as fh:
        for chunk, line, offset in _chunks(path, fh):
            part = _parse_chunk(path, chunk, line, offset)
            total += len(part)
            if total > max_frames:
                raise LrnetError(f"{path}: more than {max_frames} frames (the limit for one landmark file); "
                                 "split the video")
            parts.append(part)
    if total == 0:
        raise LrnetError(f"{path}: empty landmark file (no frames)")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@contextlib.contextmanager
def _open_landmark_file(path: Path) -> Iterator[io.FileIO]:
    """Open for reading; one-line errors for a folder, a missing or unreadable file, a huge file."""
    try:
        # O_NONBLOCK: opening a FIFO that has no writer returns at once (then reads as empty).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise LrnetError(f"{path}: is a directory, not a landmark file") from None
    except OSError as exc:
        raise LrnetError(f"{path}: cannot read landmark file ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise LrnetError(f"{path}: is a directory, not a landmark file")
    with os.fdopen(fd, "rb", buffering=0) as fh:
        if stat.S_ISREG(st.st_mode) and st.st_size > MAX_FILE_BYTES:
            raise LrnetError(f"{path}: {st.st_size / 1024 ** 3:.1f} GiB is too large for a landmark file (limit "
                             f"{MAX_FILE_BYTES / 1024 ** 3:.0f} GiB, about {MAX_FRAMES} frames)")
        if stat.S_ISREG(st.st_mode):
            os.set_blocking(fd, True)  # FIFOs and devices stay non-blocking: see _read_waiting
        yield fh


def _chunks(path: Path, fh: io.FileIO) -> Iterator[Tuple[bytes, int, int]]:
    """Yield ``(data, first line number, byte offset)`` pieces of the file that end at a line
    break (the last one may not), about `CHUNK_BYTES` each. Raises on a NUL byte or an overlong line."""
    carry, line, offset = b"", 1, 0
    waits = not stat.S_ISREG(os.fstat(fh.fileno()).st_mode)  # a FIFO or a device may block
    while True:
        try:
            block = _read_waiting(fh, CHUNK_BYTES) if waits else fh.read(CHUNK_BYTES)
        except OSError as exc:
            raise LrnetError(f"{path}: cannot read landmark file ({exc.strerror or exc})") from None
        if not block:
            break
        nul = block.find(b"\0")
        if nul >= 0:
            raise LrnetError(f"{path}: NUL byte at offset {offset + len(carry) + nul}: binary content, "
                             "not a text landmark file")
        data = carry + block
        if offset == 0 and data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows editors)
            data, offset = data[3:], 3
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > MAX_LINE_BYTES:
            raise LrnetError(f"{path}: line {line} is longer than {MAX_LINE_BYTES} bytes: not a landmark file")
        if cut:
            yield data[:cut], line, offset
            line += data.count(b"\n", 0, cut)
            offset += cut
        carry = data[cut:]
    if carry:
        yield carry, line, offset


def _read_waiting(fh: io.FileIO, size: int, tick_s: float = 0.2) -> bytes:
    """Read up to `size` bytes from the non-blocking FIFO or device `fh`, waiting for data in steps of
    `tick_s`. A blocking read() would never return to the interpreter if a stop signal (Ctrl-C,
    SIGTERM, SIGHUP) went to another thread of the process (torch starts one): Python runs signal
    handlers only in the main thread, between bytecodes. A FIFO without a writer reads as its end."""
    while True:
        block = fh.read(size)
        if block is not None:  # data, or b"" at the end
            return block
        select.select([fh], [], [], tick_s)  # nothing yet (EAGAIN)


def _parse_chunk(path: Path, data: bytes, line: int, offset: int) -> np.ndarray:
    frames = _parse_fast(data)
    if frames is None or frames.shape[1] != FEATURE_SIZE or not np.isfinite(frames).all():
        # Unusual spacing (tabs, trailing blanks) or a real error: the checked parser tells which.
        frames = _parse_checked(path, data, line, offset)
    return frames


_U = np.uint64
# A fixed-format token "D.DDDDDs" read as one little-endian uint64 (byte 0 = first character);
# subtracting this leaves the digit values in bytes 0, 2-6 and 0 in byte 1 (the '.').
_FIXED5_ZERO = _U(0x0030303030302E30)
_FIXED5_DIGITS = _U(0x00FFFFFFFFFF0000)


def _parse_fixed5(data: bytes) -> "np.ndarray | None":
    """Decode the published layout exactly: every token ``[-]D.DDDDD``, one space between tokens,
    a newline after the 136th. Returns None (let a general parser decide) for anything else.

    With the minus signs removed every token is exactly 8 bytes, i.e. one uint64, so the digits
    are combined with a few whole-array integer operations (SWAR). The mantissa is an exact
    integer and ``mantissa / 1e5`` is correctly rounded, which makes the result bit-identical to
    ``np.loadtxt`` (strtod) followed by a float32 cast.
    """
    u = np.frombuffer(data, dtype=np.uint8)
    if u.size == 0:
        return None
    if u[-1] != 10:  # last line without a newline
        u = np.append(u, np.uint8(10))
    minus = np.flatnonzero(u == 45)
    if minus.size:
        keep = np.ones(u.size, dtype=bool)
        keep[minus] = False
        u = u[keep]
    if u.size % (8 * FEATURE_SIZE):
        return None
    x = u.view("<u8") - _FIXED5_ZERO
    # Digits must be <= 9 (adding 0x76 sets bit 7 otherwise), the '.' byte 0; separators below.
    if ((x | (x + _U(0x0076767676760076))) & _U(0x008080808080FF80)).any():
        return None
    seps = u[7::8].reshape(-1, FEATURE_SIZE)
    if not ((seps[:, :-1] == 32).all() and (seps[:, -1] == 10).all()):
        return None
    # Each '-' must open a token: at a multiple of 8 once the signs before it are removed, one per token.
    owner = minus - np.arange(minus.size)
    if minus.size and ((owner % 8).any() or (np.diff(owner) <= 0).any()):
        return None
    # Arrange the digits as the 8-digit string "0 0 D D D D D D" (most significant first) and
    # combine pairs, then quads, then the halves.
    z = ((x & _U(0xFF)) << _U(16)) | ((x & _FIXED5_DIGITS) << _U(8))
    z = z * _U(10) + (z >> _U(8))
    z = (((z & _U(0x000000FF000000FF)) * _U(100 + (1000000 << 32)))
         + (((z >> _U(16)) & _U(0x000000FF000000FF)) * _U(1 + (10000 << 32)))) >> _U(32)
    values = z.astype(np.float64)
    values /= 1e5
    values[owner // 8] *= -1.0  # keeps -0.00000 as -0.0, as strtod does
    return values.astype(np.float32).reshape(-1, FEATURE_SIZE)


def _parse_fast(data: bytes) -> "np.ndarray | None":
    frames = _parse_fixed5(data)
    if frames is not None:
        return frames
    import pandas as pd  # imported here: pandas costs ~0.3 s to import and only this needs it

    try:
        # A value too large for float32 becomes inf here (reported by the checked parser), quietly.
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            table = pd.read_csv(io.BytesIO(data), sep=" ", header=None, dtype=np.float32, engine="c")
    except Exception:  # any parse failure: let the diagnosis find the line
        return None
    return np.ascontiguousarray(table.to_numpy(dtype=np.float32))


def _parse_checked(path: Path, data: bytes, first_line: int = 1, offset: int = 0) -> np.ndarray:
    """Parse line by line, raising `LrnetError` at the first problem; slow but exact in its errors.

    `first_line` and `offset` place `data` in the file, for the messages."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise LrnetError(f"{path}: byte 0x{data[exc.start]:02x} at offset {offset + exc.start}: not a text "
                         "landmark file (binary or non-ASCII content)") from None
    rows, numbers = [], []
    for number, line in enumerate(text.splitlines(), start=first_line):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != FEATURE_SIZE:
            raise LrnetError(
                f"{path}: line {number}: expected {FEATURE_SIZE} values (68 x,y points), got {len(tokens)}"
            )
        for column, token in enumerate(tokens, start=1):
            try:
                float(token)
            except ValueError:
                raise LrnetError(f"{path}: line {number}, column {column}: not a number: {token!r}") from None
        rows.append(tokens)
        numbers.append(number)
    with np.errstate(over="ignore"):  # overflow is reported below, with its place
        frames = np.array(rows, dtype=np.float64).reshape(-1, FEATURE_SIZE).astype(np.float32)
    bad = np.argwhere(~np.isfinite(frames))
    if bad.size:
        row, column = bad[0]
        raise LrnetError(f"{path}: line {numbers[row]}, column {column + 1}: non-finite value {rows[row][column]!r} "
                         "(as a 32-bit float)")
    return frames


def write_landmarks(path: PathLike, frames: np.ndarray) -> None:
    """Write a ``(frames, 136)`` array in the published format (``%1.5f``, space separated), atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] != FEATURE_SIZE:
        raise ValueError(f"expected an array of shape (frames, {FEATURE_SIZE}), got {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError(f"{path}: refusing to write non-finite landmarks")
    data = _format_fixed5(frames)
    if data is not None:
        with atomic_open(path, "wb") as fh:
            fh.write(data)
        return
    with atomic_open(path, "w", encoding="ascii") as fh:
        np.savetxt(fh, frames, fmt="%1.5f", delimiter=" ")


_POW10 = np.array([10000, 1000, 100, 10, 1], dtype=np.int64)


def _format_fixed5(frames: np.ndarray) -> "bytes | None":
    """``np.savetxt(fmt="%1.5f")`` output, byte for byte, built with whole-array operations (about
    4x faster). None when a value could format differently: ``|x| >= 10`` (more integer digits) or
    ``x * 1e5`` within 1e-6 of a rounding tie (printf rounds the exact binary value; the product
    is accurate to ~1e-10 there, so the nearest integer is otherwise unambiguous)."""
    x = np.asarray(frames, dtype=np.float64)
    if x.size == 0 or not (np.abs(x) < 9.999994).all():
        return None
    scaled = np.abs(x).ravel() * 1e5
    if (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6).any():
        return None
    k = np.rint(scaled).astype(np.int64)
    # One 9-byte slot per value: sign (0 = none, dropped below), digit, '.', 5 digits, separator.
    slots = np.zeros((k.size, 9), dtype=np.uint8)
    slots[:, 0] = np.where(np.signbit(x).ravel(), 45, 0)  # printf keeps the sign of -0.0 and of -1e-9
    slots[:, 1] = k // 100000 + 48
    slots[:, 2] = 46
    slots[:, 3:8] = (k[:, None] // _POW10) % 10 + 48
    slots[:, 8] = 32
    slots[FEATURE_SIZE - 1::FEATURE_SIZE, 8] = 10
    flat = slots.ravel()
    return flat[flat != 0].tobytes()


def find_landmark_files(paths: Iterable[PathLike], suffix: str = LANDMARK_SUFFIX) -> List[Path]:
    """Expand files and folders into a sorted list of landmark files.

    A folder contributes its ``*.txt`` files (recursively, sorted); a file is taken as given.
    A path that does not exist raises `LrnetError`.
    """
    found: List[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob(f"*{suffix}") if q.is_file()))
        elif p.exists():
            found.append(p)
        else:
            raise LrnetError(f"{p}: no such file or directory")
    return found


def read_many(paths: Sequence[PathLike], workers: int = 0, progress: bool = False) -> List[np.ndarray]:
    """Read several landmark files, in parallel processes when ``workers > 1``.

    ``workers=0`` picks ``min(os.cpu_count(), 8)`` when there are enough files to pay for the
    process start-up (about 64), else reads in this process. Order follows `paths`.
    """
    return list(iter_landmarks(paths, workers=workers, progress=progress))


def iter_landmarks(paths: Sequence[PathLike], workers: int = 0, progress: bool = False) -> Iterator[np.ndarray]:
    """`read_many` as a stream: yields each file's ``(frames, 136)`` array in the order of `paths`,
    so a caller can copy it into a preallocated array and drop it (no list of all files held)."""
    paths = [Path(p) for p in paths]
    # Small chunks: parsing a file takes milliseconds, so the per-task overhead matters, but
    # results must keep streaming back in order.
    yield from map_in_processes(read_landmarks, paths, workers, min_items=64, chunks_per_worker=8, max_chunk=32,
                                progress=progress, desc="reading landmarks", unit="file")
