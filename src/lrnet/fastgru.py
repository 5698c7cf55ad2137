"""A faster CPU path for LRNet's one-layer bidirectional GRU, with nn.GRU's parameters and maths.

Here

* the input projection of *all* time steps and both directions is one matrix product, and its
  weight gradient another;
* the two directions run as one batched recurrence (``baddbmm`` over a leading direction axis)
  in a feature-major layout, so gate slices are long contiguous rows (in the usual ``(N, 3H)``
  layout every element-wise op walks N short rows and costs 20-30x more);
* the recurrence is a single autograd node with a hand-written backward (BPTT) that saves only
  the gates it needs, in per-thread buffers reused from one training step to the next (fresh
  multi-megabyte tensors cost page faults on every step) and overwritten in place by their
  gradients in backward;
* its time steps run, for float32 CPU tensors, in the C++ loop of `lrnet.gru_kernel` (one fused
  pass over each step's gates, one hidden product per step; built on first use), else in the
  Python loop below (`_forward_steps` / `_backward_steps`, about ten PyTorch ops per step and
  direction: also the float64 path and the fallback where no compiler is found);
* a batch-wide landmark-dropout mask can be applied to the columns of the input weights
  (``input_scale``) instead of to every frame.

The input-projection products (fp32 GEMM, near the CPU's peak) are the largest part, which
``bf16=True`` runs in bfloat16 (``lrnet train``'s default where `native_bf16` is true), into pooled
bfloat16 buffers (the C++ loop reads them there and writes the gradients' bfloat16 copy itself; the
Python loop converts them in one pass, never mixing dtypes in its step maths). With the C++ loop,
``bf16=True`` also runs the hidden products on bfloat16 operands (states and gate maths stay
float32). One LRNet g1 training step at batch 1024 on one thread of a 2-core AMD EPYC: about 49 ms
with the C++ loop, 60-68 ms with the Python loop (115 ms before the buffer reuse and the mask
folding; ``benchmarks/bench_gru_step.py``).

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

import functools
import threading

import torch
from torch import nn

__all__ = ["supports", "native_bf16", "bigru_last_hidden", "release_workspace"]


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True when the CPU has native bfloat16 dot products (AVX512-BF16 or AMX-BF16, read from
    ``/proc/cpuinfo``); there, bf16 input projections run about 2.4x faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


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


def _keep_latest(cache: dict, key, value, size: int = 2) -> None:
    """Put `value` under `key` as the most recent entry of `cache`, dropping the oldest beyond `size`."""
    cache.pop(key, None)
    while len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = value


class _Workspace(threading.local):
    """Per-thread reuse of the large training buffers (the activations saved for BPTT).

    Fresh multi-megabyte tensors cost page faults on first touch (about a fifth of a training
    step at batch 1024); reusing them removes that. The buffers leave the pool in ``forward`` and
    come back at the end of ``backward``; a graph that is never differentiated just drops them.
    The buffers of the two latest shapes are kept (an epoch's full batches and its shorter last one;
    validation's likewise, in `scratch`), so memory stays bounded. Backward overwrites the saved
    gates with their gradients in place, so a second backward through the same graph (``retain_graph``) fails autograd's saved-tensor version
    check rather than read reused memory.
    """

    def __init__(self):
        self.pool = {}  # key -> training buffers not in use, the two latest shapes
        self.scratches = {}  # key -> inference buffers, the two latest shapes

    def take(self, key, make):
        buffers = self.pool.pop(key, None)
        return make() if buffers is None else buffers

    def give(self, key, buffers) -> None:
        _keep_latest(self.pool, key, buffers)

    def scratch(self, key, make):
        """Buffers for graph-free (inference) calls, kept for later calls of the same shape. The two
        latest shapes are kept: validation's full batches and its shorter last one would otherwise
        swap them twice per pass (fresh multi-megabyte buffers: about half the pass's time)."""
        buffers = self.scratches.pop(key, None)
        buffers = make() if buffers is None else buffers
        _keep_latest(self.scratches, key, buffers)
        return buffers


_WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free this thread's pooled training buffers (otherwise kept for the next training step)."""
    _WORKSPACE.pool = {}
    _WORKSPACE.scratches = {}


def _input_projections(x2d: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, gates: torch.Tensor,
                       pre_bf16: torch.Tensor | None, convert: bool = True) -> None:
    """``x W_ih^T + bias`` of all steps and both directions in one product, as a ``(2, 3H, T, N)``
    tensor: written into `gates` (fp32), or, given the bfloat16 buffer `pre_bf16` (same shape),
    into it (bf16 products with fp32 accumulation, ~2.4x faster on CPUs with AVX512-BF16/AMX),
    then converted into `gates` in one pass (same-dtype element-wise ops in the steps). Rows of the ``(6H, T*N)`` product
    are (direction, gate unit), columns (time, sample); x2d ``(T*N, F)`` (bfloat16 with
    `pre_bf16`); bias ``(2, 3H)``. ``convert=False`` leaves the bfloat16 projections in `pre_bf16` (the
    C++ recurrence reads them there)."""
    six_h, feat = w_ih.shape[0] * w_ih.shape[1], w_ih.shape[2]
    w_all, b_all = w_ih.reshape(six_h, feat), bias.reshape(six_h, 1)
    if pre_bf16 is not None:
        torch.addmm(b_all.to(torch.bfloat16), w_all.to(torch.bfloat16), x2d.t(), out=pre_bf16.view(six_h, -1))
        if convert:
            gates.copy_(pre_bf16)  # one pass: ~2x faster than converting step by step
        return
    torch.addmm(b_all, w_all, x2d.t(), out=gates.view(six_h, -1))


def _forward_steps(gates: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hn: torch.Tensor,
                   ghn_all: torch.Tensor | None, h_all: torch.Tensor) -> torch.Tensor:
    """The recurrence over the input projections in `gates` (``(2, 3H, T, N)``; the r and z rows
    already include ``b_hh``), overwritten step by step by the gate activations. Training
    (`ghn_all` given): every state in ``h_all (T + 1, 2, H, N)`` and ``h W_hn^T + b_hn`` in
    ``ghn_all (T, 2, H, N)``, kept for BPTT; inference: `h_all` is a ``(2, 2, H, N)`` ping-pong
    pair. b_hn ``(2, H)``. Returns the last state ``(2, H, N)``.

    Every element-wise op runs in place on same-dtype operands (mixed-dtype ops would make a
    temporary copy of an operand each time)."""
    steps, hid, n = gates.shape[2], w_hh.shape[2], gates.shape[3]
    w_rz, w_n, bias_n = w_hh[:, : 2 * hid], w_hh[:, 2 * hid:], b_hn.unsqueeze(2)
    gh_rz = h0.new_empty(2, 2 * hid, n)  # this step's r, z pre-activations
    ghn_tmp = None if ghn_all is not None else h0.new_empty(2, hid, n)
    h = h_all[0]
    h.copy_(h0.transpose(1, 2))
    for s in range(steps):
        g = _step_view(gates, s)  # (2, 3H, N)
        rz = torch.sigmoid(torch.baddbmm(g[:, : 2 * hid], w_rz, h, out=gh_rz), out=g[:, : 2 * hid])
        r, z = rz[:, :hid], rz[:, hid:]
        ghn = torch.baddbmm(bias_n, w_n, h, out=ghn_all[s] if ghn_all is not None else ghn_tmp)
        new = _tanh_(g[:, 2 * hid:].addcmul_(r, ghn))
        h_next = h_all[s + 1] if ghn_all is not None else h_all[(s + 1) % 2]
        h = torch.addcmul(new, z, torch.sub(h, new, out=h_next), out=h_next)  # n + z (h - n)
    return h


def _backward_steps(grad_h: torch.Tensor, gates: torch.Tensor, ghn_all: torch.Tensor, h_all: torch.Tensor,
                    w_hh: torch.Tensor, grad_bf16: torch.Tensor | None):
    """BPTT through the steps: overwrites `gates` with the gradients of the gate pre-activations
    (and, given, copies them into the bfloat16 buffer `grad_bf16`, read by the input-weight
    gradient product). Returns (dL/dh0 ``(2, H, N)``, grad_w_hh ``(2, 3H, H)``,
    sum over steps of the n part of dL/d(h W_hh^T + b_hh) ``(2, H, N)``)."""
    steps, hid, n = ghn_all.shape[0], ghn_all.shape[2], ghn_all.shape[3]
    dgh = grad_h.new_empty(2, 3 * hid, n)  # gradient of this step's hidden projections
    grad_w_hh = grad_h.new_zeros(2, 3 * hid, hid)
    sum_dghn = grad_h.new_zeros(2, hid, n)  # for the n part of grad_b_hh
    w_hh_t = w_hh.transpose(1, 2).contiguous()  # (2, H, 3H); contiguous: bmm is faster
    dh_pair = grad_h.new_empty(2, 2, hid, n)
    dh, dh_z = dh_pair[0], dh_pair[1]
    dh.copy_(grad_h.transpose(1, 2))
    sig_bw = torch.ops.aten.sigmoid_backward.grad_input
    tanh_bw = torch.ops.aten.tanh_backward.grad_input
    for s in range(steps - 1, -1, -1):
        g, h_prev = _step_view(gates, s), h_all[s]
        rz = g[:, : 2 * hid]
        r, z, new = g[:, :hid], g[:, hid: 2 * hid], g[:, 2 * hid:]
        torch.sub(h_prev, new, out=dgh[:, hid: 2 * hid]).mul_(dh)  # dL/dz
        torch.mul(dh, z, out=dh_z)  # the part of dh that flows straight to h_prev
        da_n = tanh_bw(dh.sub_(dh_z), new, grad_input=new)  # through tanh, over n
        torch.mul(da_n, ghn_all[s], out=dgh[:, :hid])  # dL/dr
        torch.mul(da_n, r, out=dgh[:, 2 * hid:])
        sum_dghn.add_(dgh[:, 2 * hid:])
        sig_bw(dgh[:, : 2 * hid], rz, grad_input=rz)  # through sigmoid: r, z input-projection gradients
        dgh[:, : 2 * hid].copy_(rz)  # = the hidden ones
        grad_w_hh.baddbmm_(dgh, h_prev.transpose(1, 2))
        dh, dh_z = dh_z.baddbmm_(w_hh_t, dgh), dh  # dL/dh_prev
    if grad_bf16 is not None:
        grad_bf16.copy_(gates)  # one pass into the reused buffer (no fresh tensor, no page faults)
    return dh, grad_w_hh, sum_dghn


def _kernel(h0: torch.Tensor):
    """The C++ recurrence (`lrnet.gru_kernel`) for float32 CPU tensors, else None (the Python loop)."""
    if h0.device.type != "cpu" or h0.dtype != torch.float32:
        return None
    from . import gru_kernel

    return gru_kernel.load()


class _BiGRU(torch.autograd.Function):
    """Both directions of a one-layer GRU; returns ``h_n (2, N, H)``.

    Layout: everything is *feature-major* (``(.., H, N)``: one contiguous row of N samples per
    unit), so every gate slice is a few long contiguous rows and the element-wise work
    vectorises; with the usual ``(N, 3H)`` layout each gate slice is N short rows and the
    element-wise ops cost 20-30x more. x ``(T, N, F)`` time-major, h0 ``(2, N, H)``; weights
    stacked per direction: w_ih ``(2, 3H, F)``, b_ih ``(2, 3H)``, w_hh ``(2, 3H, H)``, b_hh ``(2, 3H)``.

    One ``(2, 3H, T, N)`` buffer ``gates`` holds, in turn, the input projections, the gate
    activations (r, z after the sigmoid and n after the tanh, written in place step by step: saved
    for BPTT) and, in backward, the gradients of the gate pre-activations (written in place over
    the activations of the same step once they are read), which feed the input-weight gradient.
    With bf16, a bfloat16 buffer of the same shape holds the input projections, then those gradients.
    """

    @staticmethod
    def forward(ctx, xt, h0, w_ih, b_ih, w_hh, b_hh, bf16=False):
        steps, n, feat = xt.shape
        hid = w_hh.shape[2]
        x2d = xt.reshape(steps * n, feat)
        save = any(ctx.needs_input_grad)
        ops = _kernel(h0)
        key = (steps, n, hid, feat, h0.dtype, h0.device, bool(bf16))

        def half():  # bfloat16 copies of the projections (then their gradients), of x and of the states
            return (h0.new_empty(2, 3 * hid, steps, n, dtype=torch.bfloat16),
                    h0.new_empty(steps * n, feat, dtype=torch.bfloat16),
                    h0.new_empty(steps + 1, 2, hid, n, dtype=torch.bfloat16)) if bf16 else (None, None, None)

        if save:
            gates, (pre16, x16, h16), ghn_all, h_all = _WORKSPACE.take(key, lambda: (
                h0.new_empty(2, 3 * hid, steps, n), half(), h0.new_empty(steps, 2, hid, n),
                h0.new_empty(steps + 1, 2, hid, n)))
            ctx.key = key
        else:  # inference: reused gates buffers, ping-pong hidden states
            gates, (pre16, x16, h16) = _WORKSPACE.scratch(key, lambda: (h0.new_empty(2, 3 * hid, steps, n), half()))
            ghn_all, h_all = None, h0.new_empty(2, 2, hid, n)
            h16 = None if h16 is None else h16[:2]  # a ping-pong pair, as h_all
        if x16 is not None:
            x2d = x16.copy_(x2d)
        # b_hh of r and z joins the input bias (both are added before the sigmoid).
        bias = torch.cat((b_ih[:, : 2 * hid] + b_hh[:, : 2 * hid], b_ih[:, 2 * hid:]), dim=1)
        # The C++ loop reads bfloat16 projections where they are; the Python one gets them converted.
        _input_projections(x2d, w_ih, bias, gates, pre16, convert=ops is None)
        ctx.bf16, ctx.kernel = bf16, ops
        if ops is not None:
            h_all[0].copy_(h0.transpose(1, 2))
            none = h0.new_empty(0)
            if h16 is not None:  # bf16: the states as the bfloat16 hidden products read them
                h16[0].copy_(h_all[0])
            h = ops.forward_steps(gates, none if pre16 is None else pre16, w_hh, b_hh[:, 2 * hid:], h_all,
                                  h0.new_empty(1, 2, hid, n) if ghn_all is None else ghn_all,
                                  none if h16 is None else h16, save)
        else:
            h = _forward_steps(gates, h0, w_hh, b_hh[:, 2 * hid:], ghn_all, h_all)
        if save:
            ctx.half = (pre16, x16, h16)
            ctx.save_for_backward(x2d if bf16 else xt, w_ih, w_hh, gates, ghn_all, h_all)
        # A new contiguous (2, N, H) tensor (never pooled memory), as nn.GRU returns h_n:
        # dropout masks downstream follow memory order.
        return h.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad_h):
        xs, w_ih, w_hh, gates, ghn_all, h_all = ctx.saved_tensors
        hid, steps, n = gates.shape[1] // 3, gates.shape[2], gates.shape[3]
        feat = w_ih.shape[2]
        (pre16, x16, h16), ctx.half = ctx.half, None
        if ctx.kernel is not None:
            none = grad_h.new_empty(0)
            dh, grad_w_hh, sum_dghn = ctx.kernel.backward_steps(
                grad_h.transpose(1, 2), gates, none if pre16 is None else pre16, ghn_all, h_all,
                none if h16 is None else h16, w_hh)
        else:
            dh, grad_w_hh, sum_dghn = _backward_steps(grad_h, gates, ghn_all, h_all, w_hh, pre16)
            sum_dghn = sum_dghn @ sum_dghn.new_ones(n)
        need = ctx.needs_input_grad
        grad_x = grad_w_ih = grad_b_ih = grad_b_hh = None
        x2d = xs.reshape(steps * n, feat)
        flat_gi = gates.view(2, 3 * hid, steps * n)
        if need[0]:
            grad_x = (flat_gi[0].t() @ w_ih[0] + flat_gi[1].t() @ w_ih[1]).view(steps, n, feat)
        if need[2]:
            if pre16 is not None:
                grad_w_ih = (pre16.view(6 * hid, steps * n) @ x2d).float().view(2, 3 * hid, feat)
            else:
                grad_w_ih = (flat_gi.view(6 * hid, steps * n) @ x2d).view(2, 3 * hid, feat)
        # Row sums as matrix-vector products: much faster than sum(dim=...) here.
        b_ih_grad = (flat_gi.reshape(6 * hid, steps * n) @ flat_gi.new_ones(steps * n)).view(2, 3 * hid)
        if need[3]:
            grad_b_ih = b_ih_grad
        if need[5]:  # r, z: the same pre-activation gradients as b_ih; n: sum of r * da_n
            grad_b_hh = torch.cat((b_ih_grad[:, : 2 * hid], sum_dghn), dim=1)
        _WORKSPACE.give(ctx.key, (gates, (pre16, x16, h16), ghn_all, h_all))
        return grad_x, dh.transpose(1, 2), grad_w_ih, grad_b_ih, grad_w_hh, grad_b_hh, None


def bigru_last_hidden(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, bf16: bool = False,
                      input_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``nn.GRU(x, h0)[1]`` for a one-layer bidirectional batch-first GRU, computed faster.

    x ``(N, T, F)`` (batch first; a transposed view of a time-major ``(T, N, F)`` tensor avoids a
    copy), h0 ``(2, N, H)`` (may be an expanded view); returns ``(2, N, H)`` = [forward final
    state, backward final state], as ``nn.GRU`` returns ``h_n``. ``bf16=True`` computes the input
    projections (the bulk of the work; with the C++ loop the hidden products too) in bfloat16 with
    fp32 accumulation: not bit-equivalent to
    nn.GRU (about 3 significant digits in those products), an opt-in speed option.
    ``input_scale`` ``(F,)``: compute ``nn.GRU(x * input_scale, h0)`` by scaling the columns of
    the input weights instead of x (a batch-wide landmark-dropout mask; equal up to float
    rounding, and no pass over x).
    """
    if not supports(gru):
        raise ValueError("bigru_last_hidden supports only 1-layer bidirectional batch_first GRUs with biases")
    def both(name: str) -> torch.Tensor:  # forward and backward direction's parameter, stacked
        return torch.stack((getattr(gru, name), getattr(gru, f"{name}_reverse")))

    w_ih = both("weight_ih_l0")  # (2, 3H, F)
    if input_scale is not None:
        w_ih = w_ih * input_scale
    b_ih, w_hh, b_hh = both("bias_ih_l0"), both("weight_hh_l0"), both("bias_hh_l0")  # w_hh (2, 3H, H)
    xt = x.transpose(0, 1).contiguous()  # no copy when x is a view of time-major data
    return _BiGRU.apply(xt, h0, w_ih, b_ih, w_hh, b_hh, bool(bf16))
