"""A faster CPU path for LRNet's one-layer bidirectional GRU, with nn.GRU's parameters and maths.

Here

* the input projection of *all* time steps and both directions is one matrix product, and its
  weight gradient another;
* the two directions run as one batched recurrence (``baddbmm`` over a leading direction axis)
  in a feature-major layout, so gate slices are long contiguous rows (in the usual ``(N, 3H)``
  layout every element-wise op walks N short rows and costs 20-30x more);
* the recurrence is a single autograd node with a hand-written backward (BPTT) that saves only
  the gates it needs.

Measured on a 2-core CPU it is about as fast as ``nn.GRU`` with one thread and faster with two
(fewer, larger parallel regions). The time is dominated by the input-projection products
(fp32 GEMM), which ``bf16=True`` runs in bfloat16 as an opt-in.

Equations are PyTorch's (``nn.GRU`` docs), gate order r, z, n::

    r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
    z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
    h' = (1 - z) * n + z * h

`bigru_last_hidden` reads the parameters of an existing ``nn.GRU`` (``weight_ih_l0``,
``weight_ih_l0_reverse``, ...), so state dicts are unchanged; tests check forward and gradients
against ``nn.GRU``.
"""

from __future__ import annotations

import torch
from torch import nn


def supports(gru: nn.GRU) -> bool:
    """True when `gru` is the configuration this path implements (1 layer, bidirectional, batch_first, biases)."""
    return (isinstance(gru, nn.GRU) and gru.num_layers == 1 and gru.bidirectional and gru.batch_first
            and gru.bias and getattr(gru, "proj_size", 0) == 0)


def _tanh_(t: torch.Tensor) -> torch.Tensor:
    """In-place tanh as ``2 sigmoid(2t) - 1``: equal to ``tanh`` within float32 rounding (~1e-7
    absolute) and about 3x faster than ``torch.tanh`` on CPU, where it dominated the step."""
    return t.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def _step_view(buf: torch.Tensor, step: int) -> torch.Tensor:
    """``(2, K, N)`` view of a ``(2, K, T, N)`` buffer: direction 0 at time `step`, direction 1 at
    time ``T - 1 - step`` (the backward direction walks time in reverse). No copy."""
    _, k, steps, n = buf.shape
    t0, t1 = step, steps - 1 - step
    dir_stride = k * steps * n + (t1 - t0) * n  # > 0 for every step
    return buf.as_strided((2, k, n), (dir_stride, steps * n, 1), buf.storage_offset() + t0 * n)


