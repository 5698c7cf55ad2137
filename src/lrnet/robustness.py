"""Robustness reports: how much verdicts move when the input is degraded.

Two inputs, one report shape (a clean row, then one row per perturbation and strength):

- **landmark sequences** (a dataset split or labelled files): `perturb` applies landmark noise
  (sigma in pixels of the 400-px calibration crop; one pixel is 1/200 in normalised units), dropped
  frames (fraction), duplicated frames (fraction) and frame-rate changes (resample factor: 0.5 keeps
  every other frame, 2 repeats each frame, by timestamp-like index selection), each on whole
  sequences at once with NumPy, over several seeds; `landmark_robustness` scores every condition
  with `lrnet.evaluate.report_from_probabilities` and compares it with the clean scores.
- **labelled videos** (``real/`` and ``fake/``): `video_robustness` re-encodes each video
  (`lrnet.compress.degrade_video`: CRF, downscaling, re-timing, blur, noise), runs
  `lrnet.detect.detect_video` on every copy and compares with the clean video. Per-item results
  are cached as atomic JSON files in the output folder, so an interrupted run resumes.

Per condition: video AUC and accuracy (at the threshold used), mean |score change| and verdict
flips (the call changed) versus clean, and uncertain verdicts. `save_robustness` writes
``robustness.json``, ``robustness.csv`` (one row per condition and seed), ``videos.csv`` (every
video under every condition) and ``robustness.png`` (metric vs strength).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import metrics as M
from .atomic import atomic_path, atomic_write_text, save_figure, writing
from .errors import LrnetError
from .scoring import aggregate_blocks, decide, video_intervals
from .vocab import DEFAULT_AGGREGATION, VIDEO_SUFFIXES, jsonable

__all__ = ["LANDMARK_KINDS", "VIDEO_KINDS", "DEFAULT_LANDMARK_GRID", "DEFAULT_VIDEO_GRID", "PIXEL", "Condition",
           "ConditionResult", "RobustnessReport", "perturb", "landmark_noise", "drop_frames", "duplicate_frames",
           "resample_frames", "landmark_robustness", "video_robustness", "find_labelled_videos", "save_robustness",
           "format_robustness"]

log = logging.getLogger(__name__)

PIXEL = 1.0 / 200.0  # one pixel of the 400-px crop in normalised landmark units
LANDMARK_KINDS = ("noise", "drop", "duplicate", "fps")
VIDEO_KINDS = ("crf", "height", "fps", "blur", "pixel-noise")
UNITS = {"noise": "px", "drop": "%", "duplicate": "%", "fps": "x", "crf": "", "height": "px", "blur": "px",
         "pixel-noise": "levels", "none": ""}
DEFAULT_LANDMARK_GRID: Dict[str, Tuple[float, ...]] = {
    "noise": (0.5, 1.0, 2.0, 4.0), "drop": (0.1, 0.25, 0.5), "duplicate": (0.1, 0.25, 0.5), "fps": (0.5, 2.0)}
DEFAULT_VIDEO_GRID: Dict[str, Tuple[float, ...]] = {
    "crf": (23, 32, 40), "height": (360,), "fps": (0.5, 2.0), "blur": (1.5,), "pixel-noise": (5.0,)}
RANDOM_KINDS = ("noise", "drop", "duplicate")  # landmark perturbations that depend on the seed


@dataclass(frozen=True)
class Condition:
    """One perturbation at one strength and seed ("none" is the clean input)."""

    kind: str
    strength: float = 0.0
    seed: int = 0

    @property
    def label(self) -> str:
        if self.kind == "none":
            return "clean"
        unit = UNITS.get(self.kind, "")
        if unit == "%":
            return f"{self.kind} {100 * self.strength:g}%"
        return f"{self.kind} {self.strength:g}{'' if unit in ('x', '') else ' '}{unit}"


# ----------------------------------------------------------------------------- landmark perturbations
# Sequences are concatenated into one (total_frames, 136) array with per-video lengths, so each
# perturbation is a handful of whole-array operations, never a loop over frames.

def landmark_noise(frames: np.ndarray, lengths: np.ndarray, sigma_px: float, rng: np.random.Generator):
    """Gaussian jitter of every coordinate, `sigma_px` pixels of the 400-px crop. Lengths unchanged."""
    noise = rng.normal(0.0, sigma_px * PIXEL, size=frames.shape).astype(np.float32)
    return frames + noise, lengths


def drop_frames(frames: np.ndarray, lengths: np.ndarray, fraction: float, rng: np.random.Generator):
    """Remove each frame with probability `fraction` (the rest keep their order)."""
    keep = rng.random(len(frames)) >= fraction
    return frames[keep], _segment_sums(keep, lengths)


def duplicate_frames(frames: np.ndarray, lengths: np.ndarray, fraction: float, rng: np.random.Generator):
    """Show each frame twice with probability `fraction` (a stutter)."""
    repeats = 1 + (rng.random(len(frames)) < fraction).astype(np.int64)
    return np.repeat(frames, repeats, axis=0), _segment_sums(repeats, lengths)


def resample_frames(frames: np.ndarray, lengths: np.ndarray, factor: float):
    """Re-time every sequence to `factor` times its frame rate: output frame j shows input frame
    ``floor(j / factor)`` (0.5: every other frame; 2: each frame twice). Deterministic."""
    new_lengths = np.maximum(np.rint(lengths * factor).astype(np.int64), 0)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    owner = np.repeat(np.arange(len(lengths)), new_lengths)
    j = np.arange(int(new_lengths.sum())) - np.repeat(np.cumsum(new_lengths) - new_lengths, new_lengths)
    source = np.minimum(np.floor(j / factor).astype(np.int64), lengths[owner] - 1)
    return frames[starts[owner] + source], new_lengths


def _segment_sums(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-video sums of a per-frame array (videos are consecutive runs of `lengths` frames)."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    return np.bincount(owner, weights=values, minlength=len(lengths)).astype(np.int64)


def perturb(sequences: Sequence[np.ndarray], condition: Condition) -> List[np.ndarray]:
    """Apply `condition` to every ``(frames, 136)`` sequence; returns new ``(frames', 136)`` arrays."""
    lengths = np.asarray([len(s) for s in sequences], np.int64)
    frames = np.concatenate([np.asarray(s, np.float32) for s in sequences]) if sequences else np.empty((0, 136))
    kind, strength = condition.kind, float(condition.strength)
    rng = np.random.default_rng([condition.seed, LANDMARK_KINDS.index(kind) if kind in LANDMARK_KINDS else 9,
                                 int(round(strength * 1000))])
    if kind == "none":
        out, new = frames, lengths
    elif kind == "noise":
        out, new = landmark_noise(frames, lengths, strength, rng)
    elif kind == "drop":
        out, new = drop_frames(frames, lengths, strength, rng)
    elif kind == "duplicate":
        out, new = duplicate_frames(frames, lengths, strength, rng)
    elif kind == "fps":
        out, new = resample_frames(frames, lengths, strength)
    else:
        raise ValueError(f"unknown landmark perturbation {kind!r}; expected one of {LANDMARK_KINDS}")
    return np.split(out, np.cumsum(new)[:-1])


def landmark_conditions(grid: Mapping[str, Iterable[float]], seeds: Sequence[int]) -> List[Condition]:
    """Clean first, then every kind x strength, with every seed for the random kinds (one for fps)."""
    out = [Condition("none")]
    for kind in LANDMARK_KINDS:
        for strength in grid.get(kind, ()):
            for seed in (seeds if kind in RANDOM_KINDS else seeds[:1]):
                out.append(Condition(kind, float(strength), int(seed)))
    return out


# ----------------------------------------------------------------------------- results

@dataclass
class ConditionResult:
    """Scores of every video under one condition, compared with the clean scores."""

    condition: Condition
    scores: np.ndarray  # (n_videos,) float64, NaN: no block
    blocks: np.ndarray  # (n_videos,) int64
    calls: np.ndarray  # (n_videos,) "real" / "fake" / "n/a"
    verdicts: np.ndarray  # (n_videos,) calls or "uncertain"
    intervals: np.ndarray  # (n_videos, 2)
    auc: Optional[float] = None
    accuracy: Optional[float] = None  # video accuracy at the threshold
    mean_abs_change: Optional[float] = None  # mean |score - clean score| over videos scored in both
    flips: int = 0  # videos whose call differs from the clean call (both scored)
    compared: int = 0  # videos scored both clean and here
    uncertain: int = 0
    failed: int = 0  # videos that could not be scored (no block, detection error)

    def row(self) -> Dict[str, Any]:
        c = self.condition
        return {"perturbation": c.kind, "strength": c.strength, "seed": c.seed, "label": c.label,
                "auc": self.auc, "accuracy": self.accuracy, "mean_abs_change": self.mean_abs_change,
                "flips": self.flips, "flip_rate": self.flips / self.compared if self.compared else None,
                "compared": self.compared, "uncertain": self.uncertain, "failed": self.failed}


@dataclass
class RobustnessReport:
    """Every condition's result; `summary` averages the seeds."""

    source: str  # dataset split, or the folder of videos
    weights: str
    domain: str
    aggregation: str
    threshold: float
    threshold_source: str
    videos: List[str]
    labels: np.ndarray  # (n_videos,) 0 real / 1 fake
    results: List[ConditionResult] = field(default_factory=list)
    mode: str = "landmarks"  # or "videos"

    def summary(self) -> List[Dict[str, Any]]:
        """One row per (perturbation, strength): metrics averaged over seeds, with their std."""
        groups: Dict[Tuple[str, float], List[Dict[str, Any]]] = {}
        for r in self.results:
            groups.setdefault((r.condition.kind, r.condition.strength), []).append(r.row())
        out = []
        for (kind, strength), rows in groups.items():
            entry: Dict[str, Any] = {"perturbation": kind, "strength": strength, "label": rows[0]["label"],
                                     "seeds": len(rows)}
            for key in ("auc", "accuracy", "mean_abs_change", "flip_rate", "flips", "uncertain", "failed"):
                values = [v[key] for v in rows if v[key] is not None]
                entry[key] = float(np.mean(values)) if values else None
                entry[f"{key}_std"] = float(np.std(values)) if len(values) > 1 else None
            out.append(entry)
        return out

    def to_dict(self) -> Dict[str, Any]:
        return jsonable({
            "mode": self.mode, "source": self.source, "weights": self.weights, "domain": self.domain,
            "aggregation": self.aggregation, "threshold": {"value": self.threshold, "source": self.threshold_source},
            "videos": len(self.videos), "labels": {"real": int((self.labels == 0).sum()),
                                                   "fake": int((self.labels == 1).sum())},
            "summary": self.summary(), "conditions": [r.row() for r in self.results],
        })


def compare(condition: Condition, scores: np.ndarray, blocks: np.ndarray, intervals: np.ndarray, labels: np.ndarray,
            clean: Optional[ConditionResult], threshold: float, uncertain: bool) -> ConditionResult:
    """Metrics of one condition's ``(n_videos,)`` scores, and the change versus `clean` (None: this is clean)."""
    calls, verdicts = decide(scores, intervals, threshold, uncertain)
    scored = ~np.isnan(scores)
    y, s = labels[scored], scores[scored]
    result = ConditionResult(condition, scores, blocks, calls, verdicts, intervals,
                             auc=M.roc_auc(y, s) if y.size else None,
                             accuracy=M.video_accuracy(s, y, threshold) if y.size else None,
                             uncertain=int(np.count_nonzero(verdicts == "uncertain")),
                             failed=int(np.count_nonzero(~scored)))
    if clean is not None:
        both = scored & ~np.isnan(clean.scores)
        result.compared = int(both.sum())
        result.flips = int(np.count_nonzero(calls[both] != clean.calls[both]))
        if both.any():
            result.mean_abs_change = float(np.mean(np.abs(scores[both] - clean.scores[both])))
    return result


# ----------------------------------------------------------------------------- landmark robustness

def landmark_robustness(weights, sequences: Sequence[np.ndarray], labels: Sequence[int], names: Sequence[str],
                        grid: Optional[Mapping[str, Iterable[float]]] = None, seeds: Sequence[int] = (0, 1, 2),
                        aggregation: str = DEFAULT_AGGREGATION, threshold: Optional[float] = None,
                        uncertain: bool = True, device=None, batch_size: int = 512, source: str = "",
                        on_condition: Optional[Callable[[ConditionResult], None]] = None) -> RobustnessReport:
    """Score `sequences` (``(frames, 136)`` each, with 0/1 `labels` and unique `names`) clean and
    under every perturbation of `grid` (default `DEFAULT_LANDMARK_GRID`) and seed.

    `weights`: a `lrnet.weights.LoadedWeights`; `threshold` None: the weights' own for `aggregation`.
    `on_condition(result)` is called after each condition (progress).
    """
    from .datasets import blockset_from_arrays
    from .evaluate import report_from_probabilities
    from .detector import Detector

    detector = Detector.from_weights(weights, aggregation, threshold=threshold, uncertain=uncertain, device=device)
    value, tsource = detector.threshold, detector.threshold_source
    labels_arr = np.asarray(labels, np.int64)
    report = RobustnessReport(source, weights.source, str(weights.card.get("domain", "")), aggregation, value, tsource,
                              list(names), labels_arr)
    clean: Optional[ConditionResult] = None
    for condition in landmark_conditions(grid or DEFAULT_LANDMARK_GRID, list(seeds)):
        test = blockset_from_arrays(perturb(sequences, condition), labels_arr.tolist(), names,
                                    block_size=weights.block_size)
        probs = detector.branch_probabilities(test.blocks, batch_size=batch_size)
        ev = report_from_probabilities(probs, test, aggregation, weights.source, threshold=value,
                                       threshold_source=tsource, uncertain=uncertain)
        result = compare(condition, ev.video_scores, ev.video_blocks, ev.video_intervals, labels_arr, clean,
                         value, uncertain)
        clean = clean or result
        report.results.append(result)
        if on_condition is not None:
            on_condition(result)
    return report


# ----------------------------------------------------------------------------- video robustness

def find_labelled_videos(folder) -> Tuple[List[Path], np.ndarray]:
    """Videos under ``folder/real`` (label 0) and ``folder/fake`` (label 1), sorted, recursively."""
    folder = Path(folder)
    paths: List[Path] = []
    labels: List[int] = []
    for label, name in enumerate(("real", "fake")):
        sub = folder / name
        if not sub.is_dir():
            raise LrnetError(f"{sub}: missing; a labelled video folder holds real/ and fake/ sub-folders")
        found = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise LrnetError(f"{folder}: no videos ({', '.join(VIDEO_SUFFIXES)}) under real/ or fake/")
    return paths, np.asarray(labels, np.int64)


def video_conditions(grid: Mapping[str, Iterable[float]]) -> List[Condition]:
    """Clean first, then every kind x strength of `grid` (`VIDEO_KINDS`)."""
    unknown = sorted(set(grid) - set(VIDEO_KINDS))
    if unknown:
        raise ValueError(f"unknown video perturbation {', '.join(unknown)}; expected {VIDEO_KINDS}")
    return [Condition("none")] + [Condition(k, float(s)) for k in VIDEO_KINDS for s in grid.get(k, ())]


def degrade_arguments(condition: Condition, height: int, fps: float) -> Dict[str, Any]:
    """Keyword arguments of `lrnet.compress.degrade_video` for `condition` on a video of `height`
    pixels and `fps` frames/s: crf (x264 CRF), scale (new height in pixels, never above the video's;
    the width keeps the aspect ratio), fps (new frame rate, frames/s), blur (Gaussian sigma, pixels),
    noise (Gaussian std, 8-bit levels)."""
    kind, s = condition.kind, condition.strength
    if kind == "crf":
        return {"crf": int(s)}
    if kind == "height":
        return {"scale": int(min(s, height)) if height else int(s)}
    if kind == "fps":
        return {"fps": (fps or 25.0) * s}
    if kind == "blur":
        return {"blur": s}
    if kind == "pixel-noise":
        return {"noise": s}
    raise ValueError(f"not a video perturbation: {kind!r}")


def item_key(video: Path, condition: Condition) -> str:
    """A file-name-safe cache key of one (video, condition) item."""
    digest = hashlib.sha1(str(video.resolve()).encode()).hexdigest()[:10]
    return f"{video.stem}-{digest}-{condition.kind}-{condition.strength:g}"


def _detect_item(video: Path, condition: Condition, detector, work: Path, options) -> Dict:
    """Degrade (unless clean), detect, and return block scores and counts; errors become ``{"error"}``."""
    from .detect import detect_video

    target = video
    try:
        if condition.kind != "none":
            target = _degraded_copy(video, condition, work)
        result = detect_video(target, detector, options)
        return {"block_scores": [float(v) for v in result.scoring.block_scores], "frames": int(result.frames)}
    except LrnetError as exc:
        return {"error": str(exc)}
    finally:
        if target != video:
            target.unlink(missing_ok=True)


def _degraded_copy(video: Path, condition: Condition, work: Path) -> Path:
    from .compress import degrade_video
    from .video import video_info

    info = video_info(video)  # height and rate as the detector's decoder sees them
    work.mkdir(parents=True, exist_ok=True)
    dst = work / f"{item_key(video, condition)}.mp4"
    return Path(degrade_video(video, dst, **degrade_arguments(condition, info.height, info.fps)))


def video_robustness(weights, folder, output, grid: Optional[Mapping[str, Iterable[float]]] = None,
                     aggregation: str = DEFAULT_AGGREGATION, threshold: Optional[float] = None,
                     uncertain: bool = True, options=None, device=None, progress: bool = False) -> RobustnessReport:
    """Degrade every video of `folder` (``real/``, ``fake/``) under each condition of `grid`
    (default `DEFAULT_VIDEO_GRID`), detect, and compare with the clean videos.

    Per-item block scores are cached as ``output/items/KEY.json`` (atomic): a re-run skips them.
    The caller holds `lrnet.locks.output_lock` on `output`.
    """
    from .detector import Detector

    videos, labels = find_labelled_videos(folder)
    conditions = video_conditions(grid if grid is not None else DEFAULT_VIDEO_GRID)
    if len(conditions) > 1:
        from .video import load_pyav

        load_pyav()  # re-encoding needs PyAV: say so before any video is scored
    detector = Detector.from_weights(weights, aggregation, threshold=threshold, uncertain=uncertain, device=device)
    value, tsource = detector.threshold, detector.threshold_source
    out = Path(output)
    _check_item_settings(out / "items" / "settings.json", {"weights": weights.source, "block_size": weights.block_size,
                                                          "options": repr(options)})
    items = [(c, v) for c in conditions for v in videos]
    bar = _progress_bar(len(items), progress)
    cached: Dict[Tuple[Condition, Path], Dict] = {}
    for condition, video in items:
        path = out / "items" / f"{item_key(video, condition)}.json"
        if path.is_file():
            cached[(condition, video)] = json.loads(path.read_text())
        else:
            data = _detect_item(video, condition, detector, out / "work", options)
            atomic_write_text(path, json.dumps({"video": str(video), "condition": asdict(condition), **data}) + "\n")
            cached[(condition, video)] = data
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    report = RobustnessReport(str(folder), weights.source, str(weights.card.get("domain", "")), aggregation, value,
                              tsource, [str(v) for v in videos], labels, mode="videos")
    clean = None
    for condition in conditions:
        per_video = [cached[(condition, v)].get("block_scores") or [] for v in videos]
        scores, blocks, intervals = _video_scores(per_video, aggregation)
        result = compare(condition, scores, blocks, intervals, labels, clean, value, uncertain)
        clean = clean or result
        report.results.append(result)
    return report


def _check_item_settings(path: Path, settings: Dict[str, Any]) -> None:
    """Cached items are only reused with the weights and options that made them."""
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != settings:
            raise LrnetError(f"{path.parent}: cached results were made with other settings ({stored}); "
                             "use another --output or --overwrite")
        return
    atomic_write_text(path, json.dumps(settings) + "\n")


def _video_scores(per_video: Sequence[Sequence[float]], aggregation: str):
    """Scores, block counts and intervals of videos from their block scores (empty: NaN)."""
    blocks = np.asarray([len(b) for b in per_video], np.int64)
    flat = np.asarray([s for b in per_video for s in b], np.float32)
    index = np.repeat(np.arange(len(per_video)), blocks)
    scores = aggregate_blocks(flat, index, len(per_video), aggregation)
    return scores, blocks, video_intervals(flat, index, len(per_video), aggregation)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc="robustness", leave=False, disable=None)


