"""Checks of a landmark dataset before it is trusted: counts, broken files, copies, leakage, balance.

`check_dataset` reads every landmark file of a dataset, laid out as `lrnet.datasets` resolves
them (FF++ ``ROOT/{Origin,DF,F2F,FS,NT}/{raw,c23,c40}/{train,val,test}``, custom
``ROOT/NAME/{real,fake}/{train,val,test}`` or a YAML description), and reports per subset, level
and split: videos, frames, blocks, videos too short for one block, unreadable or non-finite files;
over the whole dataset: byte-identical files (content hash: the published FS/NT c23 landmark files
once turned out to be copies of each other), video ids in more than one split (leakage; a fake
``NNN_MMM`` counts as showing ``NNN`` and ``MMM``), frame counts that disagree with the source
videos (when given), and class balance. `write_card` writes the result as ``dataset_card.json``
and ``dataset_card.md``.

`quick_warnings` is the cheap version for ``lrnet train`` / ``lrnet evaluate``: duplicates and
leakage only, hashing only files whose size collides with another's, hashes cached by file size
and modification time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


from . import ffpp
from .atomic import atomic_write_text
from .errors import LrnetError
from .features import DEFAULT_BLOCK_SIZE, num_blocks
from .landmarks import LANDMARK_SUFFIX, read_landmarks
from .parallel import map_in_processes
from .paths import cache_dir
from .vocab import PathLike

__all__ = ["Group", "FileInfo", "GroupStats", "DatasetReport", "find_groups", "check_dataset", "format_table",
           "card_markdown", "write_card", "quick_warnings", "CARD_NAME"]

log = logging.getLogger(__name__)

CARD_NAME = "dataset_card"
NO_LEVEL = "-"  # level column of layouts without levels
EXAMPLES = 5  # how many examples a problem line names


@dataclass(frozen=True)
class Group:
    """One folder of landmark files of one class, split and level."""

    subset: str  # "Origin", "DF", ... or "NAME/real", or a YAML folder
    level: str  # raw/c23/c40, or NO_LEVEL
    split: str
    label: int  # 0 real, 1 fake
    folder: Path


@dataclass
class FileInfo:
    """One landmark file as read: ``frames`` 0 and ``error`` set when it could not be used."""

    path: str  # relative to the dataset root, POSIX separators
    group: int  # index into DatasetReport.groups
    frames: int
    blocks: int
    sha256: str
    error: str = ""
    video_frames: Optional[int] = None  # frames of the source video, when --videos was given


@dataclass
class GroupStats:
    """Counts of one group (`Group` fields flattened for the table and the card)."""

    subset: str
    level: str
    split: str
    label: str  # "real" / "fake"
    videos: int = 0
    frames: int = 0
    blocks: int = 0
    too_short: int = 0  # videos with no block (frames <= block size)
    unreadable: int = 0  # unreadable, malformed or non-finite files


@dataclass
class DatasetReport:
    """Everything `check_dataset` found; ``problems`` non-empty means the dataset needs attention."""

    root: str
    layout: str  # "ffpp", "custom" or "yaml"
    block_size: int
    groups: List[GroupStats] = field(default_factory=list)
    duplicates: List[List[str]] = field(default_factory=list)  # groups of byte-identical files
    leaks: Dict[str, Dict[str, List[str]]] = field(default_factory=dict)  # video id -> split -> files
    frame_mismatches: List[Dict[str, object]] = field(default_factory=list)
    balance: Dict[str, Dict[str, int]] = field(default_factory=dict)  # "level/split" -> real/fake videos
    problems: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    checked_at: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> Dict[str, object]:
        return {"ok": self.ok, **asdict(self)}


# ------------------------------------------------------------------------------------ layout


def _is_yaml(root: Path) -> bool:
    return root.suffix.lower() in (".yaml", ".yml")


def _ffpp_groups(root: Path, dataset: Optional[str], levels: Optional[Sequence[str]],
                 problems: List[str]) -> List[Group]:
    if dataset in ffpp.FAKES:
        subsets: Sequence[str] = (ffpp.REAL, dataset)
    elif dataset in (None, ffpp.ALL):
        subsets = [s for s in ffpp.SUBSETS if (root / s).is_dir()] if dataset is None else ffpp.SUBSETS
    else:
        raise LrnetError(f"{root}: an FF++ layout; -d must be one of {', '.join(ffpp.DATASETS)}, got {dataset!r}")
    groups = []
    for subset in subsets:
        if not (root / subset).is_dir():
            problems.append(f"{root / subset}: missing FF++ subset {subset}")
            continue
        for level in levels or [lv for lv in ffpp.LEVELS if (root / subset / lv).is_dir()]:
            for split in ffpp.SPLITS:
                folder = ffpp.landmark_dir(root, subset, level, split)
                if folder.is_dir():
                    groups.append(Group(subset, level, split, 0 if subset == ffpp.REAL else 1, folder))
                else:
                    problems.append(f"{folder}: missing split {split} of {subset}/{level}")
    return groups


def _custom_groups(root: Path, dataset: Optional[str], problems: List[str]) -> List[Group]:
    names = [dataset] if dataset else sorted(p.name for p in root.iterdir()
                                             if (p / "real").is_dir() or (p / "fake").is_dir())
    groups = []
    for name in names:
        for cls, label in (("real", 0), ("fake", 1)):
            for split in ffpp.SPLITS:
                folder = root / name / cls / split
                if folder.is_dir():
                    groups.append(Group(f"{name}/{cls}", NO_LEVEL, split, label, folder))
                else:
                    problems.append(f"{folder}: missing {cls} videos of split {split}")
    return groups


def _yaml_groups(path: Path) -> Tuple[Path, List[Group]]:
    from .datasets import load_yaml_spec

    groups, base = [], path.parent
    for split in ffpp.SPLITS:
        try:
            spec = load_yaml_spec(path, split)
        except LrnetError as exc:
            if f"no split {split!r}" in str(exc):
                continue
            raise
        base = spec.root
        for src in spec.sources:
            name = Path(os.path.relpath(src.path, spec.root)).as_posix()
            groups.append(Group(name, NO_LEVEL, split, src.label, src.path))
    return base, groups


def find_groups(root: PathLike, dataset: Optional[str] = None, levels: Optional[Sequence[str]] = None
                ) -> Tuple[str, Path, List[Group], List[str]]:
    """``(layout, base folder, groups, problems)`` of the dataset at `root` (a folder or a YAML file).

    A folder with FF++ subset folders is read as FF++ (all subsets and levels found, or those of
    `dataset` / `levels`); otherwise every ``NAME/{real,fake}`` (or just `dataset`) as custom.
    Missing split folders become problems; a dataset with no folder at all is an `LrnetError`.
    """
    root = Path(root)
    problems: List[str] = []
    if _is_yaml(root):
        base, groups = _yaml_groups(root)
        layout = "yaml"
    elif not root.is_dir():
        raise LrnetError(f"{root}: dataset root not found")
    elif any((root / s).is_dir() for s in ffpp.SUBSETS):
        base, layout = root, "ffpp"
        groups = _ffpp_groups(root, dataset, levels, problems)
    else:
        base, layout = root, "custom"
        groups = _custom_groups(root, dataset, problems)
    if not groups:
        raise LrnetError(f"{root}: no landmark dataset found (expected {{Origin,DF,...}}/LEVEL/SPLIT, "
                         f"NAME/{{real,fake}}/SPLIT or a dataset YAML file)")
    return layout, base, groups, problems


# ------------------------------------------------------------------------------------- reading


def _inspect(path: Path) -> Tuple[int, str, str]:
    """(frames, error, sha256) of one landmark file; frames 0 and the reason when unusable."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return 0, f"{path}: cannot read ({exc.strerror or exc})", ""
    try:
        return int(read_landmarks(path).shape[0]), "", digest
    except LrnetError as exc:
        return 0, str(exc), digest


