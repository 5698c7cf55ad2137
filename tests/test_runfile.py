"""``lrnet.json`` has one owner (`lrnet.weights.runfile`): one search rule for every reader and writer,
checked content, atomic writes, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lrnet.errors import LrnetError
from lrnet.model import LRNet, ModelConfig
from lrnet.weights import resolve_weights, save_threshold
from lrnet.weights.runfile import locate, read_meta, run_file, update_meta, write_meta

SRC = Path(__file__).resolve().parents[1] / "src" / "lrnet"
RECORD = {"value": 0.25, "method": "eer", "dataset": "DF", "level": "raw", "split": "val", "aggregation": "vote"}


def _pair(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for b in ("g1", "g2"):
        torch.save(LRNet(ModelConfig(rnn_unit=4, res_hidden=8)).state_dict(), folder / f"{b}.pth")


def test_one_search_rule_for_readers_and_writers(tmp_path):
    """The weights/ subfolder layout: resolve, training's read and the threshold writer use the same file."""
    run = tmp_path / "run"
    _pair(run / "weights")
    (run / "weights" / "lrnet.json").write_text(json.dumps({"model": {"rnn_unit": 4, "res_hidden": 8}, "fps": 24}))
    assert locate(run, "lrnet.json") == run_file(run) == run / "weights" / "lrnet.json"
    assert read_meta(run)["fps"] == 24 and resolve_weights(str(run)).fps == 24.0
    path = save_threshold(run, RECORD)
    assert path == run / "weights" / "lrnet.json" and not (run / "lrnet.json").exists()  # written back where read
    weights = resolve_weights(str(run))
    assert weights.threshold == 0.25 and weights.threshold_source == f"{path} (eer on DF raw val)"
    update_meta(run, {"card": {"domain": "tests"}})
    assert json.loads(path.read_text())["threshold"]["value"] == 0.25  # other keys kept
    # FOLDER/lrnet.json comes first when both exist, for every reader
    (run / "lrnet.json").write_text(json.dumps({"model": {"rnn_unit": 4, "res_hidden": 8}, "fps": 50}))
    assert run_file(run) == run / "lrnet.json" and read_meta(run)["fps"] == 50
    assert resolve_weights(str(run)).fps == 50.0 and resolve_weights(str(run)).threshold == 0.5
    # no run file: a new one goes into the folder itself
    assert read_meta(tmp_path / "new") == {} and run_file(tmp_path / "new") == tmp_path / "new" / "lrnet.json"


def test_writes_are_atomic_and_checked(tmp_path, monkeypatch):
    folder = tmp_path / "w"
    path = write_meta(folder, {"block_size": 20, "note": "kept"})
    before = path.read_text()
    with pytest.raises(LrnetError, match=r'invalid run settings \("fps" must be a positive number'):
        update_meta(folder, {"fps": -1})  # never written: readers would refuse it
    assert path.read_text() == before

    from lrnet import atomic

    def full_disk(target, text):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text(text[:5])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("lrnet.weights.runfile.atomic_write_text", full_disk)
    with pytest.raises(LrnetError) as err:
        save_threshold(folder, RECORD)
    assert str(err.value) == f"{path}: cannot write (No space left on device)"
    assert path.read_text() == before and sorted(p.name for p in folder.iterdir()) == ["lrnet.json"]


@pytest.mark.misuse
@pytest.mark.parametrize("text, message", [
    ('{"block_size": 30,', r"not valid JSON \(Expecting"),
    (b"\xff\xfe{}", r"unreadable run file"),
    ("[1, 2]", r"must be a JSON object, not list"),
    ('{"threshold": 0.42}', r'"threshold" must be an object'),
    ('{"pretrained": 3}', r'"pretrained" must be a registry name'),
    ('{"card": "x"}', r'"card" must be an object'),
])
def test_bad_run_files_are_one_line_errors_for_every_reader(tmp_path, text, message):
    _pair(tmp_path)
    path = tmp_path / "lrnet.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    for call in (lambda: read_meta(tmp_path), lambda: resolve_weights(str(tmp_path)),
                 lambda: update_meta(tmp_path, {"x": 1}), lambda: save_threshold(tmp_path, RECORD)):
        with pytest.raises(LrnetError) as err:
            call()
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
        assert re.search(message, str(err.value)), str(err.value)
    assert path.read_bytes() == (text if isinstance(text, bytes) else text.encode())  # nothing rewritten


def test_only_the_run_file_module_opens_lrnet_json():
    """No other module reads or writes lrnet.json itself (messages may still name it)."""
    io = r"(read_text|write_text|read_bytes|open|atomic_\w+|json\.loads?|json\.dumps?)\("
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "runfile.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(rf"lrnet\.json.*{io}|{io}.*lrnet\.json|META_NAME|json\.(loads?|dumps?)\(\s*meta\b", line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []
