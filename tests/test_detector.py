"""The verdict seam: one `Detector` decides, and every entry point honours a calibrated threshold.

A weights folder whose ``lrnet.json`` holds a calibrated threshold (here 0.9 for ``vote`` over
g1+g2, far from the default 0.5) must give that threshold, and the verdicts it implies, in the
Python API, ``lrnet predict``, the server's worker code, ``evaluate`` and ``robustness``.
"""

from __future__ import annotations

import json
import shutil

import pytest

THRESHOLD = 0.9


@pytest.fixture(scope="module")
def calibrated(reference, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrated")
    for branch in ("g1", "g2"):
        shutil.copy(reference / "weights" / "dfo" / f"{branch}.pth", folder / f"{branch}.pth")
    record = {"value": THRESHOLD, "method": "eer", "aggregation": "vote", "branches": ["g1", "g2"],
              "dataset": "test", "level": "raw", "split": "val"}
    (folder / "lrnet.json").write_text(json.dumps({"fps": 25.0, "threshold": record}))
    return folder


@pytest.fixture(scope="module")
def sequence(reference):
    from lrnet.landmarks import read_landmarks

    return read_landmarks(reference / "landmarks" / "ff_fake.txt")


def test_the_python_api_honours_the_calibrated_threshold(calibrated, sequence):
    import lrnet

    detector = lrnet.load_detector(str(calibrated))
    assert detector.threshold == THRESHOLD and "lrnet.json" in detector.threshold_source
    result = detector.score_sequence(sequence, name="ff_fake")
    assert result.threshold == THRESHOLD
    assert result.call == ("fake" if result.score >= THRESHOLD else "real")
    # another aggregation than the calibrated one falls back to 0.5, and says why
    other = lrnet.load_detector(str(calibrated), aggregation="mean-prob")
    assert other.threshold == 0.5 and "stored threshold is for vote" in other.threshold_source
    assert lrnet.load_detector(str(calibrated), threshold=0.3).threshold_source == "--threshold"


def test_predict_and_the_server_worker_honour_it(calibrated, reference, tmp_path, capsys):
    from lrnet.cli import main
    from lrnet.serve.runner import score_landmark_file
    from lrnet.serve.store import Task
    from lrnet.weights import resolve_weights

    landmarks = reference / "landmarks" / "ff_fake.txt"
    assert main(["predict", str(landmarks), "--weights", str(calibrated), "--json"]) in (0, 1)
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["threshold"] == THRESHOLD
    task = Task("job", "landmarks", str(landmarks), str(tmp_path), "ff_fake.txt", str(calibrated), "vote", True)
    out = score_landmark_file(task, resolve_weights(str(calibrated)), lambda stage, fraction: None)
    assert out["threshold"] == THRESHOLD and out["score"] == row["score"] and out["verdict"] == row["verdict"]


def test_evaluate_and_robustness_honour_it(calibrated, sequence, reference):
    from lrnet.datasets import blockset_from_arrays
    from lrnet.evaluate import evaluate
    from lrnet.landmarks import read_landmarks
    from lrnet.robustness import landmark_robustness
    from lrnet.weights import resolve_weights

    weights = resolve_weights(str(calibrated))
    real = read_landmarks(reference / "landmarks" / "ff_real.txt")
    test = blockset_from_arrays([real, sequence], [0, 1], ["real", "fake"])
    report = evaluate(weights, test)
    assert report.threshold == THRESHOLD
    calls, _ = report.calls_and_verdicts()
    assert list(calls) == ["fake" if s >= THRESHOLD else "real" for s in report.video_scores]
    robust = landmark_robustness(weights, [real, sequence], [0, 1], ["real", "fake"], grid={"noise": [0.0]},
                                 seeds=[0])
    assert robust.threshold == THRESHOLD


def test_one_place_builds_a_verdict():
    """Only `lrnet.detector` looks a threshold up (`threshold_for`); nothing else pairs weights with one."""
    from pathlib import Path

    import lrnet

    root = Path(lrnet.__file__).parent
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if "threshold_for(" in p.read_text().replace("def threshold_for(", ""))
    assert callers == ["detector.py"], callers