def _video_frames(path: Optional[Path]) -> Optional[int]:
    """Frames of a video (container header; counted by decoding when the header has none)."""
    if path is None:
        return None
    from .video import count_frames

    return count_frames(path)


def _source_video(videos: Path, layout: str, group: Group, stem: str, index: Dict[str, List[Path]]) -> Optional[Path]:
    if layout == "ffpp":
        folder = ffpp.video_dir(videos, group.subset, group.level)
        found = sorted(folder.glob(f"{stem}.*")) if folder.is_dir() else []
        return found[0] if found else None
    candidates = index.get(stem, [])
    return candidates[0] if len(candidates) == 1 else None


def _read_files(base: Path, groups: Sequence[Group], block_size: int, workers: int,
                progress: bool) -> List[FileInfo]:
    paths: List[Path] = []
    owner: List[int] = []
    for i, group in enumerate(groups):
        found = sorted(p for p in group.folder.rglob(f"*{LANDMARK_SUFFIX}") if p.is_file())
        paths += found
        owner += [i] * len(found)
    results = map_in_processes(_inspect, paths, workers, min_items=64, chunks_per_worker=8, max_chunk=32,
                               progress=progress, desc="checking", unit="file")
    files = []
    for path, g, (frames, error, digest) in zip(paths, owner, results):
        rel = Path(os.path.relpath(path, base)).as_posix()
        files.append(FileInfo(rel, g, frames, int(num_blocks(frames, block_size)), digest, error))
    return files


