"""Dataset checks (lrnet.dataset_check, `lrnet dataset check`): hand-made trees with each problem."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from helpers_jobs import write_video
from lrnet.cli import main
from lrnet.dataset_check import check_dataset, quick_warnings, write_card
from lrnet.errors import LrnetError
from lrnet.landmarks import write_landmarks

IDS = {"train": ["000", "001"], "val": ["002"], "test": ["003"]}  # FF++ style ids; fakes pair i with the next


def _write(path: Path, frames: int = 40) -> Path:
    rng = np.random.default_rng(zlib.crc32(str(path.as_posix()).encode()))  # distinct content per file
    write_landmarks(path, rng.uniform(-0.5, 0.5, (frames, 136)))
    return path


def make_ffpp(root: Path, fakes=("DF",), levels=("raw",)) -> Path:
    for level in levels:
        for split, ids in IDS.items():
            for vid in ids:
                _write(root / "Origin" / level / split / f"{vid}.txt")
                for fake in fakes:
                    _write(root / fake / level / split / f"{vid}_{int(vid) + 100:03d}.txt")
    return root


def test_a_clean_dataset_has_no_problem(tmp_path, capsys):
    root = make_ffpp(tmp_path / "ds", fakes=("DF", "NT"), levels=("raw", "c23"))
    report = check_dataset(root, block_size=10)
    assert report.ok and report.layout == "ffpp" and not report.warnings, report.problems
    assert len(report.groups) == 3 * 2 * 3  # subsets x levels x splits
    train = next(g for g in report.groups if (g.subset, g.level, g.split) == ("NT", "c23", "train"))
    assert (train.videos, train.frames, train.blocks, train.label) == (2, 80, 6, "fake")  # 40 frames -> 3 blocks
    assert report.balance["raw/train"] == {"real": 2, "fake": 4}
    assert main(["dataset", "check", str(root), "-q"]) == 0
    out = capsys.readouterr().out
    assert "no problem found" in out and "Origin" in out and "total" in out
    card = json.loads((root / "dataset_card.json").read_text())
    assert card["ok"] is True and card["layout"] == "ffpp"
    assert "# Dataset card" in (root / "dataset_card.md").read_text()


def test_unreadable_and_non_finite_files(tmp_path):
    root = make_ffpp(tmp_path / "ds")
    bad = root / "DF" / "raw" / "val" / "002_102.txt"
    bad.write_text(" ".join(["nan"] * 136) + "\n")
    (root / "Origin" / "raw" / "test" / "003.txt").write_bytes(b"\xff\x00garbage")
    report = check_dataset(root)
    assert not report.ok
    assert any("002_102.txt" in p and "non-finite" in p for p in report.problems)
    assert any("003.txt" in p for p in report.problems)
    assert sum(g.unreadable for g in report.groups) == 2


def test_identical_files_across_subsets_or_levels(tmp_path, capsys):
    root = make_ffpp(tmp_path / "ds", fakes=("FS", "NT"), levels=("c23",))
    shutil.copy(root / "FS" / "c23" / "test" / "003_103.txt", root / "NT" / "c23" / "test" / "003_103.txt")
    report = check_dataset(root)
    assert report.duplicates == [["FS/c23/test/003_103.txt", "NT/c23/test/003_103.txt"]]
    assert any("2 identical files" in p for p in report.problems)
    assert main(["dataset", "check", str(root), "-q", "--no-card"]) == 1
    assert "problem: 2 identical files" in capsys.readouterr().out
    assert not (root / "dataset_card.json").exists()


def test_the_same_video_in_two_splits_is_leakage(tmp_path):
    root = make_ffpp(tmp_path / "ds")
    _write(root / "Origin" / "raw" / "test" / "000.txt", 41)  # 000 is a training video
    report = check_dataset(root)
    assert set(report.leaks) == {"000"} and set(report.leaks["000"]) == {"train", "test"}
    assert any(p.startswith("video 000 is in more than one split") for p in report.problems)


def test_a_fake_made_from_a_video_of_another_split_is_leakage(tmp_path):
    root = make_ffpp(tmp_path / "ds")
    _write(root / "DF" / "raw" / "test" / "003_001.txt")  # source 001 is a training video
    report = check_dataset(root)
    assert "001" in report.leaks and not report.ok


def test_videos_too_short_for_a_block_are_counted_and_warned(tmp_path):
    root = make_ffpp(tmp_path / "ds")
    _write(root / "Origin" / "raw" / "val" / "002.txt", 30)  # 30 frames: no 30-frame block (reference rule)
    report = check_dataset(root)
    assert report.ok and sum(g.too_short for g in report.groups) == 1
    assert any("too short for one 30-frame block" in w for w in report.warnings)


def test_a_split_without_one_class_is_a_problem(tmp_path):
    root = make_ffpp(tmp_path / "ds")
    for f in (root / "DF" / "raw" / "test").iterdir():
        f.unlink()
    report = check_dataset(root)
    assert "raw/test: no fake videos (1 real, 0 fake)" in report.problems


def test_a_missing_split_folder_is_a_problem(tmp_path):
    root = make_ffpp(tmp_path / "ds")
    shutil.rmtree(root / "DF" / "raw" / "val")
    assert any("missing split val of DF/raw" in p for p in check_dataset(root).problems)


def test_frame_counts_against_the_source_videos(tmp_path):
    root = make_ffpp(tmp_path / "ds")
    videos = tmp_path / "ffpp"
    write_video(videos / "original_sequences/youtube/raw/videos/000.mp4", 12)  # landmarks say 40
    write_video(videos / "original_sequences/youtube/raw/videos/001.mp4", 45)  # 5 leading frames without a face
    report = check_dataset(root, videos=videos)
    mismatch = {m["file"]: (m["landmark_frames"], m["video_frames"]) for m in report.frame_mismatches}
    assert mismatch == {"Origin/raw/train/000.txt": (40, 12), "Origin/raw/train/001.txt": (40, 45)}
    assert report.problems == ["Origin/raw/train/000.txt: 40 landmark frames but its video "
                               f"{videos}/original_sequences/youtube/raw/videos/000.mp4 has 12"]
    assert any("1 landmark files have fewer frames" in w for w in report.warnings)
    assert any("have no readable source video" in w for w in report.warnings)


def test_custom_and_yaml_layouts(tmp_path):
    root = tmp_path / "custom"
    for cls in ("real", "fake"):
        for split in ("train", "val", "test"):
            _write(root / "celeb" / cls / split / f"{cls}-{split}.txt")
    report = check_dataset(root)
    assert report.ok and report.layout == "custom" and len(report.groups) == 6
    shutil.copy(root / "celeb/real/train/real-train.txt", root / "celeb/fake/test/copy.txt")
    assert not check_dataset(root, dataset="celeb").ok
    spec = tmp_path / "celeb.yaml"
    spec.write_text("root: custom/celeb\nsplits:\n  train: {real: real/train, fake: fake/train}\n"
                    "  test: {real: real/test, fake: fake/test}\n")
    report = check_dataset(spec)
    assert report.layout == "yaml" and {g.split for g in report.groups} == {"train", "test"}
    assert report.duplicates and not report.ok
    json_path, md_path = write_card(report)
    assert json_path.parent == tmp_path and md_path.is_file()


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["dataset", "check", str(tmp_path / "nope")]) == 2
    assert "dataset root not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrnetError, match="no landmark dataset found"):
        check_dataset(tmp_path / "empty")


@pytest.mark.misuse
@pytest.mark.parametrize("flags", [["--block-size", "0"], ["-j", "-1"], ["-l", "c99"]])
def test_dataset_check_flags_are_checked_at_parse_time(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "check", str(tmp_path), *flags])
    assert exc.value.code == 2 and "argument" in capsys.readouterr().err


# -------------------------------------------------------------------------------- quick warnings


def test_quick_warnings_find_copies_and_leakage_and_cache_hashes(tmp_path, monkeypatch):
    monkeypatch.setenv("LRNET_CACHE", str(tmp_path / "cache"))
    root = make_ffpp(tmp_path / "ds", fakes=("DF", "F2F", "FS", "NT"), levels=("c23",))
    assert quick_warnings(root, "FF_all", "c23") == []
    shutil.copy(root / "FS/c23/test/003_103.txt", root / "NT/c23/test/003_103.txt")
    _write(root / "Origin/c23/test/000.txt")
    warnings = quick_warnings(root, "FF_all", "c23")
    assert len(warnings) == 2
    assert "1 landmark files are byte-identical copies" in warnings[0] and "003_103.txt" in warnings[0]
    assert "1 video ids are in more than one split (e.g. 000 in train and test)" in warnings[1]
    assert not any("byte-identical" in w for w in quick_warnings(root, "DF", "c23"))  # FS, NT are not in DF
    cache = json.loads((tmp_path / "cache" / "dataset-check" / "hashes.json").read_text())
    assert str((root / "NT/c23/test/003_103.txt").absolute()) in cache
    # hashes are reused while size and mtime are unchanged
    nt = root / "NT/c23/test/003_103.txt"
    st = nt.stat()
    data = bytearray(nt.read_bytes())
    data[0:1] = b"0" if data[0:1] != b"0" else b"1"
    nt.write_bytes(bytes(data))
    os.utime(nt, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "byte-identical" in quick_warnings(root, "FF_all", "c23")[0]
    nt.touch()
    assert not any("byte-identical" in w for w in quick_warnings(root, "FF_all", "c23"))
