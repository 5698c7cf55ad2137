"""Landmark extraction from raw video: decoding, face detection, 68-point landmarks, calibration.

Per video (`extract_video`):

1. *Decode* with OpenCV in a background thread (decoding releases the GIL, so it overlaps with
   detection on the second core).
2. *Detect* the face with dlib's HOG detector on a grayscale copy downscaled to about 640 px, every
   `detect_every` frames; in between, the face box is carried forward from the previous frame's
   landmarks (using the box/landmark geometry of the last detection).
3. *Landmarks*: dlib's 68-point shape predictor (from the ``face-recognition-models`` package) on
   every frame, in full resolution.
4. *One face, consistent over time*: the largest face is chosen; a result whose centre jumps more
   than half a face away, or whose size changes by more than 30 %, is rejected and the previous
   landmarks are reused, as are those of a frame where detection failed. Frames before the first
   detection are skipped and counted.
5. *Calibrate* (`lrnet.calibration`). The face regions needed for calibration are kept from the
   first decode (with a margin); if the final stable box does not fit them (or the cache would
   exceed `cache_mb`), the video is decoded a second time instead, so the result is always exact.

`extract_folder` runs this over a tree of videos (resumable, atomic, parallel, logged).

Licence note: the 68-point predictor was trained on iBUG 300-W, whose licence excludes commercial use.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .calibration import BOX_SCALE, Calibration, calibrate_crops, crop_face, read_frames, stable_face_boxes
from .errors import LrnetError
from .landmarks import LANDMARK_SUFFIX, write_landmarks

PathLike = Union[str, "os.PathLike[str]"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MAX_JUMP = 0.5  # a face centre moving more than this x previous face size is another face
SIZE_CHANGE = (0.7, 1.3)  # accepted ratio of face size to the previous frame's
CACHE_MARGIN = 1.3  # cached region covers a box for a stable size up to this x the local face size


# ------------------------------------------------------------------------------------ models


def predictor_path() -> Path:
    """Path of the 68-point model inside ``face-recognition-models``, found without importing it.

    (Importing that package needs ``pkg_resources``, which recent setuptools no longer ships.)
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise LrnetError("the 68-point landmark model is missing: pip install face-recognition-models")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    for root in roots:
        candidate = Path(root) / "models" / PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise LrnetError(f"{roots[0]}: no models/{PREDICTOR_FILE} in face-recognition-models; reinstall it")


_MODELS: Dict[str, object] = {}


def _dlib_models():
    """(frontal face detector, 68-point predictor), loaded once per process."""
    if not _MODELS:
        try:
            import dlib
        except ImportError:
            raise LrnetError("dlib is not installed: pip install dlib-bin") from None
        _MODELS["detector"] = dlib.get_frontal_face_detector()
        _MODELS["predictor"] = dlib.shape_predictor(str(predictor_path()))
        _MODELS["rectangle"] = dlib.rectangle
    return _MODELS["detector"], _MODELS["predictor"], _MODELS["rectangle"]


# ------------------------------------------------------------------------------ data classes


@dataclass
class ExtractOptions:
    """Settings of the per-video extraction."""

    detect_every: int = 10  # run the face detector every N frames (1 = every frame)
    detect_width: int = 640  # the detector sees a copy whose longer side is at most this (px)
    upsample: int = 0  # dlib detector upsampling steps (1 finds faces half as large, 4x slower)
    max_frames: Optional[int] = None  # only the first N frames (None: all)
    cache_mb: int = 1024  # memory for face regions kept for calibration; beyond it, decode twice


