"""``lrnet.json``, the run file next to a weights folder's ``g1.pth`` / ``g2.pth``: the one place it is
found, read, checked and written.

Writers: ``lrnet train`` (model settings, block size, frame rate, dataset; `update_meta`),
``lrnet evaluate --calibrate`` (the threshold; `save_threshold`), ``lrnet convert-weights`` (a new
file; `write_meta`). Readers: `lrnet.weights.resolve_weights` and training's ``--resume`` (`read_meta`).

The rules, the same for every reader and writer:

* where: a weights folder keeps its files directly in it or in its ``weights/`` subfolder; the first
  of ``FOLDER/lrnet.json``, ``FOLDER/weights/lrnet.json`` that exists is the run file (`locate`), and
  a read-modify-write writes back to the file it read (`run_file`);
* what: a JSON object; the keys with a meaning here are checked on every read and before every
  write (`validate`); other keys are kept as they are, so keys written by one command survive the
  others;
* how: every write is atomic (`lrnet.atomic`); a bad file or a failed write is a one-line
  `LrnetError` naming the file.

Importable without torch.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..atomic import atomic_write_text
from ..errors import LrnetError, one_line

__all__ = ["RUN_FILE", "SUBFOLDERS", "locate", "run_file", "read_meta", "update_meta", "write_meta", "validate",
           "threshold_value", "threshold_of", "describe_threshold", "save_threshold", "calibration_folder"]

PathLike = Union[str, "os.PathLike[str]"]

RUN_FILE = "lrnet.json"
# Where a weights folder keeps its files, searched in this order: the folder, then its weights/ subfolder.
SUBFOLDERS = (".", "weights")


def locate(folder: PathLike, name: str) -> Optional[Path]:
    """The file `name` of weights folder `folder` (``g1.pth``, ``lrnet.json``, ...): the first of
    ``folder/name``, ``folder/weights/name`` that is a file, or None."""
    for sub in SUBFOLDERS:
        candidate = Path(folder) / sub / name if sub != "." else Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def run_file(folder: PathLike) -> Path:
    """The run file of `folder`: the one `locate` finds, else ``folder/lrnet.json`` (where a new one goes)."""
    return locate(folder, RUN_FILE) or Path(folder) / RUN_FILE


def read_meta(folder: PathLike) -> Dict[str, Any]:
    """The run file of `folder` as a dict ({} when there is none), checked by `validate`.

    Raises `LrnetError` (one line, naming the file) for a file that is not UTF-8 JSON, not an
    object, or holds a key of the wrong kind.
    """
    path = locate(folder, RUN_FILE)
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise LrnetError(f"{path}: unreadable run file ({reason}); fix or delete it") from None
    try:
        meta = json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError: "Expecting value: line 1 column 1 (char 0)"
        raise LrnetError(f"{path}: not valid JSON ({exc}); fix or delete it") from None
    validate(meta, path)
    return meta


def validate(meta: Any, path: PathLike) -> None:
    """Check the keys of a run file that have a meaning; raise a one-line `LrnetError` naming `path`.

    ``model`` and ``card``: objects; ``block_size``: whole number of frames >= 2; ``fps``: null or a
    positive number (frames/s); ``threshold``: an object with a numeric ``value`` in [0, 1];
    ``pretrained``: a string. Deeper checks of ``model`` (sizes a network can have) are made when
    the weights are loaded (`lrnet.weights.resolve_weights`).
    """
    if not isinstance(meta, dict):
        raise LrnetError(f"{path}: must be a JSON object, not {type(meta).__name__}")
    for key in ("model", "card"):
        if key in meta and not isinstance(meta[key], Mapping):
            raise LrnetError(f'{path}: invalid run settings ("{key}" must be an object, not '
                             f"{type(meta[key]).__name__})")
    if "block_size" in meta:
        from ..features import check_block_size  # numpy only

        try:
            check_block_size(meta["block_size"])
        except ValueError as exc:
            raise LrnetError(f"{path}: invalid run settings ({one_line(str(exc))})") from None
    if meta.get("fps") is not None:
        fps = _number(meta["fps"])
        if fps is None or not (math.isfinite(fps) and fps > 0):
            raise LrnetError(f'{path}: invalid run settings ("fps" must be a positive number or null, '
                             f"not {meta['fps']!r})")
    if "threshold" in meta:
        threshold_value(meta["threshold"], path)
    if "pretrained" in meta and not isinstance(meta["pretrained"], str):
        raise LrnetError(f'{path}: "pretrained" must be a registry name (a string), not {meta["pretrained"]!r}')


def _number(value: Any) -> Optional[float]:
    """`value` as a float (numbers and numeric strings, as float() takes them; not booleans), else None."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def threshold_value(record: Any, path: PathLike) -> float:
    """The ``value`` of a stored threshold record, checked (a number in [0, 1]; one-line errors)."""
    if not isinstance(record, Mapping):
        raise LrnetError(f'{path}: "threshold" must be an object like {{"value": 0.42, "method": "eer"}} '
                         "(as lrnet evaluate --calibrate writes it)")
    value = _number(record.get("value"))
    if value is None:
        raise LrnetError(f'{path}: "threshold" needs a numeric "value"')
    if not 0.0 <= value <= 1.0 + 1e-6:
        raise LrnetError(f"{path}: threshold {value} is outside [0, 1]")
    return value


