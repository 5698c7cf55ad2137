"""Face detection and 68-point landmarks behind one small interface.

The tracker (`lrnet.tracking`) asks a `Landmarker` two things: where the faces are in a grey
image (boxes in that image's pixels) and the 68 landmarks inside a box (full-resolution pixels,
iBUG 300-W order, the order of the published LRNet landmark files). Any backend that answers
both is a drop-in, as face-alignment's detector classes are for their models.

`DlibLandmarker` is the one shipped: dlib's frontal HOG face detector and its 68-point shape
predictor from the ``face-recognition-models`` package, loaded once per process.

Licence note: the 68-point predictor was trained on iBUG 300-W, whose licence excludes commercial use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Protocol, Tuple

import numpy as np

from .errors import LrnetError

__all__ = ["Box", "DlibLandmarker", "Landmarker", "PREDICTOR_FILE", "default_landmarker", "predictor_path"]

Box = Tuple[float, float, float, float]  # left, top, right, bottom (px)
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


class Landmarker(Protocol):
    """What the tracker needs from a face detector + 68-point landmark model."""

    name: str

    def detect(self, gray: np.ndarray, upsample: int = 0) -> List[Box]:
        """Face boxes in `gray`'s pixels (``(h, w)`` uint8), in the backend's order."""
        ...

    def landmarks(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """The 68 points inside `box` of full-resolution `gray`: ``(68, 2)`` int64 pixels (x, y)."""
        ...


def predictor_path() -> Path:
    """Path of the 68-point model inside ``face-recognition-models``, found without importing it.

    (Importing that package needs ``pkg_resources``, which recent setuptools no longer ships.)
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise LrnetError("the 68-point landmark model is missing: pip install face-recognition-models")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or ".").parent)]
    for root in roots:
        candidate = Path(root) / "models" / PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise LrnetError(f"{roots[0]}: no models/{PREDICTOR_FILE} in face-recognition-models; reinstall it")


_DLIB: Dict[str, object] = {}


class DlibLandmarker:
    """dlib's HOG frontal face detector and 68-point shape predictor (models shared per process)."""

    name = "dlib-hog-68"

    def __init__(self) -> None:
        if not _DLIB:
            try:
                import dlib
            except ImportError:
                raise LrnetError("dlib is not installed: pip install dlib-bin") from None
            _DLIB["detector"] = dlib.get_frontal_face_detector()
            _DLIB["predictor"] = dlib.shape_predictor(str(predictor_path()))
            _DLIB["rectangle"] = dlib.rectangle
        self._detector, self._predictor, self._rectangle = _DLIB["detector"], _DLIB["predictor"], _DLIB["rectangle"]

    def detect(self, gray: np.ndarray, upsample: int = 0) -> List[Box]:
        rects = self._detector(gray, upsample)  # type: ignore[operator]
        return [(float(r.left()), float(r.top()), float(r.right()), float(r.bottom())) for r in rects]

    def landmarks(self, gray: np.ndarray, box: Box) -> np.ndarray:
        rect = self._rectangle(*(int(round(v)) for v in box))  # type: ignore[operator]
        return np.array([(p.x, p.y) for p in self._predictor(gray, rect).parts()], dtype=np.int64)  # type: ignore[operator]


def default_landmarker() -> Landmarker:
    """The shipped backend (dlib), models loaded on first call."""
    return DlibLandmarker()
