"""Exact import of the TensorFlow-2-era LRNet branch's Keras ``.h5`` weights ("lrnet-tf").

The reference's first release (``training/model_tf.py``, Keras 2.6) used a simpler branch than
`lrnet.model.LRNet`::

    input (batch, frames, 136)
    -> Dropout(0.25), element-wise             (LRNet drops whole landmarks instead)
    -> Bidirectional(GRU(64)), zero initial state, final states [forward, backward] concatenated
    -> Dropout(0.5) -> Dense(64, relu) -> Dropout(0.5) -> Dense(2, softmax)

`LegacyLRNet` is that network in PyTorch. Like `LRNet`, its forward pass returns *logits*
``(batch, 2)``; the final softmax of the Keras model is `lrnet.model.fake_probability`'s job. Its
published weights (DF c23) were trained on 60-frame blocks (g2: 59 differences).

Keras ``reset_after=True`` GRUs (the TF2 default, cuDNN-compatible) compute
``n = tanh(W_h x + b_ih + r * (U_h h + b_rh))`` and ``h' = z * h + (1 - z) * n``, which is exactly
PyTorch's `nn.GRU`; only the gate order (Keras z, r, h; PyTorch r, z, n), the matrix layout
(Keras ``(in, 3H)``, PyTorch ``(3H, in)``) and the bias layout (Keras ``(2, 3H)`` rows
[input, recurrent]) differ. `read_keras_branch` converts them; ``tests/test_legacy.py`` checks the
result against outputs of the original Keras model to 1e-5.

The architecture itself lives in `lrnet.model` (``ARCHITECTURES["lrnet-tf"]``); this module only reads
Keras files. `lrnet.weights.resolve_weights` sends ``g1.h5,g2.h5`` (or a folder holding them) here, and
``lrnet convert-weights`` turns them into a ``.pth`` weights folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import LrnetError
from ..model import LegacyLRNet, ModelConfig, check_state_dict, legacy_config
from ..vocab import PathLike

__all__ = ["LEGACY_BLOCK_SIZE", "KerasBranch", "read_keras_branch", "block_size_of", "keras_pair_paths",
           "load_keras_models"]

# The published Keras weights were trained on 60-frame blocks; used when a file does not say.
LEGACY_BLOCK_SIZE = 60


# --------------------------------------------------------------------------- Keras .h5 import

@dataclass
class KerasBranch:
    """One branch read from a Keras ``.h5`` file, as a PyTorch state dict for `LegacyLRNet`."""

    path: Path
    state_dict: Dict[str, torch.Tensor]
    config: ModelConfig
    frames: Optional[int]  # time steps of the Keras input shape (60 for g1, 59 for g2), None if unknown


def _keras_gates_to_torch(matrix: np.ndarray, units: int) -> np.ndarray:
    """Reorder the gate blocks of the last axis from Keras (z, r, h) to PyTorch (r, z, n)."""
    z, r, h = (matrix[..., i * units:(i + 1) * units] for i in range(3))
    return np.concatenate([r, z, h], axis=-1)


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _layer_weights(root: Any, name: str) -> List[Tuple[str, np.ndarray]]:
    """``[(weight name, array)]`` of layer `name` in the order Keras saved them."""
    group = root[name]
    names = [_decode(n) for n in group.attrs.get("weight_names", [])]
    return [(n, np.asarray(group[n], dtype=np.float32)) for n in names]


def _model_layers(handle: Any) -> Optional[List[Dict[str, Any]]]:
    """The layer list of the saved model config (None for a weights-only file)."""
    raw = handle.attrs.get("model_config")
    if raw is None:
        return None
    config = json.loads(_decode(raw))
    inner = config.get("config", {})
    return inner.get("layers") if isinstance(inner, dict) else None


def read_keras_branch(path: PathLike) -> KerasBranch:
    """Read a TF-era LRNet branch from a Keras 2 ``.h5`` file (full model or ``save_weights``).

    Weights are located through each layer's ``weight_names`` attribute (the ``gru_cell_N``
    suffixes differ between files). Anything else -- not HDF5, not a Keras model, another
    architecture (an LSTM, a second recurrent layer, a head of other sizes) -- raises `LrnetError`
    naming the file and the problem.
    """
    import h5py  # only needed for this import path

    path = Path(path)
    if not path.is_file():
        raise LrnetError(f"{path}: Keras weight file not found")
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise LrnetError(f"{path}: not an HDF5 file (expected a Keras .h5 model of the TF-era LRNet)") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise LrnetError(f"{path}: not a Keras model file (no layer_names attribute)")
        layer_names = [_decode(n) for n in root.attrs["layer_names"]]
        weighted = [(n, _layer_weights(root, n)) for n in layer_names]
        weighted = [(n, w) for n, w in weighted if w]
        layers = _model_layers(handle)
        return _branch_from_layers(path, weighted, layers)


def _branch_from_layers(path: Path, weighted: List[Tuple[str, List[Tuple[str, np.ndarray]]]],
                        layers: Optional[List[Dict[str, Any]]]) -> KerasBranch:
    def fail(what: str) -> LrnetError:
        return LrnetError(f"{path}: not a TF-era LRNet branch ({what})")

    shapes = [[tuple(a.shape) for _, a in w] for _, w in weighted]
    if len(weighted) != 3 or len(weighted[0][1]) != 6 or len(weighted[1][1]) != 2 or len(weighted[2][1]) != 2:
        raise fail(f"expected a bidirectional GRU and two dense layers, found weights {shapes}")
    (_, rnn), (_, hidden), (_, out) = weighted

    def pick(direction: str, kind: str) -> np.ndarray:
        hits = [a for n, a in rnn if f"/{direction}_" in n and n.rsplit("/", 1)[-1].split(":")[0] == kind]
        if len(hits) != 1:
            raise fail(f"no unique {direction} GRU {kind} among {[n for n, _ in rnn]}")
        return hits[0]

    kernel_f = pick("forward", "kernel")
    units = pick("forward", "recurrent_kernel").shape[0]
    features = kernel_f.shape[0]
    expect = {"kernel": (features, 3 * units), "recurrent_kernel": (units, 3 * units), "bias": (2, 3 * units)}
    state: Dict[str, np.ndarray] = {}  # PyTorch names -> arrays (tensors made at the end)
    for direction, suffix in (("forward", ""), ("backward", "_reverse")):
        arrays = {kind: pick(direction, kind) for kind in expect}
        for kind, shape in expect.items():
            if arrays[kind].shape != shape:
                raise fail(f"{direction} {kind} has shape {arrays[kind].shape}, a reset_after GRU of "
                           f"{units} units needs {shape}")
        state[f"gru.weight_ih_l0{suffix}"] = _keras_gates_to_torch(arrays["kernel"], units).T
        state[f"gru.weight_hh_l0{suffix}"] = _keras_gates_to_torch(arrays["recurrent_kernel"], units).T
        bias = _keras_gates_to_torch(arrays["bias"], units)
        state[f"gru.bias_ih_l0{suffix}"] = bias[0]
        state[f"gru.bias_hh_l0{suffix}"] = bias[1]

    def dense(weights: List[Tuple[str, np.ndarray]], name: str) -> Tuple[np.ndarray, np.ndarray]:
        by_kind = {n.rsplit("/", 1)[-1].split(":")[0]: a for n, a in weights}
        if set(by_kind) != {"kernel", "bias"} or by_kind["kernel"].ndim != 2:
            raise fail(f"{name} layer holds {sorted(by_kind)}")
        return by_kind["kernel"], by_kind["bias"]

    k1, b1 = dense(hidden, "hidden dense")
    k2, b2 = dense(out, "output dense")
    if k1.shape[0] != 2 * units or k2.shape != (k1.shape[1], 2):
        raise fail(f"dense kernels {k1.shape} and {k2.shape} do not fit a {2 * units}-feature GRU output and 2 classes")
    state["dense.1.weight"], state["dense.1.bias"] = k1.T, b1
    state["dense.4.weight"], state["dense.4.bias"] = k2.T, b2

    overrides: Dict[str, Any] = dict(feature_size=features, rnn_unit=units, res_hidden=k1.shape[1])
    frames = None
    if layers is not None:
        overrides.update(_check_model_config(layers, fail))
        frames = overrides.pop("frames")
    config = legacy_config(**overrides)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    return KerasBranch(path, tensors, config, frames)


def _check_model_config(layers: List[Dict[str, Any]], fail) -> Dict[str, Any]:
    """Check the saved Keras layer list is the TF-era branch; return its dropout rates and frames."""
    kinds = [layer.get("class_name") for layer in layers if layer.get("class_name") != "InputLayer"]
    if kinds != ["Dropout", "Bidirectional", "Dropout", "Dense", "Dropout", "Dense"]:
        raise fail(f"layers {kinds}")
    body = [layer["config"] for layer in layers if layer.get("class_name") != "InputLayer"]
    rnn = body[1].get("layer", {})
    rnn_cfg = rnn.get("config", {})
    if rnn.get("class_name") != "GRU" or not rnn_cfg.get("reset_after", False):
        raise fail(f"recurrent layer {rnn.get('class_name')} (reset_after={rnn_cfg.get('reset_after')}); "
                   "only reset_after GRUs match PyTorch's GRU")
    if body[1].get("merge_mode", "concat") != "concat" or rnn_cfg.get("return_sequences"):
        raise fail("the bidirectional layer must concatenate final states")
    if (rnn_cfg.get("activation", "tanh"), rnn_cfg.get("recurrent_activation", "sigmoid")) != ("tanh", "sigmoid"):
        raise fail("GRU activations other than tanh/sigmoid")
    if body[3].get("activation") != "relu" or body[5].get("activation") not in ("softmax", "linear"):
        raise fail(f"dense activations {body[3].get('activation')}, {body[5].get('activation')}")
    if body[2].get("rate") != body[4].get("rate"):
        raise fail(f"head dropout rates differ ({body[2].get('rate')} and {body[4].get('rate')})")
    shape = None
    for layer in layers:
        shape = shape or layer.get("config", {}).get("batch_input_shape")
    frames = shape[1] if shape and len(shape) == 3 else None
    return dict(lm_dropout_rate=float(body[0]["rate"]), fc_dropout_rate=float(body[2]["rate"]), frames=frames)


def block_size_of(branches: Dict[str, KerasBranch]) -> int:
    """Block size implied by the files' input shapes (g1: B frames, g2: B - 1), else 60.

    Raises `LrnetError` when g1 and g2 disagree.
    """
    sizes = {b.frames + (1 if name == "g2" else 0) for name, b in branches.items() if b.frames}
    if len(sizes) > 1:
        raise LrnetError(f"{', '.join(str(b.path) for b in branches.values())}: the branches were built for "
                         f"different block sizes {sorted(sizes)}")
    return sizes.pop() if sizes else LEGACY_BLOCK_SIZE


def keras_pair_paths(spec: str, branches: Sequence[str]) -> Optional[Dict[str, Path]]:
    """``{branch: .h5 path}`` when `spec` names Keras weights, else None (not ours).

    Accepted: ``"g1.h5,g2.h5"`` (in branch order), a single ``.h5`` when one branch is asked for,
    or a folder holding ``g1.h5`` / ``g2.h5`` and no ``.pth`` for those branches.
    """
    parts = [p.strip() for p in spec.split(",")]
    if all(p.lower().endswith(".h5") for p in parts):
        if len(parts) == 2:
            pair = dict(zip(("g1", "g2"), map(Path, parts)))
            return {b: pair[b] for b in branches}
        if len(parts) == 1 and len(branches) == 1:
            return {branches[0]: Path(parts[0])}
        raise LrnetError(f"{spec}: give Keras weights as a pair 'g1.h5,g2.h5' (or one .h5 with -b g1 / -b g2)")
    folder = Path(spec)
    if len(parts) == 1 and folder.is_dir():
        h5 = {b: folder / f"{b}.h5" for b in branches}
        if any(p.is_file() for p in h5.values()) and not any((folder / f"{b}.pth").is_file() for b in branches):
            missing = [p.name for p in h5.values() if not p.is_file()]
            if missing:
                raise LrnetError(f"{folder}: holds Keras weights but no {', '.join(missing)}")
            return h5
    return None


def load_keras_models(paths: Dict[str, Path], device: "str | torch.device" = "cpu"
                      ) -> Tuple[Dict[str, torch.nn.Module], int, ModelConfig]:
    """Branch models (`LegacyLRNet`, eval mode, on `device`) from ``{branch: .h5 path}``, with the
    block size (frames) their files were built for and the model config (of the first branch)."""
    read = {b: read_keras_branch(p) for b, p in paths.items()}
    models: Dict[str, torch.nn.Module] = {}
    for b, branch in read.items():
        model = LegacyLRNet(branch.config)
        check_state_dict(model, branch.state_dict, source=str(branch.path))
        model.load_state_dict(branch.state_dict, strict=True)
        models[b] = model.to(device).eval()
    first = next(iter(read.values()))
    return models, block_size_of(read), first.config
