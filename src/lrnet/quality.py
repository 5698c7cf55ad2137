"""A quality gate: is this footage inside the range the weights were trained on?

LRNet's weights learned from landmark sequences of sizeable, lightly compressed faces. Far outside
that range (a 240p copy at CRF 45, a face a few dozen pixels tall) the landmarks are noisy and the
weights still answer with confidence, so a confident call there means nothing. This module measures
what the extractor already has and compares it with a per-weights range (`QUALITY_RANGES`):

- ``face_px``: face height in pixels, the median over frames of the landmark box height
  (brows to chin, ``max y - min y`` of the 68 raw points): about 0.8 x a face detector's box;
- ``landmarked_share``: the share of the frames looked at (after resampling) whose face got
  landmarks of its own (not reused, not lost);
- ``jitter``: how much the landmarks shake, as a fraction of the face height per frame: between
  consecutive frames of one segment, the stable points (nose bridge and the four eye corners, which
  move with the skull) are aligned by the least-squares similarity (scale, rotation, shift: the head's
  global motion is removed); the RMS residual over the points, divided by the face height, is
  taken per frame pair and the median over pairs reported. Pairs with identical points (a reused
  frame) are left out;
- ``bits_per_pixel``: compression strength, the video stream's mean bits per pixel per frame
  (packet sizes from the container via PyAV, no decoding; audio excluded).

Why bits per pixel for compression. Measured on 6-s copies of ff_real.mp4 made with ffmpeg
(libx264, preset veryfast): at 720p CRF 23 / 35 / 45 it gives 0.024 / 0.0050 / 0.0021, at 480p
CRF 23 / 35 0.027 / 0.0061, 360p CRF 23 0.033, 240p CRF 23 / 45 0.040 / 0.0041; the original
0.041 and dfo_real.mp4 0.028. It separates every CRF level at every size by a factor of four or
more. A blockiness ratio on face crops (mean luminance step across 8-px block borders over the
step inside blocks) only separated CRF 45 (1.4-1.6 against 1.03-1.14, CRF 35 at 1.10-1.11
inside the spread), and a detail measure (mean |Laplacian| / std on a 96-px face crop) mixed
compression with face size (240p CRF 23 at 0.184, 720p CRF 45 at 0.172). Bits per pixel depends
on the codec (a newer codec needs fewer bits for the same quality), so the floor is set low.

Measured (extracted at 25 fps; face px / landmarked share / jitter / bits per pixel):

=================  =====  =====  ======  ======  =========================
video              face   share  jitter  bits    gate (any weights)
=================  =====  =====  ======  ======  =========================
ff_real.mp4        197    1.00   0.0034  0.039   ok
ff_fake.mp4        197    1.00   0.0041  0.043   ok
dfo_real.mp4       107    1.00   0.0053  0.028   ok
dfo_fake.mp4       268    1.00   0.0031  0.041   ok
ff_real 720p c23   195    1.00   0.0034  0.024   ok
ff_real 720p c35   196    1.00   0.0036  0.0050  compression
ff_real 720p c45   196    1.00   0.0044  0.0021  compression
ff_real 480p c23   130    1.00   0.0046  0.027   ok
ff_real 480p c35   130    1.00   0.0047  0.0061  compression
ff_real 360p c23    98    1.00   0.0055  0.033   ok
ff_real 240p c23    65    1.00   0.0083  0.040   face size
ff_real 240p c45    64    0.75   0.0090  0.0041  face size, compression
=================  =====  =====  ======  ======  =========================

(copies: the first 6 s of ff_real.mp4.) The official weights' verdicts on those copies agree
that the strongly compressed ones are outside their range: ffpp-raw gives 720p CRF 45 ``uncertain``
(0.80), 480p CRF 35 ``uncertain`` (0.40) and 240p CRF 45 ``fake`` (1.00); dfo gives 240p CRF 45
``uncertain`` (1.00); both still call 720p CRF 35 and 240p CRF 23 ``real``, so those two limits
are the training range rather than the point where these clips break.

Outside the range the verdict becomes ``uncertain`` with the reasons (`apply_quality`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .errors import LrnetError
from .video import bits_per_pixel  # noqa: F401  (re-exported: measured from the video packets)
from .vocab import PathLike

if TYPE_CHECKING:
    from .extract import VideoLandmarks

__all__ = ["DEFAULT_RANGE", "QUALITY_RANGES", "STABLE_POINTS", "QualityRange", "QualityReport", "apply_quality",
           "assess", "bits_per_pixel", "face_height_px", "landmark_jitter", "landmarked_share", "measure",
           "measure_landmarks", "quality_range"]


# 68-point indices that move rigidly with the skull: nose bridge 27-30, eye corners 36, 39, 42, 45
STABLE_POINTS = (27, 28, 29, 30, 36, 39, 42, 45)


@dataclass(frozen=True)
class QualityRange:
    """Footage a set of weights can judge. ``max_jitter``: fraction of the face height per frame;
    ``min_bits_per_pixel``: bits per pixel per frame of the video stream."""

    min_face_px: float
    min_landmarked_share: float
    max_jitter: float
    min_bits_per_pixel: float
    basis: str  # where the limits come from

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# Training data, per the papers: FF++ (Roessler et al. 2019) sources are YouTube videos of at least
# 480p with a frontal face, raw (c0) here; DeeperForensics-1.0 (Jiang et al. 2020) source videos
# are 1080p studio recordings, lightly compressed. Faces there are about 100-400 px tall (detector
# box), i.e. about 80 px and up as a landmark box. The jitter and bits limits sit at about 2.5 x
# and 1 / 2.5 x of what the sample videos of both sets measure (jitter 0.0035-0.005, bits
# 0.028-0.04 per pixel), clear of 480p CRF 23 copies (0.0046, 0.027) and catching CRF 35 and worse.
_LIMITS = dict(min_face_px=80.0, min_landmarked_share=0.5, max_jitter=0.012, min_bits_per_pixel=0.01)
QUALITY_RANGES: Dict[str, QualityRange] = {
    "ffpp-raw": QualityRange(**_LIMITS, basis="FaceForensics++ raw: >= 480p YouTube videos, faces about "
                                              "100-400 px tall, uncompressed"),
    "dfo": QualityRange(**_LIMITS, basis="DeeperForensics-1.0: 1080p recordings (and >= 480p copies), faces about "
                                         "100-400 px tall, light compression"),
}
DEFAULT_RANGE = QualityRange(**_LIMITS, basis="unknown weights: the limits of the official weights")


def quality_range(weights: "str | Mapping[str, Any] | None" = None) -> QualityRange:
    """The range of `weights`: a pretrained name (``"dfo"``), a model card (its ``"quality"`` entry
    when present, else its name's first word, e.g. ``"ffpp-raw (copy in ...)"``), or None.
    Unknown weights get `DEFAULT_RANGE`."""
    if weights is None:
        return DEFAULT_RANGE
    if isinstance(weights, Mapping):
        own = weights.get("quality")
        if isinstance(own, Mapping):
            try:
                return QualityRange(**{**DEFAULT_RANGE.to_dict(), "basis": "the model card", **own})
            except TypeError as exc:
                raise LrnetError(f"model card {weights.get('name', '?')}: invalid \"quality\" entry ({exc})") from None
        name = str(weights.get("name", "")).split(" ")[0]
    else:
        name = str(weights).removeprefix("pretrained:")
    return QUALITY_RANGES.get(name, DEFAULT_RANGE)


# ------------------------------------------------------------------------------------ measures


def _check_raw(raw) -> np.ndarray:
    pts = np.asarray(raw, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ValueError(f"raw landmarks must be (frames, 68, 2), not {pts.shape}")
    return pts


def _heights(pts: np.ndarray) -> np.ndarray:
    return pts[:, :, 1].max(axis=1) - pts[:, :, 1].min(axis=1)


def face_height_px(raw) -> float:
    """Median landmark box height (px) of ``(frames, 68, 2)`` raw landmarks; NaN without frames."""
    pts = _check_raw(raw)
    return float(np.median(_heights(pts))) if len(pts) else math.nan


def landmarked_share(landmarked: int, selected: int) -> float:
    """Frames with their own landmarks / frames looked at (`VideoStats` ``landmarked`` / ``selected``)."""
    if selected < 0 or not 0 <= landmarked <= max(selected, 0):
        raise ValueError(f"need 0 <= landmarked <= selected, not {landmarked} of {selected}")
    return landmarked / selected if selected else math.nan


def landmark_jitter(raw, segment=None) -> float:
    """Median non-rigid frame-to-frame motion of the stable points, as a fraction of the face height.

    ``raw``: ``(frames, 68, 2)`` landmarks in pixels, in time order; ``segment``: optional
    ``(frames,)`` segment index of each row (pairs across segments are skipped). For each pair of
    consecutive rows the similarity transform that best maps the first row's `STABLE_POINTS` onto
    the second's is removed (complex least squares: ``z1 ~ a z0 + b``); the RMS of what remains,
    over the face height (mean of both rows), is the pair's jitter. NaN when no pair qualifies.
    """
    pts = _check_raw(raw)
    z = pts[:, STABLE_POINTS, 0] + 1j * pts[:, STABLE_POINTS, 1]  # (frames, 8)
    z0, z1 = z[:-1], z[1:]
    keep = ~np.all(z0 == z1, axis=1)  # identical points: a reused frame, not a measurement
    if segment is not None:
        seg = np.asarray(segment)
        if seg.shape != (len(pts),):
            raise ValueError(f"segment must be ({len(pts)},), not {seg.shape}")
        keep &= seg[1:] == seg[:-1]
    z0 = z0[keep] - z0[keep].mean(axis=1, keepdims=True)
    z1 = z1[keep] - z1[keep].mean(axis=1, keepdims=True)
    spread = (np.abs(z0) ** 2).sum(axis=1)
    h = _heights(pts)
    height = ((h[:-1] + h[1:]) / 2)[keep]
    ok = (spread > 0) & (height > 0)
    if not ok.any():
        return math.nan
    a = (np.conj(z0[ok]) * z1[ok]).sum(axis=1) / spread[ok]  # scale and rotation; the shift is the centring
    residual = np.sqrt((np.abs(z1[ok] - a[:, None] * z0[ok]) ** 2).mean(axis=1))
    return float(np.median(residual / height[ok]))


def measure(raw, landmarked: int, selected: int, bits: Optional[float] = None,
            segment=None) -> Dict[str, Optional[float]]:
    """All measures of one face: ``face_px``, ``landmarked_share``, ``jitter``, ``bits_per_pixel``
    (None when not given). Arguments as `face_height_px`, `landmarked_share`, `landmark_jitter`."""
    return {"face_px": face_height_px(raw), "landmarked_share": landmarked_share(landmarked, selected),
            "jitter": landmark_jitter(raw, segment), "bits_per_pixel": bits}


def measure_landmarks(landmarks: "VideoLandmarks", video: Optional[PathLike] = None) -> Dict[str, Optional[float]]:
    """`measure` of an extraction result (`lrnet.extract.VideoLandmarks`): its raw landmarks, segments
    and counts; ``bits_per_pixel`` from `video` when given (None otherwise)."""
    from .segments import segment_of_rows

    stats = landmarks.stats
    bits = bits_per_pixel(video) if video is not None else None
    return measure(landmarks.raw, stats.landmarked, stats.selected, bits, segment_of_rows(landmarks.segments))


# ------------------------------------------------------------------------------------ verdicts


@dataclass
class QualityReport:
    """``ok``: every measure inside the range; ``reasons``: one plain sentence per measure outside it;
    ``measures``: as `measure`; ``unmeasured``: measures that were missing or NaN (not judged)."""

    ok: bool
    reasons: List[str]
    measures: Dict[str, Optional[float]]
    unmeasured: List[str] = field(default_factory=list)
    basis: str = ""

    def to_dict(self) -> Dict[str, object]:
        return {"ok": self.ok, "reasons": list(self.reasons), "unmeasured": list(self.unmeasured),
                "measures": {k: None if v is None or v != v else round(float(v), 6) for k, v in self.measures.items()},
                "basis": self.basis}


def _known(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def assess(measures: Mapping[str, Optional[float]],
           weights: "str | Mapping[str, Any] | QualityRange | None" = None) -> QualityReport:
    """Compare `measures` (from `measure`) with the range of `weights` (see `quality_range`)."""
    limits = weights if isinstance(weights, QualityRange) else quality_range(weights)
    checks = {
        "face_px": lambda v: None if v >= limits.min_face_px else
        f"face {v:.0f} px tall; the weights saw {limits.min_face_px:.0f} px and up",
        "landmarked_share": lambda v: None if v >= limits.min_landmarked_share else
        f"a face was landmarked in {v:.0%} of the frames; the weights need {limits.min_landmarked_share:.0%} and up",
        "jitter": lambda v: None if v <= limits.max_jitter else
        f"landmarks jitter by {v:.1%} of the face height per frame; the weights saw up to {limits.max_jitter:.1%}",
        "bits_per_pixel": lambda v: None if v >= limits.min_bits_per_pixel else
        f"heavy compression: {v:.4f} bits per pixel per frame; the weights saw {limits.min_bits_per_pixel:g} and up",
    }
    reasons: List[str] = []
    unmeasured: List[str] = []
    for key, check in checks.items():
        value = measures.get(key)
        if not _known(value):
            unmeasured.append(key)
            continue
        reason = check(float(value))  # type: ignore[arg-type]
        if reason:
            reasons.append(reason)
    return QualityReport(not reasons, reasons, dict(measures), unmeasured, limits.basis)


def apply_quality(verdict: str, report: QualityReport) -> Tuple[str, List[str]]:
    """The verdict after the gate and the reasons: a call ("fake", "real") on footage outside the range
    becomes "uncertain"; "uncertain" and "n/a" stay. Reasons are empty when the report is ok."""
    if report.ok:
        return verdict, []
    return ("uncertain" if verdict in ("fake", "real") else verdict), list(report.reasons)
