"""Weight loading (safe, with clear errors) and the pretrained registry's download path (offline)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import shutil
import threading

import pytest
import torch

from lrnet.errors import LrnetError
from lrnet.model import LRNet, ModelConfig
from lrnet.weights import (PRETRAINED, PretrainedPair, WeightFile, download_file, fetch_pretrained, load_branch,
                           load_state_dict, resolve_weights, sha256_of)


def test_registry_lists_official_hashes():
    assert set(PRETRAINED) >= {"ffpp-raw", "dfo"}
    assert PRETRAINED["ffpp-raw"].files["g1"].sha256.startswith("d953cfc1")
    assert PRETRAINED["dfo"].files["g2"].url.endswith("/demo/model_weights/g2.pth")


def test_official_files_match_registry(reference):
    for name, folder in (("ffpp-raw", "ffpp_raw"), ("dfo", "dfo")):
        for branch, wf in PRETRAINED[name].files.items():
            assert sha256_of(reference / "weights" / folder / f"{branch}.pth") == wf.sha256


def test_load_errors(tmp_path):
    with pytest.raises(LrnetError, match="not found"):
        load_state_dict(tmp_path / "none.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04garbage" * 10)
    with pytest.raises(LrnetError, match="corrupt.pth: not a readable PyTorch weight file"):
        load_state_dict(corrupt)
    wrong = tmp_path / "wrong.pth"
    torch.save(LRNet(rnn_unit=64).state_dict(), wrong)
    with pytest.raises(LrnetError, match=r"wrong.pth: state dict does not fit the model \(wrong shapes"):
        load_branch(wrong, ModelConfig())
    notdict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], notdict)
    with pytest.raises(LrnetError, match="does not contain a state dict"):
        load_state_dict(notdict)


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickle_with_code_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Boom()}, evil, pickle_module=pickle)
    with pytest.raises(LrnetError, match="evil.pth"):
        load_state_dict(evil)
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_dict_is_accepted(tmp_path):
    model = LRNet()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    loaded = load_branch(path)
    torch.testing.assert_close(loaded.state_dict()["dense.3.weight"], model.state_dict()["dense.3.weight"])


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (no internet needed)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fake_pair(www, monkeypatch, base_url):
    """Register a pair served by the local server; returns it."""
    files = {}
    for branch in ("g1", "g2"):
        path = www / f"{branch}.pth"
        torch.save(LRNet().state_dict(), path)
        files[branch] = WeightFile(f"{base_url}/{branch}.pth", hashlib.sha256(path.read_bytes()).hexdigest())
    pair = PretrainedPair("local-test", "served from 127.0.0.1", files)
    monkeypatch.setitem(PRETRAINED, "local-test", pair)
    return pair


def test_download_over_http_verifies_and_caches(tmp_path, http_server, monkeypatch):
    www, url = http_server
    _fake_pair(www, monkeypatch, url)
    paths = fetch_pretrained("local-test")
    assert paths["g1"].is_file() and paths["g1"].parent.name == "local-test"
    mtime = paths["g1"].stat().st_mtime_ns
    # cached: a second fetch does not re-download even when the server is gone
    (www / "g1.pth").unlink()
    (www / "g2.pth").unlink()
    again = fetch_pretrained("local-test")
    assert again["g1"].stat().st_mtime_ns == mtime
    weights = resolve_weights("local-test")
    assert set(weights.models) == {"g1", "g2"} and weights.source == "pretrained:local-test"


def test_hash_mismatch_deletes_and_errors(tmp_path, http_server):
    www, url = http_server
    (www / "g1.pth").write_bytes(b"not the expected bytes")
    dest = tmp_path / "cache" / "g1.pth"
    with pytest.raises(LrnetError, match="SHA-256 mismatch"):
        download_file(f"{url}/g1.pth", dest, "0" * 64)
    assert not dest.exists()
    assert not any(dest.parent.iterdir())  # no temp file left either


def test_download_failures_are_clear(tmp_path, http_server):
    _, url = http_server
    with pytest.raises(LrnetError, match="download failed"):
        download_file(f"{url}/missing.pth", tmp_path / "x.pth", "0" * 64)
    with pytest.raises(LrnetError, match="download failed"):
        download_file("http://127.0.0.1:9/none.pth", tmp_path / "y.pth", "0" * 64, timeout=2)


def test_corrupt_cache_is_replaced(tmp_path, http_server, monkeypatch):
    www, url = http_server
    _fake_pair(www, monkeypatch, url)
    paths = fetch_pretrained("local-test")
    paths["g2"].write_bytes(b"truncated")
    fixed = fetch_pretrained("local-test")
    assert sha256_of(fixed["g2"]) == PRETRAINED["local-test"].files["g2"].sha256


def test_offline_mode_and_unknown_names(monkeypatch, tmp_path):
    with pytest.raises(LrnetError, match="lrnet weights download ffpp-raw"):
        fetch_pretrained("ffpp-raw", download=False)
    with pytest.raises(LrnetError, match="unknown pretrained weights"):
        fetch_pretrained("nope")
    with pytest.raises(LrnetError, match="not a pretrained name"):
        resolve_weights(str(tmp_path / "nope"))


def test_official_pair_from_file_mirror(reference, tmp_path):
    """The registry's real hashes, fetched from a file:// mirror of ../shared (the offline install path)."""
    paths = fetch_pretrained("dfo", root=tmp_path / "dfo", mirror=str(reference / "weights" / "dfo"))
    assert sha256_of(paths["g1"]) == PRETRAINED["dfo"].files["g1"].sha256
    with pytest.raises(LrnetError, match="SHA-256 mismatch"):
        fetch_pretrained("ffpp-raw", root=tmp_path / "bad", mirror=str(reference / "weights" / "dfo"))
    assert not (tmp_path / "bad" / "g1.pth").exists()


