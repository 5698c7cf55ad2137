"""The training run folder under misuse (lrnet.runs, `lrnet train`): refusal to replace a run, outputs that
are files or inputs, one writer per folder (two real processes), --resume with other settings, numeric
flags, a full disk, Ctrl-C, and what lrnet.json records (frame rate, keys written by other commands)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrnet.cli import main
from lrnet.runs import dataset_fps, resume_conflicts
from lrnet.weights.runfile import update_meta

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--batch-size", "8", "--set", "rnn_unit=4", "--set", "res_hidden=8", "--seed", "0",
        "--no-cache", "-q"]


@pytest.fixture(scope="module")
def root(tiny_ffpp):
    return tiny_ffpp  # tests/conftest.py


def _train(root, out, *extra):
    return main(["train", "-d", "DF", "-l", "raw", "--root", str(root), "-o", str(out), *TINY, *extra])


def _lrnet(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.Popen([sys.executable, "-m", "lrnet", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def _wait_for(path: Path, proc, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- refusals (in process)

@pytest.mark.misuse
def test_a_finished_run_is_never_replaced_silently(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(root, out) == 0
    before = (out / "g1.pth").read_bytes()
    capsys.readouterr()
    assert _train(root, out, "--seed", "5") == 2
    _one_line_error(capsys.readouterr().err, str(out), "--resume", "--overwrite")
    assert (out / "g1.pth").read_bytes() == before
    assert _train(root, out, "--seed", "5", "--overwrite") == 0  # asked for: replaced
    assert (out / "g1.pth").read_bytes() != before
    assert _train(root, out, "--resume", "--overwrite") == 2


@pytest.mark.misuse
def test_default_output_twice_is_refused(root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", "-d", "DF", "--root", str(root), *TINY]
    assert main(args) == 0 and (tmp_path / "runs" / "DF_raw" / "g1.pth").is_file()
    capsys.readouterr()
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, "runs/DF_raw", "holds a training run")


@pytest.mark.misuse
def test_output_that_is_a_file_or_inside_the_dataset_is_refused(root, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me\n")
    assert _train(root, afile) == 2
    _one_line_error(capsys.readouterr().err, "exists and is not a folder")
    assert afile.read_text() == "keep me\n"
    for inside, why in ((root / "DF" / "raw" / "train", "the output is inside the input folder"),
                        (root / "Origin", "the output is the input")):
        assert _train(root, inside) == 2
        _one_line_error(capsys.readouterr().err, why, "--output")
    assert not list(root.rglob("*.pth"))


@pytest.mark.misuse
def test_resume_with_other_model_settings_is_refused_and_keeps_lrnet_json(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(root, out) == 0
    recorded = (out / "lrnet.json").read_text()
    capsys.readouterr()
    assert _train(root, out, "--resume", "--set", "rnn_unit=6", "--batch-size", "4") == 2
    _one_line_error(capsys.readouterr().err, "batch_size", "model.rnn_unit")
    assert (out / "lrnet.json").read_text() == recorded
    assert _train(root, out, "--resume", "--epochs", "2") == 0  # more epochs: the same run, continued
    assert json.loads((out / "history_g1.json").read_text())["epoch"] == [1, 2]


@pytest.mark.misuse
@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "abc"), ("--lr", "-1"), ("--fps", "0"),
                                        ("--threads", "0"), ("--patience", "0"), ("--seed", "-3"),
                                        ("--block-size", "1.5"), ("--lr", "nan")])
def test_numeric_flags_are_checked_at_parse_time(root, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        main(["train", "-d", "DF", "--root", str(root), "-o", str(tmp_path / "r"), flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.misuse
@pytest.mark.parametrize("override", ["EPOCHS_g1=0", "BATCH_SIZE=0", "LEARNING_RATE_g2=0"])
def test_set_values_go_through_config_validation(root, tmp_path, capsys, override):
    assert main(["train", "-d", "DF", "--root", str(root), "-o", str(tmp_path / "r"), "--set", override, "-q"]) == 2
    _one_line_error(capsys.readouterr().err, override.split("=")[0])
    assert not (tmp_path / "r" / "g1.pth").exists()


@pytest.mark.misuse
def test_demo_numeric_flags(capsys):
    for args in (["--epochs", "0"], ["--videos", "3"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(["demo", *args])
        assert exc.value.code == 2
        assert f"argument {args[0]}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- lrnet.json

def test_lrnet_json_keeps_keys_of_other_commands(root, tmp_path):
    out = tmp_path / "run"
    assert _train(root, out) == 0
    threshold = {"value": 0.42, "method": "eer"}  # as lrnet evaluate --calibrate stores it
    update_meta(out, {"threshold": threshold, "card": {"notes": "calibrated"}})
    assert _train(root, out, "--resume", "--epochs", "2") == 0
    assert _train(root, out, "--overwrite") == 0
    meta = json.loads((out / "lrnet.json").read_text())
    assert meta["threshold"] == threshold and meta["card"] == {"notes": "calibrated"}
    assert meta["model"]["rnn_unit"] == 4 and meta["fps"] == 30.0 and meta["fps_source"] == "synthetic"


def test_fps_from_flag_extraction_log_or_synthetic_marker(root, tmp_path, capsys):
    from lrnet.datasets import blockset_from_arrays
    from lrnet.synthetic import real_video
    from lrnet.weights import resolve_weights

    out = tmp_path / "run"
    assert _train(root, out, "--fps", "24") == 0
    meta = json.loads((out / "lrnet.json").read_text())
    assert (meta["fps"], meta["fps_source"]) == (24.0, "--fps")
    assert resolve_weights(str(out)).fps == 24.0

    real = tmp_path / "real"
    real.mkdir()
    (real / "extract_log.csv").write_text("output,video,fps,error\n"
                                          "a/x.txt,x.mp4,25.0,\nb/y.txt,y.mp4,30.0,\nb/z.txt,z.mp4,29.97,\n"
                                          "b/w.txt,w.mp4,0,no face\n")
    blocks = blockset_from_arrays([real_video(0, 1, 70)], [0], ["b/y.txt"], 30)
    blocks.root = str(real)
    assert dataset_fps(blocks) == (30.0, "extract_log.csv")  # the rows of this dataset's videos
    blocks.videos = ["c/other.txt"]
    assert dataset_fps(blocks) == (29.97, "extract_log.csv")  # none matches: median of the log
    blocks.root = str(tmp_path / "nowhere")
    assert dataset_fps(blocks) == (None, "unknown")
    assert dataset_fps(blocks, 50) == (50.0, "--fps")


def test_resume_conflicts_names_the_keys():
    old = {"model": {"rnn_unit": 32, "arch": "lrnet"}, "block_size": 30, "config": {"batch_size": 1024, "lr_g1": 1e-3},
           "dataset": {"train": {"name": "DF/raw/train"}}}
    new = {"model": {"rnn_unit": 64, "arch": "lrnet"}, "block_size": 30, "config": {"batch_size": 1024, "lr_g1": 1e-3},
           "dataset": {"train": {"name": "F2F/raw/train"}}}
    assert resume_conflicts(old, new) == ["dataset", "model.rnn_unit"]
    assert resume_conflicts(old, old) == []


# ----------------------------------------------------------------------------- real processes and signals

@pytest.mark.misuse
def test_one_writer_per_run_folder_two_processes(root, tmp_path):
    out = tmp_path / "run"
    first = _lrnet("train", "-d", "DF", "--root", str(root), "-o", str(out), *TINY, "--epochs", "100000")
    try:
        _wait_for(out / "history_g1.json", first)
        second = _lrnet("train", "-d", "DF", "--root", str(root), "-o", str(out), *TINY, "--resume")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        _one_line_error(err, str(out), "in use by `lrnet train`", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130


@pytest.mark.misuse
def test_ctrl_c_stops_both_branches_within_seconds_and_resume_continues(root, tmp_path):
    out = tmp_path / "run"
    args = ["train", "-d", "DF", "--root", str(root), "-o", str(out), *TINY, "--concurrent", "on"]
    proc = _lrnet(*args, "--epochs", "100000")
    _wait_for(out / "history_g2.json", proc)
    _wait_for(out / "history_g1.json", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert took < 30  # generous for a loaded machine; typically well under a second
    done = {b: json.loads((out / f"history_{b}.json").read_text())["epoch"] for b in ("g1", "g2")}
    assert all(epochs == list(range(1, len(epochs) + 1)) for epochs in done.values())
    # The checkpoints stay valid: resuming continues each branch where it stopped.
    target = max(len(e) for e in done.values()) + 1
    resumed = _lrnet(*args, "--epochs", str(target), "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    for b in ("g1", "g2"):
        assert json.loads((out / f"history_{b}.json").read_text())["epoch"] == list(range(1, target + 1))


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead


@pytest.mark.misuse
def test_write_failure_is_one_line_not_a_traceback(root, tmp_path):
    """RLIMIT_FSIZE makes every write past 32 KiB fail (EFBIG): the first checkpoint cannot be written."""
    out = tmp_path / "run"
    proc = _lrnet("train", "-d", "DF", "--root", str(root), "-o", str(out), "--epochs", "1", "--batch-size", "8",
                  "--no-cache", "-q", preexec_fn=_limit_file_size)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    _one_line_error(err, str(out), "cannot write (File too large)")
    assert not list(out.glob(".*.tmp"))  # no temporary left behind


@pytest.mark.misuse
def test_full_disk_is_one_line_not_a_traceback(root, tmp_path):
    """A real 200 KiB tmpfs (needs root and mount permission)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount not permitted here: {mounted.stderr.decode().strip()}")
    try:
        proc = _lrnet("train", "-d", "DF", "--root", str(root), "-o", str(disk / "run"), "--epochs", "3",
                      "--batch-size", "8", "--no-cache", "-q")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err
        _one_line_error(err, str(disk / "run"), "cannot write (No space left on device)")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
