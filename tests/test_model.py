"""The LRNet branch model: architecture, landmark dropout, and parity with the official weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrnet.landmarks import read_landmarks
from lrnet.model import LandmarkDropout, LRNet, ModelConfig, fake_probability
from lrnet.detector import score_sequence
from lrnet.weights import load_branch

OFFICIAL_KEYS = [
    "hidden_state", "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0",
    "gru.weight_ih_l0_reverse", "gru.weight_hh_l0_reverse", "gru.bias_ih_l0_reverse", "gru.bias_hh_l0_reverse",
    "dense.1.fn.net.0.weight", "dense.1.fn.net.0.bias", "dense.1.fn.net.3.weight", "dense.1.fn.net.3.bias",
    "dense.3.weight", "dense.3.bias",
]


def test_state_dict_keys_and_shapes():
    model = LRNet()
    sd = model.state_dict()
    assert list(sd) == OFFICIAL_KEYS
    assert sd["hidden_state"].shape == (2, 1, 32)
    assert sd["gru.weight_ih_l0"].shape == (96, 136)
    assert sd["dense.3.weight"].shape == (2, 64)
    two_layers = LRNet(num_layers=2, rnn_unit=16)
    assert two_layers.hidden_state.shape == (4, 1, 16)
    assert two_layers(torch.zeros(3, 30, 136)).shape == (3, 2)


def test_forward_returns_logits_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = LRNet().eval()
    x = torch.randn(4, 30, 136)
    a, b = model(x), model(x)
    assert a.shape == (4, 2)
    torch.testing.assert_close(a, b)
    p = fake_probability(a)
    torch.testing.assert_close(p, torch.softmax(a, -1)[:, 1])
    # log_softmax stays finite where log(softmax) underflows
    extreme = torch.tensor([[0.0, 200.0]])
    assert torch.isinf(torch.log(torch.softmax(extreme, -1))).any()
    assert torch.isfinite(torch.log_softmax(extreme, -1)).all()


def test_landmark_dropout_drops_whole_points_one_mask_per_batch():
    torch.manual_seed(1)
    drop = LandmarkDropout(0.5).train()
    x = torch.ones(8, 30, 136)
    y = drop(x)
    kept = y != 0
    # x and y of a point share the mask
    assert torch.equal(kept[..., 0::2], kept[..., 1::2])
    # the same mask for every sample and frame (reference behaviour)
    assert torch.equal(kept, kept[:1, :1].expand_as(kept))
    assert torch.allclose(y[kept], torch.tensor(2.0))  # scaled by 1 / (1 - p)
    assert 0 < kept[0, 0].sum() < 136
    drop.eval()
    assert torch.equal(drop(x), x)


def test_landmark_dropout_per_sample_option():
    torch.manual_seed(2)
    y = LandmarkDropout(0.5, per_sample=True).train()(torch.ones(16, 30, 136))
    kept = y != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # shared across frames
    assert not all(torch.equal(kept[0], kept[i]) for i in range(1, 16))  # differs across samples
    assert torch.equal(kept[..., 0::2], kept[..., 1::2])


def test_landmark_dropout_rate_is_respected():
    torch.manual_seed(3)
    drop = LandmarkDropout(0.1, per_sample=True).train()
    kept = (drop(torch.ones(4000, 1, 136)) != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.01


# Published first-block p(fake) and video scores of the four reference landmark files.
PARITY = {
    "ffpp_raw": {
        "videos": {"ff_fake": (1.0, 25), "ff_real": (0.0, 25), "dfo_fake": (0.75, 12), "dfo_real": (0.5, 12)},
        "first": {("ff_fake", "g1"): 0.997354, ("ff_real", "g1"): 0.023498, ("ff_real", "g2"): 0.048963,
                  ("dfo_fake", "g1"): 0.927623, ("dfo_fake", "g2"): 0.918202},
    },
    "dfo": {
        "videos": {"dfo_fake": (0.9166667, 12), "dfo_real": (0.0833333, 12), "ff_fake": (1.0, 25),
                   "ff_real": (0.12, 25)},
        "first": {("dfo_real", "g1"): 0.003876, ("dfo_real", "g2"): 0.002944},
    },
}


@pytest.mark.parametrize("weights", sorted(PARITY))
def test_parity_with_reference(reference, weights):
    models = {b: load_branch(reference / "weights" / weights / f"{b}.pth") for b in ("g1", "g2")}
    expected = PARITY[weights]
    for video, (score, blocks) in expected["videos"].items():
        result = score_sequence(read_landmarks(reference / "landmarks" / f"{video}.txt"), models)
        assert result.blocks == blocks
        assert result.score == pytest.approx(score, abs=1e-5)
        for (v, branch), p in expected["first"].items():
            if v == video:
                assert result.branch_block_scores[branch][0] == pytest.approx(p, abs=1e-5)