# ------------------------------------------------------------------------------------ analysis


def _group_stats(groups: Sequence[Group], files: Sequence[FileInfo]) -> List[GroupStats]:
    stats = [GroupStats(g.subset, g.level, g.split, "fake" if g.label else "real") for g in groups]
    for f in files:
        s = stats[f.group]
        s.videos += 1
        s.frames += f.frames
        s.blocks += f.blocks
        s.unreadable += bool(f.error)
        s.too_short += not f.error and f.blocks == 0
    return stats


def _duplicates(files: Sequence[FileInfo]) -> List[List[str]]:
    """Groups (two or more) of files with the same content hash, sorted."""
    by_hash: Dict[str, List[str]] = defaultdict(list)
    for f in files:
        if f.sha256:
            by_hash[f.sha256].append(f.path)
    return sorted(sorted(paths) for paths in by_hash.values() if len(paths) > 1)


def _leaks(splits: Iterable[Tuple[str, str]]) -> Dict[str, Dict[str, List[str]]]:
    """Video ids found in more than one split, from ``(split, file path)`` pairs."""
    seen: Dict[str, Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
    for split, path in splits:
        for vid in ffpp.source_ids(Path(path).stem):
            seen[vid][split].append(path)
    return {vid: {s: sorted(p) for s, p in by_split.items()} for vid, by_split in sorted(seen.items())
            if len(by_split) > 1}


def _balance(groups: Sequence[Group], files: Sequence[FileInfo]) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for g in groups:
        out.setdefault(f"{g.level}/{g.split}" if g.level != NO_LEVEL else g.split, {"real": 0, "fake": 0})
    for f in files:
        g = groups[f.group]
        out[f"{g.level}/{g.split}" if g.level != NO_LEVEL else g.split]["fake" if g.label else "real"] += 1
    return out


def _check_frames(report: DatasetReport, videos: Path, layout: str, groups: Sequence[Group],
                  files: Sequence[FileInfo], workers: int) -> None:
    """Compare landmark frame counts with the source videos under `videos`."""
    from .batch import find_videos

    index: Dict[str, List[Path]] = defaultdict(list)
    if layout != "ffpp":
        for v in find_videos(videos):
            index[v.stem].append(v)
    sources = [_source_video(videos, layout, groups[f.group], Path(f.path).stem, index) for f in files]
    counts = list(map_in_processes(_video_frames, sources, workers, min_items=64, chunks_per_worker=4, max_chunk=16))
    missing = fewer = 0
    for f, source, n in zip(files, sources, counts):
        f.video_frames = n
        if f.error:
            continue
        if n is None:
            missing += 1
        elif f.frames != n:
            report.frame_mismatches.append({"file": f.path, "landmark_frames": f.frames, "video_frames": n,
                                            "video": str(source)})
            fewer += f.frames < n
            if f.frames > n:
                report.problems.append(f"{f.path}: {f.frames} landmark frames but its video {source} has {n}")
    if fewer:
        report.warnings.append(f"{fewer} landmark files have fewer frames than their video (leading frames "
                               "without a face are dropped by extraction; more means a cut or failed extraction)")
    if missing:
        report.warnings.append(f"{missing} landmark files have no readable source video under {videos}")


def _listed(lines: List[str], what: str) -> List[str]:
    return lines[:EXAMPLES] + ([f"... and {len(lines) - EXAMPLES} more {what}"] if len(lines) > EXAMPLES else [])


def _judge(report: DatasetReport, files: Sequence[FileInfo]) -> None:
    """Turn the findings into problem and warning lines."""
    report.problems += _listed([f.error for f in files if f.error], "unreadable files")
    report.problems += _listed([f"{len(d)} identical files (same content): {', '.join(d)}" for d in report.duplicates],
                               "groups of identical files")
    report.problems += _listed([f"video {vid} is in more than one split: "
                                + "; ".join(f"{s}: {', '.join(p[:2])}" for s, p in by_split.items())
                                for vid, by_split in report.leaks.items()], "leaked video ids")
    for key, counts in report.balance.items():
        if min(counts.values()) == 0 and max(counts.values()) > 0:
            empty = "real" if counts["real"] == 0 else "fake"
            report.problems.append(f"{key}: no {empty} videos ({counts['real']} real, {counts['fake']} fake)")
        elif counts["real"] and counts["fake"] and max(counts.values()) > 4 * min(counts.values()):
            report.warnings.append(f"{key}: classes unbalanced ({counts['real']} real, {counts['fake']} fake videos)")
    short = sum(g.too_short for g in report.groups)
    if short:
        report.warnings.append(f"{short} videos are too short for one {report.block_size}-frame block "
                               "(they give no block and are never scored)")


def check_dataset(root: PathLike, dataset: Optional[str] = None, levels: Optional[Sequence[str]] = None,
                  videos: Optional[PathLike] = None, block_size: int = DEFAULT_BLOCK_SIZE, workers: int = 0,
                  progress: bool = False) -> DatasetReport:
    """Check the dataset at `root` (see the module doc) and return the report.

    `dataset` / `levels` narrow an FF++ root (or name one custom dataset); `videos`: the source
    video tree (FF++ video layout for an FF++ dataset, else found by file stem) to compare frame
    counts; `workers`: reader processes (0: automatic).
    """
    layout, base, groups, problems = find_groups(root, dataset, levels)
    files = _read_files(base, groups, block_size, workers, progress)
    report = DatasetReport(str(root), layout, block_size, problems=problems,
                           checked_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    report.groups = _group_stats(groups, files)
    report.duplicates = _duplicates(files)
    report.leaks = _leaks((groups[f.group].split, f.path) for f in files)
    report.balance = _balance(groups, files)
    if videos is not None:
        if not Path(videos).is_dir():
            raise LrnetError(f"{videos}: video folder not found")
        _check_frames(report, Path(videos), layout, groups, files, workers)
    _judge(report, files)
    return report


# ------------------------------------------------------------------------------------- output

_COLUMNS = ("subset", "level", "split", "label", "videos", "frames", "blocks", "too_short", "unreadable")


def format_table(report: DatasetReport) -> str:
    """The per-group counts as an aligned text table, with a total line."""
    rows = [[str(getattr(g, c)) for c in _COLUMNS] for g in report.groups]
    totals = [sum(getattr(g, c) for g in report.groups) for c in _COLUMNS[4:]]
    rows.append(["total", "", "", ""] + [str(t) for t in totals])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 4 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(_COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in rows])


def card_markdown(report: DatasetReport) -> str:
    """The dataset card as Markdown: counts table, balance, problems, warnings."""
    header = "| " + " | ".join(_COLUMNS) + " |\n|" + "---|" * len(_COLUMNS) + "\n"
    body = "".join("| " + " | ".join(str(getattr(g, c)) for c in _COLUMNS) + " |\n" for g in report.groups)
    balance = "".join(f"| {k} | {v['real']} | {v['fake']} |\n" for k, v in report.balance.items())
    verdict = "no problem found" if report.ok else f"{len(report.problems)} problem(s) found"
    parts = [f"# Dataset card: {report.root}\n",
             f"Layout: {report.layout}; block size {report.block_size}; checked {report.checked_at} by "
             f"`lrnet dataset check`: **{verdict}**.\n", "## Files\n", header + body,
             "## Class balance (videos)\n", "| level/split | real | fake |\n|---|---|---|\n" + balance]
    for title, lines in (("Problems", report.problems), ("Warnings", report.warnings)):
        if lines:
            parts += [f"## {title}\n", "".join(f"- {line}\n" for line in lines)]
    return "\n".join(parts)


def write_card(report: DatasetReport, folder: Optional[PathLike] = None) -> Tuple[Path, Path]:
    """Write ``dataset_card.json`` and ``.md`` atomically into `folder` (default: the dataset root,
    or the YAML file's folder); returns both paths."""
    root = Path(report.root)
    folder = Path(folder) if folder is not None else (root.parent if _is_yaml(root) else root)
    json_path, md_path = folder / f"{CARD_NAME}.json", folder / f"{CARD_NAME}.md"
    try:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
        atomic_write_text(md_path, card_markdown(report))
    except OSError as exc:
        raise LrnetError(f"{folder}: cannot write the dataset card ({exc.strerror or exc})") from None
    return json_path, md_path


# ------------------------------------------------------------------------------ quick warnings

_HASH_CACHE = Path("dataset-check") / "hashes.json"


def _cached_hashes(entries: Sequence[Tuple[Path, int, int]]) -> Dict[Path, str]:
    """SHA-256 of each ``(path, size, mtime_ns)``, reusing hashes cached for the same size and mtime."""
    cache_file = cache_dir() / _HASH_CACHE
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cached, dict):
            cached = {}
    except Exception:  # noqa: BLE001 -- derived data: unreadable means start again
        cached = {}
    out, changed = {}, False
    for path, size, mtime in entries:
        key = os.path.abspath(path)
        hit = cached.get(key)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == [size, mtime]:
            out[path] = str(hit[2])
            continue
        try:
            out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            continue
        cached[key], changed = [size, mtime, out[path]], True
    if changed:
        try:
            atomic_write_text(cache_file, json.dumps(cached))
        except OSError as exc:
            log.debug("%s: cannot write the hash cache (%s)", cache_file, exc)
    return out