@dataclass
class VideoStats:
    """Per-video statistics; times in seconds (stages overlap, so they need not add up to total)."""

    video: str
    frames: int = 0  # decoded frames
    width: int = 0
    height: int = 0
    fps: float = 0.0
    landmarked: int = 0  # frames with their own accepted landmarks
    reused: int = 0  # frames that reuse the previous landmarks (detection failed or rejected)
    skipped: int = 0  # leading frames before the first detection (not in the output)
    detector_runs: int = 0  # frames the face detector ran on
    detector_hits: int = 0  # ... and found a face
    rejected: int = 0  # landmark results rejected by the consistency rules (counted in reused)
    lk_rejected: int = 0  # calibration: points that took the detection (LK failure)
    decoded_twice: bool = False  # the calibration needed a second decode
    t_decode: float = 0.0
    t_detect: float = 0.0
    t_landmarks: float = 0.0
    t_calibration: float = 0.0
    t_total: float = 0.0
    error: str = ""

    def row(self) -> Dict[str, object]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        return out


@dataclass
class VideoLandmarks:
    """Extraction result: raw landmarks (frame pixels) from the first detected frame on, and calibration."""

    raw: np.ndarray  # (frames - skipped, 68, 2) int64
    calibration: Calibration
    stats: VideoStats

    @property
    def sequence(self) -> np.ndarray:
        """The calibrated, normalised ``(frames - skipped, 136)`` float32 sequence."""
        return self.calibration.sequence


# --------------------------------------------------------------------------------- decoding


class _Decoder:
    """Frames of a video decoded in a background thread, ``(index, BGR frame)``; times `cap.read`."""

    def __init__(self, path: Path, max_frames: Optional[int] = None, depth: int = 16):
        import cv2

        self.path = path
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            self.cap.release()
            raise LrnetError(f"{path}: cannot open as a video (unreadable or not a video file)")
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frame_count = max(0, int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))  # header value, may be off
        self.max_frames = max_frames
        self.seconds = 0.0
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrnet-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            n = 0
            while not self._stop.is_set() and (self.max_frames is None or n < self.max_frames):
                t = time.perf_counter()
                ok, frame = self.cap.read()
                self.seconds += time.perf_counter() - t
                if not ok:
                    break
                self._put(frame)
                n += 1
        except BaseException as exc:  # surfaced in the consumer
            self._put(exc)
        finally:
            self._put(None)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.cap.release()

    def __enter__(self) -> "_Decoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------ face geometry


def _bbox(shape: np.ndarray) -> Tuple[np.ndarray, float]:
    """(floored midpoint of the landmark bounding box, max(width, height)) of a (68, 2) shape."""
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    return np.floor((lo + hi) / 2), float((hi - lo).max())


def _consistent(prev: np.ndarray, new: np.ndarray) -> bool:
    """The consistency rule between two (68, 2) shapes of consecutive frames."""
    prev_size = float((prev.max(axis=0) - prev.min(axis=0)).max())
    new_size = float((new.max(axis=0) - new.min(axis=0)).max())
    jump = float(np.linalg.norm(new.mean(axis=0) - prev.mean(axis=0)))
    return (jump <= MAX_JUMP * prev_size
            and SIZE_CHANGE[0] * prev_size <= new_size <= SIZE_CHANGE[1] * prev_size)


@dataclass
class _BoxModel:
    """Where the detector puts its box relative to the landmarks it leads to, to mimic it later."""

    offset: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (box centre - landmark centre) / size
    scale: float = 1.0  # box side / landmark face size

    def learn(self, box: Tuple[float, float, float, float], shape: np.ndarray) -> None:
        lo, hi = shape.min(axis=0), shape.max(axis=0)
        size = max(float((hi - lo).max()), 1.0)
        centre = (np.array([box[0] + box[2], box[1] + box[3]]) / 2.0)
        self.offset = (centre - (lo + hi) / 2.0) / size
        self.scale = max(box[2] - box[0], box[3] - box[1]) / size

    def box_for(self, shape: np.ndarray) -> Tuple[float, float, float, float]:
        lo, hi = shape.min(axis=0), shape.max(axis=0)
        size = float((hi - lo).max())
        centre = (lo + hi) / 2.0 + self.offset * size
        half = self.scale * size / 2.0
        return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def _pick_face(rects, scale: float, prev: Optional[np.ndarray]) -> Optional[Tuple[float, float, float, float]]:
    """The largest detected face (in full-frame pixels), preferring faces near the tracked one."""
    boxes = [(r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale) for r in rects]
    if not boxes:
        return None
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    if prev is not None:
        centre, size = _bbox(prev)
        near = [b for b in boxes
                if np.hypot((b[0] + b[2]) / 2 - centre[0], (b[1] + b[3]) / 2 - centre[1]) <= MAX_JUMP * size]
        if near:
            boxes = near
    return max(boxes, key=area)


