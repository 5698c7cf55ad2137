"""End to end: raw video -> landmarks -> calibration -> block scores -> verdict, with shots located.

`detect_video` resamples a video faster than the weights' training frame rate down to it (frames
chosen by timestamp before landmarking), extracts and calibrates the landmarks segment by segment
(`lrnet.extract`, `lrnet.segments`), cuts blocks per segment (none straddles a shot cut) and scores
them all with `lrnet.scoring.score_blocks`. The video score aggregates all blocks of all segments
(the reference's whole-video number); each segment also gets its own score and verdict, and the
result notes a fake segment inside a video judged real. A video slower than the weights' rate is
never interpolated: its verdict carries ``fps_warning``.

Optional outputs: the calibrated landmark file, a video with raw and calibrated landmarks drawn
on the frames, and a plot of the per-block fake probability over time with segments and cuts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .atomic import save_figure
from .errors import LrnetError
from .extract import ExtractOptions, ProgressFn, VideoLandmarks, extract_video
from .landmarks import write_landmarks
from .scoring import DEFAULT_AGGREGATION, THRESHOLD, VideoResult, aggregate_blocks, score_blocks
from .segments import block_starts, gather_blocks
from .video import read_frames, video_info, write_video

__all__ = ["DetectResult", "FramePlan", "SegmentResult", "detect_video", "plan_frame_rate", "save_landmarks",
           "segment_table", "write_block_plot", "write_visualization", "FPS_POLICIES"]

PathLike = Union[str, "os.PathLike[str]"]

RAW_COLOUR = (0, 255, 0)  # BGR: raw landmarks green
CALIBRATED_COLOUR = (0, 0, 255)  # calibrated landmarks red
FPS_POLICIES = ("resample", "keep")
RESAMPLE_ABOVE = 1.02  # resample a video more than 2 % faster than the weights' frame rate
SLOW_MARGIN = 0.8  # a rate below 0.8 x the weights' is outside the model's range (never interpolated)
FAST_MARGIN = 1.25  # ... as is one above 1.25 x when not resampled (--fps-policy keep)
MIN_SEGMENT_BLOCKS = 2  # a segment needs this many blocks for its verdict to be noted


@dataclass(frozen=True)
class FramePlan:
    """The frame rate a video is scored at. Rates in frames/s; 0 when unknown."""

    source: float  # the file's nominal rate
    target: Optional[float]  # frames are selected by timestamp at this rate (None: every frame)
    used: float  # the rate of the frames scored
    warning: Optional[str]  # set when `used` is outside the weights' range


def _rate_warning(rate: float, model_fps: Optional[float]) -> Optional[str]:
    if model_fps is None or not rate or SLOW_MARGIN * model_fps <= rate <= FAST_MARGIN * model_fps:
        return None
    return (f"frame rate outside the model's range ({rate:.3g} fps scored, weights trained at "
            f"{model_fps:.3g} fps)")


def plan_frame_rate(source_fps: float, model_fps: Optional[float], policy: str = "resample") -> FramePlan:
    """Choose the scoring rate: the weights' `model_fps` for a faster source (policy "resample"),
    else the source's own. A rate outside [0.8, 1.25] x `model_fps` gets a warning."""
    if policy not in FPS_POLICIES:
        raise ValueError(f"unknown frame-rate policy {policy!r}; expected one of {FPS_POLICIES}")
    resample = (policy == "resample" and model_fps is not None
                and (not source_fps or source_fps > RESAMPLE_ABOVE * model_fps))
    target = float(model_fps) if resample and model_fps is not None else None
    used = target if target and source_fps else source_fps
    return FramePlan(source_fps, target, used, _rate_warning(used, model_fps))


@dataclass
class SegmentResult:
    """One segment's verdict. Times in seconds of the source video; ``end_s`` is the end of its last frame."""

    index: int
    start_s: float
    end_s: float
    frames: int
    blocks: int
    score: float  # NaN without a block
    verdict: str  # "fake", "real" or "n/a"

    def to_dict(self) -> Dict[str, object]:
        return {"index": self.index, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "frames": self.frames, "blocks": self.blocks,
                "score": None if self.score != self.score else round(float(self.score), 6), "verdict": self.verdict}


