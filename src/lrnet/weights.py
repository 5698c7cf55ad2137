"""Model weights: safe loading of `.pth` state dicts and the registry of pretrained pairs.

A weight *pair* is one state dict per branch (``g1.pth``, ``g2.pth``). `.pth` files are pickles,
so they are always loaded with ``weights_only=True`` (tensors only, no code executed) and a
``map_location`` (the official files hold CUDA tensors). Named pretrained pairs are downloaded
only when asked for, verified against their SHA-256 and cached (see `cache_dir`).

Weights also carry what a verdict needs to be read correctly (`LoadedWeights`): the frame rate
of their training videos and where that figure comes from, a *model card* (training data, known
domain, block size) and the video-score threshold: 0.5, or one calibrated on a validation split
by ``lrnet evaluate --calibrate`` and stored in the folder's ``lrnet.json`` (`save_threshold`).
A folder whose ``lrnet.json`` says ``"pretrained": NAME`` and holds no ``.pth`` files stands for
the registry pair NAME with that folder's threshold (how a registry pair gets calibrated).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from .atomic import atomic_path, atomic_write_text
from .errors import LrnetError, one_line
from .features import BRANCHES, check_block_size
from .legacy import keras_pair_paths, load_keras_pair
from .model import LoadedWeights, ModelConfig, build_model, check_state_dict  # noqa: F401  (re-exported)
from .paths import cache_dir  # noqa: F401  (where weights are cached; re-exported)
from .vocab import PathLike

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
    model: Optional[Mapping[str, Any]] = None  # ModelConfig overrides; None = defaults
    fps: Optional[float] = None  # frame rate of the training videos (frames/s)
    fps_source: str = ""  # why `fps` is what it is
    training_data: str = ""
    domain: str = ""  # footage the weights are meant for (and not meant for)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(dict(self.model or {}))

    def card(self) -> Dict[str, Any]:
        """The pair's model card (see `model_card`)."""
        return model_card(self.name, self.training_data or self.description, self.domain, self.fps,
                          self.fps_source, self.block_size, self.model_config().arch)


PRETRAINED: Dict[str, PretrainedPair] = {
    "ffpp-raw": PretrainedPair(
        name="ffpp-raw",
        description="official LRNet weights trained on FaceForensics++ raw (99.02% AUC)",
        fps=30.0,  # FF++ sources are YouTube videos, mostly 30 fps (Roessler et al. 2019)
        fps_source="FF++ videos are mostly 30 fps (YouTube sources, Roessler et al. 2019)",
        training_data="FaceForensics++ (Roessler et al. 2019), raw/c0 quality",
        domain="FaceForensics++ (YouTube, c0/raw); not meant for DeeperForensics-like footage "
               "(it scores DeeperForensics videos at chance)",
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
        fps_source="DeeperForensics is 25 fps (Jiang et al. 2020)",
        training_data="DeeperForensics-1.0 (Jiang et al. 2020)",
        domain="DeeperForensics-1.0",
        files={
            "g1": WeightFile(f"{_OFFICIAL}/demo/model_weights/g1.pth",
                             "2d057605d518b7527fd1931aa2522bbb9040eb11ff8a3181b3e351e89b55ed4c"),
            "g2": WeightFile(f"{_OFFICIAL}/demo/model_weights/g2.pth",
                             "7380f8f96bc2a1e3e4e9bea8a6d226b9f56661b875106d34702e337fa503e07f"),
        },
    ),
}


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

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False, disable=None)
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
    ``lrnet.json`` with the model config, block size, frame rate, threshold and model card
    written by ``lrnet train`` / ``lrnet evaluate --calibrate``. The result's ``threshold``,
    ``threshold_source``, ``fps`` and ``card`` are filled from there (or from the registry).
    """
    keras = keras_pair_paths(spec, branches)
    if keras is not None:
        weights = load_keras_pair(keras, spec, device)
        folder = Path(spec) if Path(spec).is_dir() else None
        meta = read_run_metadata(folder) if folder is not None else {}
        weights.card = model_card(spec, meta.get("dataset", "unknown (TF-era Keras weights)"), "",
                                  None, "", weights.block_size, weights.config.arch)
        return _apply_metadata(weights, folder, meta)
    if spec in PRETRAINED:
        return _load_pretrained(spec, branches, device, download, config)
    folder = Path(spec)
    if not folder.exists():
        raise LrnetError(
            f"{spec}: not a pretrained name ({', '.join(PRETRAINED)}) nor an existing weights folder"
        )
    if not folder.is_dir():
        raise LrnetError(f"{spec}: expected a folder holding g1.pth and g2.pth")
    meta = read_run_metadata(folder)
    has_pth = any((folder / f"{b}.pth").is_file() or (folder / "weights" / f"{b}.pth").is_file() for b in branches)
    if meta.get("pretrained") and not has_pth:  # a calibration folder for a registry pair
        weights = _load_pretrained(str(meta["pretrained"]), branches, device, download, config)
        weights.source = f"{folder} (pretrained:{meta['pretrained']})"
        return _apply_metadata(weights, folder, meta)
    cfg, block_size, fps = _run_settings(folder, meta, config)
    models, paths = {}, {}
    for b in branches:
        candidates = [folder / f"{b}.pth", folder / "weights" / f"{b}.pth"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise LrnetError(f"{folder}: no {b}.pth here (needed for branch {b})")
        models[b] = load_branch(path, cfg, device)
        paths[b] = path
    weights = LoadedWeights(models, block_size, str(folder), cfg, fps=fps)
    official = None if meta.get("dataset") else registry_match(paths)
    if official is not None:  # a copy of an official pair: its card, not an empty one
        weights.fps, weights.card = official.fps, {**official.card(), "name": f"{official.name} (copy in {folder})"}
    else:
        weights.card = _run_card(folder, meta, weights)
    return _apply_metadata(weights, folder, meta)


def _run_settings(folder: Path, meta: Mapping[str, Any],
                  config: Optional[ModelConfig]) -> "tuple[ModelConfig, int, Optional[float]]":
    """Model config, block size and frame rate from a run's lrnet.json, checked (one-line errors)."""
    where = folder / "lrnet.json"
    try:
        model = meta.get("model", {})
        if not isinstance(model, Mapping):
            raise ValueError('"model" must be an object')
        cfg = config or ModelConfig.from_dict(model)
        block_size = check_block_size(meta.get("block_size", 30))
        fps = meta.get("fps")
        fps = float(fps) if fps is not None else None
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f'"fps" must be a positive number, not {fps}')
        build_model(cfg)  # rejects impossible sizes (e.g. rnn_unit <= 0) before any weight is read
    except (TypeError, ValueError) as exc:
        raise LrnetError(f"{where}: invalid run settings ({one_line(str(exc))})") from None
    return cfg, block_size, fps


