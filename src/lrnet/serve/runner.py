"""What a worker process does with one job: detect or score, and the files the page reads.

Runs inside a worker process (never on the server's event loop). A video goes through
`lrnet.detect.detect_video`, a landmark file through `lrnet.landmarks.read_landmarks` and
`lrnet.detector.Detector.score_sequence`: the same code, and so the same numbers, as ``lrnet detect`` and
``lrnet predict``. The result is `to_dict(with_blocks=True)` with every key passed through, plus
the weights and threshold used, the time axis and ``block_details`` (computed here when the
detector does not give them). Failures raise `LrnetError` with the message the CLI would print,
naming the client's file instead of the server's copy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..atomic import atomic_write_text
from ..detect import block_details
from ..detector import Detector
from ..errors import LrnetError
from ..landmarks import read_landmarks, write_landmarks
from ..scoring import VideoResult
from ..video import probe_video, transcode_h264
from ..weights import LoadedWeights
from .store import Task

__all__ = ["DEFAULT_FPS", "describe_weights", "run_task", "video_duration", "warm_up"]

DEFAULT_FPS = 25.0  # time axis of a landmark file when the weights do not name a frame rate
ProgressFn = Callable[[str, float], None]


def video_duration(header_s: Optional[float], times: np.ndarray, source_fps: float,
                   decoded: int = 0) -> float:
    """A video's length in seconds, from its clock, never from a frame count divided by the scoring rate.

    `header_s`: the duration its header gives (`probe_video`; None when unknown); else `decoded`
    frames at the file's own rate `source_fps`. Never less than the last scored frame's
    timestamp (`times` ``(rows,)``, seconds) plus one source frame: that frame was shown that long.
    """
    frame_s = 1.0 / source_fps if source_fps > 0 else 0.0
    seen = float(times[-1]) + frame_s if len(times) else 0.0
    if header_s:
        return max(float(header_s), seen)
    return max(decoded * frame_s, seen)


def _weights_facts(weights: LoadedWeights) -> Dict[str, Any]:
    return {"weights": weights.source, "domain": weights.card.get("domain", ""), "block_size": weights.block_size}


def _replace_path(exc: LrnetError, task: Task) -> LrnetError:
    return LrnetError(str(exc).replace(task.upload, task.filename))


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, separators=(",", ":")))


def score_landmark_file(task: Task, weights: LoadedWeights, progress: ProgressFn) -> Dict[str, Any]:
    """A landmark ``.txt`` upload: the numbers of ``lrnet predict --json --blocks``, on an assumed clock."""
    started = time.perf_counter()
    progress("scoring", 0.0)
    frames = read_landmarks(task.upload)
    t_read = time.perf_counter() - started
    scoring = Detector.from_weights(weights, task.aggregation).score_sequence(frames, name=task.filename)
    if scoring.blocks == 0:
        raise LrnetError(f"{task.filename}: {scoring.error}")
    fps = float(weights.fps or DEFAULT_FPS)
    times = np.arange(len(frames)) / fps
    out = scoring.to_dict(with_blocks=True)
    for key, value in _weights_facts(weights).items():
        out.setdefault(key, value)
    out.update(kind="landmarks", duration_s=round(len(frames) / fps, 4), time_fps=fps,
               time_note=f"a landmark file has no clock: frames shown at {fps:g} frames/s "
                         f"({'the weights’ training frame rate' if weights.fps else 'assumed'})",
               timing={"read": round(t_read, 4), "scoring": round(time.perf_counter() - started - t_read, 4),
                       "total": round(time.perf_counter() - started, 4)})
    first = np.arange(scoring.blocks) * weights.block_size  # block i: rows [i B, (i + 1) B)
    out["block_details"] = block_details(scoring, np.zeros(scoring.blocks, np.int64), times[first],
                                         times[first + weights.block_size - 1] + 1.0 / fps)
    folder = Path(task.folder)
    write_landmarks(folder / "landmarks.txt", frames)
    _write_json(folder / "landmarks.json", {"kind": "landmarks", "fps": fps, "times": np.round(times, 4).tolist(),
                                            "calibrated_normalised": np.round(frames, 5).tolist()})
    progress("scoring", 1.0)
    return out


def detect_upload(task: Task, weights: LoadedWeights, progress: ProgressFn) -> Dict[str, Any]:
    """A video upload: `detect_video`'s result, the overlay landmarks and, if needed, a playable copy."""
    from ..detect import detect_video

    result = detect_video(task.upload, Detector.from_weights(weights, task.aggregation), progress=progress)
    out = result.to_dict(with_blocks=True)
    out["video"] = task.filename
    stats = result.landmarks.stats
    fps = float(out.get("fps_used") or stats.fps or weights.fps or DEFAULT_FPS)  # type: ignore[arg-type]
    times = np.asarray(result.landmarks.times, dtype=np.float64)  # seconds of each landmark row in the video
    for key, value in _weights_facts(weights).items():
        out.setdefault(key, value)
    out.setdefault("fps", round(stats.fps, 4))
    # the video's real length: with a 30 fps file scored at 25 fps, decoded frames / 25 would overstate it by 20 %
    duration = video_duration((probe_video(Path(task.upload)).duration or None), times, float(stats.fps), stats.frames)
    out.update(kind="video", time_fps=fps, duration_s=round(duration, 4), width=stats.width, height=stats.height)
    folder = Path(task.folder)
    write_landmarks(folder / "landmarks.txt", result.landmarks.sequence)
    calibrated = result.landmarks.points_in_frame()
    _write_json(folder / "landmarks.json", {
        "kind": "video", "fps": fps, "width": stats.width, "height": stats.height, "skipped": stats.skipped,
        "times": np.round(times, 4).tolist(),
        "raw": np.asarray(result.landmarks.raw).reshape(len(times), -1).tolist(),
        "calibrated": np.round(calibrated, 1).reshape(len(times), -1).tolist()})
    if not task.playable:
        progress("video", 0.0)
        transcode_h264(Path(task.upload), folder / "video.mp4")
        progress("video", 1.0)
    return out


def run_task(task: Task, weights: LoadedWeights, progress: ProgressFn) -> Dict[str, Any]:
    """Run one job; `LrnetError` (naming the client's file) when the input cannot be judged."""
    try:
        if task.kind == "landmarks":
            return score_landmark_file(task, weights, progress)
        return detect_upload(task, weights, progress)
    except LrnetError as exc:
        raise _replace_path(exc, task) from None


def warm_up(weights: LoadedWeights) -> None:
    """Score two blocks of zeros once, so a worker's first job does not pay PyTorch's first-call costs."""
    Detector.from_weights(weights).score_sequence(np.zeros((2 * weights.block_size + 1, 136), np.float32))


def describe_weights(spec: str, weights: LoadedWeights, description: Optional[str] = None) -> Dict[str, Any]:
    """What `GET /api/v1/weights` shows about one loaded pair."""
    return {"name": spec, "source": weights.source, "block_size": weights.block_size, "fps": weights.fps,
            "threshold": weights.threshold, "threshold_source": weights.threshold_source,
            "branches": sorted(weights.models), "description": description or weights.card.get("description", "")}
