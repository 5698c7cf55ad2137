"""Compute reference outputs of the original Keras (TF 2) LRNet branches on fixed inputs.

Run once, in a scratch environment that has TensorFlow with Keras 2 (not lrnet's)::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install "tensorflow-cpu==2.15.1" h5py "numpy<2"
    /tmp/tfenv/bin/python tools/keras_reference.py WEIGHTS_DIR [LANDMARK_DIR] > keras_reference.json

WEIGHTS_DIR holds the published ``g1.h5`` / ``g2.h5`` (``training/weights/tf`` of the reference,
saved by Keras 2.6); LANDMARK_DIR the published landmark files (``ff_real.txt`` ...). The script
loads each branch with ``tf.keras.models.load_model`` (the saved architecture, not ours) and prints
JSON: for each input set and branch, the softmax output ``[p_real, p_fake]`` of the unchanged model
and the pre-softmax logits of a second copy whose last activation is set to linear.
``tests/test_legacy.py`` freezes these numbers and checks the imported PyTorch model against them;
it regenerates the same inputs with `fixed_inputs` / `landmark_inputs` below, which use NumPy only
(so the test needs no TensorFlow).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict

import numpy as np

BLOCK = 60  # the published Keras weights were trained on 60-frame blocks
LANDMARK_FILES = ("ff_real", "ff_fake", "dfo_real", "dfo_fake")
LANDMARK_BLOCKS = 2  # first blocks of each landmark file


def fixed_inputs(seed: int = 20210619, samples: int = 3) -> Dict[str, np.ndarray]:
    """Deterministic synthetic inputs: ``{"g1": (3, 60, 136), "g2": (3, 59, 136)}`` float32.

    Smooth random walks around a random face-sized layout (values within about [-0.8, 0.8]), so
    the outputs are not saturated at 0/1; g2 gets the frame differences of independent walks.
    Only uniform draws of NumPy's PCG64 generator are used (a stream NumPy keeps stable).
    """
    rng = np.random.Generator(np.random.PCG64(seed))

    def walks(step: float) -> np.ndarray:
        base = rng.uniform(-0.6, 0.6, size=(samples, 1, 136))
        steps = rng.uniform(-step, step, size=(samples, BLOCK, 136))
        return (base + np.cumsum(steps, axis=1)).astype(np.float32)

    g1 = walks(0.02)
    g2_source = walks(0.005)  # larger independent jitter saturates g2 at p_fake = 1
    return {"g1": g1, "g2": g2_source[:, 1:] - g2_source[:, :-1]}


def landmark_inputs(landmark_dir: Path) -> Dict[str, np.ndarray]:
    """The first `LANDMARK_BLOCKS` 60-frame blocks of each published landmark file, files in
    `LANDMARK_FILES` order: ``{"g1": (8, 60, 136), "g2": (8, 59, 136)}`` float32."""
    blocks = []
    for name in LANDMARK_FILES:
        frames = np.loadtxt(Path(landmark_dir) / f"{name}.txt", dtype=np.float32)
        blocks.append(frames[: LANDMARK_BLOCKS * BLOCK].reshape(LANDMARK_BLOCKS, BLOCK, frames.shape[1]))
    g1 = np.concatenate(blocks)
    return {"g1": g1, "g2": g1[:, 1:] - g1[:, :-1]}


def main(argv=None) -> int:
    import tensorflow as tf  # only in the scratch environment

    args = sys.argv[1:] if argv is None else argv
    weights = Path(args[0])
    sets = {"fixed": fixed_inputs()}
    if len(args) > 1:
        sets["landmarks"] = landmark_inputs(Path(args[1]))
    import keras

    out = {"tensorflow": tf.__version__, "keras": keras.__version__, "outputs": {}}
    for branch in ("g1", "g2"):
        model = tf.keras.models.load_model(weights / f"{branch}.h5", compile=False)
        logit_model = tf.keras.models.load_model(weights / f"{branch}.h5", compile=False)
        logit_model.layers[-1].activation = tf.keras.activations.linear
        for name, inputs in sets.items():
            x = inputs[branch]
            probs = model(x, training=False).numpy()
            logits = logit_model(x, training=False).numpy()
            # The linear copy must be the same model up to its last activation.
            assert np.allclose(tf.nn.softmax(logits).numpy(), probs, atol=1e-6), "logit model differs"
            out["outputs"].setdefault(name, {})[branch] = {
                "probs": probs.astype(float).tolist(), "logits": logits.astype(float).tolist(),
            }
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