def describe_threshold(record: Mapping[str, Any]) -> str:
    """``"eer on DF raw val"`` / ``"target-fpr 0.05 on DF raw val"`` for a stored threshold record."""
    method = str(record.get("method", "?"))
    if method == "target-fpr":
        method = f"target-fpr {record.get('target_fpr')}"
    where = " ".join(str(record[k]) for k in ("dataset", "level", "split") if record.get(k))
    return f"{method} on {where}" if where else method


def write_meta(folder: PathLike, meta: Mapping[str, Any]) -> Path:
    """Write `meta` as ``folder/lrnet.json``, replacing what is there (atomic; the folder is created).

    For a writer that makes a new weights folder (its ``.pth`` files go into `folder` itself).
    Returns the path written.
    """
    return _write(Path(folder) / RUN_FILE, dict(meta))


def update_meta(folder: PathLike, updates: Mapping[str, Any]) -> Dict[str, Any]:
    """Read the run file of `folder`, set the keys in `updates` (others are kept), write it back
    atomically to the file read (``folder/lrnet.json`` when there was none). Returns the new content."""
    meta = read_meta(folder)
    meta.update(updates)
    _write(run_file(folder), meta)
    return meta


def _write(path: Path, meta: Dict[str, Any]) -> Path:
    validate(meta, path)  # never write a file the readers would refuse
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(meta, indent=1) + "\n")
    except OSError as exc:
        raise LrnetError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def save_threshold(folder: PathLike, record: Mapping[str, Any], pretrained: Optional[str] = None) -> Path:
    """Store a calibrated threshold in the run file of `folder` (read-modify-write, atomic; other keys kept).

    `record`: ``{"value", "method", "target_fpr", "dataset", "level", "split", "aggregation", ...}``;
    ``"date"`` is added when absent. `pretrained`: for a folder that stands for a registry pair
    (it then holds only this ``lrnet.json``), the pair's name. Returns the file written.
    """
    path = run_file(folder)
    meta = read_meta(folder)
    if pretrained is not None and meta.get("pretrained") not in (None, pretrained):
        raise LrnetError(f"{path}: refers to pretrained weights {meta['pretrained']!r}, not {pretrained!r}; "
                         "choose another folder")
    date = record.get("date") or time.strftime("%Y-%m-%dT%H:%M:%S")
    updates: Dict[str, Any] = {"threshold": {**record, "date": date}}
    if pretrained is not None:
        updates["pretrained"] = pretrained
    update_meta(folder, updates)
    return path


def calibration_folder(spec: str) -> Optional[Path]:
    """Where `lrnet evaluate --calibrate` may write a threshold for weights `spec`: the weights
    folder itself, or None for a registry name or a pair of ``.h5`` files (no folder of its own)."""
    from .registry import PRETRAINED

    if spec in PRETRAINED or "," in spec:
        return None
    folder = Path(spec)
    return folder if folder.is_dir() else None


def threshold_of(folder: PathLike, meta: Mapping[str, Any]) -> Optional[Tuple[float, str]]:
    """``(value, source)`` of the threshold stored in `meta` (the run file of `folder`), or None."""
    if "threshold" not in meta:
        return None
    path = run_file(folder)
    record = meta["threshold"]
    return threshold_value(record, path), f"{path} ({describe_threshold(record)})"
