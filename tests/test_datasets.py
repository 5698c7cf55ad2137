"""Dataset layouts, FF_all balancing, video ids, block segmentation and the dataset cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lrnet.datasets import (
    BlockSet, blockset_from_arrays, cache_root, clear_cache, load_split, load_splits, resolve_split,
)
from lrnet.errors import LrnetError
from lrnet.features import cut_blocks, num_blocks
from lrnet.landmarks import read_landmarks, write_landmarks
from lrnet.synthetic import generate_ffpp

B = 10  # small blocks keep the fixtures tiny


@pytest.fixture(scope="module")
def ffpp(tmp_path_factory) -> Path:
    """A tiny synthetic FF++ tree with all four manipulations: 4/2/2 videos per split, 25-60 frames."""
    root = tmp_path_factory.mktemp("ffpp")
    generate_ffpp(root, videos_per_split={"train": 4, "val": 2, "test": 2}, manipulations=("DF", "F2F", "FS", "NT"),
                  frames=(25, 60), seed=5, workers=1)
    return root


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _expected_blocks(root: Path, videos) -> np.ndarray:
    parts = [cut_blocks(read_landmarks(root / v), B) for v in videos]
    return np.concatenate(parts) if parts else np.zeros((0, B, 136), np.float32)


def _seq(frames: int, offset: float = 0.0) -> np.ndarray:
    return (np.arange(frames * 136, dtype=np.float64).reshape(frames, 136) % 200 / 200.0 - 0.5 + offset)


# ---------------------------------------------------------------------------------------------- layouts


def test_ffpp_split_matches_files_and_reference_segmentation(ffpp):
    bs = load_split(ffpp, "DF", "raw", "test", block_size=B, cache=False)
    assert isinstance(bs, BlockSet) and bs.name == "DF/raw/test" and bs.cache_status == "off"
    assert bs.videos == ["Origin/raw/test/006.txt", "Origin/raw/test/007.txt",
                         "DF/raw/test/006_007.txt", "DF/raw/test/007_006.txt"]
    assert bs.video_labels.tolist() == [0, 0, 1, 1]
    assert bs.blocks.dtype == np.float32 and bs.blocks.flags.c_contiguous and bs.blocks.shape[1:] == (B, 136)
    np.testing.assert_array_equal(bs.blocks, _expected_blocks(ffpp, bs.videos))
    frames = [read_landmarks(ffpp / v).shape[0] for v in bs.videos]
    assert bs.video_frames.tolist() == frames
    assert bs.block_video.tolist() == np.repeat(np.arange(4), num_blocks(np.array(frames), B)).tolist()
    assert bs.block_labels.tolist() == [bs.video_labels[v] for v in bs.block_video]
    np.testing.assert_array_equal(bs.sample_index, np.arange(bs.n_blocks))
    assert bs.synthetic and bs.root == str(ffpp)


def test_ff_all_train_reads_origin_once_and_balances_by_index(ffpp):
    bs = load_split(ffpp, "FF_all", "raw", "train", block_size=B, cache=False)
    c = bs.counts()
    assert c["videos_real"] == 4 and c["videos_fake"] == 16
    # Real blocks are stored once ...
    real_videos = [v for v in bs.videos if v.startswith("Origin/")]
    assert len(real_videos) == 4
    # ... but listed four times per epoch, so the classes balance (fakes share their target's length).
    assert c["samples_real"] == 4 * c["blocks_real"] == c["blocks_fake"] == c["samples_fake"]
    assert bs.sample_index.size == bs.n_blocks + 3 * c["blocks_real"]
    assert np.array_equal(np.unique(bs.sample_index), np.arange(bs.n_blocks))
    counts = np.bincount(bs.sample_index, minlength=bs.n_blocks)
    assert set(counts[bs.block_labels == 0]) == {4} and set(counts[bs.block_labels == 1]) == {1}


@pytest.mark.parametrize("split", ["val", "test"])
def test_ff_all_eval_splits_read_real_once_and_all_manipulations(ffpp, split):
    bs = load_split(ffpp, "FF_all", "raw", split, block_size=B, cache=False)
    c = bs.counts()
    assert c["videos_real"] == 2 and c["videos_fake"] == 8
    assert c["samples_real"] == c["blocks_real"] and bs.sample_index.size == bs.n_blocks
    assert {v.split("/")[0] for v in bs.videos} == {"Origin", "DF", "F2F", "FS", "NT"}


def test_video_ids_unique_when_subsets_share_file_names(ffpp):
    bs = load_split(ffpp, "FF_all", "raw", "test", block_size=B, cache=False)
    names = [Path(v).name for v in bs.videos]
    assert len(set(names)) < len(names)  # DF, F2F, FS and NT all hold 006_007.txt
    assert len(set(bs.videos)) == len(bs.videos)
    assert "DF/raw/test/006_007.txt" in bs.videos and "NT/raw/test/006_007.txt" in bs.videos


def test_load_splits_returns_each_split(ffpp, cache):
    sets = load_splits(ffpp, "F2F", "raw", block_size=B, cache=cache)
    assert list(sets) == ["train", "val", "test"]
    assert sets["val"].name == "F2F/raw/val" and sets["train"].n_videos == 8


def _make_ffpp_dir(root: Path, subsets=("Origin", "DF"), level="raw", splits=("train",), frames=25):
    for s in subsets:
        for split in splits:
            write_landmarks(root / s / level / split / "000.txt", _seq(frames))


@pytest.mark.parametrize("setup, args, message", [
    (lambda r: None, ("missing-root", "DF", "raw", "train"), "dataset root not found.*lrnet generate"),
    (lambda r: _make_ffpp_dir(r, subsets=("Origin",)), (".", "DF", "raw", "train"), "DF.*missing FF\\+\\+ subset"),
    (lambda r: _make_ffpp_dir(r), (".", "DF", "c23", "train"), "missing level 'c23'.*found: raw"),
    (lambda r: _make_ffpp_dir(r), (".", "DF", "c99", "train"), "unknown level"),
    (lambda r: _make_ffpp_dir(r), (".", "DF", "raw", "val"), "val.*missing split 'val'"),
    (lambda r: _make_ffpp_dir(r), (".", "DF", "raw", "dev"), "unknown split"),
    (lambda r: _make_ffpp_dir(r), (".", "FF_all", "raw", "train"), "missing FF\\+\\+ subset 'NT'|'F2F'|'FS'"),
    (lambda r: _make_ffpp_dir(r), (".", "CelebDF", "raw", "train"), "unknown dataset 'CelebDF'"),
])
def test_layout_errors_name_the_missing_path(tmp_path, setup, args, message):
    setup(tmp_path)
    root = tmp_path / args[0] if args[0] != "." else tmp_path
    with pytest.raises(LrnetError, match=message):
        load_split(root, *args[1:], block_size=B, cache=False)


def test_empty_split_is_a_clear_error(tmp_path):
    _make_ffpp_dir(tmp_path)
    (tmp_path / "DF" / "raw" / "train" / "000.txt").unlink()
    with pytest.raises(LrnetError, match=r"DF/raw/train: no landmark files .*lrnet generate"):
        load_split(tmp_path, "DF", "raw", "train", block_size=B, cache=False)


def test_bad_landmark_file_names_the_file(tmp_path):
    _make_ffpp_dir(tmp_path)
    (tmp_path / "DF" / "raw" / "train" / "bad.txt").write_text("0.1 0.2\n")
    with pytest.raises(LrnetError, match=r"bad\.txt: line 1: expected 136 values"):
        load_split(tmp_path, "DF", "raw", "train", block_size=B, cache=False)


def test_custom_layout(tmp_path):
    root = tmp_path / "data"
    for cls, offset in (("real", 0.0), ("fake", 0.1)):
        for split in ("train", "test"):
            write_landmarks(root / "mine" / cls / split / "a.txt", _seq(35, offset))
            write_landmarks(root / "mine" / cls / split / "sub" / "b.txt", _seq(21, offset))
    bs = load_split(root, "mine", split="test", block_size=B, cache=False)
    assert bs.name == "mine/test"
    assert bs.videos == ["mine/real/test/a.txt", "mine/real/test/sub/b.txt", "mine/fake/test/a.txt",
                         "mine/fake/test/sub/b.txt"]
    assert bs.video_labels.tolist() == [0, 0, 1, 1] and bs.video_blocks().tolist() == [3, 2, 3, 2]
    np.testing.assert_array_equal(bs.blocks, _expected_blocks(root, bs.videos))
    assert not bs.synthetic
    with pytest.raises(LrnetError, match=r"mine/fake/val: missing folder for the fake videos"):
        (root / "mine" / "real" / "val").mkdir()
        load_split(root, "mine", split="val", block_size=B, cache=False)


def test_yaml_layout(tmp_path):
    for name, frames in (("r1", 31), ("r2", 25), ("f1", 40)):
        write_landmarks(tmp_path / "d" / name / "v.txt", _seq(frames))
    spec = tmp_path / "d" / "mine.yaml"
    spec.write_text("name: mine\nsplits:\n  train:\n    real: [r1, {path: r2, repeats: 3}]\n    fake: f1\n"
                    "  test:\n    real: r1\n    fake: [f1]\n")
    bs = load_split("ignored-root", str(spec), split="train", block_size=B, cache=False)
    assert bs.name == "mine/train" and bs.videos == ["r1/v.txt", "r2/v.txt", "f1/v.txt"]
    assert bs.video_labels.tolist() == [0, 0, 1] and bs.video_blocks().tolist() == [3, 2, 3]
    # r2's two blocks (indices 3, 4) appear three times per epoch.
    assert np.bincount(bs.sample_index).tolist() == [1, 1, 1, 3, 3, 1, 1, 1]
    assert load_split(None, str(spec), split="test", block_size=B, cache=False).n_videos == 2


@pytest.mark.parametrize("text, message", [
    ("splits: [1, 2]\n", "needs a 'splits:' mapping"),
    ("splits:\n  train:\n    real: r1\n", "no split 'test' described"),
    ("splits:\n  test:\n    real: nowhere\n", "nowhere: folder of real videos .* not found"),
    ("splits:\n  test:\n    genuine: r1\n", "must map 'real' and/or 'fake'"),
    ("splits:\n  test:\n    real: {path: r1, repeats: 0}\n", "repeats must be a positive integer"),
    ("splits:\n  test: {real: r1}\nextra: 1\n", "unknown key"),
    ("splits: {test: {real: [r1, r1]}}\n", "listed more than once"),
    ("splits: [\n", "cannot read dataset description"),
])
def test_yaml_errors(tmp_path, text, message):
    write_landmarks(tmp_path / "r1" / "v.txt", _seq(31))
    spec = tmp_path / "bad.yml"
    spec.write_text(text)
    with pytest.raises(LrnetError, match=message):
        load_split(None, str(spec), split="test", block_size=B, cache=False)
    with pytest.raises(LrnetError, match="not found"):
        load_split(None, str(tmp_path / "absent.yaml"), split="test", cache=False)


# ---------------------------------------------------------------------------------------------- segmentation


def test_segmentation_edge_cases_and_skipped_videos(tmp_path):
    lengths = {"one": 1, "short": B - 1, "exact": B, "b_plus_1": B + 1, "two_b": 2 * B, "two_b_plus_1": 2 * B + 1}
    for name, n in lengths.items():
        write_landmarks(tmp_path / "ds" / "real" / "test" / f"{name}.txt", _seq(n))
    write_landmarks(tmp_path / "ds" / "fake" / "test" / "f.txt", _seq(3 * B + 5, 0.1))
    bs = load_split(tmp_path, "ds", split="test", block_size=B, cache=False)
    per_video = dict(zip([Path(v).stem for v in bs.videos], bs.video_blocks().tolist()))
    # The reference rule: range(0, N - B, B), so N == B gives no block and N == 2B gives one.
    assert per_video == {"b_plus_1": 1, "exact": 0, "one": 0, "short": 0, "two_b": 1, "two_b_plus_1": 2, "f": 3}
    assert sorted(Path(v).stem for v in bs.skipped_videos) == ["exact", "one", "short"]
    assert bs.counts()["skipped_videos"] == 3 and bs.n_videos == 7
    np.testing.assert_array_equal(bs.blocks, _expected_blocks(tmp_path, bs.videos))


def test_split_with_no_blocks_at_all(tmp_path):
    for cls in ("real", "fake"):
        write_landmarks(tmp_path / "ds" / cls / "test" / "a.txt", _seq(B))
    bs = load_split(tmp_path, "ds", split="test", block_size=B, cache=tmp_path / "c")
    assert bs.blocks.shape == (0, B, 136) and bs.block_video.size == 0 and len(bs.skipped_videos) == 2
    again = load_split(tmp_path, "ds", split="test", block_size=B, cache=tmp_path / "c")
    assert again.cache_status == "hit" and again.blocks.shape == (0, B, 136)


def test_blockset_from_arrays():
    seqs = [_seq(25), _seq(B), _seq(41, 0.2)]
    bs = blockset_from_arrays(seqs, [0, 0, 1], ["a", "b", "c"], block_size=B, repeats=[2, 1, 1])
    assert bs.video_blocks().tolist() == [2, 0, 4] and bs.skipped_videos == ["b"]
    np.testing.assert_array_equal(bs.blocks, np.concatenate([cut_blocks(s, B) for s in seqs]))
    assert bs.sample_index.tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert bs.sample_labels.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="unique"):
        blockset_from_arrays(seqs, [0, 0, 1], ["a", "a", "c"], block_size=B)
    with pytest.raises(ValueError, match="shape"):
        blockset_from_arrays([np.zeros((40, 3))], [0], ["x"], block_size=B)


# ---------------------------------------------------------------------------------------------- cache


def _custom(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for cls, offset in (("real", 0.0), ("fake", 0.1)):
        for i, n in enumerate((35, 52)):
            write_landmarks(root / "ds" / cls / "train" / f"{i}.txt", _seq(n, offset))
    return root


def test_cache_miss_then_hit_is_identical(tmp_path, cache):
    root = _custom(tmp_path)
    first = load_split(root, "ds", block_size=B, cache=cache)
    assert first.cache_status == "miss" and Path(first.cache_file).is_file()
    assert Path(first.cache_file).parent == cache
    second = load_split(root, "ds", block_size=B, cache=cache)
    assert second.cache_status == "hit"
    for field in ("blocks", "block_video", "video_labels", "video_frames", "sample_index"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert first.videos == second.videos
    mm = load_split(root, "ds", block_size=B, cache=cache, mmap=True)
    assert mm.cache_status == "hit" and isinstance(mm.blocks, np.memmap) and not mm.blocks.flags.writeable
    np.testing.assert_array_equal(mm.blocks, first.blocks)


def test_cache_is_rebuilt_when_a_source_changes(tmp_path, cache):
    root = _custom(tmp_path)
    load_split(root, "ds", block_size=B, cache=cache)
    path = root / "ds" / "fake" / "train" / "1.txt"
    write_landmarks(path, _seq(52, 0.3))  # same size, new content
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    bs = load_split(root, "ds", block_size=B, cache=cache)
    assert bs.cache_status == "stale"
    np.testing.assert_array_equal(bs.blocks, _expected_blocks(root, bs.videos))
    # Only touching a file (new mtime, same bytes) also invalidates: the key is paths + sizes + mtimes.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    assert load_split(root, "ds", block_size=B, cache=cache).cache_status == "stale"
    # A new file changes the listing.
    write_landmarks(root / "ds" / "real" / "train" / "2.txt", _seq(33))
    again = load_split(root, "ds", block_size=B, cache=cache)
    assert again.cache_status == "stale" and again.n_videos == 5
    assert load_split(root, "ds", block_size=B, cache=cache).cache_status == "hit"


def test_cache_depends_on_block_size(tmp_path, cache):
    root = _custom(tmp_path)
    load_split(root, "ds", block_size=B, cache=cache)
    other = load_split(root, "ds", block_size=B + 2, cache=cache)
    assert other.cache_status == "miss" and other.blocks.shape[1] == B + 2
    assert load_split(root, "ds", block_size=B, cache=cache).cache_status == "hit"


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "delete_npy"])
def test_corrupt_cache_is_rebuilt_not_trusted(tmp_path, cache, damage):
    root = _custom(tmp_path)
    good = load_split(root, "ds", block_size=B, cache=cache)
    npy = Path(good.cache_file)
    manifest = npy.with_suffix(".json")
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "flip":
        data = bytearray(npy.read_bytes())
        data[-7] ^= 0x40  # inside the last block's values
        npy.write_bytes(bytes(data))
    elif damage == "manifest":
        manifest.write_text("{not json")
    else:
        npy.unlink()
    bs = load_split(root, "ds", block_size=B, cache=cache)
    assert bs.cache_status == "corrupt"
    np.testing.assert_array_equal(bs.blocks, good.blocks)
    assert load_split(root, "ds", block_size=B, cache=cache).cache_status == "hit"


def _corrupt_each_byte(path: Path, positions, reload, expected) -> int:
    """Change one byte of `path` at each of `positions` (restoring the pristine cache entry in
    between) and check that `reload()` still returns `expected`; returns how many were rebuilt."""
    entry = {p: p.read_bytes() for p in (path.with_suffix(".npy"), path.with_suffix(".json"))}
    rebuilt = 0
    for i in positions:
        for p, data in entry.items():
            p.write_bytes(data)
        damaged = bytearray(entry[path])
        damaged[i] = (damaged[i] + 1 + i % 254) % 256  # never the same byte again
        path.write_bytes(bytes(damaged))
        bs = reload()
        np.testing.assert_array_equal(bs.blocks, expected.blocks, err_msg=f"byte {i} of {path.name}")
        assert bs.videos == expected.videos
        rebuilt += bs.cache_status == "corrupt"
    return rebuilt


@pytest.mark.misuse
@pytest.mark.parametrize("mmap", [False, True])
def test_one_corrupt_byte_anywhere_in_a_cache_header_means_rebuild(tmp_path, cache, mmap):
    """Every position of the .npy header (magic, version, header length, the dict numpy parses with
    its tokenizer) and of the JSON manifest: the load still returns the right data."""
    root = _custom(tmp_path)
    good = load_split(root, "ds", block_size=B, cache=cache)
    npy = Path(good.cache_file)
    header = int.from_bytes(npy.read_bytes()[8:10], "little") + 10  # version 1.0 header size
    reload = lambda: load_split(root, "ds", block_size=B, cache=cache, mmap=mmap)  # noqa: E731
    rebuilt = _corrupt_each_byte(npy, range(header), reload, good)
    assert rebuilt >= header - 20  # a few (padding spaces, the newline) may be harmless
    manifest = npy.with_suffix(".json")
    positions = range(0, len(manifest.read_bytes()), 7)
    assert _corrupt_each_byte(manifest, positions, reload, good) >= 1
    assert load_split(root, "ds", block_size=B, cache=cache).cache_status in ("hit", "corrupt", "stale")


def test_temporaries_of_killed_cache_writes_are_removed(tmp_path, cache):
    root = _custom(tmp_path)
    load_split(root, "ds", block_size=B, cache=cache)
    old, fresh = cache / ".ds-train-x.npy.a1b2.tmp", cache / ".ds-train-x.npy.c3d4.tmp"
    old.write_bytes(b"killed mid-write")
    fresh.write_bytes(b"another process is writing this one now")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert load_split(root, "ds", block_size=B, cache=cache).cache_status == "hit"
    assert not old.exists() and fresh.exists()


def test_cache_dir_and_no_weights_import(tmp_path, monkeypatch):
    import subprocess
    import sys

    from lrnet.paths import cache_dir

    monkeypatch.setenv("LRNET_CACHE", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("LRNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lrnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "lrnet"
    code = ("import sys; from lrnet.datasets import cache_root; cache_root(); "
            "assert 'lrnet.weights' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cache_location_env_and_clear(tmp_path, monkeypatch):
    root = _custom(tmp_path)
    monkeypatch.delenv("LRNET_DATASET_CACHE", raising=False)
    monkeypatch.setenv("LRNET_CACHE", str(tmp_path / "lrnet-cache"))
    assert cache_root() == tmp_path / "lrnet-cache" / "datasets"
    assert cache_root(False) is None and cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("LRNET_DATASET_CACHE", str(tmp_path / "env-cache"))
    bs = load_split(root, "ds", block_size=B)
    assert Path(bs.cache_file).parent == tmp_path / "env-cache"
    manifest = json.loads(Path(bs.cache_file).with_suffix(".json").read_text())
    assert manifest["block_size"] == B and manifest["videos"] == bs.videos
    assert clear_cache() == 1 and not list((tmp_path / "env-cache").iterdir())
    assert load_split(root, "ds", block_size=B).cache_status == "miss"
    off = load_split(root, "ds", block_size=B, cache=False)
    assert off.cache_status == "off" and off.cache_file is None


def test_resolve_split_ffpp_sources(ffpp):
    spec = resolve_split(ffpp, "FF_all", "raw", "train")
    assert [(s.path.parts[-3], s.label, s.repeats) for s in spec.sources] == [
        ("Origin", 0, 4), ("DF", 1, 1), ("F2F", 1, 1), ("FS", 1, 1), ("NT", 1, 1)]
    assert [s.repeats for s in resolve_split(ffpp, "FF_all", "raw", "val").sources] == [1] * 5


# ---------------------------------------------------------------------------------------------- text I/O fast paths


def test_fast_writer_and_parser_match_numpy_text_io(tmp_path):
    """The vectorised ``%1.5f`` writer/reader used for datasets equal np.savetxt / np.loadtxt byte for byte."""
    import io

    from lrnet.landmarks import _format_fixed5, _parse_fixed5

    rng = np.random.default_rng(0)
    cases = [rng.integers(-200, 201, (40, 136)) / 200.0, rng.uniform(-1.5, 1.5, (40, 136)),
             rng.uniform(-1, 1, (5, 136)).astype(np.float32), np.full((2, 136), -0.0), np.full((2, 136), -4e-7),
             np.full((1, 136), 9.999993)]
    for frames in cases:
        text = io.BytesIO()
        np.savetxt(text, frames, fmt="%1.5f", delimiter=" ")
        fast = _format_fixed5(frames)
        assert fast is not None and fast == text.getvalue()
        parsed = _parse_fixed5(fast)
        expected = np.loadtxt(io.BytesIO(fast), ndmin=2).astype(np.float32)
        assert parsed.view(np.uint32).tolist() == expected.view(np.uint32).tolist()  # bit-identical, -0.0 kept
    # Values the fast writer cannot guarantee are left to np.savetxt (same output through write_landmarks).
    assert _format_fixed5(np.full((1, 136), 12.5)) is None
    assert _format_fixed5(np.full((1, 136), 0.000005)) is None  # a rounding tie
    path = tmp_path / "tie.txt"
    write_landmarks(path, np.full((1, 136), 0.000005))
    text = io.BytesIO()
    np.savetxt(text, np.full((1, 136), 0.000005), fmt="%1.5f", delimiter=" ")
    assert path.read_bytes() == text.getvalue()
    # Anything but the exact published layout goes to the general parser.
    for odd in (b"0.1 " * 135 + b"0.1\n", b"0.10000\t" * 135 + b"0.10000\n", b"0.10000 " * 136 + b"\n",
                b"-0.10000 " * 134 + b"--0.10000 0.10000\n", b"1.0e-01 " * 135 + b"1.0e-01\n"):
        assert _parse_fixed5(odd) is None
