"""Builds, caches and loads the C++ recurrence of the fused GRU (``gru_kernel.cpp``).

`fastgru` runs the GRU's time steps either in Python (about ten PyTorch ops per step and
direction) or, when this module can provide it, in one C++ loop per pass (one fused pass over each
step's gates, one hidden product per step): a g1 training step about a quarter faster
(``benchmarks/bench_gru_step.py``).

The kernel is compiled on first use with the system C++ compiler (``$CXX``, else ``c++``) against
the installed torch, ``-O3 -march=native``, in a private temporary folder, and the library is moved
atomically into ``<lrnet cache>/kernels/`` (or ``$LRNET_KERNEL_DIR``) under a name that hashes the
source, the torch version, the compiler and the CPU's flags (a shared cache folder never hands one
CPU another's code). Later processes load it from there. Building takes about 10 s, once per
machine, torch and compiler.

Why not ``torch.utils.cpp_extension.load``: it builds with the ``ninja`` tool, which lrnet does
not depend on; it caches in ``~/.cache/torch_extensions/<name>`` by source and flags but not by
CPU, so a home folder shared by several machines could hand one CPU a library built
``-march=native`` for another; and its build lock is a plain file (torch's ``FileBaton``) that a
killed build leaves behind, on which every later process then waits forever. Here a killed build
leaves only its private folder, which a later build removes. Compiler warnings are logged at debug
level (``lrnet train --verbose`` shows them); an error fails the build, reported by its first line.

``$LRNET_GRU_KERNEL`` chooses: ``auto`` (default: build or load it; if that fails, log one warning
saying why and use the Python loop), ``cpp`` (fail with the reason instead), ``python`` (never
build; the Python loop). `status` says which one is in use and why, for run metadata.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .errors import LrnetError
from .paths import cache_dir

__all__ = ["KERNEL_ENV", "KERNEL_DIR_ENV", "load", "status", "library_path"]

log = logging.getLogger(__name__)

KERNEL_ENV = "LRNET_GRU_KERNEL"
KERNEL_DIR_ENV = "LRNET_KERNEL_DIR"  # where built kernels are kept (default: <lrnet cache>/kernels)
_MODES = ("auto", "cpp", "python")
_SOURCE = Path(__file__).with_name("gru_kernel.cpp")
_LOCK = threading.Lock()
_STATE: dict = {}  # "ops": the loaded op namespace or None, "why": the reason when None


def _mode() -> str:
    mode = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise LrnetError(f"${KERNEL_ENV}={mode!r} is not one of {', '.join(_MODES)}")
    return mode


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str:
    cxx = os.environ.get("CXX") or "c++"
    found = shutil.which(cxx)
    if found is None:
        raise RuntimeError(f"no C++ compiler ({cxx!r} not on PATH)")
    return found


def _compiler_version(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.splitlines()[0] if out.stdout else ""


def library_path(cxx: str) -> Path:
    """Where the built kernel for this source, torch, compiler and CPU is cached."""
    import torch

    h = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), torch.__version__.encode(), _compiler_version(cxx).encode(),
                 _cpu_flags().encode(), platform.machine().encode(), sys.version.encode()):
        h.update(part)
        h.update(b"\0")
    folder = Path(os.environ[KERNEL_DIR_ENV]).expanduser() if os.environ.get(KERNEL_DIR_ENV) else cache_dir() / "kernels"
    return folder / f"lrnet_gru-{h.hexdigest()[:20]}.so"


def _build(cxx: str, target: Path) -> None:
    """Compile gru_kernel.cpp into `target`, atomically (a temporary folder beside it, then rename)."""
    import torch
    from torch.utils import cpp_extension

    target.parent.mkdir(parents=True, exist_ok=True)
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        out = Path(tmp) / target.name
        cmd = [cxx, "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++20",
               f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(_SOURCE), "-o", str(out)]
        cmd[1:1] = [f"-I{p}" for p in cpp_extension.include_paths()]
        for lib_dir in cpp_extension.library_paths():
            cmd += [f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}"]
        cmd += ["-lc10", "-ltorch_cpu"]
        log.info("building the fused GRU kernel (once per machine; about 10 s)")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[-300:])
            raise RuntimeError(f"{Path(cxx).name} failed: {first}")
        if proc.stderr.strip():  # warnings only (the build succeeded): for whoever debugs the kernel
            log.debug("%s warnings while building %s:\n%s", Path(cxx).name, _SOURCE.name, proc.stderr.rstrip())
        os.replace(out, target)


def _remove_stale_builds(folder: Path, age_s: float = 3600.0) -> None:
    """Build folders left by a killed process (older than `age_s`): never read, only removed."""
    for old in folder.glob(".build-*"):
        try:
            if time.time() - old.stat().st_mtime > age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def _load_ops() -> Any:
    import torch

    cxx = _compiler()
    target = library_path(cxx)
    if target.is_file():
        try:
            torch.ops.load_library(str(target))
            return torch.ops.lrnet_gru
        except OSError as exc:  # a damaged cached file: build it again
            log.warning("cached GRU kernel %s unreadable (%s): rebuilding it", target, str(exc).splitlines()[0])
            target.unlink(missing_ok=True)
    if target.parent.is_dir():
        _remove_stale_builds(target.parent)
    _build(cxx, target)
    torch.ops.load_library(str(target))
    return torch.ops.lrnet_gru


def load() -> Optional[Any]:
    """The kernel's op namespace (``forward_steps``, ``backward_steps``), or None when the Python
    loop is to be used (``$LRNET_GRU_KERNEL=python``, or ``auto`` and the build failed, logged once).
    Raises `LrnetError` with the reason in ``cpp`` mode. Thread-safe; built at most once per process."""
    mode = _mode()
    if mode == "python":
        return None
    if "ops" not in _STATE:  # first call: build or load under the lock (concurrent branches wait)
        with _LOCK:
            if "ops" not in _STATE:
                try:
                    _STATE["why"], _STATE["ops"] = "", _load_ops()
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    _STATE["why"] = (str(exc).strip().splitlines() or [repr(exc)])[0]
                    _STATE["ops"] = None
                    if mode == "auto":
                        log.warning("fused GRU kernel unavailable (%s): training uses the slower Python loop "
                                    "(set %s=python to silence this)", _STATE["why"], KERNEL_ENV)
    if _STATE["ops"] is None and mode == "cpp":
        raise LrnetError(f"the fused GRU kernel could not be built: {_STATE['why']}")
    return _STATE["ops"]


def status() -> str:
    """``"cpp"`` or ``"python (<why>)"``: which recurrence `load` gives this process."""
    ops = load()
    if ops is not None:
        return "cpp"
    return "python (" + (f"{KERNEL_ENV}=python" if _mode() == "python" else _STATE.get("why", "")) + ")"