def registry_match(paths: Mapping[str, Path]) -> Optional[PretrainedPair]:
    """The registry pair whose files have the SHA-256 of ``{branch: path}`` (every branch given), or None."""
    digests = {b: sha256_of(p) for b, p in paths.items()}
    for pair in PRETRAINED.values():
        if digests and all(b in pair.files and pair.files[b].sha256 == d for b, d in digests.items()):
            return pair
    return None


def _load_pretrained(name: str, branches: Sequence[str], device, download: bool,
                     config: Optional[ModelConfig]) -> LoadedWeights:
    pair = get_pretrained(name)
    paths = fetch_pretrained(name, download=download, progress=True)
    cfg = config or pair.model_config()
    models = {b: load_branch(paths[b], cfg, device) for b in branches}
    return LoadedWeights(models, pair.block_size, f"pretrained:{name}", cfg, fps=pair.fps, card=pair.card())


def _run_card(folder: Path, meta: Mapping[str, Any], weights: LoadedWeights) -> Dict[str, Any]:
    """A training run's card from its ``lrnet.json`` (``dataset``, ``fps``, an optional ``card``)."""
    data = meta.get("dataset")
    if isinstance(data, Mapping) and isinstance(data.get("train"), Mapping):
        train = data["train"]
        training = f"{train.get('name', '?')}" + (" (synthetic: lrnet generate)" if train.get("synthetic") else "")
    else:
        training = str(data) if data else "unknown (no dataset recorded in lrnet.json)"
    fps = weights.fps
    return model_card(folder.name, training, "", fps,
                      str(meta.get("fps_source") or ("lrnet.json \"fps\"" if fps else "")),
                      weights.block_size, weights.config.arch)


def model_card(name: str, training_data: str, domain: str, fps: Optional[float], fps_source: str,
               block_size: int, architecture: str) -> Dict[str, Any]:
    """The short model card every `LoadedWeights` carries: what the weights were trained on and for.

    Keys: name, training_data, domain (footage they are meant for; "" = the training data's),
    fps (frames/s of the training videos, None = unknown) and fps_source, block_size (frames),
    architecture; `_apply_metadata` adds threshold and threshold_source.
    """
    return {"name": name, "training_data": training_data, "domain": domain or training_data,
            "fps": fps, "fps_source": fps_source or ("unknown" if fps is None else ""),
            "block_size": int(block_size), "architecture": architecture}


