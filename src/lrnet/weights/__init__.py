"""Model weights: the pretrained registry, loading, the TF-era Keras import and the run file.

============  =================================================================================
module        holds
============  =================================================================================
`registry`    the named pairs (`PRETRAINED`: files, SHA-256, model cards), download and cache
              (`fetch_pretrained`, `download_file`), `list_weights` (registry + cache state)
`loading`     `LoadedWeights`, safe `.pth` loading (`load_state_dict`, `load_branch`),
              `resolve_weights` (name, folder or ``.h5`` pair), `threshold_for`
`keras`       the exact import of the TF-era Keras ``.h5`` branches ("lrnet-tf")
`runfile`     ``lrnet.json``: the only reader and writer of a weights folder's run file
============  =================================================================================

The names below load on first use, so that the registry and the run file (no torch) stay cheap
to import: ``from lrnet.weights import resolve_weights`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it (or (submodule, name there)).
_EXPORTS = {
    **dict.fromkeys(["OFFICIAL_REPOSITORY", "WeightFile", "PretrainedPair", "PRETRAINED", "get_pretrained",
                     "sha256_of", "download_file", "fetch_pretrained", "registry_match", "model_card",
                     "cache_state", "list_weights", "check_source", "files_hint"], "registry"),
    **dict.fromkeys(["LoadedWeights", "load_state_dict", "load_branch", "resolve_weights", "threshold_for",
                     "weights_card"], "loading"),
    **dict.fromkeys(["RUN_FILE", "read_meta", "update_meta", "write_meta", "save_threshold", "describe_threshold",
                     "calibration_folder"], "runfile"),
    "read_run_metadata": ("runfile", "read_meta"),  # the name callers used before the run file had an owner
    "cache_dir": ("..paths", "cache_dir"),
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ..paths import cache_dir
    from .loading import (LoadedWeights, weights_card, load_branch, load_state_dict, resolve_weights,
                          threshold_for)
    from .registry import (OFFICIAL_REPOSITORY, PRETRAINED, PretrainedPair, WeightFile, cache_state, check_source,
                           download_file, fetch_pretrained, files_hint, get_pretrained, list_weights, model_card,
                           registry_match, sha256_of)
    from .runfile import (RUN_FILE, calibration_folder, describe_threshold, read_meta, save_threshold,
                          update_meta, write_meta)
    from .runfile import read_meta as read_run_metadata


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'lrnet.weights' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module if module.startswith("..") else f".{module}", __name__), attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
