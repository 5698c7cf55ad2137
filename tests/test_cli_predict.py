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
    assert "aggregation: vote" in out and "threshold: 0.5000 (default)" in out
    assert "domain: FaceForensics++ (YouTube, c0/raw)" in out  # a copy of the official pair: its model card
    fake_line = next(line for line in out.splitlines() if "ff_fake.txt" in line)
    # 25 of 25 blocks fake: Wilson 95% interval [0.867, 1]
    assert fake_line.split()[-6:] == ["757", "25", "1.0000", "[0.867,", "1.000]", "fake"]
    assert main(["predict", str(lm), "--weights", weights_dir, "--json", "--aggregate", "mean-prob",
                 "-b", "g1", "--blocks"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["video"].rsplit("/", 1)[-1] for r in rows] == ["dfo_fake.txt", "dfo_real.txt", "ff_fake.txt",
                                                             "ff_real.txt"]
    assert all(r["aggregation"] == "mean-prob" and r["branches"] == ["g1"] for r in rows)
    assert all(r["weights"] == weights_dir and r["domain"].startswith("FaceForensics++") for r in rows)
    assert all(r["threshold"] == 0.5 and r["threshold_source"] == "default" for r in rows)
    assert all(r["interval"][0] <= r["score"] <= r["interval"][1] for r in rows)
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
    ok = next(line for line in captured.out.splitlines() if "ok.txt" in line)
    assert ok.split()[-1] in ("real", "fake", "(real)", "(fake)")


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


def test_uncertain_verdicts_on_the_reference_files(reference, weights_dir, capsys):
    """ffpp-raw on DeeperForensics files: dfo_real sits on the tie (6 of 12 blocks), dfo_fake at 9 of 12;
    both intervals contain 0.5, so both are "uncertain" (the call is kept); the FF++ files stay confident."""
    lm = reference / "landmarks"
    assert main(["predict", str(lm), "--weights", weights_dir, "--json"]) == 0
    rows = {r["video"].rsplit("/", 1)[-1]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["dfo_real.txt"]["verdict"] == "uncertain" and rows["dfo_real.txt"]["call"] == "fake"
    assert rows["dfo_real.txt"]["interval"] == pytest.approx([0.253782, 0.746218], abs=1e-6)
    assert rows["dfo_fake.txt"]["verdict"] == "uncertain" and rows["dfo_fake.txt"]["call"] == "fake"
    assert rows["ff_fake.txt"]["verdict"] == "fake" and rows["ff_real.txt"]["verdict"] == "real"
    # --no-uncertain gives the bare call; --threshold moves it and says so
    assert main(["predict", str(lm / "dfo_real.txt"), "--weights", weights_dir, "--json", "--no-uncertain",
                 "--threshold", "0.6"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["verdict"] == row["call"] == "real"
    assert row["threshold"] == 0.6 and row["threshold_source"] == "--threshold"


def test_numeric_flags_are_checked_at_parse_time(tmp_path, capsys):
    write_landmarks(tmp_path / "v.txt", np.zeros((40, 136), np.float32))
    for flags in (["--threshold", "1.5"], ["--threshold", "nan"], ["--block-size", "1"], ["--block-size", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(tmp_path / "v.txt"), *flags])
        assert exc.value.code == 2
        assert flags[0] in capsys.readouterr().err


@pytest.mark.misuse
def test_rows_stream_and_a_closed_pipe_is_not_a_traceback(reference, weights_dir):
    """`lrnet predict ... | head -1`: the first row arrives while later files are still being scored, and
    the closed pipe ends the command without a traceback (the generic handler is in lrnet.cli.main)."""
    import inspect
    import subprocess
    import sys

    import lrnet.cli

    if "BrokenPipeError" not in inspect.getsource(lrnet.cli):
        pytest.skip("lrnet.cli.main does not handle BrokenPipeError yet (the misuse helper's change)")
    lm = reference / "landmarks"
    cmd = f"{sys.executable} -m lrnet predict {lm} {lm} {lm} --weights {weights_dir} --json | head -1"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout)["video"].endswith("dfo_fake.txt")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