# ----------------------------------------------------------------------------- outputs

def save_robustness(report: RobustnessReport, out_dir, plot: bool = True) -> Dict[str, Optional[Path]]:
    """Write ``robustness.json``, ``robustness.csv``, ``videos.csv`` and ``robustness.png`` atomically."""
    out = Path(out_dir)
    texts = {"json": ("robustness.json", json.dumps(report.to_dict(), indent=1) + "\n"),
             "csv": ("robustness.csv", _csv([r.row() for r in report.results])),
             "videos": ("videos.csv", _csv(_video_rows(report)))}
    paths: Dict[str, Optional[Path]] = {}
    for key, (name, text) in texts.items():
        paths[key] = out / name
        with writing(out / name):
            atomic_write_text(out / name, text)
    paths["png"] = out / "robustness.png" if plot else None
    if plot:
        plot_robustness(report, out / "robustness.png")
    return paths


def _video_rows(report: RobustnessReport) -> List[Dict[str, Any]]:
    rows = []
    for r in report.results:
        for i, video in enumerate(report.videos):
            score = float(r.scores[i])
            rows.append({"video": video, "label": int(report.labels[i]), "perturbation": r.condition.kind,
                         "strength": r.condition.strength, "seed": r.condition.seed, "blocks": int(r.blocks[i]),
                         "score": None if math.isnan(score) else round(score, 6),
                         "interval_lo": None if math.isnan(score) else round(float(r.intervals[i, 0]), 6),
                         "interval_hi": None if math.isnan(score) else round(float(r.intervals[i, 1]), 6),
                         "call": str(r.calls[i]), "verdict": str(r.verdicts[i])})
    return rows