class _RegionCache:
    """Face regions kept from the first decode for calibration, with a margin; see module doc."""

    def __init__(self, width: int, height: int, budget_bytes: int):
        self.width, self.height = width, height
        self.budget = budget_bytes
        self.used = 0
        self.regions: List[Tuple[int, int, np.ndarray]] = []  # (x0, y0, pixels)
        self.enabled = budget_bytes > 0
        self._size_sum = 0.0

    def add(self, frame: np.ndarray, shape: np.ndarray) -> None:
        if not self.enabled:
            return
        centre, size = _bbox(shape)
        self._size_sum += size
        reference = max(size, self._size_sum / (len(self.regions) + 1))
        half = int(np.ceil(0.5 * BOX_SCALE * CACHE_MARGIN * reference)) + 3
        x0 = max(0, int(centre[0]) - half)
        y0 = max(0, int(centre[1]) - half)
        pixels = frame[y0:min(self.height, y0 + 2 * half + 2), x0:min(self.width, x0 + 2 * half + 2)].copy()
        self.used += pixels.nbytes
        if self.used > self.budget:
            self.enabled, self.regions = False, []
            return
        self.regions.append((x0, y0, pixels))

    def covers(self, boxes) -> bool:
        if not self.enabled or len(self.regions) != len(boxes):
            return False
        x0 = np.array([r[0] for r in self.regions])
        y0 = np.array([r[1] for r in self.regions])
        w = np.array([r[2].shape[1] for r in self.regions])
        h = np.array([r[2].shape[0] for r in self.regions])
        return bool(np.all((boxes.x1 >= x0) & (boxes.y1 >= y0)
                           & (boxes.x1 + boxes.side <= x0 + w) & (boxes.y1 + boxes.side <= y0 + h)))

    def crops(self, boxes) -> Iterator[np.ndarray]:
        for i, (x0, y0, pixels) in enumerate(self.regions):
            yield crop_face(pixels, int(boxes.x1[i]) - x0, int(boxes.y1[i]) - y0, int(boxes.side[i]))


# ------------------------------------------------------------------------------ per video


ProgressFn = Callable[[str, float], None]  # (stage, fraction done in [0, 1])


