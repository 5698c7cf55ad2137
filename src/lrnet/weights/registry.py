"""The registry of named pretrained pairs: their files and SHA-256, model cards, download and cache.

A pair is one ``.pth`` state dict per branch (``g1``, ``g2``). Named pairs are downloaded only when
asked for, verified against their SHA-256 and cached in ``cache_dir()/NAME/`` (`fetch_pretrained`).
`list_weights` tells what the registry holds and what of it is cached, without any network.
Importable without torch (the model config is built only when asked for).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

from ..atomic import atomic_path
from ..errors import LrnetError
from ..paths import cache_dir

if TYPE_CHECKING:
    from ..model import ModelConfig

__all__ = ["OFFICIAL_REPOSITORY", "WeightFile", "PretrainedPair", "PRETRAINED", "get_pretrained", "sha256_of",
           "download_file", "fetch_pretrained", "registry_match", "model_card", "cache_state", "list_weights",
           "check_source", "files_hint"]

PathLike = Union[str, "os.PathLike[str]"]
OFFICIAL_REPOSITORY = "https://github.com/frederickszk/LRNet"
_OFFICIAL = f"{OFFICIAL_REPOSITORY}/raw/main"


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

    def model_config(self) -> "ModelConfig":
        from ..model import ModelConfig

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


def get_pretrained(name: str) -> PretrainedPair:
    try:
        return PRETRAINED[name]
    except KeyError:
        raise LrnetError(f"unknown pretrained weights {name!r}; available: {', '.join(PRETRAINED)}") from None


def model_card(name: str, training_data: str, domain: str, fps: Optional[float], fps_source: str,
               block_size: int, architecture: str) -> Dict[str, Any]:
    """The short model card every `LoadedWeights` carries: what the weights were trained on and for.

    Keys: name, training_data, domain (footage they are meant for; "" = the training data's),
    fps (frames/s of the training videos, None = unknown) and fps_source, block_size (frames),
    architecture; loading adds threshold and threshold_source.
    """
    return {"name": name, "training_data": training_data, "domain": domain or training_data,
            "fps": fps, "fps_source": fps_source or ("unknown" if fps is None else ""),
            "block_size": int(block_size), "architecture": architecture}


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


def _cache_folder(name: str, root: Optional[PathLike]) -> Path:
    return Path(root) if root is not None else cache_dir() / name


def cache_state(name: str, root: Optional[PathLike] = None) -> Dict[str, str]:
    """``{branch: "cached" | "missing" | "mismatch"}`` for pair `name` in its cache folder (`root`,
    default ``cache_dir()/NAME``); "mismatch": a file is there but its SHA-256 is not the registry's
    (the next download replaces it). Reads local files only."""
    pair = get_pretrained(name)
    folder = _cache_folder(name, root)
    state = {}
    for branch, wf in pair.files.items():
        path = folder / f"{branch}.pth"
        if not path.is_file():
            state[branch] = "missing"
        else:
            state[branch] = "cached" if sha256_of(path) == wf.sha256 else "mismatch"
    return state


def list_weights(cache: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """The registry and what of it is cached, as ``lrnet weights list`` shows it (no network).

    One dict per pair: ``name``, ``description``, ``folder`` (its cache folder, under `root` when
    given, else `cache_dir`), ``files`` (``{branch: "cached" | "missing" | "mismatch"}``, see
    `cache_state`), ``cached`` (every file cached and verified) and ``card`` (the model card, with
    the default threshold 0.5).
    """
    rows = []
    for name, pair in PRETRAINED.items():
        folder = (Path(cache) if cache is not None else cache_dir()) / name
        state = cache_state(name, folder)
        rows.append({"name": name, "description": pair.description, "folder": str(folder), "files": state,
                     "cached": all(s == "cached" for s in state.values()),
                     "card": {**pair.card(), "threshold": 0.5, "threshold_source": "default"}})
    return rows


def files_hint(name: str) -> str:
    """What a ``--from`` folder for pair `name` must hold: file names, SHA-256 prefixes, official place."""
    pair = get_pretrained(name)
    files = " and ".join(f"{b}.pth (SHA-256 {wf.sha256[:12]}...)" for b, wf in pair.files.items())
    folders = {wf.url.rsplit("/", 1)[0] for wf in pair.files.values()}
    official = [f[len(_OFFICIAL) + 1:] for f in sorted(folders) if f.startswith(f"{_OFFICIAL}/")]
    where = (f"the files in {', '.join(official)}/ of {OFFICIAL_REPOSITORY}" if len(official) == len(folders)
             else f"copies of {', '.join(wf.url for wf in pair.files.values())}")
    return f"the folder must hold {files}: {where}"


def _local_folder(source: str) -> Optional[Path]:
    """`source` as a local folder (a path or a ``file://`` URL), None for a remote URL."""
    if source.startswith("file://"):
        return Path(urllib.request.url2pathname(source[len("file://"):]))
    return None if "://" in source else Path(source)


def check_source(name: str, source: str) -> Optional[Dict[str, Path]]:
    """Verify a ``--from`` folder's files against pair `name`'s SHA-256: ``{branch: path}`` when every
    file is there and matches; None for a remote URL (not read); a one-line `LrnetError` naming
    the file otherwise (missing, or another SHA-256)."""
    folder = _local_folder(source)
    if folder is None:
        return None
    pair = get_pretrained(name)
    found = {}
    for branch, wf in pair.files.items():
        path = folder / f"{branch}.pth"
        if not path.is_file():
            raise LrnetError(f"{path}: not found; {files_hint(name)}")
        digest = sha256_of(path)
        if digest != wf.sha256:
            raise LrnetError(f"{path}: SHA-256 {digest[:12]}... is not the {name} {branch}.pth "
                             f"({wf.sha256[:12]}...); {files_hint(name)}")
        found[branch] = path
    return found


def fetch_pretrained(name: str, root: Optional[PathLike] = None, download: bool = True,
                     mirror: Optional[str] = None, progress: bool = False) -> Dict[str, Path]:
    """Return ``{branch: path}`` for the named pretrained pair, downloading missing files.

    Cached files are re-verified against their hash. `mirror` replaces the download location with
    a folder or URL holding ``g1.pth`` and ``g2.pth`` (for offline installs); it is read only for
    files that are not cached. With ``download=False`` a missing file raises `LrnetError`
    explaining how to get it.
    """
    pair = get_pretrained(name)
    folder = _cache_folder(name, root)
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
            local = _local_folder(mirror)
            if local is not None and not (local / f"{branch}.pth").is_file():
                raise LrnetError(f"{local / f'{branch}.pth'}: not found (--from); {files_hint(name)}")
            base = mirror if "://" in mirror else Path(mirror).resolve().as_uri()
            url = f"{base.rstrip('/')}/{branch}.pth"
        try:
            paths[branch] = download_file(url, dest, wf.sha256, progress=progress)
        except LrnetError as exc:
            if mirror:  # --from was given: say what it must hold, not to use --from
                raise LrnetError(f"{exc} (--from); {files_hint(name)}") from None
            raise LrnetError(f"{exc}. Offline? Put {branch}.pth from a copy of the official weights in a folder "
                             f"and run `lrnet weights download {name} --from FOLDER`") from None
    return paths


def registry_match(paths: Mapping[str, Path]) -> Optional[PretrainedPair]:
    """The registry pair whose files have the SHA-256 of ``{branch: path}`` (every branch given), or None."""
    digests = {b: sha256_of(p) for b, p in paths.items()}
    for pair in PRETRAINED.values():
        if digests and all(b in pair.files and pair.files[b].sha256 == d for b, d in digests.items()):
            return pair
    return None
