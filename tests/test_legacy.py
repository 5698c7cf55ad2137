"""The TF-era architecture ("lrnet-tf") and exact import of the reference's Keras .h5 weights.

Keras reference numbers (`KERAS_OUTPUTS`) were produced once, outside lrnet, with
TensorFlow 2.15.1 / Keras 2.15.0 (CPU) by::

    /tmp/tfenv/bin/python tools/keras_reference.py \\
        ../shared/reference/lrnet-official/weights/tf_df_c23 ../shared/reference/lrnet-official/landmarks

which loads the published g1.h5 / g2.h5 with ``tf.keras.models.load_model`` (the saved Keras
architecture) and records, per input set and branch, p(fake) of the unchanged model and the
pre-softmax logits of a copy whose last activation is linear. The inputs are rebuilt here with
the same NumPy-only functions of tools/keras_reference.py: "fixed" = 3 seeded random-walk
sequences (g1: 3 x 60 x 136, g2: 3 x 59 x 136), "landmarks" = the first two 60-frame blocks of
ff_real, ff_fake, dfo_real, dfo_fake (in that order) and their frame differences.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lrnet.cli import main
from lrnet.errors import LrnetError
from lrnet.model import LegacyLRNet, ModelConfig, build_model, fake_probability, legacy_config
from lrnet.weights import resolve_weights
from lrnet.weights.keras import block_size_of, read_keras_branch

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("keras_reference", REPO / "tools" / "keras_reference.py")
keras_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(keras_reference)

P_TOL = 1e-5  # on p(fake); observed max |diff| 4.5e-7
LOGIT_TOL = 3e-5  # on logits of magnitude up to ~12; observed 7.6e-6 (+5e-7 from rounding below)

KERAS_OUTPUTS = {
    'fixed': {
        'g1': {
            "p_fake": [0.99989462, 0.00996876, 0.21128604],
            "logits": [
                [2.752039, 11.910292],
                [0.919804, -3.678476],
                [-0.699279, -2.016470],
            ],
        },
        'g2': {
            "p_fake": [0.08270612, 0.52195466, 0.05605847],
            "logits": [
                [0.874281, -1.531853],
                [-0.150358, -0.062483],
                [1.072494, -1.751175],
            ],
        },
    },
    'landmarks': {
        'g1': {
            "p_fake": [0.14345583, 0.01057288, 0.04133894, 0.01430221, 0.00396665, 0.00750738, 0.01189826, 0.00171354],
            "logits": [
                [0.209043, -1.577836],
                [0.741198, -3.797636],
                [0.632557, -2.511176],
                [0.812448, -3.420488],
                [1.345899, -4.179960],
                [1.111840, -3.772492],
                [1.346035, -3.073358],
                [1.495833, -4.871643],
            ],
        },
        'g2': {
            "p_fake": [0.01009089, 0.00027935, 1.00000000, 0.11518578, 0.02418811, 0.91705155, 0.00042371, 0.96837461],
            "logits": [
                [1.848151, -2.737830],
                [3.271651, -4.911127],
                [-9.414672, 7.967109],
                [0.844161, -1.194670],
                [1.528790, -2.168618],
                [-1.263377, 1.139567],
                [3.291423, -4.474607],
                [-1.952209, 1.469451],
            ],
        },
    },
}


# ---------------------------------------------------------------- helpers

def _legacy_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(arch="lrnet-tf", rnn_unit=64, lm_dropout_rate=0.25, fc_dropout_rate=0.5,
                                 res_hidden=64), **kw})


def _keras_gru_reference(x, kernel, recurrent, bias):
    """A Keras ``reset_after=True`` GRU written from the Keras formula, float64, gates (z, r, h)."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    for t in range(x.shape[1]):
        xm = x[:, t] @ kernel + bias[0]
        hm = h @ recurrent + bias[1]
        z = sig(xm[:, :units] + hm[:, :units])
        r = sig(xm[:, units:2 * units] + hm[:, units:2 * units])
        candidate = np.tanh(xm[:, 2 * units:] + r * hm[:, 2 * units:])
        h = z * h + (1.0 - z) * candidate
    return h


