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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .atomic import save_figure
from .errors import LrnetError
from .extract import ProgressFn, VideoLandmarks
from .stream import FPS_POLICIES, FramePlan, StreamPipeline, plan_frame_rate, rate_warning  # noqa: F401
from .tracking import ExtractOptions
from .landmarks import write_landmarks
from .detector import DEFAULT_WEIGHTS, load_detector
from .moments import FakeMoment, find_moments, moment_notes
from .quality import QualityReport, apply_quality, assess, measure_landmarks
from .scoring import DEFAULT_AGGREGATION, VideoResult
from .video import VideoReader, read_frames, write_video
from .vocab import PathLike

__all__ = ["DetectResult", "FramePlan", "SegmentResult", "detect_video", "plan_frame_rate", "save_landmarks",
           "segment_table", "write_block_plot", "write_visualization", "FPS_POLICIES"]


RAW_COLOUR = (0, 255, 0)  # BGR: raw landmarks green
CALIBRATED_COLOUR = (0, 0, 255)  # calibrated landmarks red


@dataclass
class SegmentResult:
    """One segment's verdict. Times in seconds of the source video; ``end_s`` is the end of its last frame."""

    index: int
    start_s: float
    end_s: float
    frames: int
    blocks: int
    score: float  # NaN without a block
    verdict: str  # "fake", "real", "uncertain" or "n/a" (the detector's decision, as for the video)
    call: str = ""  # "fake", "real" or "n/a": the verdict without "uncertain"
    interval: Optional[Tuple[float, float]] = None  # 95% interval of `score`; None without a block

    def to_dict(self) -> Dict[str, object]:
        return {"index": self.index, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "frames": self.frames, "blocks": self.blocks,
                "score": None if self.score != self.score else round(float(self.score), 6), "verdict": self.verdict,
                "call": self.call or self.verdict,
                "interval": None if self.interval is None else [round(float(v), 6) for v in self.interval]}


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
    moments: List[FakeMoment] = field(default_factory=list)  # runs of fake blocks (lrnet.moments)
    quality: Optional[QualityReport] = None  # what the weights can judge (lrnet.quality)
    face: int = 0  # the face this result is about: the most suspicious one (lrnet.stream.StreamPipeline)
    faces: List[Dict[str, Any]] = field(default_factory=list)  # every face followed: id, span, box, verdict
    face_landmarks: Dict[int, VideoLandmarks] = field(default_factory=dict, repr=False)  # per face

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
            "weights": self.weights, "domain": self.domain, "moments": [m.to_dict() for m in self.moments],
            "quality": None if self.quality is None else self.quality.to_dict(),
            "face": self.face, "faces": list(self.faces),
        })
        if with_blocks:
            out["block_scores"] = [round(float(v), 6) for v in self.scoring.block_scores]
            out["block_details"] = self.block_details()
        return out

    def block_details(self) -> List[Dict[str, object]]:
        """Per block: index, segment, start/end time (s), merged p(fake) and each branch's."""
        return block_details(self.scoring, self.block_segment, self.block_start_s, self.block_end_s)


def block_details(scoring: VideoResult, segment: np.ndarray, start_s: np.ndarray,
                  end_s: np.ndarray) -> List[Dict[str, object]]:
    """The one JSON form of a video's blocks: index, segment, start and end time (s, 3 decimals),
    merged and per-branch p(fake) (6 decimals). Arrays ``(blocks,)``; a block ends where its last
    frame ends."""
    branch = scoring.branch_block_scores
    return [{"index": i, "segment": int(segment[i]), "start_s": round(float(start_s[i]), 3),
             "end_s": round(float(end_s[i]), 3), "p_fake": round(float(p), 6),
             **{f"p_{b}": round(float(branch[b][i]), 6) if b in branch else None for b in ("g1", "g2")}}
            for i, p in enumerate(scoring.block_scores)]