def test_weights_folder(reference, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(reference / "weights" / "ffpp_raw", folder)
    weights = resolve_weights(str(folder), branches=("g2",))
    assert list(weights.models) == ["g2"] and weights.block_size == 30
    (folder / "g2.pth").unlink()
    with pytest.raises(LrnetError, match="no g2.pth"):
        resolve_weights(str(folder))


# ----------------------------------------------------------------------------- model cards and thresholds

def test_registry_cards_state_frame_rate_source_and_domain():
    ffpp, dfo = PRETRAINED["ffpp-raw"].card(), PRETRAINED["dfo"].card()
    assert ffpp["fps"] == 30.0 and "FF++ videos are mostly 30 fps" in ffpp["fps_source"]
    assert dfo["fps"] == 25.0 and "DeeperForensics is 25 fps" in dfo["fps_source"]
    assert "not meant for DeeperForensics" in ffpp["domain"] and "c0/raw" in ffpp["domain"]
    assert dfo["domain"] == "DeeperForensics-1.0" and dfo["block_size"] == 30


def test_a_copy_of_official_weights_gets_their_card(reference, tmp_path):
    weights = resolve_weights(str(reference / "weights" / "dfo"))
    assert weights.fps == 25.0 and weights.card["domain"] == "DeeperForensics-1.0"
    assert weights.threshold == 0.5 and weights.card["threshold_source"] == "default"
    folder = tmp_path / "mine"
    folder.mkdir()
    torch.save(LRNet().state_dict(), folder / "g1.pth")
    torch.save(LRNet().state_dict(), folder / "g2.pth")
    card = resolve_weights(str(folder)).card
    assert card["fps"] is None and card["fps_source"] == "unknown" and "unknown" in card["training_data"]


def _run_folder(tmp_path, meta):
    import json

    folder = tmp_path / "run"
    folder.mkdir()
    for b in ("g1", "g2"):
        torch.save(LRNet().state_dict(), folder / f"{b}.pth")
    (folder / "lrnet.json").write_text(json.dumps(meta))
    return folder


def test_save_threshold_is_read_modify_write_and_resolve_reads_it(tmp_path):
    import json

    from lrnet.weights import save_threshold, threshold_for

    folder = _run_folder(tmp_path, {"block_size": 30, "fps": 25, "dataset": {"train": {"name": "DF/raw/train"}},
                                    "extra": [1, 2]})
    record = {"value": 0.375, "method": "eer", "target_fpr": None, "dataset": "DF", "level": "raw", "split": "val",
              "aggregation": "vote", "branches": ["g1", "g2"]}
    save_threshold(folder, record)
    meta = json.loads((folder / "lrnet.json").read_text())
    assert meta["extra"] == [1, 2] and meta["fps"] == 25 and meta["threshold"]["date"]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    weights = resolve_weights(str(folder))
    assert weights.threshold == 0.375 and weights.fps == 25.0
    assert weights.threshold_source == f"{folder / 'lrnet.json'} (eer on DF raw val)"
    assert weights.card["training_data"] == "DF/raw/train" and weights.card["threshold"] == 0.375
    assert threshold_for(weights, "vote") == (0.375, weights.threshold_source)
    assert threshold_for(weights, "mean-prob")[0] == 0.5
    assert threshold_for(resolve_weights(str(folder), branches=("g1",)), "vote")[0] == 0.5
    assert threshold_for(weights, "vote", override=0.7) == (0.7, "--threshold")


@pytest.mark.misuse
def test_malformed_threshold_records_are_one_line_errors(tmp_path):
    folder = _run_folder(tmp_path, {"threshold": {"value": "high"}})
    with pytest.raises(LrnetError, match=r"lrnet.json: \"threshold\" needs a numeric \"value\""):
        resolve_weights(str(folder))
    (folder / "lrnet.json").write_text('{"threshold": {"value": 7}}')
    with pytest.raises(LrnetError, match="outside"):
        resolve_weights(str(folder))
    (folder / "lrnet.json").write_text("[1, 2]")
    with pytest.raises(LrnetError, match="must be a JSON object"):
        resolve_weights(str(folder))


def test_weights_list_and_show_print_cards(reference, tmp_path, capsys):
    import json

    from lrnet.cli import main

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "frame rate: 30 fps (FF++ videos are mostly 30 fps" in out and "domain: DeeperForensics-1.0" in out
    assert main(["weights", "show", str(reference / "weights" / "dfo")]) == 0
    out = capsys.readouterr().out
    assert "frame rate: 25 fps (DeeperForensics is 25 fps" in out and "threshold: 0.5 (default)" in out
    assert main(["weights", "show", str(reference / "weights" / "ffpp_raw"), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["fps"] == 30.0 and card["block_size"] == 30
    # a registry name: its card from the registry, with the cache state, never a download
    assert main(["weights", "show", "ffpp-raw", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "frame rate: 30 fps" in out and "cache: g1 missing, g2 missing" in out
    assert "`lrnet weights download ffpp-raw` fetches what is missing" in out


@pytest.mark.misuse
@pytest.mark.parametrize("meta, what", [
    ('{"block_size": "abc"}', "block size"),
    ('{"block_size": 1}', "block size"),
    ('{"model": {"rnn_unit": -1}}', "hidden_size"),
    ('{"model": [1, 2]}', "model"),
    ('{"fps": -3}', "fps"),
    ("[1, 2]", "JSON object"),
])
def test_malformed_run_settings_are_one_line_errors(tmp_path, meta, what):
    """A hand-edited lrnet.json never gives a traceback: the error names the file and the setting."""
    from lrnet.weights import resolve_weights

    for b in ("g1", "g2"):
        torch.save(LRNet(ModelConfig()).state_dict(), tmp_path / f"{b}.pth")
    (tmp_path / "lrnet.json").write_text(meta)
    with pytest.raises(LrnetError) as err:
        resolve_weights(str(tmp_path))
    assert "lrnet.json" in str(err.value) and what in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- registry + cache, show, --from

@pytest.fixture
def local_pair(tmp_path, monkeypatch):
    """A registry pair "local-test" whose official location is a local folder (file:// URLs)."""
    src = tmp_path / "official"
    src.mkdir()
    files = {}
    for seed, branch in enumerate(("g1", "g2")):
        torch.manual_seed(seed)
        torch.save(LRNet(rnn_unit=4, res_hidden=8).state_dict(), src / f"{branch}.pth")
        files[branch] = WeightFile((src / f"{branch}.pth").as_uri(), sha256_of(src / f"{branch}.pth"))
    monkeypatch.setitem(PRETRAINED, "local-test", PretrainedPair("local-test", "a local pair", files, fps=25.0,
                                                                 model={"rnn_unit": 4, "res_hidden": 8}))
    return src


def _no_network(monkeypatch):
    """Make every download attempt fail the test."""
    import urllib.request

    from lrnet.weights import registry

    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(registry, "download_file", refuse)


def test_list_weights_is_public_and_reports_cache_state(local_pair, monkeypatch):
    import lrnet
    from lrnet.weights import cache_dir

    _no_network(monkeypatch)
    rows = {r["name"]: r for r in lrnet.list_weights()}
    assert "list_weights" in lrnet.__all__ and set(rows) >= {"ffpp-raw", "dfo", "local-test"}
    row = rows["local-test"]
    assert row["files"] == {"g1": "missing", "g2": "missing"} and row["cached"] is False
    assert row["folder"] == str(cache_dir() / "local-test")
    assert row["card"]["fps"] == 25.0 and row["card"]["threshold"] == 0.5
    folder = cache_dir() / "local-test"
    folder.mkdir(parents=True)
    shutil.copy(local_pair / "g1.pth", folder / "g1.pth")
    (folder / "g2.pth").write_bytes(b"truncated")
    row = {r["name"]: r for r in lrnet.list_weights()}["local-test"]
    assert row["files"] == {"g1": "cached", "g2": "mismatch"} and row["cached"] is False
    shutil.copy(local_pair / "g2.pth", folder / "g2.pth")
    assert {r["name"]: r for r in lrnet.list_weights()}["local-test"]["cached"] is True


def test_weights_show_never_downloads(local_pair, tmp_path, monkeypatch, capsys):
    import json

    from lrnet.cli import main

    _no_network(monkeypatch)
    assert main(["weights", "show", "local-test"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "pretrained:local-test" and "frame rate: 25 fps" in out
    assert "cache: g1 missing, g2 missing" in out
    # a folder standing for the registry pair (as evaluate --calibrate-to makes): the folder's threshold
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "lrnet.json").write_text(json.dumps({"pretrained": "local-test", "threshold": {
        "value": 0.3, "method": "eer", "dataset": "DF", "level": "raw", "split": "val"}}))
    assert main(["weights", "show", str(calib), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["threshold"] == 0.3 and shown["threshold_source"] == f"{calib / 'lrnet.json'} (eer on DF raw val)"
    assert shown["cache"]["files"] == {"g1": "missing", "g2": "missing"}
    assert shown["source"] == f"{calib} (pretrained:local-test)"


def test_download_from_when_cached_checks_the_folder_and_says_so(local_pair, tmp_path, capsys):
    from lrnet.cli import main

    assert main(["weights", "download", "local-test", "--from", str(local_pair)]) == 0
    assert capsys.readouterr().out.count("(SHA-256 verified)") == 2
    # cached: --from is not silently ignored, its files are checked against the registry
    assert main(["weights", "download", "local-test", "--from", str(local_pair)]) == 0
    out = capsys.readouterr().out
    assert f"already cached, SHA-256 verified; {local_pair / 'g1.pth'} matches it, nothing copied" in out
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(local_pair / "g1.pth", other / "g1.pth")
    shutil.copy(local_pair / "g1.pth", other / "g2.pth")  # the wrong file under g2's name
    assert main(["weights", "download", "local-test", "--from", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    g2 = PRETRAINED["local-test"].files["g2"].sha256
    assert err.startswith(f"lrnet weights: error: {other / 'g2.pth'}: SHA-256 ") and "\n" not in err
    assert f"is not the local-test g2.pth ({g2[:12]}...)" in err and err.endswith("are intact and kept)")
    # without --from, a cached pair says it is cached
    assert main(["weights", "download", "local-test"]) == 0
    assert "(already cached, SHA-256 verified)" in capsys.readouterr().out


def test_failed_from_says_what_the_folder_must_hold(local_pair, tmp_path, capsys):
    from lrnet.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    g1, g2 = (PRETRAINED["local-test"].files[b].sha256 for b in ("g1", "g2"))
    assert main(["weights", "download", "local-test", "--from", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lrnet weights: error: {empty / 'g1.pth'}: not found") and "\n" not in err
    assert f"g1.pth (SHA-256 {g1[:12]}...) and g2.pth (SHA-256 {g2[:12]}...)" in err
    assert "--from FOLDER" not in err
    (empty / "g1.pth").write_bytes(b"not it")
    (empty / "g2.pth").write_bytes(b"not it")
    assert main(["weights", "download", "local-test", "--from", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "SHA-256 mismatch" in err and f"g2.pth (SHA-256 {g2[:12]}...)" in err and "--from FOLDER" not in err
    # the official location failing (no --from) still suggests --from
    with pytest.raises(LrnetError, match="--from FOLDER"):
        PRETRAINED["local-test"] = PretrainedPair("local-test", "gone", {
            b: WeightFile((tmp_path / "gone" / f"{b}.pth").as_uri(), "0" * 64) for b in ("g1", "g2")})
        fetch_pretrained("local-test")