def _random_keras_weights(rng, features=136, units=8, hidden=5):
    return {
        "fwd": [rng.normal(0, 0.3, (features, 3 * units)), rng.normal(0, 0.3, (units, 3 * units)),
                rng.normal(0, 0.3, (2, 3 * units))],
        "bwd": [rng.normal(0, 0.3, (features, 3 * units)), rng.normal(0, 0.3, (units, 3 * units)),
                rng.normal(0, 0.3, (2, 3 * units))],
        "dense": [rng.normal(0, 0.3, (2 * units, hidden)), rng.normal(0, 0.3, hidden)],
        "out": [rng.normal(0, 0.3, (hidden, 2)), rng.normal(0, 0.3, 2)],
    }


def _keras_reference_logits(x, w):
    fwd = _keras_gru_reference(x, *w["fwd"])
    bwd = _keras_gru_reference(x[:, ::-1], *w["bwd"])
    hidden = np.maximum(np.concatenate([fwd, bwd], axis=1) @ w["dense"][0] + w["dense"][1], 0.0)
    return hidden @ w["out"][0] + w["out"][1]


def _write_keras_h5(path, w, frames=60, cells=(7, 8), full_model=True, rnn_class="GRU"):
    """A file laid out like Keras 2's ``model.save(.h5)`` (or ``save_weights`` with full_model=False)."""
    layer_names = ["dropout", "bidirectional", "dropout_1", "dense", "dropout_2", "dense_1"]
    weights = {
        "bidirectional": [(f"bidirectional/forward_gru/gru_cell_{cells[0]}/{k}:0", a)
                          for k, a in zip(("kernel", "recurrent_kernel", "bias"), w["fwd"])]
                         + [(f"bidirectional/backward_gru/gru_cell_{cells[1]}/{k}:0", a)
                            for k, a in zip(("kernel", "recurrent_kernel", "bias"), w["bwd"])],
        "dense": [("dense/kernel:0", w["dense"][0]), ("dense/bias:0", w["dense"][1])],
        "dense_1": [("dense_1/kernel:0", w["out"][0]), ("dense_1/bias:0", w["out"][1])],
    }
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        root.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        for name in layer_names:
            group = root.create_group(name)
            group.attrs["weight_names"] = np.array([n.encode() for n, _ in weights.get(name, [])])
            for n, a in weights.get(name, []):
                group.create_dataset(n, data=np.asarray(a, np.float32))
        if full_model:
            units = w["fwd"][1].shape[0]
            layers = [
                {"class_name": "InputLayer", "config": {"batch_input_shape": [None, frames, w["fwd"][0].shape[0]]}},
                {"class_name": "Dropout", "config": {"rate": 0.25}},
                {"class_name": "Bidirectional", "config": {"merge_mode": "concat", "layer": {
                    "class_name": rnn_class, "config": {"units": units, "reset_after": True, "activation": "tanh",
                                                        "recurrent_activation": "sigmoid"}}}},
                {"class_name": "Dropout", "config": {"rate": 0.5}},
                {"class_name": "Dense", "config": {"units": w["dense"][0].shape[1], "activation": "relu"}},
                {"class_name": "Dropout", "config": {"rate": 0.5}},
                {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}},
            ]
            f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": layers}})
            f.attrs["keras_version"] = "2.6.0"
    return path


@pytest.fixture
def synthetic_pair(tmp_path):
    """A small random Keras pair (GRU 8, dense 5) with its float64 Keras-formula reference."""
    rng = np.random.default_rng(7)
    w1, w2 = _random_keras_weights(rng), _random_keras_weights(rng)
    g1 = _write_keras_h5(tmp_path / "k1.h5", w1, frames=60, cells=(7, 8))
    g2 = _write_keras_h5(tmp_path / "k2.h5", w2, frames=59, cells=(11, 12))
    return {"g1": (g1, w1), "g2": (g2, w2)}