def detect_video(path: PathLike, detector: Any = DEFAULT_WEIGHTS, options: Optional[ExtractOptions] = None,
                 aggregation: str = DEFAULT_AGGREGATION, device=None, download: bool = True,
                 progress: Optional[ProgressFn] = None, fps_policy: str = "resample",
                 threshold: Optional[float] = None, uncertain: bool = True, faces: str = "all",
                 min_face: int = 80) -> DetectResult:
    """Score one video with `detector`: a `lrnet.detector.Detector`, or what `load_detector` takes
    (a registry name, a weights folder, `LoadedWeights`), built with `aggregation`, `threshold`
    (overrides the weights' own), `uncertain`, `device` and `download`.

    The video goes through `lrnet.stream.StreamPipeline` as fast as it decodes (the pipeline of
    ``lrnet watch``, so both give the same landmarks and block scores). `progress(stage, fraction)`:
    stages "landmarks" (decode + landmarks + calibration + block scores, about every 25 frames),
    then "calibration" and "scoring" at 1.0. `fps_policy`: "resample" (a video faster than the
    weights' frame rate is scored at that rate) or "keep" (every frame); `options.fps` is ignored.
    `faces`: "all" follows every face at least `min_face` px tall (the verdict is the most suspicious
    face's, `DetectResult.faces` lists them all) or "largest" (one face).

    Raises `LrnetError` naming the video for a missing or unreadable file, no face, or a clip too
    short for one block.
    """
    detector = load_detector(detector, aggregation=aggregation, threshold=threshold, uncertain=uncertain,
                             device=device or "cpu", download=download)
    options = options or ExtractOptions()
    options.check()
    started = time.perf_counter()
    with VideoReader(path, options.max_frames, None, options.frame_limit) as reader:
        info = reader.info
        pipe = StreamPipeline(detector, options, source_fps=info.fps, fps_policy=fps_policy, collect=True,
                              name=str(path), faces=faces, min_face=min_face)
        expected = info.frames if options.max_frames is None else min(info.frames, options.max_frames)
        for frame in reader:
            pipe.push(frame)
            if progress is not None and (frame.index + 1) % 25 == 0:
                progress("landmarks", min(1.0, (frame.index + 1) / expected) if expected else 0.0)
        decoded, t_decode = reader.decoded, reader.seconds
    pipe.close()
    if decoded == 0:
        raise LrnetError(f"{path}: no frame could be decoded (unreadable or not a video file)")
    if progress is not None:
        for stage in ("landmarks", "calibration", "scoring"):
            progress(stage, 1.0)
    lane = pipe.main_lane()
    landmarks = _landmarks(pipe, lane, t_decode)
    scored = _score_segments(pipe, lane, landmarks, str(path))
    s = landmarks.stats
    timing = {"decode": t_decode, "detect": s.t_detect, "landmarks": s.t_landmarks,
              "calibration": pipe.t_calibration, "scoring": pipe.t_scoring, "total": time.perf_counter() - started}
    plan = pipe.plan
    used = plan.used or _measured_rate(landmarks.times)
    result = DetectResult(str(path), scored.video.verdict, scored.video.score, scored.video.blocks,
                          scored.video.frames, detector.aggregation, detector.block_size, timing, scored.video,
                          landmarks, fps=plan.source, fps_used=used,
                          fps_warning=plan.warning or (None if plan.used else rate_warning(used, detector.fps)),
                          segments=scored.segments, cuts=list(landmarks.cuts), dropped_frames=s.dropped,
                          block_segment=scored.block_segment, block_start_s=scored.block_start_s,
                          block_end_s=scored.block_end_s, weights=detector.source, domain=detector.domain,
                          face=lane.face, faces=_face_rows(pipe))
    result.face_landmarks = {other.face: (landmarks if other is lane else _landmarks(pipe, other, t_decode))
                             for other in pipe.all_lanes() if other.record is not None and other.record.segments}
    result.moments = find_moments(scored.video.block_scores, scored.block_start_s, scored.block_end_s,
                                  scored.block_segment)
    result.quality = assess(measure_landmarks(landmarks, path), detector.card)
    result.verdict, _ = apply_quality(result.verdict, result.quality)
    result.notes = _notes(result)
    return result


def _landmarks(pipe: StreamPipeline, lane, t_decode: float) -> VideoLandmarks:
    """One face's collected rows as `VideoLandmarks` (`LrnetError` when no face was found)."""
    record, stats = lane.record, lane.stats
    assert record is not None
    if not record.segments:
        raise LrnetError(f"{pipe.name}: no face found in {pipe.stats.frames} frames")
    whole = pipe.stats
    stats.frames, stats.selected, stats.cuts = whole.frames, whole.selected, whole.cuts
    stats.width, stats.height, stats.fps = whole.width, whole.height, whole.fps
    stats.segments = len(record.segments)
    stats.skipped = stats.selected - stats.landmarked - stats.reused - stats.dropped
    stats.fps_used = pipe.plan.used
    stats.t_decode, stats.t_calibration, stats.lk_rejected = t_decode, pipe.t_calibration, lane.lk_rejected
    return VideoLandmarks(np.asarray(record.raw, np.int64).reshape(-1, 68, 2), record.calibration(lane.lk_rejected),
                          stats, np.asarray(record.times, np.float64), np.asarray(record.frame_index, np.int64),
                          list(record.segments), list(pipe.cuts))


