"""Landmark files: the published LRNet/FF++ text format, read fast and validated, written atomically.

A landmark file holds one line per frame with 136 whitespace-separated floats: the 68 facial
points as interleaved (x, y) pairs, ``x0 y0 x1 y1 ...``, normalised to about [-1, 1] (pixel
coordinates of a 400 x 400 face crop mapped by ``(p - 200) / 200``). In memory a sequence is a
``(frames, 136)`` float32 array.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Union

import numpy as np

from .atomic import atomic_open
from .errors import LrnetError
from .parallel import map_in_processes

NUM_POINTS = 68
FEATURE_SIZE = 2 * NUM_POINTS  # 136 values per frame
LANDMARK_SUFFIX = ".txt"

PathLike = Union[str, "os.PathLike[str]"]


def read_landmarks(path: PathLike) -> np.ndarray:
    """Read one landmark file into a ``(frames, 136)`` float32 array.

    Files in the published ``%1.5f`` format are decoded by a vectorised fixed-format parser (about
    6-10x faster than ``np.loadtxt``), other spellings by pandas' C tokenizer (about 3x); both are
    bit-identical to ``np.loadtxt`` followed by a float32 cast. Anything unexpected falls back to a
    line-by-line check that raises `LrnetError` naming the file and the first bad line: wrong
    column count, a non-numeric token, NaN/Inf, an empty file or an unreadable one.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise LrnetError(f"{path}: is a directory, not a landmark file") from None
    except OSError as exc:
        raise LrnetError(f"{path}: cannot read landmark file ({exc.strerror or exc})") from None
    if not data.strip():
        raise LrnetError(f"{path}: empty landmark file (no frames)")
    frames = _parse_fast(data)
    if frames is None or frames.shape[1] != FEATURE_SIZE or not np.isfinite(frames).all():
        # Unusual spacing (tabs, trailing blanks) or a real error: the checked parser tells which.
        frames = _parse_checked(path, data)
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
        table = pd.read_csv(io.BytesIO(data), sep=" ", header=None, dtype=np.float32, engine="c")
    except Exception:  # any parse failure: let the diagnosis find the line
        return None
    return np.ascontiguousarray(table.to_numpy(dtype=np.float32))


def _parse_checked(path: Path, data: bytes) -> np.ndarray:
    """Parse line by line, raising `LrnetError` at the first problem; slow but exact in its errors."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise LrnetError(f"{path}: not a text landmark file (binary content)") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != FEATURE_SIZE:
            raise LrnetError(
                f"{path}: line {number}: expected {FEATURE_SIZE} values (68 x,y points), got {len(tokens)}"
            )
        for column, token in enumerate(tokens, start=1):
            try:
                value = float(token)
            except ValueError:
                raise LrnetError(f"{path}: line {number}, column {column}: not a number: {token!r}") from None
            if not math.isfinite(value):
                raise LrnetError(f"{path}: line {number}, column {column}: non-finite value {token!r}")
        rows.append(tokens)
    return np.array(rows, dtype=np.float64).astype(np.float32)


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
