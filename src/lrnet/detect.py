"""End to end: raw video -> landmarks -> calibration -> block scores -> verdict.

`detect_video` reuses `lrnet.extract` for the landmarks, `lrnet.scoring.score_sequence` for the
verdict and `lrnet.weights.resolve_weights` for the model. Optional outputs: the calibrated
landmark file, a video with raw and calibrated landmarks drawn on the frames, and a plot of the
per-block fake probability over time.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from .atomic import atomic_path
from .errors import LrnetError
from .extract import ExtractOptions, ProgressFn, VideoLandmarks, extract_video
from .landmarks import write_landmarks
from .scoring import DEFAULT_AGGREGATION, VideoResult, score_sequence

PathLike = Union[str, "os.PathLike[str]"]

RAW_COLOUR = (0, 255, 0)  # BGR: raw landmarks green
CALIBRATED_COLOUR = (0, 0, 255)  # calibrated landmarks red


@dataclass
class DetectResult:
    """Verdict of one video. ``frames``: frames scored (after skipped leading frames)."""

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

    def to_dict(self, with_blocks: bool = False) -> Dict[str, object]:
        stats = self.landmarks.stats
        out: Dict[str, object] = {
            "video": self.video, "verdict": self.verdict, "score": round(float(self.score), 6),
            "blocks": self.blocks, "frames": self.frames, "aggregation": self.aggregation,
            "decoded_frames": stats.frames, "landmarked": stats.landmarked, "reused": stats.reused,
            "skipped": stats.skipped,
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
        }
        if with_blocks:
            out["block_scores"] = [round(float(v), 6) for v in self.scoring.block_scores]
        return out


def detect_video(path: PathLike, weights="dfo", options: Optional[ExtractOptions] = None,
                 aggregation: str = DEFAULT_AGGREGATION, device=None, download: bool = True,
                 progress: Optional[ProgressFn] = None) -> DetectResult:
    """Score one video. `weights`: a registry name, a weights folder, or a `LoadedWeights`.

    `progress(stage, fraction)`: stages "landmarks" (decode + detection + landmarks), "calibration",
    "scoring", each with a fraction in [0, 1].

    Raises `LrnetError` naming the video for an unreadable file, no face, or a clip too short for
    one block.
    """
    from .weights import LoadedWeights, resolve_weights

    if not isinstance(weights, LoadedWeights):
        weights = resolve_weights(str(weights), device=device or "cpu", download=download)
    started = time.perf_counter()
    extracted = extract_video(path, options, progress=progress)
    if progress is not None:
        progress("scoring", 0.0)
    t = time.perf_counter()
    result = score_sequence(extracted.sequence, weights.models, weights.block_size, aggregation,
                            name=str(path), device=device)
    t_scoring = time.perf_counter() - t
    if progress is not None:
        progress("scoring", 1.0)
    if result.blocks == 0:
        raise LrnetError(f"{path}: {result.error}")
    s = extracted.stats
    timing = {"decode": s.t_decode, "detect": s.t_detect, "landmarks": s.t_landmarks,
              "calibration": s.t_calibration, "scoring": t_scoring, "total": time.perf_counter() - started}
    return DetectResult(str(path), result.verdict, result.score, result.blocks, result.frames, aggregation,
                        weights.block_size, timing, result, extracted)


def save_landmarks(result: DetectResult, target: PathLike) -> Path:
    """Write the calibrated sequence in the published ``.txt`` format (atomically)."""
    target = Path(target)
    write_landmarks(target, result.landmarks.sequence)
    return target


def write_visualization(result: DetectResult, target: PathLike) -> Path:
    """Write a video with raw (green) and calibrated (red) landmarks drawn on the frames.

    Skipped leading frames are written undrawn. The container follows `target`'s extension
    (``.mp4``: MPEG-4 part 2; ``.avi``: MJPG). Written atomically.
    """
    import cv2

    from .calibration import read_frames

    target = Path(target)
    extracted = result.landmarks
    stats = extracted.stats
    raw = extracted.raw
    calibrated = np.rint(extracted.calibration.points_in_frame()).astype(np.int64)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if target.suffix.lower() == ".avi" else "mp4v"))
    # OpenCV picks the container from the file name, so the temporary keeps the real extension
    # (lrnet.atomic's temporaries end in .tmp); it is renamed onto `target` once complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix or ".mp4", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        writer = cv2.VideoWriter(str(tmp), fourcc, stats.fps or 25.0, (stats.width, stats.height))
        if not writer.isOpened():
            raise LrnetError(f"{target}: cannot write a video here (unsupported extension {target.suffix!r}?)")
        try:
            for i, frame in enumerate(read_frames(result.video)):
                j = i - stats.skipped
                if j >= len(raw):
                    break
                if j >= 0:
                    for x, y in raw[j]:
                        cv2.circle(frame, (int(x), int(y)), 2, RAW_COLOUR, -1, cv2.LINE_AA)
                    for x, y in calibrated[j]:
                        cv2.circle(frame, (int(x), int(y)), 2, CALIBRATED_COLOUR, -1, cv2.LINE_AA)
                writer.write(frame)
        finally:
            writer.release()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def write_block_plot(result: DetectResult, target: PathLike) -> Path:
    """Plot the per-block fake probability over time (PNG/PDF/SVG by extension), atomically.

    Uses Matplotlib's Agg canvas directly: no window, no global backend change.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(target)
    scoring = result.scoring
    stats = result.landmarks.stats
    fps = stats.fps or 25.0
    size = result.block_size
    starts = (stats.skipped + np.arange(result.blocks) * size) / fps
    centres = starts + size / fps / 2
    fig = Figure(figsize=(9, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.step(np.append(starts, starts[-1] + size / fps), np.append(scoring.block_scores, scoring.block_scores[-1]),
            where="post", color="black", label="merged (g1+g2)/2")
    for branch, values in scoring.branch_block_scores.items():
        ax.plot(centres, values, "o", markersize=3, alpha=0.6, label=branch)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("p(fake) per block")
    ax.set_title(f"{Path(result.video).name}: {result.verdict} (score {result.score:.3f}, "
                 f"{result.aggregation})", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    with atomic_path(target, suffix=target.suffix or ".png") as tmp:
        fig.savefig(tmp, format=(target.suffix.lstrip(".") or "png"))
    return target
