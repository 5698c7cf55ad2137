"""The training run folder: who may write it, and safe writes into it.

A run folder (``lrnet train -o OUT``) holds ``g1.pth``/``g2.pth`` (best weights), ``lrnet.json``
(model settings, block size, frame rate; read and written only through `lrnet.weights.runfile`),
resume checkpoints and histories. The rules enforced here:

* one writer: `open_run` holds `lrnet.locks.output_lock` on the folder for the whole run;
* a folder holding a run (`RUN_MARKERS`) is refused unless the run is resumed or overwritten;
* the output is never a file, and never inside an input (the dataset root);
* a resumed run keeps its recorded settings: `resume_conflicts` names the keys that differ;
* ``lrnet.json`` is read-modify-written atomically (`lrnet.weights.runfile.update_meta`), so keys
  written by other commands (e.g. ``threshold`` from ``lrnet evaluate --calibrate``, ``card``) survive;
* every write turns an `OSError` (full disk, quota, read-only folder) into a one-line
  `LrnetError` naming the file (`writing`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .atomic import atomic_write_bytes, ensure_not_input, writing
from .errors import LrnetError
from .locks import output_lock
from .vocab import PathLike
from .weights.runfile import RUN_FILE

if TYPE_CHECKING:
    from .datasets import LabelledBlocks

__all__ = ["RUN_MARKERS", "RunFolder", "open_run", "writing", "save_torch", "write_text",
           "resume_conflicts", "dataset_fps"]

log = logging.getLogger(__name__)

# Files whose presence means the folder holds a (finished or interrupted) training run.
RUN_MARKERS = ("g1.pth", "g2.pth", RUN_FILE, "g1.ckpt", "g2.ckpt")
# Keys of lrnet.json whose change on --resume would make the resumed run a different run.
RESUME_KEYS = ("model", "block_size", "batch_size", "lr_g1", "lr_g2", "dataset")


def save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save`` atomically; serialised in memory first so a full disk is a plain `OSError`
    of the file write (torch's own file writer reports it as an opaque RuntimeError)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with writing(path):
        atomic_write_bytes(path, buf.getvalue())


def write_text(path: PathLike, text: str) -> None:
    """Write `text` atomically (UTF-8); `OSError` becomes a one-line `LrnetError`."""
    with writing(path):
        atomic_write_bytes(path, text.encode("utf-8"))


def _flatten(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """The recorded values `resume_conflicts` compares, as ``{"model.rnn_unit": 32, ...}``."""
    config = meta.get("config", {}) or {}
    flat: Dict[str, Any] = {}
    for key in RESUME_KEYS:
        value = meta.get(key, config.get(key))
        if key == "dataset" and isinstance(value, dict):
            value = (value.get("train") or {}).get("name")
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            flat[key] = value
    return flat


def resume_conflicts(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """Keys whose value in `new` (metadata of the resumed run) differs from `recorded` ``lrnet.json``."""
    old, cur = _flatten(recorded), _flatten(new)
    return sorted(k for k in old.keys() & cur.keys() if old[k] != cur[k])


@dataclass
class RunFolder:
    """An output folder opened for one training run (locked, checked): see `open_run`."""

    path: Path
    resume: bool = False
    overwrite: bool = False

    def existing_run(self) -> List[str]:
        return [name for name in RUN_MARKERS if (self.path / name).exists()]

    def clear(self, branches: Sequence[str]) -> None:
        """Remove the files of `branches` left by an earlier run (``--overwrite``)."""
        for b in branches:
            for name in (f"{b}.pth", f"{b}.ckpt", f"history_{b}.json", f"history_{b}.csv"):
                with writing(self.path / name), contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()


@contextlib.contextmanager
def open_run(output: PathLike, *, resume: bool = False, overwrite: bool = False,
             inputs: Sequence[PathLike] = ()) -> Iterator[RunFolder]:
    """Lock `output` for one training run and check that it may be written.

    Refuses (`LrnetError`, one line): an output that is a file, or inside one of `inputs`;
    another process holding the folder; a folder holding a run (`RUN_MARKERS`) unless `resume`
    or `overwrite`.
    """
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise LrnetError(f"{path}: is a file, not a folder; --output takes the run folder")
    ensure_not_input(path, inputs, fix="choose another --output")
    with output_lock(path, "train"):
        run = RunFolder(path, resume, overwrite)
        found = run.existing_run()
        if found and not (resume or overwrite):
            raise LrnetError(f"{path}: holds a training run ({', '.join(found)}); add --resume to continue it, "
                             "--overwrite to replace it, or choose another --output")
        yield run


# ------------------------------------------------------------------------------------ frame rate

def _fps_from_log(path: Path, videos: Sequence[str]) -> Optional[float]:
    """Median ``fps`` of the successful rows of an ``extract_log.csv`` (rows of `videos` when any match)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("%s: cannot read the extraction log (%s); frame rate not taken from it", path, exc)
        return None
    good: List[Tuple[str, float]] = []
    for row in rows:
        try:
            fps = float(row.get("fps") or 0)
        except ValueError:
            continue
        if fps > 0 and not row.get("error"):
            good.append((str(row.get("output") or row.get("video") or "").replace(os.sep, "/"), fps))
    wanted = tuple(v for v in videos)
    mine = [fps for out, fps in good if wanted and out.endswith(wanted)]
    values = mine or [fps for _, fps in good]
    return float(statistics.median(values)) if values else None


def dataset_fps(train_set: LabelledBlocks, fps: Optional[float] = None) -> Tuple[Optional[float], str]:
    """Frame rate (frames/s) of the training videos and where it came from.

    In order: `fps` given by the user (``"--fps"``); the median ``fps`` column of
    ``ROOT/extract_log.csv`` (``"extract_log.csv"``); the synthetic-data marker of
    `lrnet.synthetic` (``"synthetic"``); else ``(None, "unknown")``.
    """
    if fps is not None:
        return float(fps), "--fps"
    if train_set.root:
        logfile = Path(train_set.root) / "extract_log.csv"
        if logfile.is_file():
            value = _fps_from_log(logfile, list(train_set.videos))
            if value is not None:
                return value, "extract_log.csv"
    if train_set.synthetic:
        from .synthetic import FPS

        return float(FPS), "synthetic"
    return None, "unknown"
