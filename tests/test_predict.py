"""`lrnet predict` and the block -> video aggregation rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lrnet.cli import main
from lrnet.landmarks import write_landmarks
from lrnet.scoring import aggregate_blocks, merge_branches, verdict


def test_vote_threshold_is_inclusive():
    merged = merge_branches({"g1": np.array([0.25, 0.5, 0.75], np.float32),
                             "g2": np.array([0.75, 0.5, 0.25], np.float32)})
    np.testing.assert_array_equal(merged, [0.5, 0.5, 0.5])
    assert aggregate_blocks(merged, np.zeros(3, int), 1, "vote")[0] == 1.0  # 0.5 counts as fake
    assert verdict(0.5) == "fake" and verdict(0.4999) == "real" and verdict(float("nan")) == "n/a"


def test_aggregations_by_hand():
    scores = np.array([0.9, 0.2, 0.6, 0.1], np.float32)
    video = np.array([0, 0, 0, 2])
    vote = aggregate_blocks(scores, video, 3, "vote")
    np.testing.assert_allclose(vote[[0, 2]], [2 / 3, 0.0])
    assert np.isnan(vote[1])  # video 1 has no block
    np.testing.assert_allclose(aggregate_blocks(scores, video, 3, "mean-prob")[[0, 2]], [(0.9 + 0.2 + 0.6) / 3, 0.1],
                               rtol=1e-6)
    logit = np.log(np.array([0.9, 0.2, 0.6]) / (1 - np.array([0.9, 0.2, 0.6]))).mean()
    assert aggregate_blocks(scores, video, 3, "mean-logit")[0] == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-6)
    with pytest.raises(ValueError):
        aggregate_blocks(scores, video, 3, "median")


def test_single_branch_uses_its_own_probability():
    p = np.array([0.3, 0.7], np.float32)
    np.testing.assert_array_equal(merge_branches({"g2": p}), p)


@pytest.fixture
def weights_dir(reference):
    return str(reference / "weights" / "ffpp_raw")


def test_predict_table_and_json(reference, weights_dir, capsys):
    lm = reference / "landmarks"
    assert main(["predict", str(lm / "ff_fake.txt"), str(lm / "ff_real.txt"), "--weights", weights_dir]) == 0
    out = capsys.readouterr().out
    assert "aggregation: vote" in out
    fake_line = next(line for line in out.splitlines() if "ff_fake.txt" in line)
    assert fake_line.split()[-4:] == ["757", "25", "1.0000", "fake"]
    assert main(["predict", str(lm), "--weights", weights_dir, "--json", "--aggregate", "mean-prob",
                 "-b", "g1", "--blocks"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["video"].rsplit("/", 1)[-1] for r in rows] == ["dfo_fake.txt", "dfo_real.txt", "ff_fake.txt",
                                                             "ff_real.txt"]
    assert all(r["aggregation"] == "mean-prob" and r["branches"] == ["g1"] for r in rows)
    ff_fake = rows[2]
    assert ff_fake["block_scores_g1"][0] == pytest.approx(0.997354, abs=1e-5)
    assert ff_fake["score"] == pytest.approx(np.mean(ff_fake["block_scores"]), abs=1e-5)


def test_short_and_bad_files_are_reported(tmp_path, weights_dir, capsys):
    write_landmarks(tmp_path / "short.txt", np.zeros((30, 136), np.float32))
    write_landmarks(tmp_path / "ok.txt", np.zeros((40, 136), np.float32))
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    code = main(["predict", str(tmp_path), "--weights", weights_dir])
    captured = capsys.readouterr()
    assert code == 1
    assert "bad.txt: line 1: expected 136 values" in captured.err
    assert "too short: 30 frames" in captured.out
    assert any("ok.txt" in line and line.split()[-1] in ("real", "fake") for line in captured.out.splitlines())


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--weights", str(tmp_path)]) == 2
    assert main(["predict", str(tmp_path / "empty"), "--offline"]) == 2
    write_landmarks(tmp_path / "v.txt", np.zeros((40, 136), np.float32))
    assert main(["predict", str(tmp_path / "v.txt"), "--weights", "ffpp-raw", "--offline"]) == 2
    assert "lrnet weights download ffpp-raw" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(tmp_path / "v.txt"), "--aggregate", "median"])
    assert exc.value.code == 2


def test_console_entry_point_has_no_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.txt"
    bad.write_text("x\n")
    proc = subprocess.run([sys.executable, "-m", "lrnet", "predict", str(bad), "--weights", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and str(tmp_path) in proc.stderr


def test_weights_cli_download_from_mirror(reference, capsys):
    assert main(["weights", "download", "dfo", "--from", str(reference / "weights" / "dfo")]) == 0
    assert "SHA-256 verified" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert "dfo" in listing and "g1:cached g2:cached" in listing.split("dfo", 1)[1].splitlines()[0]