def _csv(rows: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    return buf.getvalue()


AXIS_LABELS = {"noise": "landmark noise sigma (px of the 400-px crop)", "drop": "fraction of frames dropped",
               "duplicate": "fraction of frames duplicated", "fps": "frame-rate factor", "crf": "H.264 CRF",
               "height": "height (px)", "blur": "blur sigma (px)", "pixel-noise": "pixel noise std (8-bit levels)"}
CLEAN_X = {"fps": 1.0, "crf": 0.0, "height": None}  # where the clean point sits on each axis (None: not drawn)


def plot_robustness(report: RobustnessReport, path) -> Path:
    """One panel per perturbation: AUC, accuracy, flip rate and uncertain rate vs strength
    (mean and std over seeds; the clean input is the point at strength 0, or 1x for fps), saved
    to `path` atomically, format from the extension (`lrnet.atomic.save_figure`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = report.summary()
    clean = next(s for s in summary if s["perturbation"] == "none")
    kinds = [k for k in dict.fromkeys(s["perturbation"] for s in summary) if k != "none"]
    n_videos = max(1, len(report.videos))
    fig = Figure(figsize=(3.6 * max(1, len(kinds)), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for j, kind in enumerate(kinds):
        ax = fig.add_subplot(1, max(1, len(kinds)), j + 1)
        rows = [s for s in summary if s["perturbation"] == kind]
        clean_x = CLEAN_X.get(kind, 0.0)
        points = ([(clean_x, clean)] if clean_x is not None else []) + [(s["strength"], s) for s in rows]
        points.sort(key=lambda p: p[0])
        x = np.asarray([p[0] for p in points], dtype=float)
        for key, colour, style in (("auc", "tab:blue", "-"), ("accuracy", "tab:green", "-"),
                                   ("flip_rate", "tab:red", "-"), ("uncertain", "tab:grey", "--")):
            scale = 1.0 / n_videos if key == "uncertain" else 1.0
            y = np.asarray([np.nan if s[key] is None else s[key] * scale for _, s in points], dtype=float)
            if key == "flip_rate":
                y = np.where([s is clean for _, s in points], 0.0, y)
            err = np.asarray([s.get(f"{key}_std") or 0.0 for _, s in points], dtype=float) * scale
            ax.errorbar(x, y, yerr=err, marker="o", color=colour, linestyle=style, capsize=3,
                        label={"uncertain": "uncertain rate"}.get(key, key.replace("_", " ")))
        if kind == "fps":
            ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(AXIS_LABELS.get(kind, kind), fontsize=8)
        ax.set_title(kind, fontsize=10)
        if j == 0:
            ax.legend(fontsize=7, loc="center left")
    fig.suptitle(f"robustness: {report.weights} ({report.aggregation}, threshold {report.threshold:.3g}, "
                 f"{len(report.videos)} videos)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def format_robustness(report: RobustnessReport) -> str:
    """The summary as a text table: condition, AUC, accuracy, mean |change|, flips, uncertain, failed."""
    def f(v, digits=3):
        return "n/a" if v is None else f"{v:.{digits}f}"

    head = (f"weights: {report.weights}   domain: {report.domain or 'unknown'}   aggregation: {report.aggregation}   "
            f"threshold: {report.threshold:.4f} ({report.threshold_source})")
    cols = ["condition", "seeds", "AUC", "accuracy", "mean |d score|", "flips", "uncertain", "failed"]
    rows = [[s["label"], str(s["seeds"]), f(s["auc"]), f(s["accuracy"]), f(s["mean_abs_change"]),
             "-" if s["perturbation"] == "none" else f"{f(s['flips'], 1)}/{len(report.videos)}",
             f(s["uncertain"], 1), f(s["failed"], 1)] for s in report.summary()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [head, f"{report.source}: {len(report.videos)} videos ({int((report.labels == 0).sum())} real, "
                   f"{int((report.labels == 1).sum())} fake); flips = calls changed vs clean (mean over seeds)"]
    lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    for r in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)