@dataclass
class DetectResult:
    """Verdict of one video. ``frames``: frames scored (all segments); ``fps``: the file's nominal rate."""

    video: str
    verdict: str
    score: float
    blocks: int
    frames: int
    aggregation: str
    block_size: int
    timing: Dict[str, float]  # seconds per stage: decode, detect, landmarks, calibration, scoring, total
    scoring: VideoResult = field(repr=False)
    landmarks: VideoLandmarks = field(repr=False)
    fps: float = 0.0
    fps_used: float = 0.0
    fps_warning: Optional[str] = None
    segments: List[SegmentResult] = field(default_factory=list)
    cuts: List[float] = field(default_factory=list)  # seconds
    dropped_frames: int = 0
    notes: List[str] = field(default_factory=list)
    block_segment: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    block_start_s: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    block_end_s: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    weights: str = ""  # where the weights came from (LoadedWeights.source)
    domain: str = ""  # the footage the weights are meant for (their model card)

    def to_dict(self, with_blocks: bool = False) -> Dict[str, object]:
        """JSON-ready: the scoring's own keys (merged in, so new ones flow through), then the video's."""
        stats = self.landmarks.stats
        out: Dict[str, object] = dict(self.scoring.to_dict(with_blocks))
        out.update({
            "video": self.video, "verdict": self.verdict, "score": round(float(self.score), 6),
            "blocks": self.blocks, "frames": self.frames, "aggregation": self.aggregation,
            "decoded_frames": stats.frames, "landmarked": stats.landmarked, "reused": stats.reused,
            "skipped": stats.skipped, "fps": round(self.fps, 3), "fps_used": round(self.fps_used, 3),
            "fps_warning": self.fps_warning, "segments": [s.to_dict() for s in self.segments],
            "cuts": [round(c, 3) for c in self.cuts], "dropped_frames": self.dropped_frames,
            "notes": list(self.notes), "timing": {k: round(v, 4) for k, v in self.timing.items()},
            "weights": self.weights, "domain": self.domain,
        })
        if with_blocks:
            out["block_scores"] = [round(float(v), 6) for v in self.scoring.block_scores]
            out["block_details"] = self.block_details()
        return out

    def block_details(self) -> List[Dict[str, object]]:
        """Per block: index, segment, start/end time (s), merged p(fake) and each branch's."""
        branch = self.scoring.branch_block_scores
        return [{"index": i, "segment": int(self.block_segment[i]), "start_s": round(float(self.block_start_s[i]), 3),
                 "end_s": round(float(self.block_end_s[i]), 3), "p_fake": round(float(p), 6),
                 **{f"p_{b}": round(float(branch[b][i]), 6) if b in branch else None for b in ("g1", "g2")}}
                for i, p in enumerate(self.scoring.block_scores)]


def detect_video(path: PathLike, weights="dfo", options: Optional[ExtractOptions] = None,
                 aggregation: str = DEFAULT_AGGREGATION, device=None, download: bool = True,
                 progress: Optional[ProgressFn] = None, fps_policy: str = "resample",
                 threshold: Optional[float] = None, uncertain: bool = True) -> DetectResult:
    """Score one video. `weights`: a registry name, a weights folder, or a `LoadedWeights`.

    `progress(stage, fraction)`: stages "landmarks" (decode + detection + landmarks), "calibration",
    "scoring", each with a fraction in [0, 1]. `fps_policy`: "resample" (a video faster than the
    weights' frame rate is scored at that rate) or "keep" (every frame). `threshold`: overrides the
    weights' own (`lrnet.weights.threshold_for`); `uncertain`: report "uncertain" when the score's
    95% interval contains the threshold.

    Raises `LrnetError` naming the video for a missing or unreadable file, no face, or a clip too
    short for one block.
    """
    from .weights import LoadedWeights, resolve_weights, threshold_for

    if not isinstance(weights, LoadedWeights):
        weights = resolve_weights(str(weights), device=device or "cpu", download=download)
    decision = _Decision(*threshold_for(weights, aggregation, tuple(weights.models), override=threshold), uncertain)
    started = time.perf_counter()
    plan = plan_frame_rate(video_info(path).fps, weights.fps, fps_policy)
    extracted = extract_video(path, replace(options or ExtractOptions(), fps=plan.target), progress=progress)
    if progress is not None:
        progress("scoring", 0.0)
    t = time.perf_counter()
    scored = _score_segments(extracted, weights, aggregation, device, str(path), decision)
    t_scoring = time.perf_counter() - t
    if progress is not None:
        progress("scoring", 1.0)
    s = extracted.stats
    timing = {"decode": s.t_decode, "detect": s.t_detect, "landmarks": s.t_landmarks,
              "calibration": s.t_calibration, "scoring": t_scoring, "total": time.perf_counter() - started}
    used = plan.used or _measured_rate(extracted.times)
    result = DetectResult(str(path), scored.video.verdict, scored.video.score, scored.video.blocks,
                          scored.video.frames, aggregation, weights.block_size, timing, scored.video, extracted,
                          fps=plan.source, fps_used=used,
                          fps_warning=plan.warning or (None if plan.used else _rate_warning(used, weights.fps)),
                          segments=scored.segments, cuts=list(extracted.cuts), dropped_frames=s.dropped,
                          block_segment=scored.block_segment, block_start_s=scored.block_start_s,
                          block_end_s=scored.block_end_s, weights=weights.source,
                          domain=str(weights.card.get("domain", "")))
    result.notes = _notes(result)
    return result


