"""Per-video folder jobs (lrnet.batch): FF++ layout, resume, the job log, overlap refusal, and what
`lrnet extract` promises under misuse, with real processes and signals (Ctrl-C, kill -9, two
writers, a full disk)."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
from pathlib import Path

import numpy as np
import pytest

import lrnet.extract as ex
from helpers_jobs import (all_gone, descendants, interrupt, kill_survivors, run_lrnet, start_lrnet, wait_for,
                          write_video)
from lrnet import batch
from lrnet.calibration import Calibration, FaceBoxes
from lrnet.cli import main
from lrnet.errors import LrnetError
from lrnet.landmarks import read_landmarks

# -------------------------------------------------------------------------------- FF++ layout


def make_ffpp_tree(root: Path) -> Path:
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "train.json").write_text(json.dumps([["000", "003"]]))
    (root / "splits" / "val.json").write_text(json.dumps([["001", "870"]]))
    (root / "splits" / "test.json").write_text(json.dumps([["002", "006"]]))
    videos = {
        "original_sequences/youtube/c23/videos": ["000", "003", "001", "999"],
        "original_sequences/youtube/raw/videos": ["002"],
        "manipulated_sequences/Deepfakes/c23/videos": ["000_003", "003_000", "870_001"],
        "manipulated_sequences/Face2Face/c40/videos": ["006_002"],
        "manipulated_sequences/FaceSwap/raw/videos": ["001_870"],
        "manipulated_sequences/NeuralTextures/c23/videos": ["002_006"],
        "manipulated_sequences/DeepFakeDetection/c23/videos": ["01_02__meeting"],
    }
    for folder, stems in videos.items():
        (root / folder).mkdir(parents=True)
        for stem in stems:
            (root / folder / f"{stem}.mp4").write_bytes(b"")
    return root


def test_ffpp_layout_maps_videos_to_dataset_folders(tmp_path):
    root = make_ffpp_tree(tmp_path / "ffpp")
    jobs = batch.ffpp_jobs(root, tmp_path / "out")
    got = sorted(str(j.output.relative_to(tmp_path / "out")) for j in jobs)
    assert got == sorted([
        "Origin/c23/train/000.txt", "Origin/c23/train/003.txt", "Origin/c23/val/001.txt",
        "Origin/raw/test/002.txt",
        "DF/c23/train/000_003.txt", "DF/c23/train/003_000.txt", "DF/c23/val/870_001.txt",
        "F2F/c40/test/006_002.txt", "FS/raw/val/001_870.txt", "NT/c23/test/002_006.txt",
    ])  # 999 is in no split; DeepFakeDetection is not an LRNet dataset
    by_output = {str(j.output.relative_to(tmp_path / "out")): j.video for j in jobs}
    assert by_output["DF/c23/val/870_001.txt"] == root / "manipulated_sequences/Deepfakes/c23/videos/870_001.mp4"


def test_ffpp_layout_errors(tmp_path):
    with pytest.raises(LrnetError, match="train.json: FF\\+\\+ split file not found"):
        batch.ffpp_jobs(tmp_path, tmp_path / "out")
    root = make_ffpp_tree(tmp_path / "ffpp")
    (root / "splits" / "val.json").write_text('{"a": 1}')
    with pytest.raises(LrnetError, match="val.json: expected a list of \\[a, b\\] pairs"):
        batch.ffpp_jobs(root, tmp_path / "out")


# ------------------------------------------------------------------------------- folder job


def fake_extract(path, options=None):
    """Stand-in for extract_video: 'fail' in the name fails, others give a 40-frame sequence."""
    path = Path(path)
    if "fail" in path.name:
        raise LrnetError(f"{path}: no face found in 12 frames")
    seq = np.full((40, 136), 0.25, np.float32)
    stats = ex.VideoStats(video=str(path), frames=42, skipped=2, landmarked=40)
    cal = Calibration(seq, np.zeros((40, 68, 2), np.int64), np.zeros((40, 68, 2), np.int64),
                      FaceBoxes(np.zeros(40, np.int64), np.zeros(40, np.int64), np.ones(40, np.int64), 1), 0)
    return ex.VideoLandmarks(np.zeros((40, 68, 2), np.int64), cal, stats)


def test_folder_job_is_resumable_logged_and_survives_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "extract_video", fake_extract)
    src = tmp_path / "videos"
    (src / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/b.avi", "fail.mp4"):
        (src / name).write_bytes(b"x")
    (src / "readme.txt").write_text("not a video")
    out = tmp_path / "out"
    summary = batch.extract_folder(src, out, progress=False)
    assert (summary.total, summary.done, summary.skipped_existing, summary.failed) == (3, 2, 0, 1)
    assert summary.frames == 84
    assert read_landmarks(out / "a.txt").shape == (40, 136)
    assert (out / "sub" / "b.txt").is_file() and not (out / "fail.txt").exists()
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temporaries
    rows = list(csv.DictReader(open(summary.log)))
    assert {Path(r["video"]).name: r["error"] for r in rows}["fail.mp4"].endswith("no face found in 12 frames")
    assert {r["skipped"] for r in rows if not r["error"]} == {"2"}

    # second run: finished outputs are skipped, only the failed video is retried; log kept and extended
    before = (out / "a.txt").stat().st_mtime_ns
    summary = batch.extract_folder(src, out, progress=False)
    assert (summary.total, summary.done, summary.skipped_existing, summary.failed) == (3, 0, 2, 1)
    assert (out / "a.txt").stat().st_mtime_ns == before
    assert len(list(csv.DictReader(open(summary.log)))) == 4


def test_folder_job_errors(tmp_path):
    with pytest.raises(LrnetError, match="input folder not found"):
        batch.extract_folder(tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrnetError, match="no video files"):
        batch.extract_folder(tmp_path / "empty", tmp_path / "out", progress=False)


@pytest.mark.reference
def test_folder_job_with_worker_processes(reference, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "one.mp4").symlink_to(reference / "videos" / "dfo_real.mp4")
    (src / "two.mp4").symlink_to(reference / "videos" / "dfo_real.mp4")
    write_video(src / "noface.mp4", 8)
    summary = batch.extract_folder(src, tmp_path / "out", workers=2, progress=False,
                                   options=ex.ExtractOptions(max_frames=35))
    assert (summary.done, summary.failed) == (2, 1)
    one, two = read_landmarks(tmp_path / "out" / "one.txt"), read_landmarks(tmp_path / "out" / "two.txt")
    assert one.shape == (35, 136) and np.array_equal(one, two)


def test_extract_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ex, "extract_video", fake_extract)
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    assert main(["extract", str(src), str(tmp_path / "out"), "--no-progress"]) == 0
    assert "1 videos: 1 extracted, 0 already done, 0 failed" in capsys.readouterr().out
    (src / "fail.mp4").write_bytes(b"x")
    assert main(["extract", str(src), str(tmp_path / "out"), "--no-progress", "-j", "1"]) == 1
    captured = capsys.readouterr()
    assert "2 videos: 0 extracted, 1 already done, 1 failed" in captured.out
    assert "lrnet extract: error: " in captured.err and "fail.mp4: no face found" in captured.err
    assert main(["extract", str(src), str(tmp_path / "out"), "--splits", str(tmp_path)]) == 2
    assert "--splits only applies with --layout ffpp" in capsys.readouterr().err


def test_quiet_and_verbose(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ex, "extract_video", fake_extract)
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    assert main(["extract", str(src), str(tmp_path / "v"), "-v"]) == 0
    err = capsys.readouterr().err
    assert "a.txt: 42 frames" in err
    assert main(["extract", str(src), str(tmp_path / "q"), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "1 extracted" in captured.out  # no bar, no chatter; the summary stays


# ------------------------------------------------------------------------------- job log


def test_job_log_keeps_old_rows_drops_a_torn_line_and_is_complete_after_each_write(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("output,video,error\nx.txt,x.mp4,\ny.txt,y.mp4,no fa")  # killed mid-append by an old version
    log = batch.JobLog(path, ["output", "video", "error"])
    log.add({"output": "z.txt", "video": "z.mp4", "error": "", "ignored": 1})
    log.flush()
    rows = list(csv.DictReader(open(path)))
    assert [r["output"] for r in rows] == ["x.txt", "z.txt"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_job_log_with_other_columns_is_moved_aside(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n")
    log = batch.JobLog(path, ["output", "error"])
    log.flush()
    assert path.read_text() == "output,error\n"
    aside = [p for p in tmp_path.glob("log.*.csv")]
    assert len(aside) == 1 and aside[0].read_text() == "a,b\n1,2\n"


def test_temporaries_of_killed_writes_are_removed_on_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "extract_video", fake_extract)
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.txt.k3j2h1.tmp").write_text("half a file")  # left by a kill -9 during the rename window
    (out / ".notes.tmp").write_text("the user's")
    batch.extract_folder(src, out, progress=False)
    assert not (out / ".a.txt.k3j2h1.tmp").exists() and (out / ".notes.tmp").exists()


# -------------------------------------------------------------------------- refused outputs


@pytest.mark.misuse
@pytest.mark.parametrize("where", ["same", "inside"])
def test_extract_refuses_an_output_that_is_its_input(tmp_path, capsys, where):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    out = src if where == "same" else src / "landmarks"
    code = main(["extract", str(src), str(out), "-q"])
    err = capsys.readouterr().err
    if where == "same":
        assert code == 2 and err.count("\n") == 1 and "the output folder is the input folder" in err
    else:  # landmark files are not videos: an output inside the input is never read back, so it is allowed
        assert code == 1


@pytest.mark.misuse
@pytest.mark.parametrize("flags", [["--workers", "0"], ["--detect-every", "0"], ["--retries", "-1"],
                                   ["--max-frames", "x"], ["--upsample", "-1"], ["--scheduler", "local:0"],
                                   ["--scheduler", "not an address"], ["--detect-width", "nan"]])
def test_extract_numeric_flags_are_checked_at_parse_time(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exc:
        main(["extract", str(tmp_path), str(tmp_path / "out"), *flags])
    assert exc.value.code == 2 and "argument" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_workers_and_scheduler_together_are_refused(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(["extract", str(tmp_path / "in"), str(tmp_path / "out"), "-j", "2", "--scheduler", "local:2"]) == 2
    assert "--workers is for this machine" in capsys.readouterr().err


# ------------------------------------------------------------------- real processes, signals


@pytest.fixture(scope="module")
def slow_videos(tmp_path_factory) -> Path:
    """Eight 640x480 noise videos: no face, so the detector runs on every frame (seconds per video)."""
    root = tmp_path_factory.mktemp("slow")
    first = write_video(root / "v0.mp4", 60, size=(640, 480))
    for i in range(1, 8):
        (root / f"v{i}.mp4").symlink_to(first)
    return root


def _workers_started(proc, count: int = 2) -> list:
    """Wait for `count` pool workers of `proc` and for them to get past their start-up; returns every
    descendant (workers and multiprocessing's resource tracker)."""
    def workers():
        found = [p for p in descendants(proc.pid) if "resource_tracker" not in " ".join(p.cmdline())]
        return found if len(found) >= count else None

    found = wait_for(workers, 30, f"{count} worker processes")
    wait_for(lambda: all(p.cpu_times().user > 1.0 for p in found), 30, "workers to start working")
    return descendants(proc.pid)


@pytest.mark.misuse
def test_ctrl_c_ends_extract_with_workers_at_once(slow_videos, tmp_path):
    pytest.importorskip("psutil")
    proc = start_lrnet(["extract", str(slow_videos), str(tmp_path / "out"), "--workers", "2"])
    workers = []
    try:
        workers = _workers_started(proc)
        interrupt(proc)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "lrnet extract: interrupted" in err
        assert all_gone(workers, 5), "worker processes outlived the interrupted job"
    finally:
        kill_survivors([*workers, proc])


@pytest.mark.misuse
def test_kill_9_of_extract_takes_its_workers_along(slow_videos, tmp_path):
    pytest.importorskip("psutil")
    out = tmp_path / "out"
    proc = start_lrnet(["extract", str(slow_videos), str(out), "--workers", "2", "-q"])
    workers = []
    try:
        workers = _workers_started(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert all_gone(workers, 5), "workers kept running under PID 1 after kill -9 of their parent"
    finally:
        kill_survivors([*workers, proc])


@pytest.mark.misuse
def test_a_second_extract_on_the_same_output_is_stopped_naming_the_first(slow_videos, tmp_path):
    out = tmp_path / "out"
    first = start_lrnet(["extract", str(slow_videos), str(out), "-q"])
    try:
        wait_for(lambda: str(first.pid) in ((out / ".lrnet.lock").read_text() if (out / ".lrnet.lock").exists()
                                            else ""), 30, "the first job's lock")
        second = run_lrnet(["extract", str(slow_videos), str(out), "-q"], timeout=60)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and f"in use by `lrnet extract` (pid {first.pid}" in second.stderr
    finally:
        interrupt(first)
        first.communicate(timeout=10)
    assert first.returncode == 130


@pytest.mark.misuse
def test_the_log_is_a_complete_csv_after_kill_9_and_the_rerun_finishes(tmp_path):
    src = tmp_path / "videos"
    for i in range(30):
        write_video(src / f"n{i:02d}.mp4", 4, seed=i)  # each fails fast (no face): one log row each
    out = tmp_path / "out"
    log = out / "extract_log.csv"
    proc = start_lrnet(["extract", str(src), str(out), "-q"])
    try:
        wait_for(lambda: log.exists() and log.read_text().count("\n") >= 4, 60, "a few log rows")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        kill_survivors([proc])
    text = log.read_text()
    rows = list(csv.reader(text.splitlines()))
    assert text.endswith("\n") and len({len(r) for r in rows}) == 1 and 2 <= len(rows) <= 31
    assert rows[0][:2] == ["output", "video"]
    again = run_lrnet(["extract", str(src), str(out), "-q"])
    assert again.returncode == 1 and "30 videos: 0 extracted, 0 already done, 30 failed" in again.stdout
    assert len(list(csv.DictReader(open(log)))) == len(rows) - 1 + 30


def _file_size_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.misuse
def test_full_disk_while_writing_the_log_is_one_line(tmp_path):
    src = tmp_path / "videos"
    for i in range(12):
        write_video(src / f"n{i:02d}.mp4", 3, seed=i)  # fail fast (no face): one log row each
    result = run_lrnet(["extract", str(src), str(tmp_path / "out"), "-q"], preexec_fn=_file_size_limit(2000))
    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]  # before it: one line per video without a face
    assert "Traceback" not in result.stderr and "extract_log.csv: cannot write the job log (File too large)" in last


@pytest.mark.misuse
@pytest.mark.reference
def test_full_disk_while_writing_landmarks_is_one_line(reference, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").symlink_to(reference / "videos" / "dfo_real.mp4")
    result = run_lrnet(["extract", str(src), str(tmp_path / "out"), "-q", "--max-frames", "31"],
                       preexec_fn=_file_size_limit(20000))  # 31 frames of landmarks take about 38 kB
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "a.txt: cannot write" in result.stderr
    assert not (tmp_path / "out" / "a.txt").exists() and not list((tmp_path / "out").glob(".*.tmp"))
