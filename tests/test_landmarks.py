"""Landmark file reading, validation and writing."""

from __future__ import annotations

import numpy as np
import pytest

from lrnet.errors import LrnetError
from lrnet.landmarks import FEATURE_SIZE, find_landmark_files, read_landmarks, read_many, write_landmarks


def _frames(n=5, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, FEATURE_SIZE)).astype(np.float32)


def test_round_trip_matches_format(tmp_path):
    frames = _frames()
    path = tmp_path / "v.txt"
    write_landmarks(path, frames)
    text = path.read_text()
    first = text.splitlines()[0].split(" ")
    assert len(first) == FEATURE_SIZE
    assert all(len(tok.split(".")[1]) == 5 for tok in first)  # %1.5f
    back = read_landmarks(path)
    assert back.dtype == np.float32 and back.shape == frames.shape
    np.testing.assert_allclose(back, frames, atol=5e-6)


def test_reads_same_as_loadtxt(reference):
    path = reference / "landmarks" / "ff_real.txt"
    ours = read_landmarks(path)
    assert ours.shape == (757, 136)
    np.testing.assert_array_equal(ours, np.loadtxt(path, dtype=np.float32))


@pytest.mark.parametrize("content,needle", [
    ("", "empty"),
    ("   \n\n", "empty"),
    ("1 2 3\n", "line 1: expected 136 values"),
    (" ".join(["0.1"] * 136) + "\n" + " ".join(["0.1"] * 135) + "\n", "line 2: expected 136 values"),
    (" ".join(["0.1"] * 136) + "\n" + " ".join(["0.1"] * 137) + "\n", "line 2: expected 136 values"),
    (" ".join(["0.1"] * 135 + ["abc"]) + "\n", "line 1, column 136: not a number: 'abc'"),
    (" ".join(["0.1"] * 10 + ["nan"] + ["0.1"] * 125) + "\n", "line 1, column 11: non-finite value 'nan'"),
    (" ".join(["0.1"] * 136) + "\n" + " ".join(["inf"] + ["0.1"] * 135) + "\n", "line 2, column 1: non-finite"),
])
def test_invalid_files_name_file_and_line(tmp_path, content, needle):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(LrnetError) as err:
        read_landmarks(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_unreadable_and_binary_files(tmp_path):
    with pytest.raises(LrnetError, match="cannot read"):
        read_landmarks(tmp_path / "missing.txt")
    with pytest.raises(LrnetError, match="is a directory"):
        read_landmarks(tmp_path)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(LrnetError, match="bin.txt"):
        read_landmarks(binary)


def test_tolerates_tabs_trailing_blanks_and_crlf(tmp_path):
    frames = _frames(3)
    path = tmp_path / "loose.txt"
    lines = ["\t".join(f"{v:.5f}" for v in row) + "  " for row in frames]
    path.write_bytes(("\r\n".join(lines) + "\r\n\r\n").encode())
    np.testing.assert_allclose(read_landmarks(path), frames, atol=5e-6)


def test_write_is_atomic_and_validates(tmp_path):
    path = tmp_path / "out.txt"
    write_landmarks(path, _frames(2))
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_landmarks(path, np.full((2, FEATURE_SIZE), np.nan))
    with pytest.raises(ValueError):
        write_landmarks(path, np.zeros((2, 10)))
    assert path.read_bytes() == before  # the old file survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp files left


def test_find_and_read_many(tmp_path):
    for i in range(3):
        write_landmarks(tmp_path / "sub" / f"{i}.txt", _frames(4 + i, seed=i))
    (tmp_path / "sub" / "notes.md").write_text("x")
    files = find_landmark_files([tmp_path])
    assert [f.name for f in files] == ["0.txt", "1.txt", "2.txt"]
    serial = read_many(files, workers=1)
    parallel = read_many(files, workers=2)
    assert [a.shape[0] for a in serial] == [4, 5, 6]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(LrnetError, match="no such file"):
        find_landmark_files([tmp_path / "nope"])


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    path = tmp_path / "perm.txt"
    write_landmarks(path, _frames(1))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# ---------------------------------------------------------------------------------- misuse
def _line(values):
    return " ".join(values) + "\n"


@pytest.mark.misuse
@pytest.mark.parametrize("token", ["1e308", "3.5e38", "-3.5e38", "1e39", "3.4028236e38", "nan", "-inf", "Infinity"])
@pytest.mark.parametrize("spacing", ["pandas", "checked"])
def test_non_finite_after_float32_rejected_on_every_parse_path(tmp_path, token, spacing):
    """Promise 6: values finite as float64 but not as float32 are rejected with file, line, column,
    whichever parser reads the file (pandas for plain spacing, the checked parser for tabs)."""
    sep = " " if spacing == "pandas" else "\t"
    good = sep.join(["0.10000"] * FEATURE_SIZE) + "\n"
    bad = sep.join(["0.10000"] * 4 + [token] + ["0.10000"] * 131) + "\n"
    path = tmp_path / "v.txt"
    path.write_text(good * 3 + bad)
    with pytest.raises(LrnetError) as err:
        read_landmarks(path)
    assert str(err.value) == f"{path}: line 4, column 5: non-finite value {token!r} (as a 32-bit float)"


@pytest.mark.misuse
def test_non_finite_largest_float32_is_accepted(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text(_line(["3.4028234e38"] + ["0.1"] * 135))
    assert read_landmarks(path)[0, 0] == np.float32(3.4028234e38)


@pytest.mark.misuse
@pytest.mark.parametrize("chunk", [1000, 1088, 4096])
def test_bounded_memory_chunked_reading_is_identical(tmp_path, monkeypatch, chunk):
    """Chunks of any size (cut inside a line, on a line end) give the same array and line numbers."""
    import lrnet.landmarks as landmarks

    frames = _frames(57, seed=3)
    path = tmp_path / "v.txt"
    write_landmarks(path, frames)
    whole = read_landmarks(path)
    loose = tmp_path / "loose.txt"
    loose.write_text(path.read_text().replace(" ", "\t"))
    monkeypatch.setattr(landmarks, "CHUNK_BYTES", chunk)
    np.testing.assert_array_equal(read_landmarks(path), whole)
    np.testing.assert_array_equal(read_landmarks(loose), whole)
    lines = path.read_text().splitlines()
    lines[50] = lines[50].replace(" ", " x", 1)
    path.write_text("\n".join(lines))
    with pytest.raises(LrnetError, match=r"line 51, column 2: not a number: 'x"):
        read_landmarks(path)


@pytest.mark.misuse
def test_bounded_memory_binary_content_names_the_byte_offset(tmp_path):
    good = _line(["0.10000"] * FEATURE_SIZE).encode()
    for byte, needle in ((b"\0", "NUL byte at offset"), (b"\xff", "byte 0xff at offset")):
        path = tmp_path / "b.txt"
        path.write_bytes(good * 2 + b"0.1" + byte + good)
        with pytest.raises(LrnetError) as err:
            read_landmarks(path)
        assert f"{needle} {len(good) * 2 + 3}" in str(err.value)


@pytest.mark.misuse
def test_bounded_memory_frame_limit(tmp_path):
    path = tmp_path / "v.txt"
    write_landmarks(path, _frames(20))
    assert read_landmarks(path, max_frames=20).shape == (20, FEATURE_SIZE)
    with pytest.raises(LrnetError, match="more than 19 frames"):
        read_landmarks(path, max_frames=19)


def test_utf8_byte_order_mark_is_ignored(tmp_path):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    write_landmarks(plain, _frames(2))
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    np.testing.assert_array_equal(read_landmarks(bom), read_landmarks(plain))