def _apply_metadata(weights: LoadedWeights, folder: Optional[Path], meta: Mapping[str, Any]) -> LoadedWeights:
    """Fill threshold, threshold_source and the card's extras from a folder's ``lrnet.json``."""
    card = dict(weights.card)
    extra = meta.get("card")
    if isinstance(extra, Mapping):  # hand-written card fields win over derived ones
        card.update({k: v for k, v in extra.items() if isinstance(k, str)})
    record = meta.get("threshold")
    if isinstance(record, Mapping) and folder is not None:
        weights.threshold, weights.threshold_source = _read_threshold(folder, record)
        card["threshold_record"] = dict(record)
    card["threshold"] = weights.threshold
    card["threshold_source"] = weights.threshold_source
    weights.card = card
    return weights


def _read_threshold(folder: Path, record: Mapping[str, Any]) -> "tuple[float, str]":
    path = folder / "lrnet.json"
    try:
        value = float(record["value"])
    except (KeyError, TypeError, ValueError):
        raise LrnetError(f"{path}: \"threshold\" needs a numeric \"value\"") from None
    if not 0.0 <= value <= 1.0 + 1e-6:
        raise LrnetError(f"{path}: threshold {value} is outside [0, 1]")
    return value, f"{path} ({describe_threshold(record)})"


def describe_threshold(record: Mapping[str, Any]) -> str:
    """``"eer on DF raw val"`` / ``"target-fpr 0.05 on DF raw val"`` for a stored threshold record."""
    method = str(record.get("method", "?"))
    if method == "target-fpr":
        method = f"target-fpr {record.get('target_fpr')}"
    where = " ".join(str(record[k]) for k in ("dataset", "level", "split") if record.get(k))
    return f"{method} on {where}" if where else method


def threshold_for(weights: LoadedWeights, aggregation: str, branches: Optional[Sequence[str]] = None,
                  override: Optional[float] = None) -> "tuple[float, str]":
    """The threshold (value, source) to use with `weights` for `aggregation` and `branches`.

    `override` (a ``--threshold`` flag) wins. A stored threshold applies only to the aggregation
    (and branches) it was calibrated for; otherwise the default 0.5 is used and the source says why.
    """
    if override is not None:
        return float(override), "--threshold"
    record = weights.card.get("threshold_record")
    if not isinstance(record, Mapping):
        return weights.threshold, weights.threshold_source
    if record.get("aggregation") not in (None, aggregation):
        return 0.5, f"default (the stored threshold is for {record['aggregation']}, not {aggregation})"
    stored = record.get("branches")
    used = list(branches or weights.models)
    if stored and list(stored) != [b for b in BRANCHES if b in used]:
        return 0.5, f"default (the stored threshold is for {'+'.join(stored)}, not {'+'.join(used)})"
    return weights.threshold, weights.threshold_source


def calibration_folder(spec: str) -> Optional[Path]:
    """Where `lrnet evaluate --calibrate` may write a threshold for weights `spec`: the weights
    folder itself, or None for a registry name or a pair of ``.h5`` files (no folder of its own)."""
    if spec in PRETRAINED or "," in spec:
        return None
    folder = Path(spec)
    return folder if folder.is_dir() else None


def save_threshold(folder: PathLike, record: Mapping[str, Any], pretrained: Optional[str] = None) -> Path:
    """Store a calibrated threshold in ``folder/lrnet.json`` (read-modify-write, atomic; other keys kept).

    `record`: ``{"value", "method", "target_fpr", "dataset", "level", "split", "aggregation", ...}``;
    ``"date"`` is added when absent. `pretrained`: for a folder that stands for a registry pair
    (it then holds only this ``lrnet.json``), the pair's name.
    """
    folder = Path(folder)
    path = folder / "lrnet.json"
    meta = read_run_metadata(folder) if path.is_file() else {}
    if pretrained is not None:
        if meta.get("pretrained") not in (None, pretrained):
            raise LrnetError(f"{path}: refers to pretrained weights {meta['pretrained']!r}, not {pretrained!r}; "
                             "choose another folder")
        meta["pretrained"] = pretrained
    meta["threshold"] = {**record, "date": record.get("date") or time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(meta, indent=1) + "\n")
    except OSError as exc:
        raise LrnetError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def read_run_metadata(folder: PathLike) -> Dict[str, Any]:
    """The ``lrnet.json`` written next to trained weights ({} when absent)."""
    for candidate in (Path(folder) / "lrnet.json", Path(folder) / "weights" / "lrnet.json"):
        if candidate.is_file():
            try:
                meta = json.loads(candidate.read_text())
            except (OSError, ValueError) as exc:
                raise LrnetError(f"{candidate}: unreadable run metadata ({exc})") from None
            if not isinstance(meta, dict):
                raise LrnetError(f"{candidate}: run metadata must be a JSON object")
            return meta
    return {}
