"""The synthetic landmark generator: determinism, plausibility, the fake artifact, the FF++ layout, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lrnet.cli import main as cli_main
from lrnet.errors import LrnetError
from lrnet.landmarks import read_landmarks
from lrnet.synthetic import (
    MARKER_NAME, PIXEL, REGIONS, fake_video, generate_ffpp, is_synthetic, real_video, split_videos, synthetic_info,
    video_frames,
)

SMALL = {"train": 3, "val": 2, "test": 2}


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _inner_roughness(seq: np.ndarray) -> float:
    """Jitter of the inner-face regions relative to the contour: std of the second temporal
    difference of each region's centroid minus the jaw centroid (smooth head motion cancels)."""
    pts = seq.reshape(len(seq), 68, 2)
    jaw = pts[:, :17].mean(axis=1)
    return float(np.mean([np.diff(pts[:, idx].mean(axis=1) - jaw, n=2, axis=0).std() for idx in REGIONS.values()]))


def test_generate_is_byte_identical_for_the_same_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kw = dict(videos_per_split=SMALL, manipulations=("DF", "NT"), frames=(40, 70), workers=1)
    generate_ffpp(a, seed=3, **kw)
    generate_ffpp(b, seed=3, **kw)
    generate_ffpp(c, seed=4, **kw)
    fa, fb = _files(a), _files(b)
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb))
    # Another seed changes the content.
    same_name = c / fa[0].relative_to(a)
    assert same_name.read_bytes() != fa[0].read_bytes()


def test_parallel_writing_gives_the_same_files(tmp_path):
    kw = dict(videos_per_split={"train": 6, "val": 2, "test": 2}, frames=(35, 50), seed=1)
    generate_ffpp(tmp_path / "serial", workers=1, **kw)
    generate_ffpp(tmp_path / "parallel", workers=2, **kw)
    for x in _files(tmp_path / "serial"):
        assert x.read_bytes() == (tmp_path / "parallel" / x.relative_to(tmp_path / "serial")).read_bytes()


def test_ffpp_layout_names_counts_and_marker(tmp_path):
    info = generate_ffpp(tmp_path, videos_per_split=SMALL, manipulations=("DF", "F2F"), levels=("raw", "c23"),
                         frames=(31, 45), seed=0, workers=1)
    for level in ("raw", "c23"):
        assert sorted(p.name for p in (tmp_path / "Origin" / level / "train").iterdir()) == ["000.txt", "001.txt",
                                                                                           "002.txt"]
        # FF++ naming: target_source, the source from the same split.
        assert sorted(p.name for p in (tmp_path / "DF" / level / "val").iterdir()) == ["003_004.txt", "004_003.txt"]
        assert len(list((tmp_path / "F2F" / level / "test").iterdir())) == 2
    assert info["files"] == 2 * 7 * 3
    marker = json.loads((tmp_path / MARKER_NAME).read_text())
    assert marker["synthetic"] is True and "SYNTHETIC" in marker["note"]
    assert is_synthetic(tmp_path / "DF" / "raw" / "train") and synthetic_info(tmp_path)["seed"] == 0
    # Every file parses, has the drawn length, and a fake has its target's length.
    for p in (tmp_path / "Origin" / "raw" / "train").iterdir():
        frames = read_landmarks(p)
        assert frames.shape == (video_frames(0, int(p.stem), (31, 45)), 136)
        assert 31 <= frames.shape[0] <= 45
    assert read_landmarks(tmp_path / "DF/raw/val/003_004.txt").shape == read_landmarks(
        tmp_path / "Origin/raw/val/003.txt").shape


def test_not_synthetic_without_marker(tmp_path):
    assert not is_synthetic(tmp_path)


def test_real_face_is_plausible():
    seq = real_video(seed=0, video=7, frames=600)
    assert seq.shape == (600, 136)
    assert np.abs(seq).max() <= 1.0
    # Whole pixels of the 400-px crop, as the published files.
    assert np.allclose(seq / PIXEL, np.round(seq / PIXEL), atol=1e-6)
    pts = seq.reshape(600, 68, 2)
    x, y = pts[..., 0].mean(axis=0), pts[..., 1].mean(axis=0)
    assert y[8] > y[57] > y[33] > y[30] > y[27] > y[19]  # chin, lower lip, nose base, nose tip, bridge, brow
    assert x[0] < x[36] < x[39] < x[42] < x[45] < x[16]  # jaw, left eye corners, right eye corners, jaw
    assert 1.2 < x[16] - x[0] < 1.9 and 1.2 < y[8] - y[19] < 1.9  # a face filling the crop
    motion = np.abs(np.diff(seq, axis=0)).mean()
    assert 0.002 < motion < 0.03  # moving, but smoothly
    # Blinks: the left eye's opening (upper lid 37/38 to lower lid 41/40) closes now and then.
    opening = (pts[:, 41, 1] + pts[:, 40, 1] - pts[:, 37, 1] - pts[:, 38, 1]) / 2
    assert opening.min() < 0.5 * np.median(opening)
    # Mouth movement: the inner lips part and close.
    mouth = pts[:, 66, 1] - pts[:, 62, 1]
    assert mouth.max() - mouth.min() > 0.04