def _reference_pair(reference):
    folder = reference / "weights" / "tf_df_c23"
    return folder / "g1.h5", folder / "g2.h5"


def _probs_and_logits(model, x):
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return fake_probability(logits).numpy(), logits.numpy()


# ---------------------------------------------------------------- architecture

def test_build_model_gives_the_legacy_architecture():
    model = build_model(_legacy_cfg())
    assert isinstance(model, LegacyLRNet)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "gru.weight_ih_l0": (192, 136), "gru.weight_hh_l0": (192, 64), "gru.bias_ih_l0": (192,), "gru.bias_hh_l0": (192,),
        "gru.weight_ih_l0_reverse": (192, 136), "gru.weight_hh_l0_reverse": (192, 64),
        "gru.bias_ih_l0_reverse": (192,), "gru.bias_hh_l0_reverse": (192,),
        "dense.1.weight": (64, 128), "dense.1.bias": (64,), "dense.4.weight": (2, 64), "dense.4.bias": (2,),
    }
    # Same count as the Keras model: 2 x (136*192 + 64*192 + 2*192) + 128*64 + 64 + 64*2 + 2
    assert sum(p.numel() for p in model.parameters()) == 2 * (136 * 192 + 64 * 192 + 2 * 192) + 128 * 64 + 64 + 130
    assert model.dropout_input.p == 0.25 and model.dense[0].p == 0.5 and model.dense[3].p == 0.5
    for frames in (60, 59):
        out = model(torch.randn(3, frames, 136))
        assert out.shape == (3, 2)
    with pytest.raises(LrnetError, match="one GRU layer"):
        LegacyLRNet(_legacy_cfg(num_layers=2))


def test_unknown_arch_lists_lrnet_tf():
    with pytest.raises(LrnetError, match="lrnet-tf"):
        build_model(ModelConfig(arch="nope"))


