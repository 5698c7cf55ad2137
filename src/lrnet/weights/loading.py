"""Loading weights: safe `.pth` reading, one branch, and a whole pair from a name, folder or ``.h5`` files.

`.pth` files are pickles, so they are always loaded with ``weights_only=True`` (tensors only, no
code executed) and a ``map_location`` (the official files hold CUDA tensors).

Weights also carry what a verdict needs to be read correctly (`LoadedWeights`): the frame rate
of their training videos and where that figure comes from, a *model card* (training data, known
domain, block size) and the video-score threshold: 0.5, or one calibrated on a validation split
by ``lrnet evaluate --calibrate`` and stored in the folder's ``lrnet.json`` (`lrnet.weights.runfile`).
A folder whose ``lrnet.json`` says ``"pretrained": NAME`` and holds no ``.pth`` files stands for
the registry pair NAME with that folder's threshold (how a registry pair gets calibrated).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import LrnetError, one_line
from ..features import BRANCHES
from ..model import ModelConfig, build_model, check_state_dict
from . import runfile
from .keras import keras_pair_paths, load_keras_models
from .registry import PRETRAINED, cache_state, fetch_pretrained, get_pretrained, model_card, registry_match

__all__ = ["LoadedWeights", "load_state_dict", "load_branch", "resolve_weights", "threshold_for", "weights_card"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class LoadedWeights:
    """Branch models ready for inference, and where they came from."""

    models: Dict[str, nn.Module]  # branch -> model in eval mode
    block_size: int
    source: str
    config: ModelConfig
    fps: Optional[float] = None  # frame rate of the training videos (frames/s); None: unknown
    threshold: float = 0.5  # video score at or above which the verdict is "fake"
    threshold_source: str = "default"  # where `threshold` came from ("default", a run's lrnet.json, ...)
    card: Dict[str, Any] = field(default_factory=dict)  # model card: training data, domain, notes


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

    A folder holds ``g1.pth`` / ``g2.pth`` (the official layout), directly or in a ``weights/``
    subfolder, and optionally an ``lrnet.json`` (`lrnet.weights.runfile`) with the model config,
    block size, frame rate, threshold and model card written by ``lrnet train`` /
    ``lrnet evaluate --calibrate``. The result's ``threshold``, ``threshold_source``, ``fps`` and
    ``card`` are filled from there (or from the registry).
    """
    keras = keras_pair_paths(spec, branches)
    if keras is not None:
        models, block_size, cfg = load_keras_models(keras, device)
        weights = LoadedWeights(models, block_size, f"keras:{spec}", cfg)
        folder = Path(spec) if Path(spec).is_dir() else None
        meta = runfile.read_meta(folder) if folder is not None else {}
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
    meta = runfile.read_meta(folder)
    paths = {b: runfile.locate(folder, f"{b}.pth") for b in branches}
    if meta.get("pretrained") and not any(paths.values()):  # a calibration folder for a registry pair
        weights = _load_pretrained(str(meta["pretrained"]), branches, device, download, config)
        weights.source = f"{folder} (pretrained:{meta['pretrained']})"
        return _apply_metadata(weights, folder, meta)
    cfg = _run_config(folder, meta, config)
    models = {}
    for b, path in paths.items():
        if path is None:
            raise LrnetError(f"{folder}: no {b}.pth here (needed for branch {b})")
        models[b] = load_branch(path, cfg, device)
    fps = meta.get("fps")
    weights = LoadedWeights(models, int(meta.get("block_size", 30)), str(folder), cfg,
                            fps=float(fps) if fps is not None else None)
    official = None if meta.get("dataset") else registry_match({b: p for b, p in paths.items() if p is not None})
    if official is not None:  # a copy of an official pair: its card, not an empty one
        weights.fps, weights.card = official.fps, {**official.card(), "name": f"{official.name} (copy in {folder})"}
    else:
        weights.card = _run_card(folder, meta, weights)
    return _apply_metadata(weights, folder, meta)


def _run_config(folder: Path, meta: Mapping[str, Any], config: Optional[ModelConfig]) -> ModelConfig:
    """The model config of a run (`config`, else its ``lrnet.json`` "model"), checked by building it.

    The run file's kinds of values are checked when it is read (`runfile.validate`); this rejects
    sizes no network can have (e.g. ``rnn_unit`` <= 0) before any weight is read.
    """
    try:
        cfg = config or ModelConfig.from_dict(meta.get("model", {}))
        build_model(cfg)
    except (TypeError, ValueError) as exc:
        raise LrnetError(f"{runfile.run_file(folder)}: invalid run settings ({one_line(str(exc))})") from None
    return cfg


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


def _card_with_metadata(card: Mapping[str, Any], folder: Optional[Path], meta: Mapping[str, Any],
                        threshold: float, source: str) -> Dict[str, Any]:
    """`card` with the hand-written ``card`` fields and the stored threshold of a folder's ``lrnet.json``;
    ``threshold`` / ``threshold_source``: the weights' own when nothing is stored."""
    card = dict(card)
    extra = meta.get("card")
    if isinstance(extra, Mapping):  # hand-written card fields win over derived ones
        card.update({k: v for k, v in extra.items() if isinstance(k, str)})
    stored = runfile.threshold_of(folder, meta) if folder is not None else None
    if stored is not None:
        threshold, source = stored
        card["threshold_record"] = dict(meta["threshold"])
    card["threshold"] = threshold
    card["threshold_source"] = source
    return card


def _apply_metadata(weights: LoadedWeights, folder: Optional[Path], meta: Mapping[str, Any]) -> LoadedWeights:
    """Fill threshold, threshold_source and the card's extras from a folder's ``lrnet.json``."""
    weights.card = _card_with_metadata(weights.card, folder, meta, weights.threshold, weights.threshold_source)
    weights.threshold, weights.threshold_source = weights.card["threshold"], weights.card["threshold_source"]
    return weights


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


def weights_card(spec: str) -> Dict[str, Any]:
    """What ``lrnet weights show`` prints, never downloading: ``{"source", "card", "cache"}``.

    A registry name, or a folder standing for one (``"pretrained": NAME`` and no ``.pth``): the
    registry's card (with the folder's stored threshold), and ``cache`` = ``{"name", "folder", "files":
    {branch: "cached" | "missing" | "mismatch"}}`` (local files only). Anything else is loaded from
    disk as `resolve_weights` does (``download=False``), ``cache`` None.
    """
    folder: Optional[Path] = None
    meta: Mapping[str, Any] = {}
    name = spec if spec in PRETRAINED else None
    if name is None and Path(spec).is_dir() and keras_pair_paths(spec, BRANCHES) is None:
        meta = runfile.read_meta(spec)
        if meta.get("pretrained") and not any(runfile.locate(spec, f"{b}.pth") for b in BRANCHES):
            folder, name = Path(spec), get_pretrained(str(meta["pretrained"])).name
    if name is None:
        weights = resolve_weights(spec, download=False)
        return {"source": weights.source, "card": weights.card, "cache": None}
    from ..paths import cache_dir

    pair = get_pretrained(name)
    source = f"pretrained:{name}" if folder is None else f"{folder} (pretrained:{name})"
    return {"source": source, "card": _card_with_metadata(pair.card(), folder, meta, 0.5, "default"),
            "cache": {"name": name, "folder": str(cache_dir() / name), "files": cache_state(name)}}