def test_fake_keeps_the_contour_and_disturbs_the_inner_face():
    real_r, fake_r = [], []
    for v in range(6):
        real = real_video(0, v, 300)
        fake = fake_video(0, v, v + 1, 300, "DF", difficulty="medium")
        jaw_gap = np.abs(real.reshape(300, 68, 2)[:, :17] - fake.reshape(300, 68, 2)[:, :17]).mean()
        assert jaw_gap < 3 * PIXEL  # same target clip: the contour only differs by detector noise
        real_r.append(_inner_roughness(real))
        fake_r.append(_inner_roughness(fake))
    assert np.mean(fake_r) > 1.3 * np.mean(real_r)
    # ... but not trivially: the mildest fakes come close to the real clips.
    assert min(fake_r) < 1.5 * max(real_r)


def test_difficulty_scales_the_artifact():
    easy = np.mean([_inner_roughness(fake_video(0, v, v + 1, 300, "NT", difficulty="easy")) for v in range(4)])
    hard = np.mean([_inner_roughness(fake_video(0, v, v + 1, 300, "NT", difficulty="hard")) for v in range(4)])
    medium = np.mean([_inner_roughness(fake_video(0, v, v + 1, 300, "NT", difficulty="medium")) for v in range(4)])
    assert easy > medium > hard


def test_split_videos_pairs_within_split():
    pairs = split_videos({"train": 4, "val": 2, "test": 1})
    assert pairs["train"] == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert pairs["val"] == [(4, 5), (5, 4)] and pairs["test"] == [(6, 6)]


@pytest.mark.parametrize("kwargs, message", [
    ({"manipulations": ("XX",)}, "unknown manipulation"),
    ({"levels": ("c99",)}, "unknown level"),
    ({"frames": (50, 10)}, "frame range"),
    ({"difficulty": "brutal"}, "unknown difficulty"),
    ({"videos_per_split": {"train": 2, "dev": 1}}, "unknown split"),
])
def test_generate_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(LrnetError, match=message):
        generate_ffpp(tmp_path, **kwargs)


def test_cli_generate(tmp_path, capsys):
    root = tmp_path / "ds"
    assert cli_main(["generate", str(root), "--videos", "5", "--frames", "35", "40", "--manipulations", "DF", "FS",
                     "-q", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and str(root) in out
    assert len(list((root / "Origin" / "raw" / "train").iterdir())) == 3  # 5 videos: 3/1/1
    assert len(list((root / "FS" / "raw" / "val").iterdir())) == 1
    assert (root / MARKER_NAME).is_file()


@pytest.mark.misuse
@pytest.mark.parametrize("flags, message", [
    (["--manipulations", "XX"], "invalid choice: 'XX'"), (["--levels", "c99"], "invalid choice: 'c99'"),
    (["--videos", "0"], "--videos: '0' must be an integer between 3 and 1000000"), (["--frames", "10", "x"], "--frames"),
    (["--seed", "-1"], "--seed"), (["--workers", "-2"], "--workers"),
])
def test_cli_generate_flags_are_checked_at_parse_time(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        cli_main(["generate", str(tmp_path / "ds"), *flags, "-q"])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_cli_generate_user_error(tmp_path, capsys):
    assert cli_main(["generate", str(tmp_path), "--frames", "50", "10", "-q"]) == 2
    assert "--frames LO HI needs LO <= HI" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["generate", str(tmp_path), "--videos", "2", "-q"])
    assert exc.value.code == 2 and "--videos: '2' must be an integer between 3" in capsys.readouterr().err


@pytest.mark.misuse
def test_ctrl_c_ends_generate_with_workers_at_once(tmp_path):
    """`lrnet generate` with a process pool, interrupted as a terminal does (SIGINT to the process group)."""
    pytest.importorskip("psutil")
    from helpers_jobs import all_gone, descendants, interrupt, kill_survivors, start_lrnet, wait_for

    proc = start_lrnet(["generate", str(tmp_path / "ds"), "--ffpp-size", "--workers", "2", "-q"])
    workers = []
    try:
        workers = wait_for(lambda: (lambda d: d if len(d) >= 2 else None)(descendants(proc.pid)), 30, "2 workers")
        wait_for(lambda: any((tmp_path / "ds").rglob("*.txt")), 60, "the first files")
        interrupt(proc)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130 and "Traceback" not in err and "lrnet generate: interrupted" in err
        assert all_gone(workers, 5), "generate's workers outlived it"
    finally:
        kill_survivors([*workers, proc])
