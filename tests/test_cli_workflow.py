"""End to end through the CLI, as a user would: generate -> train -> evaluate -> predict,
for the current architecture and the TensorFlow-era one (same commands, different preset)."""

from __future__ import annotations

import json

import pytest

from lrnet.cli import main


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    assert main(["generate", str(root), "--videos", "24", "--frames", "130", "200", "--difficulty", "easy",
                 "--quiet"]) == 0
    return root


@pytest.mark.parametrize("preset,block", [("reference", 30), ("tf-legacy", 60)])
def test_generate_train_evaluate_predict(synthetic_root, tmp_path, capsys, preset, block):
    run = tmp_path / "run"
    assert main(["train", "-d", "DF", "-l", "raw", "--root", str(synthetic_root), "--preset", preset,
                 "--epochs", "2", "--batch-size", "64", "--seed", "0", "-o", str(run), "--quiet",
                 "--no-cache"]) == 0
    meta = json.loads((run / "lrnet.json").read_text())
    assert meta["block_size"] == block
    assert (run / "g1.pth").is_file() and (run / "g2.pth").is_file() and (run / "training_curves.png").is_file()
    capsys.readouterr()

    out = tmp_path / "eval"
    assert main(["evaluate", "-d", "DF", "-l", "raw", "--root", str(synthetic_root), "--weights", str(run),
                 "--output", str(out), "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "AUC (video-level)" in text and "synthetic" in text.lower()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["block_size"] == block and metrics["synthetic"] is True
    assert (out / "videos.csv").read_text().startswith("video,label,frames,blocks,score,verdict")

    test_files = sorted((synthetic_root / "DF" / "raw" / "test").glob("*.txt"))
    assert main(["predict", str(test_files[0]), "--weights", str(run), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["blocks"] == max(0, -(-(row["frames"] - block) // block))
    assert row["call"] in ("real", "fake") and row["verdict"] in (row["call"], "uncertain")