def extract_video(path: PathLike, options: Optional[ExtractOptions] = None, calibrate: bool = True,
                  progress: Optional[ProgressFn] = None) -> VideoLandmarks:
    """Raw and calibrated landmarks of the single (largest) face in a video.

    Raises `LrnetError` naming the video when it cannot be decoded or shows no face. The result
    covers the frames from the first detection on (``stats.skipped`` leading frames are dropped).
    `progress(stage, fraction)` is called with stages "landmarks" (decode + landmarks, about every
    25 frames) and "calibration" (0 and 1).
    """
    import cv2

    options = options or ExtractOptions()
    if options.detect_every < 1:
        raise ValueError("detect_every must be at least 1")
    path = Path(path)
    if not path.is_file():
        raise LrnetError(f"{path}: no such video file")
    detector, predictor, rectangle = _dlib_models()
    started = time.perf_counter()
    stats = VideoStats(video=str(path))
    shapes: List[np.ndarray] = []
    with _Decoder(path, options.max_frames) as decoder:
        stats.width, stats.height, stats.fps = decoder.width, decoder.height, decoder.fps
        scale = min(1.0, options.detect_width / max(decoder.width, decoder.height, 1))
        cache = _RegionCache(decoder.width, decoder.height, options.cache_mb << 20)
        box_model = _BoxModel()
        prev: Optional[np.ndarray] = None  # last accepted shape
        since_detect = options.detect_every  # forces a detection on the first frame
        expected = decoder.frame_count if options.max_frames is None else min(decoder.frame_count, options.max_frames)
        for frame in decoder:
            stats.frames += 1
            if progress is not None and stats.frames % 25 == 0:
                progress("landmarks", min(1.0, stats.frames / expected) if expected else 0.0)
            t0 = time.perf_counter()
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            box = None
            detected = False
            if prev is None or since_detect >= options.detect_every:
                small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale,
                                                            interpolation=cv2.INTER_AREA)
                rects = detector(small, options.upsample)
                stats.detector_runs += 1
                box = _pick_face(rects, scale, prev)
                if box is not None:
                    stats.detector_hits += 1
                    detected = True
                    since_detect = 0
            else:
                box = box_model.box_for(prev)
            t1 = time.perf_counter()
            stats.t_detect += t1 - t0
            shape = None
            if box is not None:
                rect = rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
                part = predictor(gray, rect)
                shape = np.array([(p.x, p.y) for p in part.parts()], dtype=np.int64)
                if detected:
                    box_model.learn(box, shape)
            stats.t_landmarks += time.perf_counter() - t1
            since_detect += 1
            if shape is not None and prev is not None and not _consistent(prev, shape):
                stats.rejected += 1
                shape = None
                since_detect = options.detect_every  # tracking lost: detect again next frame
            if shape is None:
                if prev is None:
                    stats.skipped += 1
                    continue
                shape = prev
                stats.reused += 1
                if box is None:
                    since_detect = options.detect_every  # detection failed: retry next frame
            else:
                stats.landmarked += 1
            shapes.append(shape)
            prev = shape
            cache.add(frame, shape)
        stats.t_decode = decoder.seconds
    if stats.frames == 0:
        raise LrnetError(f"{path}: no frame could be decoded (unreadable or not a video file)")
    if not shapes:
        raise LrnetError(f"{path}: no face found in {stats.frames} frames")
    raw = np.stack(shapes)
    calibration = None
    if progress is not None:
        progress("landmarks", 1.0)
    if calibrate:
        if progress is not None:
            progress("calibration", 0.0)
        t = time.perf_counter()
        calibration = _calibrate_extracted(path, raw, stats, cache, options)
        stats.t_calibration = time.perf_counter() - t
        stats.lk_rejected = calibration.lk_rejected
        if progress is not None:
            progress("calibration", 1.0)
    stats.t_total = time.perf_counter() - started
    return VideoLandmarks(raw, calibration, stats)


def _calibrate_extracted(path: Path, raw: np.ndarray, stats: VideoStats, cache: _RegionCache,
                         options: ExtractOptions) -> Calibration:
    boxes = stable_face_boxes(raw, stats.width, stats.height)
    if cache.covers(boxes):
        crops = _prefetch(cache.crops(boxes))
    else:
        stats.decoded_twice = True
        frames = read_frames(path)

        def from_first() -> Iterator[np.ndarray]:
            for i, frame in enumerate(frames):
                if i >= stats.skipped + len(raw):
                    break
                if i >= stats.skipped:
                    j = i - stats.skipped
                    yield crop_face(frame, int(boxes.x1[j]), int(boxes.y1[j]), int(boxes.side[j]))

        crops = _prefetch(from_first())
    return calibrate_crops(crops, raw, boxes)


def _prefetch(items: Iterator[np.ndarray], depth: int = 8) -> Iterator[np.ndarray]:
    """Produce `items` in a background thread (cv2 releases the GIL: resizing overlaps tracking)."""
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:
            q.put(exc)
        q.put(None)

    thread = threading.Thread(target=run, name="lrnet-crop", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
