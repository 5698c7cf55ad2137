"""H.264 copies of videos the way FaceForensics++ made its c23/c40 levels, plus named degradations.

FF++ compressed its raw videos with libx264 at a constant rate factor (c23: ``-crf 23``, c40:
``-crf 40``), same frame rate and size, yuv420p. `degrade_video` does that for one video with
PyAV (whose wheels carry libx264; no system ffmpeg), and optionally degrades it for robustness
studies, in this order: ``scale`` (new height in px, width keeps the aspect ratio, both even),
``blur`` (Gaussian, sigma in px of the output), ``noise`` (additive Gaussian, sigma in 8-bit
levels, seeded by the file name and frame index: the same call gives the same bytes), ``fps``
(frames dropped or repeated on a constant-rate timeline). ``crf=None`` encodes losslessly
(crf 0, as FF++'s ``raw``). Audio is not copied. Decoding and the atomic H.264 write are
`lrnet.video`'s (`open_av`, `write_h264`); this module holds what is done to the pictures.

`compress_folder` runs it over a tree (`lrnet compress`): resumable, locked, logged, local or on
Dask (`lrnet.batch.run_jobs`); ``layout="ffpp"`` reads ``<subset>/raw/videos`` of the FF++ video
tree and writes ``<subset>/c<crf>/videos`` beside it, so ``lrnet extract --layout ffpp`` then builds
every level.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

import numpy as np

from . import ffpp
from .batch import DISK_ERRNOS, FolderSummary, Job, Outcome, flat_jobs, refuse_overlap, run_jobs
from .errors import LrnetError
from .video import open_av, write_h264
from .vocab import VIDEO_SUFFIXES, PathLike

__all__ = ["MAX_CRF", "LOG_FIELDS", "Degradation", "degrade_video", "compress_folder", "ffpp_compress_jobs"]

log = logging.getLogger(__name__)

MAX_CRF = 51  # libx264's 8-bit range is 0 (lossless) .. 51
LOG_FIELDS = ["video", "frames", "width", "height", "fps", "crf", "bytes", "seconds", "error"]


@dataclass(frozen=True)
class Degradation:
    """What `degrade_video` does to a video; None leaves that property as it is."""

    crf: Optional[int] = None  # libx264 constant rate factor 0..51 (None: 0, lossless)
    scale: Optional[int] = None  # output height in px (width follows the aspect ratio; both even)
    fps: Optional[float] = None  # output frame rate
    blur: Optional[float] = None  # Gaussian blur sigma, px
    noise: Optional[float] = None  # Gaussian noise sigma, 8-bit levels

    def check(self) -> "Degradation":
        if self.crf is not None and not (isinstance(self.crf, (int, np.integer)) and 0 <= self.crf <= MAX_CRF):
            raise LrnetError(f"crf must be an integer 0..{MAX_CRF}, got {self.crf!r}")
        for name in ("scale", "fps", "blur", "noise"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise LrnetError(f"{name} must be a positive number, got {value!r}")
        if self.scale is not None and self.scale < 2:
            raise LrnetError(f"scale must be at least 2 px, got {self.scale}")
        return self


def degrade_video(src: PathLike, dst: PathLike, *, crf: Optional[int] = None, scale: Optional[int] = None,
                  fps: Optional[float] = None, blur: Optional[float] = None,
                  noise: Optional[float] = None) -> Path:
    """Write an H.264 (yuv420p) copy of `src` to `dst`, atomically, degraded as asked; returns `dst`.

    See the module doc for the meaning and order of the settings. The container follows `dst`'s
    suffix (.mp4, .mov, .mkv, .avi; others get MP4). Raises `LrnetError` naming `src` when it is
    missing, has no video stream or cannot be decoded.
    """
    return _encode(Path(src), Path(dst), Degradation(crf, scale, fps, blur, noise).check(), threads=0).path


@dataclass
class _Encoded:
    path: Path
    frames: int
    width: int
    height: int
    fps: float


def _out_size(width: int, height: int, scale: Optional[int]) -> tuple:
    """(width, height) of the output: even numbers (yuv420p halves the chroma planes)."""
    if scale is None:
        return width - width % 2, height - height % 2
    new_h = int(scale) - int(scale) % 2
    return max(2, int(round(width * new_h / height / 2)) * 2), new_h


def _frame_repeats(index: int, rate_in: Fraction, rate_out: Fraction) -> int:
    """How many output frames input frame `index` becomes on a constant-rate timeline (0, 1 or more)."""
    first = -(-index * rate_out // rate_in)  # ceil
    after = -(-(index + 1) * rate_out // rate_in)
    return int(after - first)


def _degraded(pictures: Iterable[np.ndarray], settings: Degradation, seed: int) -> Iterator[np.ndarray]:
    """``(H, W, 3)`` uint8 RGB pictures blurred and noised as `settings` say (scaling is the decoder's)."""
    import cv2

    for i, img in enumerate(pictures):
        if settings.blur:
            img = cv2.GaussianBlur(img, (0, 0), settings.blur)
        if settings.noise:
            rng = np.random.default_rng([seed, i])
            noisy = img.astype(np.float32) + rng.normal(0.0, settings.noise, img.shape).astype(np.float32)
            img = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        yield img


def _retimed(pictures: Iterable[np.ndarray], rate_in: Fraction, rate_out: Fraction) -> Iterator[np.ndarray]:
    """Each picture as many times as `_frame_repeats` says (constant-rate re-timing)."""
    for i, img in enumerate(pictures):
        for _ in range(_frame_repeats(i, rate_in, rate_out)):
            yield img


def _encode(src: Path, dst: Path, settings: Degradation, threads: int) -> _Encoded:
    with open_av(src) as video:
        rate_in = video.rate
        rate_out = Fraction(settings.fps).limit_denominator(1001) if settings.fps else rate_in
        size = _out_size(*video.size, settings.scale)
        pictures = _degraded(video.rgb_frames(size), settings, zlib.crc32(src.name.encode()))
        written = write_h264(dst, _retimed(pictures, rate_in, rate_out), rate_out, size, crf=settings.crf or 0,
                             source=src, threads=threads)
    return _Encoded(dst, written, size[0], size[1], float(rate_out))


# --------------------------------------------------------------------------------------- folder job


def _compress_one(job: Job, settings: Degradation) -> Outcome:
    """Task: re-encode one video (single-threaded encoder: one process per core)."""
    started = time.perf_counter()
    try:
        done = _encode(job.video, job.output, settings, threads=1)
    except LrnetError as exc:
        return Outcome({"video": str(job.video), "crf": settings.crf, "error": str(exc)}, 0, str(exc))
    except OSError as exc:
        message = f"{job.output}: cannot write ({exc.strerror or exc})"
        return Outcome({"video": str(job.video), "error": message}, 0, message, exc.errno in DISK_ERRNOS)
    row = {"video": str(job.video), "frames": done.frames, "width": done.width, "height": done.height,
           "fps": round(done.fps, 4), "crf": settings.crf, "bytes": job.output.stat().st_size,
           "seconds": round(time.perf_counter() - started, 3), "error": ""}
    return Outcome(row, done.frames)


def ffpp_compress_jobs(input_dir: Path, output_dir: Path, level: str, source_level: str = "raw") -> List[Job]:
    """Jobs from ``<subset>/<source_level>/videos`` to ``<subset>/<level>/videos/<stem>.mp4`` (FF++ tree)."""
    jobs = []
    for subset in ffpp.SUBSETS:
        folder = ffpp.video_dir(input_dir, subset, source_level)
        if folder.is_dir():
            target = ffpp.video_dir(output_dir, subset, level)
            jobs += [Job(v, target / f"{v.stem}.mp4") for v in sorted(folder.iterdir())
                     if v.is_file() and v.suffix.lower() in VIDEO_SUFFIXES]
    if not jobs:
        raise LrnetError(f"{input_dir}: no FF++ videos at level {source_level!r} (expected "
                         f"{ffpp.ORIGINAL_DIR}/{source_level}/videos or "
                         f"{ffpp.MANIPULATED_DIR}/<method>/{source_level}/videos)")
    return jobs


def compress_folder(input_dir: PathLike, output_dir: PathLike, *, crf: Optional[int] = 23,
                    scale: Optional[int] = None, fps: Optional[float] = None, blur: Optional[float] = None,
                    noise: Optional[float] = None, layout: str = "flat", source_level: str = "raw",
                    workers: int = 1, scheduler: Optional[str] = None, retries: int = 2,
                    log_path: Optional[PathLike] = None, progress: bool = True,
                    overwrite: bool = False) -> FolderSummary:
    """Re-encode every video under `input_dir` into `output_dir` (`lrnet compress`).

    "flat": ``in/a/b.avi -> out/a/b.mp4``. "ffpp": the FF++ tree, `source_level` to ``c<crf>``
    (only `crf` may be given; `output_dir` may be `input_dir`). The log defaults to
    ``OUTPUT_DIR/compress_log.csv``; the rest as `lrnet.batch.run_jobs`.
    """
    settings = Degradation(crf, scale, fps, blur, noise).check()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise LrnetError(f"{input_dir}: input folder not found")
    if layout == "ffpp":
        if any(v is not None for v in (scale, fps, blur, noise)):
            raise LrnetError("--layout ffpp writes FF++ compression levels: give only --crf (no --scale, --fps, "
                             "--blur, --noise)")
        level = ffpp.level_for_crf(crf)
        if level == source_level:
            raise LrnetError(f"--layout ffpp: crf {crf} is level {level!r}, the level it reads; choose --crf > 0")
        jobs = ffpp_compress_jobs(input_dir, output_dir, level, source_level)
        refuse_overlap(input_dir, output_dir, jobs, reread=False, same_root=True)
    elif layout == "flat":
        jobs = flat_jobs(input_dir, output_dir, ".mp4")
        if not jobs:
            raise LrnetError(f"{input_dir}: no video files ({', '.join(VIDEO_SUFFIXES[:4])} ...) found")
        refuse_overlap(input_dir, output_dir, jobs, reread=True)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return run_jobs(jobs, _compress_one, settings, command="compress", output_dir=output_dir, log_path=log_path,
                    log_fields=LOG_FIELDS, workers=workers, scheduler=scheduler, retries=retries,
                    progress=progress, overwrite=overwrite)
