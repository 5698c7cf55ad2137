"""Model weights: safe loading of `.pth` state dicts and the registry of pretrained pairs.

A weight *pair* is one state dict per branch (``g1.pth``, ``g2.pth``). `.pth` files are pickles,
so they are always loaded with ``weights_only=True`` (tensors only, no code executed) and a
``map_location`` (the official files hold CUDA tensors). Named pretrained pairs are downloaded
only when asked for, verified against their SHA-256 and cached (see `cache_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .atomic import atomic_path
from .errors import LrnetError
from .features import BRANCHES
from .legacy import keras_pair_paths, load_keras_pair
from .model import LoadedWeights, ModelConfig, build_model, check_state_dict  # noqa: F401  (re-exported)

PathLike = Union[str, "os.PathLike[str]"]
_OFFICIAL = "https://github.com/frederickszk/LRNet/raw/main"


@dataclass(frozen=True)
class WeightFile:
    url: str
    sha256: str


@dataclass(frozen=True)
class PretrainedPair:
    """A named pair of official branch weights with the settings they were trained with."""

    name: str
    description: str
    files: Mapping[str, WeightFile]  # branch -> file
    block_size: int = 30
    model: Mapping[str, Any] = None  # ModelConfig overrides; None = defaults
    fps: Optional[float] = None  # frame rate of the training videos (frames/s)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(dict(self.model or {}))


PRETRAINED: Dict[str, PretrainedPair] = {
    "ffpp-raw": PretrainedPair(
        name="ffpp-raw",
        description="official LRNet weights trained on FaceForensics++ raw (99.02% AUC)",
        fps=30.0,  # FF++ sources are YouTube videos, mostly 30 fps (Roessler et al. 2019)
        files={
            "g1": WeightFile(f"{_OFFICIAL}/training/weights/torch/g1.pth",
                             "d953cfc1a5354493141e13ac074c7306e86ab768d6f015cedfc17f2b6485dd62"),
            "g2": WeightFile(f"{_OFFICIAL}/training/weights/torch/g2.pth",
                             "45e50a803c8bbc4851646842765a01f25c34a7085e86e67e06f9598c9e1f34c4"),
        },
    ),
    "dfo": PretrainedPair(
        name="dfo",
        description="official LRNet demo weights trained on DeeperForensics-1.0",
        fps=25.0,  # DeeperForensics-1.0 videos are 25 fps (Jiang et al. 2020)
        files={
            "g1": WeightFile(f"{_OFFICIAL}/demo/model_weights/g1.pth",
                             "2d057605d518b7527fd1931aa2522bbb9040eb11ff8a3181b3e351e89b55ed4c"),
            "g2": WeightFile(f"{_OFFICIAL}/demo/model_weights/g2.pth",
                             "7380f8f96bc2a1e3e4e9bea8a6d226b9f56661b875106d34702e337fa503e07f"),
        },
    ),
}


def cache_dir() -> Path:
    """Where downloaded weights live: ``$LRNET_CACHE``, else ``$XDG_CACHE_HOME/lrnet``, else ``~/.cache/lrnet``."""
    if os.environ.get("LRNET_CACHE"):
        return Path(os.environ["LRNET_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lrnet"


def sha256_of(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: PathLike, sha256: str, timeout: float = 60.0,
                  progress: bool = False) -> Path:
    """Download `url` to `dest` atomically and verify its SHA-256.

    `url` may be ``http(s)://`` or ``file://`` (a local mirror). On a hash mismatch nothing is
    left at `dest` and `LrnetError` says so; network failures raise `LrnetError` too.
    """
    dest = Path(dest)
    digest = hashlib.sha256()
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False)
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
            if digest.hexdigest() != sha256.lower():
                raise LrnetError(
                    f"{url}: SHA-256 mismatch (expected {sha256}, got {digest.hexdigest()}); "
                    "the download was discarded"
                )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise LrnetError(f"{url}: download failed ({reason})") from None
    return dest


def fetch_pretrained(name: str, root: Optional[PathLike] = None, download: bool = True,
                     mirror: Optional[str] = None, progress: bool = False) -> Dict[str, Path]:
    """Return ``{branch: path}`` for the named pretrained pair, downloading missing files.

    Cached files are re-verified against their hash. `mirror` replaces the download location with
    a folder or URL holding ``g1.pth`` and ``g2.pth`` (for offline installs). With
    ``download=False`` a missing file raises `LrnetError` explaining how to get it.
    """
    pair = get_pretrained(name)
    folder = Path(root) if root is not None else cache_dir() / name
    paths: Dict[str, Path] = {}
    for branch, wf in pair.files.items():
        dest = folder / f"{branch}.pth"
        if dest.exists() and sha256_of(dest) == wf.sha256:
            paths[branch] = dest
            continue
        if dest.exists():
            dest.unlink()  # stale or corrupt copy: never use it
        if not download:
            raise LrnetError(
                f"{dest}: pretrained weights '{name}' are not downloaded; run `lrnet weights download {name}`"
            )
        url = wf.url
        if mirror:
            base = mirror if "://" in mirror else Path(mirror).resolve().as_uri()
            url = f"{base.rstrip('/')}/{branch}.pth"
        try:
            paths[branch] = download_file(url, dest, wf.sha256, progress=progress)
        except LrnetError as exc:
            raise LrnetError(f"{exc}. Offline? Put {branch}.pth from a copy of the official weights in a folder "
                             f"and run `lrnet weights download {name} --from FOLDER`") from None
    return paths


def get_pretrained(name: str) -> PretrainedPair:
    try:
        return PRETRAINED[name]
    except KeyError:
        raise LrnetError(f"unknown pretrained weights {name!r}; available: {', '.join(PRETRAINED)}") from None


def load_state_dict(path: PathLike, map_location: "str | torch.device" = "cpu") -> Dict[str, torch.Tensor]:
    """Load a `.pth` state dict safely (``weights_only=True``) onto `map_location`.

    Accepts a bare state dict or an lrnet checkpoint (``{"model": state_dict, ...}``).
    """
    path = Path(path)
    if not path.is_file():
        raise LrnetError(f"{path}: weight file not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle with code in it ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LrnetError(f"{path}: not a readable PyTorch weight file ({first[:200]})") from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LrnetError(f"{path}: does not contain a state dict (a mapping of names to tensors)")
    return dict(obj)


def load_branch(path: PathLike, config: Optional[ModelConfig] = None,
                device: "str | torch.device" = "cpu") -> nn.Module:
    """Build a model from `config` and load the weights at `path` strictly, in eval mode.

    A state dict whose keys or shapes do not fit the architecture raises `LrnetError` listing
    the differences (e.g. a GRU of 64 units loaded into a 32-unit model).
    """
    config = config or ModelConfig()
    model = build_model(config)
    state = load_state_dict(path, map_location=device)
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def resolve_weights(spec: str, branches: Sequence[str] = BRANCHES, device: "str | torch.device" = "cpu",
                    download: bool = True, config: Optional[ModelConfig] = None) -> LoadedWeights:
    """Load branch models from a registry name, a weights folder or a training run folder.

    A folder may hold ``g1.pth`` / ``g2.pth`` (the official layout) and optionally an
    ``lrnet.json`` with the model config and block size written by ``lrnet train``.
    """
    keras = keras_pair_paths(spec, branches)
    if keras is not None:
        return load_keras_pair(keras, spec, device)
    if spec in PRETRAINED:
        pair = PRETRAINED[spec]
        paths = fetch_pretrained(spec, download=download, progress=True)
        cfg = config or pair.model_config()
        models = {b: load_branch(paths[b], cfg, device) for b in branches}
        return LoadedWeights(models, pair.block_size, f"pretrained:{spec}", cfg, fps=pair.fps)
    folder = Path(spec)
    if not folder.exists():
        raise LrnetError(
            f"{spec}: not a pretrained name ({', '.join(PRETRAINED)}) nor an existing weights folder"
        )
    if not folder.is_dir():
        raise LrnetError(f"{spec}: expected a folder holding g1.pth and g2.pth")
    meta = read_run_metadata(folder)
    cfg = config or ModelConfig.from_dict(meta.get("model", {}))
    block_size = int(meta.get("block_size", 30))
    models = {}
    for b in branches:
        candidates = [folder / f"{b}.pth", folder / "weights" / f"{b}.pth"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise LrnetError(f"{folder}: no {b}.pth here (needed for branch {b})")
        models[b] = load_branch(path, cfg, device)
    fps = meta.get("fps")
    return LoadedWeights(models, block_size, str(folder), cfg, fps=float(fps) if fps else None)


def read_run_metadata(folder: PathLike) -> Dict[str, Any]:
    """The ``lrnet.json`` written next to trained weights ({} when absent)."""
    for candidate in (Path(folder) / "lrnet.json", Path(folder) / "weights" / "lrnet.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError) as exc:
                raise LrnetError(f"{candidate}: unreadable run metadata ({exc})") from None
    return {}