def test_legacy_model_is_trainable():
    torch.manual_seed(0)
    model = build_model(_legacy_cfg()).train()
    x, y = torch.randn(16, 60, 136), torch.randint(0, 2, (16,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_training_mode_dropout_is_elementwise_and_off_in_eval():
    torch.manual_seed(0)
    model = build_model(_legacy_cfg())
    x = torch.ones(64, 60, 136)
    model.train()
    dropped = model.dropout_input(x)
    zero = dropped == 0
    assert 0.23 < zero.float().mean() < 0.27
    assert torch.allclose(dropped[~zero], torch.full_like(dropped[~zero], 1 / 0.75))
    # Element-wise, unlike LRNet's landmark dropout: x and y of a point are dropped independently.
    x_zero, y_zero = zero[..., 0::2], zero[..., 1::2]
    assert (x_zero != y_zero).float().mean() > 0.3
    assert not torch.equal(model(x[:4]), model(x[:4]))
    model.eval()
    assert torch.equal(model(x[:4]), model(x[:4]))


# ---------------------------------------------------------------- Keras import (no reference data needed)

def test_import_equals_keras_gru_formula(synthetic_pair):
    """Converted weights reproduce a Keras reset_after GRU written from its formula (float64)."""
    rng = np.random.default_rng(3)
    for branch, frames in (("g1", 60), ("g2", 59)):
        path, w = synthetic_pair[branch]
        read = read_keras_branch(path)
        assert read.frames == frames
        assert (read.config.rnn_unit, read.config.res_hidden, read.config.lm_dropout_rate) == (8, 5, 0.25)
        model = LegacyLRNet(read.config)
        model.load_state_dict(read.state_dict, strict=True)
        model.eval()
        x = rng.normal(0, 0.5, (4, frames, 136))
        _, logits = _probs_and_logits(model, x)
        np.testing.assert_allclose(logits, _keras_reference_logits(x, w), atol=1e-5)
    assert block_size_of({b: read_keras_branch(p) for b, (p, _) in synthetic_pair.items()}) == 60


def test_weights_only_file_uses_defaults(tmp_path):
    w = _random_keras_weights(np.random.default_rng(1), units=4, hidden=3)
    read = read_keras_branch(_write_keras_h5(tmp_path / "w.h5", w, full_model=False))
    assert read.frames is None and read.config.rnn_unit == 4 and read.config.res_hidden == 3
    assert read.config.lm_dropout_rate == 0.25 and read.config.arch == "lrnet-tf"
    assert block_size_of({"g1": read}) == 60


def test_bad_files_raise_clear_errors(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00not hdf5" * 100)
    with pytest.raises(LrnetError, match=r"junk\.h5: not an HDF5 file"):
        read_keras_branch(junk)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(LrnetError, match=r"plain\.h5: not a Keras model file"):
        read_keras_branch(plain)
    with pytest.raises(LrnetError, match="not found"):
        read_keras_branch(tmp_path / "missing.h5")
    rng = np.random.default_rng(2)
    lstm = _random_keras_weights(rng, units=4)
    lstm["fwd"] = [rng.normal(size=(136, 16)), rng.normal(size=(4, 16)), rng.normal(size=(16,))]
    with pytest.raises(LrnetError, match=r"lstm\.h5: not a TF-era LRNet branch"):
        read_keras_branch(_write_keras_h5(tmp_path / "lstm.h5", lstm, full_model=False))
    gru = _random_keras_weights(rng, units=4)
    with pytest.raises(LrnetError, match="recurrent layer LSTM"):
        read_keras_branch(_write_keras_h5(tmp_path / "cfg.h5", gru, rnn_class="LSTM"))


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"random bytes")
    assert main(["convert-weights", str(junk), str(junk), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "junk.h5: not an HDF5 file" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    lm = tmp_path / "v.txt"
    lm.write_text("\n".join(" ".join(["0.1"] * 136) for _ in range(70)) + "\n")
    assert main(["predict", "--weights", f"{junk},{junk}", str(lm)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err


def test_weights_spec_forms(synthetic_pair, tmp_path):
    (p1, _), (p2, _) = synthetic_pair["g1"], synthetic_pair["g2"]
    pair = resolve_weights(f"{p1},{p2}")
    assert set(pair.models) == {"g1", "g2"} and pair.block_size == 60 and pair.config.arch == "lrnet-tf"
    assert all(isinstance(m, LegacyLRNet) and not m.training for m in pair.models.values())
    folder = tmp_path / "kerasdir"
    folder.mkdir()
    (folder / "g1.h5").write_bytes(p1.read_bytes())
    (folder / "g2.h5").write_bytes(p2.read_bytes())
    from_folder = resolve_weights(str(folder))
    x = torch.randn(2, 59, 136)
    with torch.no_grad():
        assert torch.equal(from_folder.models["g2"](x), pair.models["g2"](x))
    only_g2 = resolve_weights(str(p2), branches=("g2",))
    assert set(only_g2.models) == {"g2"}
    with pytest.raises(LrnetError, match="pair"):
        resolve_weights(str(p2))  # one file for two branches
    (folder / "g2.h5").unlink()
    with pytest.raises(LrnetError, match="no g2.h5"):
        resolve_weights(str(folder))
    assert set(resolve_weights(str(folder), branches=("g1",)).models) == {"g1"}


def test_convert_weights_round_trip(synthetic_pair, tmp_path, capsys):
    (p1, _), (p2, _) = synthetic_pair["g1"], synthetic_pair["g2"]
    out = tmp_path / "converted"
    assert main(["convert-weights", str(p1), str(p2), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["g1.pth", "g2.pth", "lrnet.json"]
    meta = json.loads((out / "lrnet.json").read_text())
    assert meta["block_size"] == 60 and meta["model"]["arch"] == "lrnet-tf" and meta["model"]["rnn_unit"] == 8
    converted, direct = resolve_weights(str(out)), resolve_weights(f"{p1},{p2}")
    assert converted.block_size == 60 and converted.config == direct.config
    x = torch.randn(3, 60, 136)
    with torch.no_grad():
        for b in ("g1", "g2"):
            xb = x if b == "g1" else x[:, 1:] - x[:, :-1]
            assert torch.equal(converted.models[b](xb), direct.models[b](xb))
    assert "block size 60" in capsys.readouterr().out


def test_architectures_need_no_explicit_import(synthetic_pair):
    """A fresh interpreter that never imports lrnet.weights.keras can build "lrnet-tf" and resolve .h5 pairs."""
    (p1, _), (p2, _) = synthetic_pair["g1"], synthetic_pair["g2"]
    code = (
        "import sys\n"
        "from lrnet.weights import resolve_weights\n"
        f"w = resolve_weights({str(p1) + ',' + str(p2)!r})\n"
        "assert w.config.arch == 'lrnet-tf', w.config\n"
        "from lrnet.model import ModelConfig, build_model\n"
        "print(type(build_model(ModelConfig(arch='lrnet-tf'))).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LegacyLRNet"


# ---------------------------------------------------------------- the published Keras weights

def test_published_h5_config(reference):
    g1, g2 = _reference_pair(reference)
    r1, r2 = read_keras_branch(g1), read_keras_branch(g2)
    assert r1.config == r2.config == legacy_config()
    assert (r1.frames, r2.frames) == (60, 59)
    assert block_size_of({"g1": r1, "g2": r2}) == 60


@pytest.mark.parametrize("input_set", ["fixed", "landmarks"])
def test_import_matches_keras_outputs(reference, input_set):
    g1, g2 = _reference_pair(reference)
    weights = resolve_weights(f"{g1},{g2}")
    assert weights.block_size == 60
    if input_set == "fixed":
        inputs = keras_reference.fixed_inputs()
    else:
        inputs = keras_reference.landmark_inputs(reference / "landmarks")
    for branch in ("g1", "g2"):
        expected = KERAS_OUTPUTS[input_set][branch]
        p_fake, logits = _probs_and_logits(weights.models[branch], inputs[branch])
        np.testing.assert_allclose(p_fake, expected["p_fake"], rtol=0, atol=P_TOL)
        np.testing.assert_allclose(logits, expected["logits"], rtol=0, atol=LOGIT_TOL)


def test_landmark_inputs_match_lrnet_blocks(reference):
    """The test's landmark inputs are exactly lrnet's own 60-frame blocks (reader + cutter)."""
    from lrnet.features import cut_blocks, frame_differences
    from lrnet.landmarks import read_landmarks

    inputs = keras_reference.landmark_inputs(reference / "landmarks")
    ours = np.concatenate([cut_blocks(read_landmarks(reference / "landmarks" / f"{n}.txt"), 60)[:2]
                           for n in keras_reference.LANDMARK_FILES])
    np.testing.assert_array_equal(inputs["g1"], ours)
    np.testing.assert_array_equal(inputs["g2"], frame_differences(ours))


def test_predict_with_h5_pair_matches_keras(reference, capsys):
    g1, g2 = _reference_pair(reference)
    video = reference / "landmarks" / "ff_real.txt"
    assert main(["predict", "--weights", f"{g1},{g2}", "--json", "--blocks", str(video)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["blocks"] == 12  # 757 frames in 60-frame blocks
    expected = KERAS_OUTPUTS["landmarks"]
    for branch in ("g1", "g2"):
        np.testing.assert_allclose(row[f"block_scores_{branch}"][:2], expected[branch]["p_fake"][:2], atol=2e-6)
