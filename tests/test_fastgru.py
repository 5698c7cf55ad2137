"""The fused bidirectional GRU (lrnet.fastgru): nn.GRU's maths and gradients, buffer reuse, the
batch-wide dropout mask folded into the weights, bf16 input projections, and LRNet's ``gru=`` choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lrnet.errors import LrnetError
from lrnet.fastgru import bigru_last_hidden, native_bf16
from lrnet.model import LRNet, ModelConfig, build_model, legacy_config
from lrnet.weights import load_branch


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fused_gru_matches_nn_gru_forward_and_gradients(dtype, tol):
    torch.manual_seed(0)
    gru = nn.GRU(136, 16, batch_first=True, bidirectional=True).to(dtype)
    x = torch.randn(5, 11, 136, dtype=dtype, requires_grad=True)
    h0p = torch.randn(2, 1, 16, dtype=dtype, requires_grad=True)
    _, ref = gru(x, h0p.expand(-1, 5, -1).contiguous())
    out = bigru_last_hidden(gru, x, h0p.expand(-1, 5, -1))
    assert out.shape == ref.shape == (2, 5, 16)
    assert (out - ref).abs().max().item() < tol
    w = torch.randn_like(ref)
    inputs = list(gru.parameters()) + [h0p, x]
    g_ref = torch.autograd.grad((ref * w).sum(), inputs)
    g_out = torch.autograd.grad((out * w).sum(), inputs)
    for a, b in zip(g_ref, g_out):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < tol * 10


def test_fused_gru_float32_within_1e6_at_training_size():
    torch.manual_seed(1)
    gru = nn.GRU(136, 32, batch_first=True, bidirectional=True)
    x = torch.randn(64, 30, 136) * 0.3
    h0 = torch.randn(2, 64, 32)
    with torch.no_grad():
        ref = gru(x, h0)[1]
        out = bigru_last_hidden(gru, x, h0)
    assert (out - ref).abs().max().item() < 1e-6


def test_fused_gru_input_scale_equals_scaled_input():
    """A batch-wide dropout mask applied to the input weights' columns = applied to x (float64)."""
    torch.manual_seed(3)
    gru = nn.GRU(136, 16, batch_first=True, bidirectional=True).double()
    x = torch.randn(4, 7, 136, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, 16, dtype=torch.float64)
    scale = (torch.rand(68) >= 0.3).double().repeat_interleave(2) / 0.7
    assert 0 < int((scale == 0).sum()) < 136
    ref = bigru_last_hidden(gru, x * scale, h0)
    out = bigru_last_hidden(gru, x, h0, input_scale=scale)
    assert (out - ref).abs().max().item() < 1e-12
    w = torch.randn_like(ref)
    inputs = list(gru.parameters()) + [x]
    for a, b in zip(torch.autograd.grad((ref * w).sum(), inputs), torch.autograd.grad((out * w).sum(), inputs)):
        assert (a - b).abs().max().item() < 1e-12
    dropped = (scale == 0).nonzero().squeeze(1)
    grad_w = torch.autograd.grad((bigru_last_hidden(gru, x, h0, input_scale=scale) * w).sum(), gru.weight_ih_l0)[0]
    assert torch.count_nonzero(grad_w[:, dropped]) == 0  # dropped landmarks get no gradient


def test_fused_gru_reuses_buffers_safely():
    """Pooled training buffers: consecutive steps (and a changed batch size) still match nn.GRU,
    and a second backward through a retained graph is refused instead of reading reused memory."""
    from lrnet.fastgru import release_workspace

    torch.manual_seed(4)
    gru = nn.GRU(136, 8, batch_first=True, bidirectional=True).double()
    for n in (5, 5, 3, 5):
        x = torch.randn(n, 6, 136, dtype=torch.float64)
        h0 = torch.randn(2, n, 8, dtype=torch.float64)
        w = torch.randn(2, n, 8, dtype=torch.float64)
        g_ref = torch.autograd.grad((gru(x, h0)[1] * w).sum(), list(gru.parameters()))
        g_out = torch.autograd.grad((bigru_last_hidden(gru, x, h0) * w).sum(), list(gru.parameters()))
        for a, b in zip(g_ref, g_out):
            assert (a - b).abs().max().item() < 1e-12
    loss = (bigru_last_hidden(gru, x, h0) * w).sum()
    loss.backward(retain_graph=True)
    bigru_last_hidden(gru, x, h0).sum().backward()  # a new step reuses the buffers
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    release_workspace()


def test_lrnet_fused_training_forward_matches_torch_path():
    """Training mode (landmark dropout folded into the input weights, FC dropout): same random
    numbers, same outputs and gradients as the nn.GRU path (float64)."""
    torch.manual_seed(6)
    cfg = ModelConfig(rnn_unit=8, res_hidden=16)
    base = LRNet(cfg).double()
    x = torch.randn(7, 30, 136, dtype=torch.float64)
    results = []
    for impl in ("torch", "fused"):
        model = LRNet(cfg, gru=impl).double().train()
        model.load_state_dict(base.state_dict())
        assert model.gru_impl == impl
        torch.manual_seed(7)
        out = model(x)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        results.append((out, grads))
    (o1, g1), (o2, g2) = results
    assert (o1 - o2).abs().max().item() < 1e-12
    for a, b in zip(g1, g2):
        assert (a - b).abs().max().item() < 1e-12


