"""Landmark datasets: find the files of a split, cut them into blocks, cache the result.

Three ways to name a dataset (``dataset`` argument, ``-d/--dataset`` on the command line):

* an FF++ name, ``DF``, ``F2F``, ``FS``, ``NT`` or ``FF_all``, laid out as
  ``ROOT/{Origin,DF,F2F,FS,NT}/{raw,c23,c40}/{train,val,test}/*.txt`` (Origin real, the rest fake);
* any other name, laid out as ``ROOT/NAME/{real,fake}/{train,val,test}/*.txt`` (the level is not
  used);
* a YAML file (``*.yaml`` / ``*.yml``) listing real and fake folders per split (`load_yaml_spec`).

A split becomes one `BlockSet`: every block of every video in one float32 array (the g1 input;
g2 differences are computed per batch, never stored). FF_all training reads the real videos once
but lists their blocks four times in ``sample_index`` (once per manipulation, as the reference
reads Origin four times), so the classes balance without copying data; validation and test read
the real videos once and all four manipulations.

Parsed blocks are cached (`cache_root`): one uncompressed ``.npy`` per split plus a JSON manifest
that records the source files' paths, sizes and modification times, the block size and a CRC-32
of the data. A manifest that does not match the files on disk, or a cache entry that cannot be
read for any reason (truncated, a damaged header, a CRC mismatch), is rebuilt from the text files;
temporaries left by killed cache writes are removed after 10 minutes. The cache is derived data and
safe to delete; its folder is ``$LRNET_DATASET_CACHE`` or ``lrnet.paths.cache_dir() / "datasets"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from . import ffpp
from .atomic import atomic_open, atomic_write_text
from .errors import LrnetError
from .features import DEFAULT_BLOCK_SIZE, cut_blocks, num_blocks
from .landmarks import FEATURE_SIZE, LANDMARK_SUFFIX, iter_landmarks
from .paths import cache_dir
from .vocab import PathLike

log = logging.getLogger(__name__)

CACHE_ENV = "LRNET_DATASET_CACHE"
CACHE_VERSION = 1
STALE_TMP_SECONDS = 600  # a cache temporary older than this is left by a killed write

PREPARE_HINT = ("prepare it with `lrnet extract --layout ffpp ...` from videos, or write a synthetic set with "
                "`lrnet generate ROOT`")


class LabelledBlocks(Protocol):
    """What training reads from a dataset (`BlockSet` is the one lrnet builds): blocks, their
    labels, the epoch's samples, and where they came from (for ``lrnet.json`` and the rule that
    a run folder is never inside the data). Shapes as in `BlockSet`."""

    @property
    def name(self) -> str: ...  # e.g. "DF/raw/train"

    @property
    def block_size(self) -> int: ...  # frames per block, B

    @property
    def blocks(self) -> np.ndarray: ...  # (n_blocks, B, 136) float32

    @property
    def n_blocks(self) -> int: ...

    @property
    def block_labels(self) -> np.ndarray: ...  # (n_blocks,) int64, 0 real, 1 fake

    @property
    def sample_index(self) -> np.ndarray: ...  # (n_samples,) int64 block indices of one epoch

    @property
    def sample_labels(self) -> np.ndarray: ...  # (n_samples,) int64

    @property
    def videos(self) -> Sequence[str]: ...  # video ids: paths relative to `root`

    @property
    def root(self) -> Optional[str]: ...  # dataset root; None: not read from files

    @property
    def synthetic(self) -> bool: ...  # written by `lrnet generate`

    def counts(self) -> Dict[str, int]: ...  # videos, blocks and samples per class (see BlockSet.counts)


@dataclass
class BlockSet:
    """All blocks of one split of one dataset, ready for training or evaluation (one copy of the data).

    ``blocks`` is ``(n_blocks, B, 136)`` float32, C-contiguous (a read-only memory map when loaded
    with ``mmap=True``); ``block_video`` ``(n_blocks,)`` int64 indexes ``videos``; ``videos`` are
    ids (source path relative to the dataset root, POSIX separators, unique); ``video_labels``
    ``(n_videos,)`` int64 (0 real, 1 fake); ``video_frames`` ``(n_videos,)`` int64 frames per
    file (videos with 0 blocks are kept: they are the skipped ones); ``sample_index``
    ``(n_samples,)`` int64 indices into ``blocks`` that make up one training epoch.
    """

    blocks: np.ndarray
    block_video: np.ndarray
    videos: List[str]
    video_labels: np.ndarray
    video_frames: np.ndarray
    sample_index: np.ndarray
    block_size: int
    name: str
    root: Optional[str] = None  # dataset root the video ids are relative to
    synthetic: bool = False  # True when the files were written by `lrnet generate`
    cache_status: str = "off"  # "off" (no cache), "hit", "miss" (none yet), "stale", "corrupt"
    cache_file: Optional[str] = None

    @property
    def block_labels(self) -> np.ndarray:
        """``(n_blocks,)`` int64 label of each block (its video's)."""
        return self.video_labels[self.block_video]

    @property
    def sample_labels(self) -> np.ndarray:
        """``(n_samples,)`` int64 label of each entry of ``sample_index``."""
        return self.block_labels[self.sample_index]

    @property
    def skipped_videos(self) -> List[str]:
        """Videos that gave no block (``frames <= block_size``): listed, never scored."""
        counts = num_blocks(self.video_frames, self.block_size)
        return [v for v, c in zip(self.videos, np.atleast_1d(counts)) if c == 0]

    @property
    def n_blocks(self) -> int:
        return int(self.blocks.shape[0])

    @property
    def n_videos(self) -> int:
        return len(self.videos)

    def video_blocks(self) -> np.ndarray:
        """``(n_videos,)`` int64 number of blocks per video."""
        return np.bincount(self.block_video, minlength=self.n_videos).astype(np.int64)

    def counts(self) -> Dict[str, int]:
        """Videos, blocks and epoch samples per class, plus skipped videos (for reports)."""
        bl = self.block_labels
        sl = self.sample_labels
        return {
            "videos_real": int((self.video_labels == 0).sum()), "videos_fake": int((self.video_labels == 1).sum()),
            "blocks_real": int((bl == 0).sum()), "blocks_fake": int((bl == 1).sum()),
            "samples_real": int((sl == 0).sum()), "samples_fake": int((sl == 1).sum()),
            "skipped_videos": len(self.skipped_videos),
        }

    def __repr__(self) -> str:
        c = self.counts()
        return (f"BlockSet({self.name!r}, blocks={self.n_blocks} x {self.block_size} frames, videos={self.n_videos} "
                f"(real {c['videos_real']}, fake {c['videos_fake']}, skipped {c['skipped_videos']}), "
                f"samples={self.sample_index.size}, cache={self.cache_status})")


# --------------------------------------------------------------------------------------------------
# Which files make up a split


@dataclass(frozen=True)
class Source:
    """One folder of landmark files of one class, read recursively (``*.txt``, sorted)."""

    path: Path
    label: int  # 0 real, 1 fake
    repeats: int = 1  # how often its blocks appear in an epoch (FF_all training: Origin 4 times)


@dataclass
class SplitSpec:
    """The folders of one split and where video ids are relative to."""

    name: str  # e.g. "DF/raw/train"
    root: Path
    sources: List[Source] = field(default_factory=list)


def _is_yaml(dataset: str) -> bool:
    return str(dataset).lower().endswith((".yaml", ".yml"))


def resolve_split(root: PathLike, dataset: str, level: str = "raw", split: str = "train") -> SplitSpec:
    """The folders that make up `split` of `dataset`, checked to exist (`LrnetError` otherwise).

    Checks only the folders; `find_files` then requires each to hold landmark files.
    """
    dataset = str(dataset)
    if _is_yaml(dataset):
        return load_yaml_spec(dataset, split)
    if split not in ffpp.SPLITS:
        raise LrnetError(f"unknown split {split!r}; expected one of {', '.join(ffpp.SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise LrnetError(f"{root}: dataset root not found; {PREPARE_HINT}")
    if dataset in ffpp.DATASETS:
        return _ffpp_spec(root, dataset, level, split)
    custom = root / dataset
    if custom.is_dir():
        spec = SplitSpec(name=f"{dataset}/{split}", root=root)
        for cls, label in (("real", 0), ("fake", 1)):
            folder = custom / cls / split
            if not folder.is_dir():
                raise LrnetError(f"{folder}: missing folder for the {cls} videos of split {split!r}; a custom dataset "
                                 f"is laid out as {root}/{dataset}/{{real,fake}}/{{train,val,test}}/*.txt")
            spec.sources.append(Source(folder, label))
        return spec
    raise LrnetError(f"unknown dataset {dataset!r}: expected {', '.join(ffpp.DATASETS)}, a folder "
                     f"{custom}/{{real,fake}}/{{train,val,test}} or a YAML description file (*.yaml)")


def _ffpp_spec(root: Path, dataset: str, level: str, split: str) -> SplitSpec:
    if level not in ffpp.LEVELS:
        raise LrnetError(f"unknown level {level!r}; expected one of {', '.join(ffpp.LEVELS)}")
    fakes = ffpp.FAKES if dataset == ffpp.ALL else (dataset,)
    # FF_all training lists the real blocks once per manipulation (balanced classes, as the reference).
    real_repeats = len(fakes) if (dataset == ffpp.ALL and split == "train") else 1
    spec = SplitSpec(name=f"{dataset}/{level}/{split}", root=root)
    for subset, label, repeats in [(ffpp.REAL, 0, real_repeats)] + [(f, 1, 1) for f in fakes]:
        base = root / subset
        if not base.is_dir():
            raise LrnetError(f"{base}: missing FF++ subset {subset!r} (needed for dataset {dataset}); {PREPARE_HINT}")
        if not (base / level).is_dir():
            found = sorted(p.name for p in base.iterdir() if p.is_dir())
            raise LrnetError(f"{base / level}: missing level {level!r} of {subset} (found: "
                             f"{', '.join(found) or 'nothing'}); choose one with -l/--level or {PREPARE_HINT}")
        folder = ffpp.landmark_dir(root, subset, level, split)
        if not folder.is_dir():
            raise LrnetError(f"{folder}: missing split {split!r} of {subset}/{level}; {PREPARE_HINT}")
        spec.sources.append(Source(folder, label, repeats))
    return spec


def load_yaml_spec(path: PathLike, split: str) -> SplitSpec:
    """Read a dataset description file and return the folders of `split`.

    Schema (paths relative to the YAML file's folder, or to ``root:`` when given)::

        name: celeb-df            # optional, default: the file name without extension
        root: /data/celeb-df      # optional base folder for the paths below
        splits:
          train:
            real: [Celeb-real/train, YouTube-real/train]   # a folder or a list of folders
            fake: Celeb-synthesis/train
          val:  {real: ..., fake: ...}
          test: {real: ..., fake: ...}

    A folder may also be written ``{path: DIR, repeats: N}`` to list its blocks N times per epoch.
    Video ids are paths relative to the base folder.
    """
    from .config import load_yaml

    path = Path(path)
    doc = load_yaml(path, "dataset description file")
    if not isinstance(doc, dict) or not isinstance(doc.get("splits"), dict):
        raise LrnetError(f"{path}: a dataset description needs a 'splits:' mapping of train/val/test to "
                         f"real/fake folders")
    unknown = set(doc) - {"name", "root", "splits", "description"}
    if unknown:
        raise LrnetError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected name, root, "
                         f"splits, description")
    base = path.parent
    if doc.get("root") is not None:
        base = (path.parent / str(doc["root"])).expanduser()
    name = str(doc.get("name") or path.stem)
    splits = doc["splits"]
    if split not in splits:
        raise LrnetError(f"{path}: no split {split!r} described (found: {', '.join(map(str, splits)) or 'none'})")
    entry = splits[split]
    if not isinstance(entry, dict) or not set(entry) <= {"real", "fake"} or not entry:
        raise LrnetError(f"{path}: split {split!r} must map 'real' and/or 'fake' to folders")
    spec = SplitSpec(name=f"{name}/{split}", root=base)
    for cls, label in (("real", 0), ("fake", 1)):
        items = entry.get(cls) or []
        if isinstance(items, (str, dict)):
            items = [items]
        for item in items:
            repeats = 1
            if isinstance(item, dict):
                if "path" not in item or not set(item) <= {"path", "repeats"}:
                    raise LrnetError(f"{path}: {split}.{cls}: a folder entry is a path or {{path: DIR, repeats: N}}")
                repeats = item.get("repeats", 1)
                if not isinstance(repeats, int) or repeats < 1:
                    raise LrnetError(f"{path}: {split}.{cls}: repeats must be a positive integer, got {repeats!r}")
                item = item["path"]
            folder = base / str(item)
            if not folder.is_dir():
                raise LrnetError(f"{folder}: folder of {cls} videos for split {split!r} not found (listed in {path})")
            spec.sources.append(Source(folder, label, repeats))
    if not spec.sources:
        raise LrnetError(f"{path}: split {split!r} lists no folders")
    return spec


@dataclass
class SplitFiles:
    """The landmark files of a split in load order, with their labels and stat keys."""

    spec: SplitSpec
    paths: List[Path]
    labels: np.ndarray  # (n_videos,) int64
    repeats: np.ndarray  # (n_videos,) int64
    videos: List[str]
    sizes: List[int]
    mtimes: List[int]


def find_files(spec: SplitSpec) -> SplitFiles:
    """List (sorted, recursively) and stat the files of every source; `LrnetError` on an empty one."""
    paths: List[Path] = []
    labels: List[int] = []
    repeats: List[int] = []
    sizes: List[int] = []
    mtimes: List[int] = []
    for src in spec.sources:
        found = sorted(p for p in src.path.rglob(f"*{LANDMARK_SUFFIX}") if p.is_file())
        if not found:
            raise LrnetError(f"{src.path}: no landmark files (*{LANDMARK_SUFFIX}) in this split folder; {PREPARE_HINT}")
        for p in found:
            st = p.stat()
            paths.append(p)
            sizes.append(int(st.st_size))
            mtimes.append(int(st.st_mtime_ns))
        labels += [src.label] * len(found)
        repeats += [src.repeats] * len(found)
    videos = [_video_id(p, spec.root) for p in paths]
    if len(set(videos)) != len(videos):  # the same folder listed twice (e.g. in a YAML file)
        dup = next(v for v in videos if videos.count(v) > 1)
        raise LrnetError(f"{spec.name}: video {dup} is listed more than once; list each folder once and use "
                         f"'repeats' to weight it")
    return SplitFiles(spec, paths, np.asarray(labels, np.int64), np.asarray(repeats, np.int64), videos, sizes, mtimes)


def _video_id(path: Path, root: Path) -> str:
    # Lexical, not resolved: a symlinked subset folder keeps its name inside the root.
    return Path(os.path.relpath(path, root)).as_posix()


# --------------------------------------------------------------------------------------------------
# Reading and cutting


def _read_blocks(paths: Sequence[Path], block_size: int, workers: int, progress: bool,
                 sizes: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Read `paths` and cut them straight into one ``(n_blocks, B, 136)`` float32 array.

    Files stream in one at a time and only their blocks are copied into a preallocated array
    (sized from the file sizes: a published frame takes at least 136 * 8 bytes), so no list of
    per-file arrays and no concatenated copy exist side by side. Returns ``(blocks, frames)``.
    """
    estimate = int(np.sum(num_blocks(np.asarray(sizes, np.int64) // (FEATURE_SIZE * 8), block_size))) if sizes else 0
    capacity = max(estimate, 1)
    blocks = np.empty((capacity, block_size, FEATURE_SIZE), dtype=np.float32)
    frames = np.zeros(len(paths), dtype=np.int64)
    filled = 0
    for i, arr in enumerate(iter_landmarks(paths, workers=workers, progress=progress)):
        frames[i] = arr.shape[0]
        n = num_blocks(arr.shape[0], block_size)
        if filled + n > capacity:  # unusually short lines: grow (amortised doubling)
            capacity = max(2 * capacity, filled + n)
            blocks.resize((capacity, block_size, FEATURE_SIZE), refcheck=False)
        blocks[filled:filled + n] = cut_blocks(arr, block_size)
        filled += n
    blocks.resize((filled, block_size, FEATURE_SIZE), refcheck=False)  # in place: gives back the spare tail
    return blocks, frames


def _block_video(frames: np.ndarray, block_size: int) -> np.ndarray:
    counts = np.atleast_1d(num_blocks(frames, block_size)).astype(np.int64)
    return np.repeat(np.arange(len(frames), dtype=np.int64), counts)


def _sample_index(block_video: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Every block once, then the blocks of videos with ``repeats > 1`` again (``repeats - 1`` more times)."""
    n_blocks = block_video.size
    base = np.arange(n_blocks, dtype=np.int64)
    if repeats.size == 0 or (repeats == 1).all():
        return base
    block_repeats = repeats[block_video]
    extra = [base[block_repeats > r] for r in range(1, int(block_repeats.max()))]
    return np.concatenate([base] + extra)


# --------------------------------------------------------------------------------------------------
# Cache


def cache_root(cache: Union[bool, PathLike, None] = True) -> Optional[Path]:
    """The dataset cache folder: `cache` when it is a path; ``$LRNET_DATASET_CACHE``; else
    ``lrnet.paths.cache_dir() / "datasets"`` (``~/.cache/lrnet/datasets``). None when `cache` is False."""
    if cache is False or cache is None:
        return None
    if cache is not True:
        return Path(cache).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return cache_dir() / "datasets"


def _cache_entry(folder: Path, files: SplitFiles, block_size: int) -> Path:
    """Cache file stem for this split: named after the dataset and the absolute source folders (so a
    changed split overwrites its old entry instead of piling up), content verified by `_cache_key`."""
    identity = json.dumps([CACHE_VERSION, block_size, [(str(s.path.resolve()), s.label) for s in files.spec.sources]])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", files.spec.name).strip("_")
    return folder / f"{safe}-{digest}"


def _cache_key(files: SplitFiles, block_size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, block_size]).encode())
    for p, label, size, mtime in zip(files.paths, files.labels, files.sizes, files.mtimes):
        h.update(f"{os.path.abspath(p)}\0{int(label)}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def _crc(blocks: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(blocks).reshape(-1).view(np.uint8).data)


def _load_cache(stem: Path, key: str, files: SplitFiles, block_size: int, mmap: bool,
                verify: bool) -> Tuple[Optional[Tuple[np.ndarray, np.ndarray]], str]:
    """Return ``((blocks, frames), "hit")`` or ``(None, why)`` with why in miss/stale/corrupt.

    The cache is derived data: any failure to read an entry (truncated or damaged manifest or
    array, a header numpy cannot parse, wrong shapes, a CRC mismatch) means "rebuild it".
    """
    if not stem.with_suffix(".json").is_file():
        return None, "miss"
    try:
        return _read_cache(stem, key, files, block_size, mmap, verify)
    except Exception as exc:  # noqa: BLE001 -- whatever the damage, the entry is rebuilt
        log.debug("%s: unreadable cache entry (%s: %s); rebuilding", stem, type(exc).__name__, exc)
        return None, "corrupt"


def _read_cache(stem: Path, key: str, files: SplitFiles, block_size: int, mmap: bool,
                verify: bool) -> Tuple[Optional[Tuple[np.ndarray, np.ndarray]], str]:
    manifest = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        return None, "corrupt"
    if manifest.get("version") != CACHE_VERSION or manifest.get("key") != key:
        return None, "stale"
    data_path = stem.with_suffix(".npy")
    frames = np.asarray(manifest["video_frames"], dtype=np.int64)
    n_blocks = int(manifest["n_blocks"])
    if (frames.shape != (len(files.paths),) or manifest.get("videos") != files.videos
            or int(np.sum(num_blocks(frames, block_size))) != n_blocks
            or data_path.stat().st_size != int(manifest["npy_bytes"])):
        return None, "corrupt"
    blocks = np.load(data_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if (blocks.dtype != np.float32 or blocks.shape != (n_blocks, block_size, FEATURE_SIZE)
            or not blocks.flags.c_contiguous):
        return None, "corrupt"
    if verify and _crc(blocks) != int(manifest["crc32"]):
        return None, "corrupt"
    return (blocks, frames), "hit"


def _remove_stale_temporaries(folder: Path, age: float = STALE_TMP_SECONDS) -> None:
    """Delete temporaries (``.*.tmp``) of cache writes killed more than `age` seconds ago."""
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > age:
                tmp.unlink()
        except OSError:
            continue  # removed meanwhile, or not ours to remove


def _save_cache(stem: Path, key: str, files: SplitFiles, blocks: np.ndarray, frames: np.ndarray, block_size: int) -> None:
    data_path, manifest_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    # The manifest is written last: it is what makes the entry valid.
    with atomic_open(data_path, "wb") as fh:
        np.save(fh, blocks, allow_pickle=False)
    manifest = {
        "version": CACHE_VERSION,
        "name": files.spec.name,
        "key": key,
        "block_size": block_size,
        "n_blocks": int(blocks.shape[0]),
        "npy_bytes": data_path.stat().st_size,
        "crc32": _crc(blocks),
        "sources": [{"path": str(s.path.resolve()), "label": s.label} for s in files.spec.sources],
        "videos": files.videos,
        "video_frames": frames.tolist(),
    }
    atomic_write_text(manifest_path, json.dumps(manifest) + "\n")


def clear_cache(cache: Union[bool, PathLike] = True) -> int:
    """Delete every cached dataset in the cache folder; returns how many entries were removed."""
    folder = cache_root(cache)
    removed = 0
    if folder is None or not folder.is_dir():
        return 0
    for p in folder.glob("*.json"):
        p.unlink(missing_ok=True)
        removed += 1
    for p in folder.glob("*.npy"):
        p.unlink(missing_ok=True)
    for p in folder.glob(".*.tmp"):  # left by an interrupted write
        p.unlink(missing_ok=True)
    return removed


# --------------------------------------------------------------------------------------------------
# Public loaders


def load_split(root: PathLike, dataset: str, level: str = "raw", split: str = "train",
               block_size: int = DEFAULT_BLOCK_SIZE, cache: Union[bool, PathLike] = True, workers: int = 0,
               progress: bool = False, mmap: bool = False, verify: Optional[bool] = None) -> BlockSet:
    """Load one split as a `BlockSet`.

    `dataset`: an FF++ name (DF, F2F, FS, NT, FF_all), a custom dataset folder name under `root`,
    or a YAML description file (then `root` and `level` are not used). `cache`: True (default
    folder, see `cache_root`), a folder, or False (always parse the text files). `workers`:
    reader processes (0: automatic). `mmap`: memory-map the cached blocks read-only instead of
    reading them into memory. `verify`: check the cached data's CRC-32 (default: yes, unless
    `mmap`, where it would read every page).
    """
    if block_size < 2:
        raise LrnetError(f"block size must be at least 2 frames, got {block_size}")
    spec = resolve_split(root, dataset, level, split)
    files = find_files(spec)
    folder = cache_root(cache)
    status, stem, blocks, frames = "off", None, None, None
    if folder is not None:
        if folder.is_dir():
            _remove_stale_temporaries(folder)
        stem = _cache_entry(folder, files, block_size)
        key = _cache_key(files, block_size)
        loaded, status = _load_cache(stem, key, files, block_size, mmap, (not mmap) if verify is None else verify)
        if loaded is not None:
            blocks, frames = loaded
    if blocks is None:
        blocks, frames = _read_blocks(files.paths, block_size, workers, progress, files.sizes)
        if stem is not None:
            try:
                _save_cache(stem, key, files, blocks, frames, block_size)
            except OSError as exc:  # an unwritable cache must not stop training; say so
                log.warning("%s: could not write the dataset cache (%s)", stem, exc.strerror or exc)
            else:
                if mmap:
                    del blocks
                    blocks = np.load(stem.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
    assert blocks is not None and frames is not None  # read from the cache or from the files
    block_video = _block_video(frames, block_size)
    from .synthetic import is_synthetic

    return BlockSet(
        blocks=blocks,
        block_video=block_video,
        videos=files.videos,
        video_labels=files.labels,
        video_frames=frames,
        sample_index=_sample_index(block_video, files.repeats),
        block_size=block_size,
        name=spec.name,
        root=str(spec.root),
        synthetic=any(is_synthetic(s.path) for s in spec.sources[:1]),
        cache_status=status,
        cache_file=str(stem.with_suffix(".npy")) if stem is not None else None,
    )


def load_splits(root: PathLike, dataset: str, level: str = "raw", splits: Iterable[str] = ffpp.SPLITS,
                block_size: int = DEFAULT_BLOCK_SIZE, **kwargs) -> Dict[str, BlockSet]:
    """`load_split` for several splits (train, val, test by default); keyword arguments as there."""
    return {s: load_split(root, dataset, level, s, block_size, **kwargs) for s in splits}


def blockset_from_arrays(sequences: Sequence[np.ndarray], labels: Sequence[int], names: Sequence[str],
                         block_size: int = DEFAULT_BLOCK_SIZE, repeats: Optional[Sequence[int]] = None,
                         name: str = "arrays") -> BlockSet:
    """Build a `BlockSet` from in-memory ``(frames, 136)`` sequences (tests, notebooks, the API).

    `labels`: 0 real / 1 fake per sequence; `names`: unique video ids; `repeats`: how often each
    sequence's blocks appear in ``sample_index`` (default once).
    """
    if not (len(sequences) == len(labels) == len(names)):
        raise ValueError(f"sequences, labels and names differ in length: {len(sequences)}, {len(labels)}, {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError("video names must be unique")
    labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels_arr.size and not np.isin(labels_arr, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    rep = np.ones(len(sequences), np.int64) if repeats is None else np.asarray(repeats, np.int64).reshape(-1)
    if rep.size != len(sequences) or (rep < 1).any():
        raise ValueError("repeats must give a positive count per sequence")
    frames = np.zeros(len(sequences), dtype=np.int64)
    for i, seq in enumerate(sequences):
        seq = np.asarray(seq)
        if seq.ndim != 2 or seq.shape[1] != FEATURE_SIZE:
            raise ValueError(f"sequence {names[i]!r}: expected shape (frames, {FEATURE_SIZE}), got {seq.shape}")
        frames[i] = seq.shape[0]
    counts = np.atleast_1d(num_blocks(frames, block_size)).astype(np.int64)
    blocks = np.empty((int(counts.sum()), block_size, FEATURE_SIZE), dtype=np.float32)
    start = 0
    for seq, n in zip(sequences, counts):
        blocks[start:start + n] = cut_blocks(seq, block_size)
        start += n
    block_video = _block_video(frames, block_size)
    return BlockSet(blocks=blocks, block_video=block_video, videos=list(map(str, names)), video_labels=labels_arr,
                    video_frames=frames, sample_index=_sample_index(block_video, rep), block_size=block_size,
                    name=name)
