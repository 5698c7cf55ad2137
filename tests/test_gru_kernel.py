"""The fused GRU's C++ recurrence (lrnet.gru_kernel, gru_kernel.cpp): it builds here, it computes
nn.GRU's outputs and gradients (float32: to float rounding, any batch size, saturated gates; bf16
mode: within bfloat16 accuracy), results do not depend on the thread count, and building, caching
and failing behave as documented."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lrnet import gru_kernel
from lrnet.errors import LrnetError
from lrnet.fastgru import bigru_last_hidden, release_workspace

SRC = Path(__file__).resolve().parents[1] / "src"
HAVE_CXX = shutil.which(os.environ.get("CXX") or "c++") is not None


def _grads(gru, x, h0p, mode, monkeypatch, bf16=False, weight=None):
    monkeypatch.setenv(gru_kernel.KERNEL_ENV, mode)
    out = bigru_last_hidden(gru, x, h0p.expand(-1, x.shape[0], -1), bf16=bf16)
    w = torch.ones_like(out) if weight is None else weight
    grads = torch.autograd.grad((out * w).sum(), list(gru.parameters()) + [h0p])
    return out.detach(), grads


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine: the Python loop is used")
def test_kernel_builds_and_is_used_here():
    """On a machine with a compiler (CI's included) the kernel must build: a silent fallback would
    hide a broken kernel behind the slower Python loop."""
    assert gru_kernel.status() == "cpp"
    lib = gru_kernel.library_path(shutil.which(os.environ.get("CXX") or "c++"))
    assert lib.is_file() and lib.parent == Path(os.environ["LRNET_KERNEL_DIR"])


@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine")
@pytest.mark.parametrize("n,steps", [(37, 30), (16, 1), (1, 5), (1024, 30)])
def test_kernel_matches_nn_gru_float32(monkeypatch, n, steps):
    """Forward and every gradient as nn.GRU's, for batch sizes that fill whole vectors of 16
    samples, leave a remainder, or are a single sample, and a single time step."""
    torch.manual_seed(n + steps)
    gru = nn.GRU(136, 32, batch_first=True, bidirectional=True)
    x = torch.randn(n, steps, 136) * 0.3
    h0p = torch.randn(2, 1, 32, requires_grad=True)
    w = torch.randn(2, n, 32)
    _, ref = gru(x, h0p.expand(-1, n, -1).contiguous())
    g_ref = torch.autograd.grad((ref * w).sum(), list(gru.parameters()) + [h0p])
    out, grads = _grads(gru, x, h0p, "cpp", monkeypatch, weight=w)
    assert (out - ref.detach()).abs().max().item() < 2e-6
    for a, b in zip(grads, g_ref):
        assert _rel(a, b) < 2e-5


@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine")
def test_kernel_saturated_gates_match_nn_gru(monkeypatch):
    """Inputs 100x larger than usual drive the sigmoids and tanh into saturation (and the
    exponential to its clamps): still nn.GRU's values, no inf or NaN."""
    torch.manual_seed(3)
    gru = nn.GRU(136, 32, batch_first=True, bidirectional=True)
    x = torch.randn(40, 12, 136) * 30.0
    h0p = torch.randn(2, 1, 32, requires_grad=True)
    _, ref = gru(x, h0p.expand(-1, 40, -1).contiguous())
    g_ref = torch.autograd.grad(ref.sum(), list(gru.parameters()) + [h0p])
    out, grads = _grads(gru, x, h0p, "cpp", monkeypatch)
    assert torch.isfinite(out).all()
    assert (out - ref.detach()).abs().max().item() < 2e-6
    for a, b in zip(grads, g_ref):
        assert torch.isfinite(a).all() and (a - b).abs().max().item() < 1e-4 * max(1.0, b.abs().max().item())


@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine")
def test_kernel_bf16_mode_is_close_to_fp32(monkeypatch):
    """bf16 mode of the kernel (bfloat16 operands and results for the input projections and the
    hidden products; states and gate maths in float32): within 1 % of nn.GRU in float32, forward and
    gradients, no further off than the Python loop's bf16 (input projections only) by more than
    a small factor, over two steps that reuse the pooled buffers; and not equal to fp32 (it is used)."""
    torch.manual_seed(5)
    gru = nn.GRU(136, 32, batch_first=True, bidirectional=True)
    h0p = torch.randn(2, 1, 32, requires_grad=True)
    for step in range(2):
        x = torch.randn(100, 30, 136) * 0.3
        w = torch.randn(2, 100, 32)
        _, ref = gru(x, h0p.expand(-1, 100, -1).contiguous())
        g_ref = torch.autograd.grad((ref * w).sum(), list(gru.parameters()) + [h0p])
        k_out, k_grads = _grads(gru, x, h0p, "cpp", monkeypatch, bf16=True, weight=w)
        py_out, py_grads = _grads(gru, x, h0p, "python", monkeypatch, bf16=True, weight=w)
        k_err, py_err = (k_out - ref).abs().max().item(), (py_out - ref).abs().max().item()
        assert 0 < k_err < 1e-2 and k_err < 4 * py_err + 1e-3, (step, k_err, py_err)
        for i, (a, b, c) in enumerate(zip(k_grads, g_ref, py_grads)):
            k_rel, py_rel = ((a - b).norm() / b.norm()).item(), ((c - b).norm() / b.norm()).item()
            assert k_rel < 1e-2 and k_rel < 6 * py_rel + 1e-3, (step, i, k_rel, py_rel)


@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine")
def test_kernel_results_do_not_depend_on_the_thread_count(monkeypatch):
    """Branches hand cores to each other mid-run (training.CoreShare): the kernel splits rows between
    threads, never a sum, so one and two threads give the same bits."""
    torch.manual_seed(9)
    gru = nn.GRU(136, 32, batch_first=True, bidirectional=True)
    x = torch.randn(300, 30, 136) * 0.3
    h0p = torch.randn(2, 1, 32, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(_grads(gru, x, h0p, "cpp", monkeypatch, bf16=True))
    finally:
        torch.set_num_threads(before)
    (o1, g1), (o2, g2) = results
    assert torch.equal(o1, o2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_python_mode_never_builds_and_bad_mode_is_refused(monkeypatch):
    monkeypatch.setenv(gru_kernel.KERNEL_ENV, "python")
    assert gru_kernel.load() is None
    assert gru_kernel.status() == f"python ({gru_kernel.KERNEL_ENV}=python)"
    monkeypatch.setenv(gru_kernel.KERNEL_ENV, "fast")
    with pytest.raises(LrnetError, match="LRNET_GRU_KERNEL='fast' is not one of auto, cpp, python"):
        gru_kernel.load()


def _fresh_process(code: str, kernel_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(SRC), "LRNET_KERNEL_DIR": str(kernel_dir), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=600)


TRAIN_STEP = """
import logging, torch
from torch import nn
from lrnet.fastgru import bigru_last_hidden
from lrnet import gru_kernel
logging.basicConfig(level=logging.WARNING)
gru = nn.GRU(136, 8, batch_first=True, bidirectional=True)
x = torch.randn(5, 6, 136)
out = bigru_last_hidden(gru, x, torch.zeros(2, 5, 8))
ref = gru(x, torch.zeros(2, 5, 8))[1]
out.sum().backward()
print(gru_kernel.status(), float((out - ref).abs().max()))
"""


@pytest.mark.misuse
def test_missing_compiler_falls_back_with_one_warning_or_fails_in_cpp_mode(tmp_path):
    """No compiler: `auto` says why once and trains with the Python loop (same results); `cpp`
    fails with a one-line error naming the reason."""
    auto = _fresh_process(TRAIN_STEP, tmp_path / "k", CXX=str(tmp_path / "no-such-c++"))
    assert auto.returncode == 0, auto.stderr
    status, diff = auto.stdout.split("(", 1)[0].strip(), float(auto.stdout.rsplit(" ", 1)[1])
    assert status == "python" and "no-such-c++" in auto.stdout and diff < 1e-5
    assert auto.stderr.count("fused GRU kernel unavailable") == 1 and "slower Python loop" in auto.stderr
    strict = _fresh_process(TRAIN_STEP, tmp_path / "k", CXX=str(tmp_path / "no-such-c++"),
                            LRNET_GRU_KERNEL="cpp")
    assert strict.returncode != 0
    assert "LrnetError: the fused GRU kernel could not be built: no C++ compiler" in strict.stderr
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())


@pytest.mark.misuse
@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine")
def test_compile_error_is_reported_in_one_line(tmp_path):
    """A compiler that fails (here: one that rejects every file) is named with its first error."""
    fake = tmp_path / "bad-c++"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo bad 1.0; exit 0; fi\n"
                    "echo 'gru_kernel.cpp:1:1: error: simulated failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    run = _fresh_process(TRAIN_STEP, tmp_path / "k", CXX=str(fake), LRNET_GRU_KERNEL="cpp")
    assert run.returncode != 0
    assert "could not be built: bad-c++ failed: gru_kernel.cpp:1:1: error: simulated failure" in run.stderr
    assert [p.name for p in (tmp_path / "k").iterdir()] == []  # no partial library, no build folder left


def test_compiler_warnings_are_not_silenced_but_logged_at_debug(tmp_path, caplog):
    """The build passes no -w: what the compiler warns about reaches the debug log (a fake
    compiler that warns, records its arguments and writes the library)."""
    import logging

    fake = tmp_path / "warn-c++"
    fake.write_text(f"#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {tmp_path / 'args'}\n"
                    "while [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then : > \"$2\"; fi; shift; done\n"
                    "echo 'gru_kernel.cpp:63:12: warning: simulated [-Wpsabi]' >&2\nexit 0\n")
    fake.chmod(0o755)
    target = tmp_path / "k" / "lrnet_gru-test.so"
    with caplog.at_level(logging.DEBUG, logger="lrnet.gru_kernel"):
        gru_kernel._build(str(fake), target)
    args = (tmp_path / "args").read_text().split("\n")
    assert "-O3" in args and "-w" not in args
    assert target.is_file()
    (record,) = [r for r in caplog.records if "simulated [-Wpsabi]" in r.getMessage()]
    assert record.levelno == logging.DEBUG and "warn-c++" in record.getMessage()


@pytest.mark.misuse
@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine")
def test_cached_kernel_is_reused_and_a_damaged_one_rebuilt(tmp_path, _kernel_dir):
    """A second process loads the cached library without building; a damaged cached file (e.g. a
    disk error) is reported and rebuilt, and old build folders of killed processes are removed."""
    assert gru_kernel.load() is not None  # built into the session's folder (if not already)
    kernels = tmp_path / "k"
    shutil.copytree(_kernel_dir, kernels)
    (lib,) = [p for p in kernels.iterdir() if p.suffix == ".so"]
    stamp = lib.stat().st_mtime_ns
    first = _fresh_process(TRAIN_STEP, kernels)
    assert first.returncode == 0 and first.stdout.startswith("cpp "), first.stderr
    assert lib.stat().st_mtime_ns == stamp and "building" not in first.stderr
    lib.write_bytes(b"not a shared library")
    stale = kernels / ".build-old"
    stale.mkdir()
    (stale / "partial.so").write_bytes(b"\0" * 10)
    os.utime(stale, (0, 0))
    again = _fresh_process(TRAIN_STEP, kernels)
    assert again.returncode == 0 and again.stdout.startswith("cpp "), again.stderr
    assert "unreadable" in again.stderr and "rebuilding it" in again.stderr
    assert lib.stat().st_size > 10_000
    assert not stale.exists()