def _face_rows(pipe: StreamPipeline) -> List[Dict[str, Any]]:
    """`StreamPipeline.faces` with each face's blocks: ``blocks_detail`` (start_s, end_s, p_fake)."""
    rows = pipe.faces()
    lanes = {lane.face: lane for lane in pipe.all_lanes()}
    size = pipe.detector.block_size
    for row in rows:
        record = lanes[row["face"]].record
        if record is None or not record.block_start_row:
            row["blocks_detail"] = []
            continue
        times = np.asarray(record.times, np.float64)
        frame_s = 1.0 / (_measured_rate(times) or pipe.plan.used or 25.0)
        starts = np.asarray(record.block_start_row, np.int64)
        merged = pipe.face_result(lanes[row["face"]]).block_scores
        row["blocks_detail"] = [{"start_s": round(float(times[a]), 3), "end_s": round(float(times[a + size - 1] + frame_s), 3),
                                 "p_fake": round(float(p), 6)} for a, p in zip(starts, merged)]
    return rows


def _measured_rate(times: np.ndarray) -> float:
    """Mean frame rate of increasing times (s); 0 with fewer than two frames."""
    return float((len(times) - 1) / (times[-1] - times[0])) if len(times) > 1 and times[-1] > times[0] else 0.0


@dataclass
class _Scored:
    video: VideoResult
    segments: List[SegmentResult]
    block_segment: np.ndarray
    block_start_s: np.ndarray
    block_end_s: np.ndarray


def _score_segments(pipe: StreamPipeline, lane, landmarks: VideoLandmarks, name: str) -> _Scored:
    """One face's blocks: its video score over all of them, and one score per segment."""
    detector, record = pipe.detector, lane.record
    assert record is not None
    size = detector.block_size
    segments = landmarks.segments
    video = pipe.face_result(lane)
    if video.blocks == 0:
        lengths = [len(s) for s in segments]
        if len(segments) > 1:
            raise LrnetError(f"{name}: too short: no segment has more than {size} frames (longest {max(lengths)} "
                             f"of {len(landmarks.times)} frames in {len(segments)} segments)")
        raise LrnetError(f"{name}: {video.error}")
    block_segment = np.asarray(record.block_segment, np.int64)
    starts = np.asarray(record.block_start_row, np.int64)
    frame_s = 1.0 / (_measured_rate(landmarks.times) or pipe.plan.used or 25.0)
    times = landmarks.times
    scores, intervals, calls, verdicts = detector.group_verdicts(video.block_scores, block_segment, len(segments))
    counts = np.bincount(block_segment, minlength=len(segments))
    results = [SegmentResult(i, float(times[s.start]), float(times[s.stop - 1]) + frame_s, len(s), int(counts[i]),
                             float(scores[i]), str(verdicts[i]), str(calls[i]),
                             None if counts[i] == 0 else (float(intervals[i, 0]), float(intervals[i, 1])))
               for i, s in enumerate(segments)]
    return _Scored(video, results, block_segment, times[starts], times[starts + size - 1] + frame_s)


def _notes(result: DetectResult) -> List[str]:
    """Plain-language remarks the verdict line does not already make: why a call became uncertain
    (footage outside the weights' range), fake moments (unless one moment is the whole video),
    cuts, dropped frames."""
    notes = []
    if len(result.faces) > 1:
        others = ", ".join(f"face {f['face']} {f['verdict']}" for f in result.faces if f["face"] != result.face)
        notes.append(f"{len(result.faces)} faces followed; the verdict is face {result.face}'s, the most suspicious "
                     f"({others})")
    if result.quality is not None and result.quality.reasons:
        notes += [f"outside the weights' range: {reason}" for reason in result.quality.reasons]
    whole = (len(result.moments) == 1 and result.moments[0].blocks == result.blocks)
    if not whole:
        notes += moment_notes(result.moments)
    if result.cuts:
        notes.append(f"{len(result.cuts)} shot cut{'s' if len(result.cuts) > 1 else ''} at "
                     + ", ".join(f"{c:.1f}" for c in result.cuts) + " s")
    if result.dropped_frames:
        notes.append(f"{result.dropped_frames} frames without landmarks of their own dropped (not scored)")
    return notes


# ------------------------------------------------------------------------------------ outputs


def save_landmarks(result: DetectResult, target: PathLike) -> Path:
    """Write the calibrated sequence (the longest segment) in the published ``.txt`` format, atomically.

    `target` gets the face the verdict is about; with several faces, each face also gets
    ``<stem>.face<N><suffix>`` beside it.
    """
    target = Path(target)
    writes = [(target, result.landmarks)]
    if len(result.face_landmarks) > 1:
        writes += [(target.with_name(f"{target.stem}.face{face}{target.suffix}"), lm)
                   for face, lm in sorted(result.face_landmarks.items())]
    for path, landmarks in writes:
        try:
            write_landmarks(path, landmarks.sequence)
        except OSError as exc:
            raise LrnetError(f"{path}: cannot write ({exc.strerror or exc})") from None
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
    for i, m in enumerate(result.moments):
        ax.axvspan(m.start_s, m.end_s, ymin=0.0, ymax=0.05, color="tab:red", alpha=0.8, linewidth=0,
                   label="fake moment" if i == 0 else None)
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
