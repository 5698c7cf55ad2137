"""Deterministic synthetic landmark sequences in the FF++ landmark layout (the built-in default dataset).

Real FF++ landmarks cannot be bundled, so `generate_ffpp` writes a stand-in with the same layout and
file format: ``ROOT/Origin/LEVEL/SPLIT/NNN.txt`` (real) and ``ROOT/MANIP/LEVEL/SPLIT/NNN_MMM.txt``
(fake: target video NNN driven by source MMM, as FF++ names them), plus a marker file
(`MARKER_NAME`) that says the data is synthetic.

Each video is a plausible 68-point face (iBUG layout: jaw 0-16, brows 17-26, nose 27-35, eyes
36-47, mouth 48-67) in the normalised coordinates of the published files (a 400 x 400 px face crop
mapped by ``(p - 200) / 200``, values in [-1, 1], quantised to whole pixels as a detector gives
them). A 3-D template with a per-identity shape is posed every frame by a smooth head motion
(yaw, pitch, roll, translation, scale), animated by blinks and mouth movement, projected, and
disturbed by detector noise (white jitter plus a slow per-point drift).

A fake video shares its target's motion, blinks and length (as a face swap or reenactment keeps
the target clip) but carries the artifact LRNet looks for in the inner face (brows, nose, eyes,
mouth: how much of each depends on the manipulation), relative to the face contour: a rough
frame-to-frame wobble per region (AR(1)), a slow float of the whole inner face, and an inner face
rendered slightly too small. The amplitude is ``difficulty`` times the detector noise, varied per
video and switched on and off over time, so block-level accuracy stays below 100 % and training
has something to learn (at "medium", a few hundred training steps take g2 to about 0.9 block
accuracy and g1, which must learn the differences itself, to about 0.7). Everything is vectorised over frames and points and
seeded through `numpy.random.Generator`: the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import ffpp
from .atomic import atomic_write_text
from .errors import LrnetError
from .landmarks import FEATURE_SIZE, NUM_POINTS, write_landmarks
from .parallel import map_in_processes
from .vocab import PathLike


MARKER_NAME = "SYNTHETIC_LRNET.json"
GENERATOR_VERSION = 2
FPS = 30.0
FFPP_SIZE = {"train": 720, "val": 140, "test": 140}  # videos per split in FaceForensics++
FFPP_FRAMES = (300, 700)

# Artifact amplitude in units of the detector's white-noise std, per named difficulty. "medium" is
# what a short LRNet run (a few hundred steps) learns to separate on both branches; "hard" needs
# much longer training, like the real FF++ data.
DIFFICULTY = {"easy": 10.0, "medium": 6.0, "hard": 3.0}
# Detector noise grows with compression (more blur, less stable landmarks).
LEVEL_NOISE = {"raw": 1.0, "c23": 1.3, "c40": 2.0}
PIXEL = 1.0 / 200.0  # one pixel of the 400-px crop in normalised units
NOISE_STD = 1.0 * PIXEL  # white detector jitter on raw video

# Point groups of the iBUG 68 layout.
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
EYES = np.arange(36, 48)
MOUTH = np.arange(48, 68)
INNER = np.arange(17, 68)
REGIONS = {"brows": BROWS, "nose": NOSE, "eyes": EYES, "mouth": MOUTH}
# Relative artifact weight per region for each manipulation: swaps (DF, FS) disturb the whole inner
# face; reenactments (F2F, NT) mostly the expressive parts.
MANIPULATION_REGIONS = {
    "DF": {"brows": 1.0, "nose": 1.0, "eyes": 1.0, "mouth": 1.0},
    "FS": {"brows": 1.0, "nose": 0.8, "eyes": 1.0, "mouth": 0.8},
    "F2F": {"brows": 0.6, "nose": 0.3, "eyes": 0.8, "mouth": 1.3},
    "NT": {"brows": 0.3, "nose": 0.3, "eyes": 0.6, "mouth": 1.5},
}


def _template() -> np.ndarray:
    """The mean 3-D face, ``(68, 3)`` (x right, y down, z towards the camera), normalised units."""
    pts = np.zeros((NUM_POINTS, 3))
    # Jaw: a U from the left ear level round the chin to the right, the sides set back in depth.
    a = np.linspace(np.pi, 0.0, 17)
    c = np.cos(a)
    pts[JAW, 0] = 0.81 * np.sign(c) * np.abs(c) ** 0.75
    pts[JAW, 1] = -0.47 + 1.30 * np.sin(a) ** 1.3
    pts[JAW, 2] = -0.45 * np.abs(c) ** 1.5
    # Brows: two arches.
    u = np.linspace(0.0, 1.0, 5)
    pts[17:22, 0] = np.linspace(-0.65, -0.22, 5)
    pts[22:27, 0] = np.linspace(0.22, 0.65, 5)
    arch = -0.69 - 0.09 * np.sin(np.pi * u)
    pts[17:22, 1] = arch
    pts[22:27, 1] = arch
    pts[17:27, 2] = 0.18 - 0.25 * np.abs(pts[17:27, 0])
    # Nose: bridge 27-30 coming forward, base 31-35.
    pts[27:31, 1] = np.linspace(-0.51, -0.13, 4)
    pts[27:31, 2] = np.linspace(0.22, 0.46, 4)
    pts[31:36, 0] = np.array([-0.14, -0.075, 0.0, 0.075, 0.14])
    pts[31:36, 1] = np.array([-0.03, -0.01, 0.0, -0.01, -0.03])
    pts[31:36, 2] = np.array([0.26, 0.31, 0.34, 0.31, 0.26])
    # Eyes: corner, two upper lid points, corner, two lower lid points (left to right on top).
    eye_dx = np.array([-0.135, -0.05, 0.05, 0.135, 0.05, -0.05])
    eye_dy = np.array([0.0, -0.045, -0.045, 0.0, 0.04, 0.04])
    for first, cx in ((36, -0.35), (42, 0.35)):
        pts[first:first + 6, 0] = cx + eye_dx
        pts[first:first + 6, 1] = -0.50 + eye_dy
        pts[first:first + 6, 2] = 0.12 - 0.2 * np.abs(eye_dx)
    # Mouth: outer lip 48-59 (left corner, upper lip, right corner, lower lip), inner lip 60-67.
    pts[48:60, 0] = [-0.27, -0.18, -0.07, 0.0, 0.07, 0.18, 0.27, 0.18, 0.09, 0.0, -0.09, -0.18]
    pts[48:60, 1] = [0.29, 0.20, 0.15, 0.17, 0.15, 0.20, 0.29, 0.40, 0.45, 0.46, 0.45, 0.40]
    pts[60:68, 0] = [-0.24, -0.09, 0.0, 0.09, 0.24, 0.09, 0.0, -0.09]
    pts[60:68, 1] = [0.29, 0.26, 0.26, 0.26, 0.29, 0.32, 0.33, 0.32]
    pts[48:68, 2] = 0.22 - 0.5 * pts[48:68, 0] ** 2
    return pts


TEMPLATE = _template()


def _fields() -> np.ndarray:
    """Expression displacement fields ``(3, 68, 3)``: blink (eyes close), mouth opening, smile."""
    f = np.zeros((3, NUM_POINTS, 3))
    # Blink: upper lids (37, 38, 43, 44) come down to the lower lids; lower lids rise a little.
    f[0, [37, 38, 43, 44], 1] = 0.075
    f[0, [40, 41, 46, 47], 1] = -0.01
    # Mouth opening: lower lip and inner lower lip drop, the chin follows partly.
    f[1, [55, 56, 57, 58, 59], 1] = 0.12
    f[1, [65, 66, 67], 1] = 0.13
    f[1, [61, 62, 63], 1] = -0.02
    f[1, [48, 54, 60, 64], 1] = 0.05
    f[1, JAW[5:12], 1] = 0.06 * np.sin(np.linspace(0.3, np.pi - 0.3, 7))
    # Smile: corners out and up.
    f[2, [48, 60], 0] = -0.04
    f[2, [54, 64], 0] = 0.04
    f[2, [48, 54, 60, 64], 1] = -0.03
    return f


FIELDS = _fields()


@dataclass(frozen=True)
class _Content:
    """What a clip shows, independent of detector noise and manipulation."""

    shape: np.ndarray  # (68, 3) identity template
    pose: np.ndarray  # (T, 7): yaw, pitch, roll (rad), tx, ty, log-scale, unused
    expression: np.ndarray  # (T, 3): blink closure, mouth opening, smile


def _smooth_signal(rng: np.random.Generator, t: np.ndarray, amplitude: float, n: int = 3,
                   fmin: float = 0.05, fmax: float = 0.6) -> np.ndarray:
    """A smooth random signal: a sum of `n` sinusoids with random frequencies (Hz) and phases. ``(T,)``."""
    freq = rng.uniform(fmin, fmax, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.3, 1.0, n)
    amp *= amplitude / np.sqrt((amp ** 2).sum() / 2)
    return np.sin(2 * np.pi * t[:, None] * freq / FPS + phase) @ amp


def _smoothed_noise(rng: np.random.Generator, shape: Tuple[int, ...], sigma_frames: float) -> np.ndarray:
    """Gaussian noise low-passed along axis 0 (two passes of a one-pole filter with time constant
    `sigma_frames`, started well before frame 0), rescaled to unit std. ``shape``."""
    from scipy.signal import lfilter  # imported here: scipy.signal is slow to import

    a = float(np.exp(-1.0 / sigma_frames))
    warm = int(5 * sigma_frames) + 1
    raw = rng.standard_normal((shape[0] + warm,) + tuple(shape[1:]))
    out = lfilter([1.0 - a], [1.0, -a], lfilter([1.0 - a], [1.0, -a], raw, axis=0), axis=0)[warm:]
    # Std of the filter's output for unit white noise: the energy of its impulse response.
    impulse = np.zeros(20 * warm)
    impulse[0] = 1.0
    gain = np.sqrt((lfilter([1.0 - a], [1.0, -a], lfilter([1.0 - a], [1.0, -a], impulse)) ** 2).sum())
    return out / gain


def _content(rng: np.random.Generator, frames: int) -> _Content:
    t = np.arange(frames, dtype=np.float64)
    # Identity: global proportions plus region and point offsets.
    shape = TEMPLATE.copy()
    shape[:, 0] *= rng.normal(1.0, 0.04)
    shape[:, 1] *= rng.normal(1.0, 0.04)
    for idx in REGIONS.values():
        shape[idx, :2] += rng.normal(0.0, 0.015, 2)
    shape[:, :2] += rng.normal(0.0, 0.006, (NUM_POINTS, 2))
    # Head motion.
    pose = np.zeros((frames, 7))
    pose[:, 0] = rng.normal(0, 0.06) + _smooth_signal(rng, t, rng.uniform(0.05, 0.22), fmax=1.0)
    pose[:, 1] = rng.normal(0, 0.04) + _smooth_signal(rng, t, rng.uniform(0.03, 0.12), fmax=1.0)
    pose[:, 2] = rng.normal(0, 0.03) + _smooth_signal(rng, t, rng.uniform(0.02, 0.08), fmax=1.0)
    pose[:, 3] = _smooth_signal(rng, t, 0.025, fmax=1.0)
    pose[:, 4] = _smooth_signal(rng, t, 0.025, fmax=1.0)
    pose[:, 5] = rng.normal(-0.02, 0.02) + _smooth_signal(rng, t, 0.02)
    # Blinks: Poisson events (about one every 3-5 s) convolved with a closing/opening profile.
    rate = rng.uniform(0.2, 0.35) / FPS
    events = (rng.random(frames) < rate).astype(np.float64)
    profile = np.array([0.3, 0.75, 1.0, 1.0, 0.8, 0.5, 0.25, 0.1])
    blink = np.minimum(np.convolve(events, profile)[:frames], 1.0)
    # Mouth: speech-like bursts (smoothed noise, rectified) under a slow talking envelope.
    talk = np.clip(0.6 + _smooth_signal(rng, t, 0.6, n=2, fmin=0.02, fmax=0.1), 0.0, 1.0)
    mouth = talk * np.maximum(0.0, _smoothed_noise(rng, (frames,), 2.5) * 0.7 + 0.2)
    smile = np.clip(_smooth_signal(rng, t, 0.5, n=2, fmin=0.02, fmax=0.15) + rng.normal(0, 0.3), 0.0, 1.0)
    expression = np.stack([blink, mouth, smile], axis=1)
    return _Content(shape=shape, pose=pose, expression=expression)


def _rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Per-frame rotation matrices ``(T, 3, 3)`` = Rz(roll) @ Rx(pitch) @ Ry(yaw)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    zero, one = np.zeros_like(yaw), np.ones_like(yaw)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rz @ rx @ ry


def _render(content: _Content, rng: np.random.Generator, noise_scale: float,
            artifact: Optional[Mapping[str, float]] = None, source_shape: Optional[np.ndarray] = None,
            strength: float = 0.0) -> np.ndarray:
    """Pose, animate, (optionally) manipulate and observe one clip. Returns ``(T, 136)`` float64.

    `artifact` maps region -> weight; `strength` is the artifact std in units of `NOISE_STD`.
    `source_shape` blends the source identity into the inner face (face swap).
    """
    frames = content.pose.shape[0]
    shape = content.shape
    if source_shape is not None:
        shape = shape.copy()
        shape[INNER] = 0.5 * shape[INNER] + 0.5 * source_shape[INNER]
    pts = shape[None] + np.tensordot(content.expression, FIELDS, axes=(1, 0))  # (T, 68, 3)
    if artifact:
        from scipy.signal import lfilter

        # Inner regions misaligned relative to the contour: a rough AR(1) offset per region (2-D
        # translation plus a small scale change), strongest in some segments of the clip, and a
        # slow float of the whole inner face (the swapped face not locked to the head).
        envelope = np.clip(0.6 + _smoothed_noise(rng, (frames,), 20.0) * 0.8, 0.0, 1.0)
        rho = 0.35
        sigma = strength * NOISE_STD * noise_scale ** 0.5
        drift = _smoothed_noise(rng, (frames, 2), 6.0) * (0.5 * sigma) * envelope[:, None]
        pts[:, INNER, :2] += drift[:, None, :]
        # The pasted inner face is rendered a little too small for the head (blending shrinks it).
        inner_centre = pts[:, INNER, :2].mean(axis=1, keepdims=True)
        pts[:, INNER, :2] -= (strength / 6.0 * 0.05) * (pts[:, INNER, :2] - inner_centre)
        for name, weight in artifact.items():
            idx = REGIONS[name]
            eps = rng.standard_normal((frames, 3))
            eps[0] /= np.sqrt(1 - rho ** 2)  # start in the stationary distribution
            walk = lfilter([np.sqrt(1 - rho ** 2)], [1.0, -rho], eps, axis=0)
            walk *= (sigma * weight) * envelope[:, None]
            centre = pts[:, idx, :2].mean(axis=1, keepdims=True)
            pts[:, idx, :2] += walk[:, None, :2] + walk[:, None, 2:3] * 4.0 * (pts[:, idx, :2] - centre)
    rot = _rotations(content.pose[:, 0], content.pose[:, 1], content.pose[:, 2])
    posed = pts @ rot[:, :2, :].transpose(0, 2, 1)  # (T, 68, 3) x (T, 3, 2): image x, y
    posed *= np.exp(content.pose[:, 5])[:, None, None]
    posed += content.pose[:, None, 3:5]
    # Detector: white jitter plus a slow per-point drift, then whole-pixel quantisation.
    posed += rng.normal(0.0, NOISE_STD * noise_scale, posed.shape)
    posed += _smoothed_noise(rng, posed.shape, 6.0) * (0.5 * PIXEL * noise_scale)
    out = np.round(np.clip(posed, -1.0, 1.0) / PIXEL) * PIXEL
    return out.reshape(frames, FEATURE_SIZE) + 0.0  # + 0.0 turns -0.0 into 0.0


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _difficulty_strength(difficulty: Union[str, float]) -> float:
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTY:
            raise LrnetError(f"unknown difficulty {difficulty!r}; expected one of {sorted(DIFFICULTY)} or a number")
        return DIFFICULTY[difficulty]
    value = float(difficulty)
    if not np.isfinite(value) or value < 0:
        raise LrnetError(f"difficulty must be a non-negative number, got {difficulty!r}")
    return value


_STREAM_CONTENT, _STREAM_REAL, _STREAM_FAKE, _STREAM_LENGTH = 0, 1, 2, 3


def video_frames(seed: int, video: int, frames: Tuple[int, int]) -> int:
    """The length of synthetic video `video` (the same for the real clip and every fake of it)."""
    lo, hi = frames
    return int(_rng(seed, _STREAM_LENGTH, video).integers(lo, hi + 1))


def real_video(seed: int, video: int, frames: int, level: str = "raw") -> np.ndarray:
    """Synthetic real clip number `video`: ``(frames, 136)`` float64 on the whole-pixel grid."""
    content = _content(_rng(seed, _STREAM_CONTENT, video), frames)
    return _render(content, _rng(seed, _STREAM_REAL, ffpp.LEVELS.index(level), video), LEVEL_NOISE[level])


def fake_video(seed: int, target: int, source: int, frames: int, manipulation: str = "DF", level: str = "raw",
               difficulty: Union[str, float] = "medium") -> np.ndarray:
    """Synthetic fake clip: target `target`'s motion and expressions, manipulated with `source`.

    Face swaps (DF, FS) blend the source identity into the inner face; reenactments (F2F, NT) keep
    the target identity. All carry the inner-face temporal artifact. ``(frames, 136)`` float64.
    """
    if manipulation not in MANIPULATION_REGIONS:
        raise LrnetError(f"unknown manipulation {manipulation!r}; expected one of {ffpp.FAKES}")
    content = _content(_rng(seed, _STREAM_CONTENT, target), frames)
    source_shape = None
    if manipulation in ("DF", "FS"):
        source_shape = _content(_rng(seed, _STREAM_CONTENT, source), 1).shape
    rng = _rng(seed, _STREAM_FAKE, ffpp.FAKES.index(manipulation), ffpp.LEVELS.index(level), target, source)
    strength = _difficulty_strength(difficulty) * float(np.exp(np.clip(rng.normal(0.0, 0.5), -1.0, 0.7)))
    return _render(content, rng, LEVEL_NOISE[level], artifact=MANIPULATION_REGIONS[manipulation],
                   source_shape=source_shape, strength=strength)


@dataclass(frozen=True)
class _Job:
    path: str
    seed: int
    target: int
    source: int  # -1 for a real video
    frames: int
    manipulation: str
    level: str
    difficulty: Union[str, float]


def _run_job(job: _Job) -> int:
    if job.source < 0:
        data = real_video(job.seed, job.target, job.frames, job.level)
    else:
        data = fake_video(job.seed, job.target, job.source, job.frames, job.manipulation, job.level, job.difficulty)
    write_landmarks(job.path, data)
    return job.frames


def split_videos(videos_per_split: Mapping[str, int]) -> Dict[str, List[Tuple[int, int]]]:
    """(target, source) pairs per split: ids numbered consecutively over splits in `lrnet.ffpp.SPLITS` order;
    each target's source is the next video of the same split (cyclically), as FF++ pairs videos."""
    out: Dict[str, List[Tuple[int, int]]] = {}
    start = 0
    for split in ffpp.SPLITS:
        n = int(videos_per_split.get(split, 0))
        if n < 0:
            raise LrnetError(f"videos per split must be >= 0, got {split}={n}")
        ids = list(range(start, start + n))
        out[split] = [(v, ids[(i + 1) % n]) for i, v in enumerate(ids)]
        start += n
    unknown = set(videos_per_split) - set(ffpp.SPLITS)
    if unknown:
        raise LrnetError(f"unknown split(s) {sorted(unknown)}; expected {ffpp.SPLITS}")
    return out


