"""Training configuration (reference YAML keys, presets, overrides) and the `lrnet train` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lrnet.cli import main
from lrnet.config import (PRESETS, REFERENCE_KEYS, TrainConfig, load_config, parse_override, preset_config,
                          presets_table)
from lrnet.errors import LrnetError
from lrnet.model import ModelConfig

REPO = Path(__file__).resolve().parents[1]

# The reference's configs/args_train.yaml and args_model.yaml, as a user has them.
ARGS_TRAIN = """BLOCK_SIZE: 30
BATCH_SIZE: 1024

add_dataset_root: './datasets'  # Modify this if you change the root address of the dataset.

add_weights: './weights/torch'

EPOCHS_g1: 750
LEARNING_RATE_g1: 0.001
weights_name_g1: 'g1_test.pth'

EPOCHS_g2: 400
LEARNING_RATE_g2: 1e-3
weights_name_g2: 'g2_test.pth'
"""
ARGS_MODEL = """feature_size: 136
lm_dropout_rate: 0.1
rnn_unit: 32
num_layers: 1
rnn_dropout_rate: 0
fc_dropout_rate: 0.5
res_hidden: 64
"""


def test_reference_yaml_files_load_unchanged(tmp_path):
    (tmp_path / "args_train.yaml").write_text(ARGS_TRAIN)
    (tmp_path / "args_model.yaml").write_text(ARGS_MODEL.replace("rnn_unit: 32", "rnn_unit: 48"))
    cfg = load_config(files=[tmp_path / "args_train.yaml", tmp_path / "args_model.yaml"])
    assert cfg.output == "./weights/torch" and cfg.dataset_root == "./datasets"
    assert cfg.weights_name_g1 == "g1_test.pth" and cfg.weights_name_g2 == "g2_test.pth"
    assert cfg.lr_g2 == 1e-3 and isinstance(cfg.lr_g2, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.model.rnn_unit == 48 and cfg.model.rnn_dropout_rate == 0.0
    assert (cfg.epochs("g1"), cfg.epochs("g2")) == (750, 400)


def test_reference_preset_is_the_reference_code_defaults():
    cfg = preset_config("reference")
    assert (cfg.block_size, cfg.batch_size, cfg.lr_g1, cfg.lr_g2, cfg.epochs_g1, cfg.epochs_g2) == \
        (30, 1024, 1e-3, 1e-3, 750, 400)
    assert cfg.model == ModelConfig()  # GRU 32, lm dropout 0.1, fc dropout 0.5, res_hidden 64
    assert set(REFERENCE_KEYS) == {"BLOCK_SIZE", "BATCH_SIZE", "add_dataset_root", "add_weights", "EPOCHS_g1",
                                   "LEARNING_RATE_g1", "weights_name_g1", "EPOCHS_g2", "LEARNING_RATE_g2",
                                   "weights_name_g2"}


def test_paper_and_tf_legacy_presets():
    paper = preset_config("paper")
    assert (paper.model.rnn_unit, paper.block_size, paper.epochs_g1, paper.epochs_g2) == (64, 60, 500, 500)
    assert paper.model.lm_dropout_rate == paper.model.fc_dropout_rate == 0.25
    tf = preset_config("tf-legacy")
    assert tf.model.arch == "lrnet-tf" and tf.model.rnn_unit == 64 and tf.block_size == 60
    assert (tf.model.lm_dropout_rate, tf.model.fc_dropout_rate, tf.epochs_g1, tf.epochs_g2) == (0.25, 0.5, 500, 400)
    from lrnet.model import build_model

    assert type(build_model(tf.model)).__name__ == "LegacyLRNet"
    table = presets_table()
    assert all(name in table.splitlines()[0] for name in PRESETS)
    with pytest.raises(LrnetError, match="unknown preset 'fast'"):
        preset_config("fast")


def test_overrides_apply_in_order_and_parse_types(tmp_path):
    (tmp_path / "a.yaml").write_text("rnn_unit: 16\nEPOCHS_g1: 3\n")
    cfg = load_config("paper", [tmp_path / "a.yaml"], ["rnn_unit=24", "LEARNING_RATE_g1=5e-4", "patience=4",
                                                         "add_weights=runs/x"], {"batch_size": 8})
    assert cfg.model.rnn_unit == 24 and cfg.epochs_g1 == 3 and cfg.block_size == 60
    assert cfg.lr_g1 == 5e-4 and cfg.patience == 4 and cfg.output == "runs/x" and cfg.batch_size == 8
    assert parse_override("seed=") == ("seed", None)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override,message", [
    ("rnn_units=3", "unknown configuration key 'rnn_units' .*did you mean 'rnn_unit'"),
    ("BATCH_SIZE=abc", "BATCH_SIZE must be an integer"),
    ("BLOCK_SIZE=1", "BLOCK_SIZE must be 2 to 100000"),
    ("BLOCK_SIZE=100001", "BLOCK_SIZE must be 2 to 100000"),
    ("lm_dropout_rate=1.5", "lm_dropout_rate must be in"),
    # Non-finite and absurd values stop with one line, never a traceback or an allocation (issue 10).
    ("LEARNING_RATE_g1=inf", "must be finite and positive"),
    ("lr_g2=.nan", "must be finite and positive"),
    ("LEARNING_RATE_g2=-1e-3", "must be finite and positive"),
    ("BATCH_SIZE=.inf", "BATCH_SIZE must be an integer"),
    ("EPOCHS_g1=.nan", "EPOCHS_g1 must be an integer"),
    ("BATCH_SIZE=99999999999", "BATCH_SIZE must be 1 to 1000000"),
    ("seed=-1", "seed must be 0 to 4294967295"),
    ("seed=4294967296", "seed must be 0 to 4294967295"),
    ("threads=100000", "threads must be 1 to 4096"),
    ("rnn_unit=1000000000", "rnn_unit and res_hidden must be 1 to 65536"),
    ("gru=cuda", "gru must be one of fused, torch"),
    ("novalue", "expected KEY=VALUE"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(LrnetError, match=message):
        load_config(overrides=[override])


def test_bad_yaml_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("EPOCHS: 3\n")
    with pytest.raises(LrnetError, match=r"bad.yaml: unknown configuration key 'EPOCHS'"):
        load_config(files=[bad])
    bad.write_text("- a list\n")
    with pytest.raises(LrnetError, match="bad.yaml: expected a mapping"):
        load_config(files=[bad])
    with pytest.raises(LrnetError, match="missing.yaml: configuration file not found"):
        load_config(files=[tmp_path / "missing.yaml"])


# ----------------------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def tiny_ffpp(tmp_path_factory):
    from lrnet.synthetic import generate_ffpp

    root = tmp_path_factory.mktemp("ffpp")
    generate_ffpp(root, {"train": 4, "val": 2, "test": 2}, frames=(61, 90), workers=1)
    return root


def test_cli_train_writes_run_folder(tiny_ffpp, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "args_model.yaml"
    cfg.write_text(ARGS_MODEL.replace("rnn_unit: 32", "rnn_unit: 8"))
    rc = main(["train", "-d", "DF", "-l", "raw", "--root", str(tiny_ffpp), "--config", str(cfg), "--epochs", "2",
               "--batch-size", "8", "--seed", "1", "--output", str(out), "--no-cache", "-b", "g1"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "SYNTHETIC" in captured.out and "g1: best val acc" in captured.out
    assert "Traceback" not in captured.err
    assert (out / "g1.pth").is_file() and not (out / "g2.pth").exists()
    meta = json.loads((out / "lrnet.json").read_text())
    assert meta["model"]["rnn_unit"] == 8 and meta["branches"] == ["g1"]
    assert meta["fps"] == 30.0 and meta["fps_source"] == "synthetic"
    assert json.loads((out / "history_g1.json").read_text())["epoch"] == [1, 2]


def test_cli_train_user_errors_exit_2(tiny_ffpp, tmp_path, capsys):
    assert main(["train", "-d", "DF", "--root", str(tmp_path / "none"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "lrnet train: error:" in err and str(tmp_path / "none") in err
    assert main(["train", "-d", "DF", "--root", str(tiny_ffpp), "--set", "EPOCH_g1=2", "-q"]) == 2
    assert "unknown configuration key 'EPOCH_g1'" in capsys.readouterr().err


def test_root_train_py_wrapper_runs_like_the_reference(tiny_ffpp, tmp_path):
    out = tmp_path / "w"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "-d", "DF", "-l", "raw", "-b", "g2",
                           "--root", str(tiny_ffpp), "--epochs", "1", "--batch-size", "8", "--set", "rnn_unit=4",
                           "-o", str(out), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "g2.pth").is_file() and not (out / "g1.pth").exists()