def _measured_rate(times: np.ndarray) -> float:
    """Mean frame rate of increasing times (s); 0 with fewer than two frames."""
    return float((len(times) - 1) / (times[-1] - times[0])) if len(times) > 1 and times[-1] > times[0] else 0.0


@dataclass
class _Decision:
    """How block scores become a verdict: threshold, where it came from, whether "uncertain" is allowed."""

    threshold: float = THRESHOLD
    source: str = "default"
    uncertain: bool = True


@dataclass
class _Scored:
    video: VideoResult
    segments: List[SegmentResult]
    block_segment: np.ndarray
    block_start_s: np.ndarray
    block_end_s: np.ndarray


def _score_segments(landmarks: VideoLandmarks, weights, aggregation: str, device, name: str,
                    decision: _Decision) -> _Scored:
    """Blocks cut per segment, scored together; the video score over all, and one per segment."""
    size = weights.block_size
    segments = landmarks.segments
    lengths = [len(s) for s in segments]
    starts, block_segment = block_starts(lengths, size)
    sequence = landmarks.calibrated().sequence
    blocks = gather_blocks(sequence, starts, size)
    video = score_blocks(blocks, weights.models, len(sequence), size, aggregation, name, device,
                         threshold=decision.threshold, uncertain=decision.uncertain,
                         threshold_source=decision.source)
    if video.blocks == 0:
        if len(segments) > 1:
            raise LrnetError(f"{name}: too short: no segment has more than {size} frames (longest {max(lengths)} "
                             f"of {len(sequence)} frames in {len(segments)} segments)")
        raise LrnetError(f"{name}: {video.error}")
    frame_s = 1.0 / (_measured_rate(landmarks.times) or landmarks.stats.fps_used or 25.0)
    times = landmarks.times
    scores = aggregate_blocks(video.block_scores, block_segment, len(segments), aggregation)
    counts = np.bincount(block_segment, minlength=len(segments))
    threshold = decision.threshold
    results = [SegmentResult(i, float(times[s.start]), float(times[s.stop - 1]) + frame_s, len(s), int(counts[i]),
                             float(scores[i]), "n/a" if counts[i] == 0 else
                             ("fake" if scores[i] >= threshold else "real"))
               for i, s in enumerate(segments)]
    return _Scored(video, results, block_segment, times[starts], times[starts + size - 1] + frame_s)


def _notes(result: DetectResult) -> List[str]:
    """Plain-language remarks: fake segments in a video judged real, dropped frames, cuts."""
    notes = []
    if result.verdict != "fake":
        notes += [f"fake segment at {s.start_s:.1f}-{s.end_s:.1f} s (score {s.score:.2f}, {s.blocks} blocks)"
                  for s in result.segments if s.verdict == "fake" and s.blocks >= MIN_SEGMENT_BLOCKS]
    if result.cuts:
        notes.append(f"{len(result.cuts)} shot cut{'s' if len(result.cuts) > 1 else ''} at "
                     + ", ".join(f"{c:.1f}" for c in result.cuts) + " s")
    if result.dropped_frames:
        notes.append(f"{result.dropped_frames} frames without landmarks of their own dropped (not scored)")
    return notes


# ------------------------------------------------------------------------------------ outputs


