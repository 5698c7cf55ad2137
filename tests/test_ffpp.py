"""FF++ vocabulary and layout (lrnet.ffpp): names, folders, the official split files, source ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrnet import ffpp
from lrnet.errors import LrnetError


def test_vocabulary():
    assert ffpp.SUBSETS == ("Origin", "DF", "F2F", "FS", "NT") and ffpp.DATASETS[-1] == "FF_all"
    assert ffpp.METHODS["NT"] == "NeuralTextures" and ffpp.SUBSET_OF_METHOD["Face2Face"] == "F2F"
    assert ffpp.LEVELS == ("raw", "c23", "c40") and ffpp.SPLITS == ("train", "val", "test")


def test_folders():
    assert ffpp.landmark_dir("/d", "DF", "c23", "val") == Path("/d/DF/c23/val")
    assert ffpp.video_dir("/v", "Origin", "raw") == Path("/v/original_sequences/youtube/raw/videos")
    assert ffpp.video_dir("/v", "FS", "c40") == Path("/v/manipulated_sequences/FaceSwap/c40/videos")
    with pytest.raises(ValueError, match="unknown FF\\+\\+ subset 'XX'"):
        ffpp.video_dir("/v", "XX", "raw")


def test_read_splits_assigns_both_originals_and_both_fakes_of_a_pair(tmp_path):
    for split, pairs in (("train", [["000", "003"]]), ("val", [[1, 870]]), ("test", [])):
        (tmp_path / f"{split}.json").write_text(json.dumps(pairs))
    split_of = ffpp.read_splits(tmp_path)
    assert split_of == {"000": "train", "003": "train", "000_003": "train", "003_000": "train",
                        "1": "val", "870": "val", "1_870": "val", "870_1": "val"}


@pytest.mark.parametrize("damage, message", [
    (None, "test.json: FF\\+\\+ split file not found"),
    ("{not json", "test.json: not a readable JSON file"),
    ('[["000"]]', "test.json: expected a list of \\[a, b\\] pairs"),
])
def test_read_splits_errors_name_the_file(tmp_path, damage, message):
    for split in ("train", "val"):
        (tmp_path / f"{split}.json").write_text("[]")
    if damage is not None:
        (tmp_path / "test.json").write_text(damage)
    with pytest.raises(LrnetError, match=message):
        ffpp.read_splits(tmp_path)


def test_source_ids_and_levels():
    assert ffpp.source_ids("000_003") == ("000", "003") and ffpp.source_ids("000") == ("000",)
    assert ffpp.source_ids("id0_id1_0000") == ("id0_id1_0000",)  # not an FF++ pair
    assert [ffpp.level_for_crf(c) for c in (None, 0, 23, 40)] == ["raw", "raw", "c23", "c40"]