def test_lrnet_fused_path_same_outputs_and_state_dict():
    torch.manual_seed(2)
    model = LRNet(ModelConfig()).eval()
    fused = LRNet(ModelConfig(), gru="fused").eval()
    fused.load_state_dict(model.state_dict())
    x = torch.randn(9, 30, 136)
    with torch.no_grad():
        ref = model(x)
        out = fused(x)
    assert (out - ref).abs().max().item() < 1e-5
    assert list(fused.state_dict()) == list(model.state_dict())  # the implementation is not in the state dict


def test_gru_implementation_is_fixed_at_construction():
    model = LRNet(ModelConfig(rnn_unit=4), gru="fused", bf16=True)
    assert model.gru_impl == "fused-bf16"
    with pytest.raises(AttributeError):
        model.gru_impl = "torch"  # not a mode switched from outside
    with pytest.raises(LrnetError, match="unknown GRU implementation 'cudnn'"):
        LRNet(gru="cudnn")
    with pytest.raises(LrnetError, match="fused GRU only"):
        LRNet(gru="torch", bf16=True)
    assert build_model(ModelConfig(rnn_unit=4), gru="fused").gru_impl == "fused"
    legacy = build_model(legacy_config(rnn_unit=4), gru="fused", bf16=True)  # always nn.GRU: the choice is ignored
    assert type(legacy).__name__ == "LegacyLRNet"


def test_native_bf16_reads_the_cpu_flags():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    assert native_bf16() == bool({"avx512_bf16", "amx_bf16"} & set(flags))


@pytest.mark.reference
def test_fused_path_keeps_official_predictions(reference):
    from lrnet.landmarks import read_landmarks
    from lrnet.features import cut_blocks, frame_differences
    from lrnet.model import fake_probability

    expected = {("ff_fake", "g1"): 0.997354, ("ff_real", "g1"): 0.023498, ("ff_real", "g2"): 0.048963}
    for (video, branch), prob in expected.items():
        official = load_branch(reference / "weights" / "ffpp_raw" / f"{branch}.pth")
        model = LRNet(official.config, gru="fused").eval()
        model.load_state_dict(official.state_dict())
        blocks = torch.from_numpy(cut_blocks(read_landmarks(reference / "landmarks" / f"{video}.txt"), 30))
        x = blocks if branch == "g1" else frame_differences(blocks)
        with torch.no_grad():
            p = fake_probability(model(x[:1])).item()
        assert p == pytest.approx(prob, abs=1e-6)


def test_bf16_input_projections_are_close_to_fp32_but_not_equal():
    torch.manual_seed(5)
    gru = nn.GRU(136, 16, batch_first=True, bidirectional=True)
    x = torch.randn(6, 30, 136) * 0.3
    h0 = torch.zeros(2, 6, 16)
    with torch.no_grad():
        exact = bigru_last_hidden(gru, x, h0)
        low = bigru_last_hidden(gru, x, h0, bf16=True)
    assert 0 < (exact - low).abs().max().item() < 2e-2  # not bit-equal: an approximation


def test_bf16_gradients_are_close_to_fp32():
    torch.manual_seed(8)
    gru = nn.GRU(136, 16, batch_first=True, bidirectional=True)
    x = torch.randn(32, 30, 136) * 0.3
    h0 = torch.zeros(2, 32, 16)
    w = torch.randn(2, 32, 16)
    params = list(gru.parameters())
    exact = torch.autograd.grad((bigru_last_hidden(gru, x, h0) * w).sum(), params)
    low = torch.autograd.grad((bigru_last_hidden(gru, x, h0, bf16=True) * w).sum(), params)
    for a, b in zip(exact, low):
        assert (a - b).norm().item() <= 0.02 * a.norm().item() + 1e-6


def test_bf16_pooled_buffers_give_the_same_gradients_step_after_step():
    """The pooled bfloat16 buffers (x, projections, their gradients) carry nothing from one step to
    the next: an inference call between forward and backward, a changed batch size and a repeated
    step all give the gradients of a fresh call."""
    from lrnet.fastgru import release_workspace

    torch.manual_seed(9)
    gru = nn.GRU(136, 16, batch_first=True, bidirectional=True)
    x = torch.randn(12, 30, 136) * 0.3
    h0 = torch.randn(2, 12, 16)
    w = torch.randn(2, 12, 16)
    params = list(gru.parameters())
    release_workspace()
    fresh = torch.autograd.grad((bigru_last_hidden(gru, x, h0, bf16=True) * w).sum(), params)
    for n in (12, 7, 12):
        loss = (bigru_last_hidden(gru, x[:n], h0[:, :n], bf16=True) * w[:, :n]).sum()
        with torch.no_grad():  # scratch buffers of inference, not the ones saved for backward
            bigru_last_hidden(gru, torch.randn(n, 30, 136), h0[:, :n], bf16=True)
        grads = torch.autograd.grad(loss, params)
        if n == 12:
            for a, b in zip(fresh, grads):
                assert torch.equal(a, b)
    release_workspace()