def generate_ffpp(root: PathLike, videos_per_split: Optional[Mapping[str, int]] = None,
                  manipulations: Sequence[str] = ("DF",), levels: Sequence[str] = ("raw",),
                  frames: Tuple[int, int] = (120, 240), seed: int = 0,
                  difficulty: Union[str, float] = "medium", workers: int = 0, progress: bool = False) -> Dict:
    """Write a synthetic dataset in the FF++ landmark layout under `root` and return its description.

    Writes ``root/Origin/LEVEL/SPLIT/NNN.txt`` and ``root/MANIP/LEVEL/SPLIT/NNN_MMM.txt`` for every
    level and manipulation, then the marker `MARKER_NAME` (a JSON description, ``"synthetic": true``).
    Frame counts are drawn uniformly from `frames` (inclusive) per video. `difficulty` is "easy",
    "medium", "hard" or the artifact std in units of detector noise. Files are written in `workers`
    processes (0: all CPUs when there are many files). Deterministic: same arguments, same bytes.
    """
    root = Path(root)
    videos_per_split = dict(videos_per_split if videos_per_split is not None else {"train": 40, "val": 10, "test": 10})
    for m in manipulations:
        if m not in ffpp.FAKES:
            raise LrnetError(f"unknown manipulation {m!r}; expected some of {ffpp.FAKES}")
    for lv in levels:
        if lv not in ffpp.LEVELS:
            raise LrnetError(f"unknown level {lv!r}; expected some of {ffpp.LEVELS}")
    lo, hi = (int(frames[0]), int(frames[1]))
    if not 1 <= lo <= hi:
        raise LrnetError(f"frame range must satisfy 1 <= LO <= HI, got {lo} {hi}")
    _difficulty_strength(difficulty)
    pairs = split_videos(videos_per_split)
    total = sum(len(p) for p in pairs.values())
    width = max(3, len(str(max(total - 1, 0))))
    jobs: List[_Job] = []
    for level in levels:
        for split, split_pairs in pairs.items():
            for target, source in split_pairs:
                n = video_frames(seed, target, (lo, hi))
                name = f"{target:0{width}d}"
                jobs.append(_Job(str(ffpp.landmark_dir(root, ffpp.REAL, level, split) / f"{name}.txt"), seed,
                                 target, -1, n, "", level, difficulty))
                for m in manipulations:
                    jobs.append(_Job(str(ffpp.landmark_dir(root, m, level, split) / f"{name}_{source:0{width}d}.txt"),
                                     seed, target, source, n, m, level, difficulty))
    for d in {Path(j.path).parent for j in jobs}:
        d.mkdir(parents=True, exist_ok=True)
    # Chunks of similar cost keep both the processes and the progress bar busy.
    for _ in map_in_processes(_run_job, jobs, workers, min_items=32, chunks_per_worker=4, max_chunk=16,
                              progress=progress, desc="generating", unit="video"):
        pass
    info = {
        "synthetic": True,
        "note": "SYNTHETIC landmark data generated by lrnet (lrnet.synthetic); not real FaceForensics++ videos.",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "videos_per_split": {s: int(videos_per_split.get(s, 0)) for s in ffpp.SPLITS},
        "manipulations": list(manipulations),
        "levels": list(levels),
        "frames": [lo, hi],
        "difficulty": difficulty,
        "files": len(jobs),
    }
    atomic_write_text(root / MARKER_NAME, json.dumps(info, indent=2) + "\n")
    return info


def synthetic_info(root: PathLike) -> Optional[Dict]:
    """The marker written by `generate_ffpp` under `root` (or a parent of it), or None for real data."""
    root = Path(root).resolve()
    for folder in (root, *root.parents):
        marker = folder / MARKER_NAME
        if marker.is_file():
            try:
                return json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {"synthetic": True, "note": f"{marker}: unreadable synthetic-data marker"}
    return None


def is_synthetic(root: PathLike) -> bool:
    """True when `root` holds data written by `generate_ffpp` (its marker file is present)."""
    return synthetic_info(root) is not None