class _BiGRU(torch.autograd.Function):
    """Both directions of a one-layer GRU; returns ``h_n (2, N, H)``.

    Layout: everything is *feature-major* (``(.., H, N)``: one contiguous row of N samples per
    unit), so every gate slice is a few long contiguous rows and the element-wise work
    vectorises; with the usual ``(N, 3H)`` layout each gate slice is N short rows and the
    element-wise ops cost 20-30x more. x ``(T, N, F)`` time-major, h0 ``(2, N, H)``; weights
    stacked per direction: w_ih ``(2, 3H, F)``, b_ih ``(2, 3H)``, w_hh ``(2, 3H, H)``, b_hh ``(2, 3H)``.
    """

    @staticmethod
    def forward(ctx, xt, h0, w_ih, b_ih, w_hh, b_hh, bf16=False):
        steps, n, feat = xt.shape
        hid = w_hh.shape[2]
        x2d = xt.reshape(steps * n, feat)
        # Input projections of all steps: gi[d] = W_ih[d] x^T + b, (3H, T*N) per direction.
        # Both directions in one product: rows of (6H, T*N) are (direction, gate unit).
        w_all, b_all = w_ih.reshape(6 * hid, feat), b_ih.reshape(6 * hid, 1)
        if bf16:  # bfloat16 products (fp32 accumulation), ~2.5x faster on CPUs with AVX512-BF16/AMX
            x2d = x2d.to(torch.bfloat16)
            gi = torch.addmm(b_all.to(torch.bfloat16), w_all.to(torch.bfloat16), x2d.t()).view(2, 3 * hid, steps, n)
        else:
            gi = torch.addmm(b_all, w_all, x2d.t()).view(2, 3 * hid, steps, n)
        ctx.bf16 = bf16
        save = any(ctx.needs_input_grad)
        bias = b_hh.unsqueeze(2)  # (2, 3H, 1)
        if save:  # activations for BPTT, step-major so that each step's slice is contiguous
            rz_all = h0.new_empty(steps, 2, 2 * hid, n)
            new_all = h0.new_empty(steps, 2, hid, n)
            ghn_all = h0.new_empty(steps, 2, hid, n)
            h_all = h0.new_empty(steps + 1, 2, hid, n)
            h_all[0] = h0.transpose(1, 2)
            h = h_all[0]
        else:
            h = h0.transpose(1, 2).contiguous()
        for s in range(steps):
            g = _step_view(gi, s)  # (2, 3H, N)
            gh = torch.baddbmm(bias, w_hh, h)  # (2, 3H, N)
            rz = torch.add(g[:, : 2 * hid], gh[:, : 2 * hid], out=rz_all[s]) if save else \
                torch.add(g[:, : 2 * hid], gh[:, : 2 * hid])
            rz.sigmoid_()
            r, z = rz[:, :hid], rz[:, hid:]
            ghn = gh[:, 2 * hid:]
            new = torch.addcmul(g[:, 2 * hid:], r, ghn, out=new_all[s]) if save else \
                torch.addcmul(g[:, 2 * hid:], r, ghn)
            _tanh_(new)
            if save:
                ghn_all[s] = ghn
                h_next = torch.sub(h, new, out=h_all[s + 1])
            else:
                h_next = h - new
            h = h_next.mul_(z).add_(new)  # z h + (1 - z) n
        if save:
            ctx.save_for_backward(x2d if bf16 else xt, w_ih, w_hh, rz_all, new_all, ghn_all, h_all)
        # Contiguous (2, N, H) as nn.GRU returns it: dropout masks downstream follow memory order.
        return h.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad_h):
        xs, w_ih, w_hh, rz_all, new_all, ghn_all, h_all = ctx.saved_tensors
        steps, n, hid = rz_all.shape[0], rz_all.shape[3], w_hh.shape[2]
        feat = w_ih.shape[2]
        d_gi = grad_h.new_empty(2, 3 * hid, steps, n)  # gradient of the input projections
        dgh = grad_h.new_empty(2, 3 * hid, n)  # gradient of this step's hidden projections
        # Hidden-weight gradients accumulate step by step (no (T, 2, 3H, N) buffer: less memory).
        grad_w_hh = grad_h.new_zeros(2, 3 * hid, hid)
        grad_b_hh = grad_h.new_zeros(2, 3 * hid, 1)
        ones_n = grad_h.new_ones(2, n, 1)
        w_hh_t = w_hh.transpose(1, 2)  # (2, H, 3H)
        dh = grad_h.transpose(1, 2).contiguous()  # (2, H, N)
        sig_bw = torch.ops.aten.sigmoid_backward.grad_input
        tanh_bw = torch.ops.aten.tanh_backward.grad_input
        for s in range(steps - 1, -1, -1):
            rz, new, h_prev = rz_all[s], new_all[s], h_all[s]
            r, z = rz[:, :hid], rz[:, hid:]
            dgi = _step_view(d_gi, s)
            dh_z = dh * z  # the part of dh that flows straight to h_prev
            dn = dh - dh_z
            da_n = tanh_bw(dn, new, grad_input=dgi[:, 2 * hid:])  # through tanh
            torch.mul(da_n, ghn_all[s], out=dgh[:, :hid])  # dr
            torch.sub(h_prev, new, out=dgh[:, hid: 2 * hid]).mul_(dh)  # dz
            sig_bw(dgh[:, : 2 * hid], rz, grad_input=dgh[:, : 2 * hid])  # through sigmoid
            dgi[:, : 2 * hid] = dgh[:, : 2 * hid]
            torch.mul(da_n, r, out=dgh[:, 2 * hid:])
            grad_w_hh.baddbmm_(dgh, h_prev.transpose(1, 2))
            grad_b_hh.baddbmm_(dgh, ones_n)
            dh = torch.baddbmm(dh_z, w_hh_t, dgh)  # (2, H, N)
        need = ctx.needs_input_grad
        grad_x = grad_w_ih = grad_b_ih = None
        x2d = xs.reshape(steps * n, feat)
        flat_gi = d_gi.view(2, 3 * hid, steps * n)
        if need[0]:
            grad_x = (flat_gi[0].t() @ w_ih[0] + flat_gi[1].t() @ w_ih[1]).view(steps, n, feat)
        if need[2]:
            both = flat_gi.view(6 * hid, steps * n)
            if ctx.bf16:
                grad_w_ih = (both.to(torch.bfloat16) @ x2d).float().view(2, 3 * hid, feat)
            else:
                grad_w_ih = (both @ x2d).view(2, 3 * hid, feat)
        if need[3]:  # row sums as a matrix-vector product: much faster than sum(dim=...) here
            grad_b_ih = flat_gi.reshape(6 * hid, steps * n) @ flat_gi.new_ones(steps * n)
            grad_b_ih = grad_b_ih.view(2, 3 * hid)
        grad_b_hh = grad_b_hh.view(2, 3 * hid)
        return grad_x, dh.transpose(1, 2), grad_w_ih, grad_b_ih, grad_w_hh, grad_b_hh, None


def bigru_last_hidden(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """``nn.GRU(x, h0)[1]`` for a one-layer bidirectional batch-first GRU, computed faster.

    x ``(N, T, F)`` (batch first; a transposed view of a time-major ``(T, N, F)`` tensor avoids a
    copy), h0 ``(2, N, H)`` (may be an expanded view); returns ``(2, N, H)`` = [forward final
    state, backward final state], as ``nn.GRU`` returns ``h_n``. ``bf16=True`` computes the input
    projections (the bulk of the work) in bfloat16 with fp32 accumulation: not bit-equivalent to
    nn.GRU (about 3 significant digits in those products), an opt-in speed option.
    """
    if not supports(gru):
        raise ValueError("bigru_last_hidden supports only 1-layer bidirectional batch_first GRUs with biases")
    w_ih = torch.stack((gru.weight_ih_l0, gru.weight_ih_l0_reverse))  # (2, 3H, F)
    b_ih = torch.stack((gru.bias_ih_l0, gru.bias_ih_l0_reverse))
    w_hh = torch.stack((gru.weight_hh_l0, gru.weight_hh_l0_reverse))  # (2, 3H, H)
    b_hh = torch.stack((gru.bias_hh_l0, gru.bias_hh_l0_reverse))
    xt = x.transpose(0, 1).contiguous()  # no copy when x is a view of time-major data
    return _BiGRU.apply(xt, h0, w_ih, b_ih, w_hh, b_hh, bool(bf16))