def quick_warnings(root: PathLike, dataset: str, level: str = "raw") -> List[str]:
    """One-line warnings about byte-identical files and video ids in more than one split.

    Fast enough to run before every ``lrnet train`` / ``lrnet evaluate``: only files whose size
    equals another file's are hashed, and hashes are cached (``lrnet.paths.cache_dir()``) by path,
    size and modification time. Splits that do not resolve are skipped (the loader reports them).
    """
    from .datasets import find_files, resolve_split

    entries: List[Tuple[str, Path, str, int, int]] = []  # (split, path, video id, size, mtime)
    for split in ffpp.SPLITS:
        try:
            files = find_files(resolve_split(root, dataset, level, split))
        except LrnetError:
            continue
        entries += [(split, p, vid, size, mtime)
                    for p, vid, size, mtime in zip(files.paths, files.videos, files.sizes, files.mtimes)]
    name = f"{dataset}/{level}" if dataset in ffpp.DATASETS else str(dataset)
    hint = f"run `lrnet dataset check {root}` for details"
    warnings = []
    by_size: Dict[int, List[Tuple[Path, int, int]]] = defaultdict(list)
    for _, path, _, size, mtime in entries:
        by_size[size].append((path, size, mtime))
    hashes = _cached_hashes([e for same in by_size.values() if len(same) > 1 for e in same])
    ids = {path: vid for _, path, vid, _, _ in entries}
    copies: Dict[str, List[str]] = defaultdict(list)
    for path, digest in hashes.items():
        copies[digest].append(ids[path])
    dups = sorted(sorted(v) for v in copies.values() if len(v) > 1)
    if dups:
        extra = sum(len(d) - 1 for d in dups)
        warnings.append(f"dataset {name}: {extra} landmark files are byte-identical copies of others "
                        f"(e.g. {dups[0][0]} == {dups[0][1]}); {hint}")
    leaks = _leaks((split, vid) for split, _, vid, _, _ in entries)
    if leaks:
        vid, by_split = next(iter(leaks.items()))
        warnings.append(f"dataset {name}: {len(leaks)} video ids are in more than one split (e.g. {vid} in "
                        f"{' and '.join(by_split)}): test results would be optimistic; {hint}")
    return warnings