def save_landmarks(result: DetectResult, target: PathLike) -> Path:
    """Write the calibrated sequence (the longest segment) in the published ``.txt`` format, atomically."""
    target = Path(target)
    try:
        write_landmarks(target, result.landmarks.sequence)
    except OSError as exc:
        raise LrnetError(f"{target}: cannot write ({exc.strerror or exc})") from None
    return target


def _overlay_rows(landmarks: VideoLandmarks) -> np.ndarray:
    """For each source frame up to the last landmarked one: the landmark row to draw on it, or -1.

    A frame skipped by resampling shows the previous row of its segment; frames outside segments none.
    """
    index = landmarks.frame_index
    frames = np.arange(int(index[-1]) + 1)
    row = np.searchsorted(index, frames, side="right") - 1
    last_of_segment = np.zeros(len(index), np.int64)
    for s in landmarks.segments:
        last_of_segment[s.start:s.stop] = index[s.stop - 1]
    valid = (row >= 0) & (frames <= last_of_segment[np.maximum(row, 0)])
    return np.where(valid, row, -1)


def write_visualization(result: DetectResult, target: PathLike) -> Path:
    """Write a video with raw (green) and calibrated (red) landmarks drawn on the frames.

    Frames outside any segment are written undrawn. The container follows `target`'s extension
    (``.mp4``: MPEG-4 part 2; ``.avi``: MJPG). Written atomically and checked (see `write_video`).
    """
    import cv2

    target = Path(target)
    extracted = result.landmarks
    stats = extracted.stats
    raw = extracted.raw
    calibrated = np.rint(extracted.points_in_frame()).astype(np.int64)
    rows = _overlay_rows(extracted)

    def drawn() -> Iterator[np.ndarray]:
        for i, frame in enumerate(read_frames(result.video, len(rows))):
            if rows[i] >= 0:
                for points, colour in ((raw[rows[i]], RAW_COLOUR), (calibrated[rows[i]], CALIBRATED_COLOUR)):
                    for x, y in points:
                        cv2.circle(frame, (int(x), int(y)), 2, colour, -1, cv2.LINE_AA)
            yield frame

    write_video(target, drawn(), stats.fps, (stats.width, stats.height))
    return target


def write_block_plot(result: DetectResult, target: PathLike) -> Path:
    """Plot per-block p(fake) over time with segments shaded and shot cuts marked (PNG/PDF/SVG by
    extension), atomically. Uses Matplotlib's Agg canvas directly: no window, no global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(target)
    scoring = result.scoring
    fig = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    _draw_segments(ax, result)
    starts, ends = result.block_start_s, result.block_end_s
    for seg in range(len(result.segments)):
        mine = result.block_segment == seg
        if mine.any():
            x = np.append(starts[mine], ends[mine][-1])
            y = np.append(scoring.block_scores[mine], scoring.block_scores[mine][-1])
            ax.step(x, y, where="post", color="black", label="merged (g1+g2)/2" if seg == 0 else None)
    for branch, values in scoring.branch_block_scores.items():
        ax.plot((starts + ends) / 2, values, "o", markersize=3, alpha=0.6, label=branch)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("p(fake) per block")
    ax.set_title(f"{Path(result.video).name}: {result.verdict} (score {result.score:.3f}, {result.aggregation}, "
                 f"{len(result.segments)} segment{'s' if len(result.segments) != 1 else ''})", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, target)


def _draw_segments(ax, result: DetectResult) -> None:
    """Shade each segment (red when judged fake) and draw the shot cuts as vertical lines."""
    for s in result.segments:
        colour = {"fake": "tab:red", "real": "tab:green"}.get(s.verdict, "grey")
        ax.axvspan(s.start_s, s.end_s, color=colour, alpha=0.12, linewidth=0)
        ax.text((s.start_s + s.end_s) / 2, 1.0, f"{s.index}: {s.verdict}", ha="center", va="top", fontsize=7)
    for i, cut in enumerate(result.cuts):
        ax.axvline(cut, color="tab:blue", linewidth=1.0, label="shot cut" if i == 0 else None)


def segment_table(result: DetectResult) -> List[Tuple[int, str, int, int, str, str]]:
    """Rows for printing the segments: (index, time span, frames, blocks, score, verdict)."""
    return [(s.index, f"{s.start_s:.1f}-{s.end_s:.1f} s", s.frames, s.blocks,
             "-" if s.score != s.score else f"{s.score:.4f}", s.verdict) for s in result.segments]
