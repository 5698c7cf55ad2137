"""`lrnet.evaluate`, `lrnet evaluate` and `python evaluate.py`: hand-made cases, edge cases, files,
protocol tables, exit codes, and numerical parity with a reference-style implementation."""

from __future__ import annotations

import csv
import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lrnet.errors import LrnetError
from lrnet.evaluate import (EvaluationReport, evaluate, evaluate_protocols, format_metrics_table, format_report,
                            save_protocol_table, save_report)
from lrnet.model import ModelConfig, build_model
from lrnet.datasets import blockset_from_arrays
from lrnet.weights import LoadedWeights

REPO = Path(__file__).resolve().parents[1]
B = 4  # tiny blocks keep hand-made cases small
BIG = 50.0  # logit that saturates float32 softmax: p(fake) == 1.0 exactly, or ~2e-22


# ----------------------------------------------------------------------------- helpers

def make_blockset(sequences, labels, names, block_size=B):
    return blockset_from_arrays(sequences, labels, names, block_size=block_size)


class EncodedModel(nn.Module):
    """A stand-in branch whose fake logit is written in its input: g1 reads ``x[:, 0, 0]``;
    g2 (fed frame differences) reads ``x[:, 0, 1]`` = frame 1 minus frame 0 of feature 1."""

    def __init__(self, feature: int):
        super().__init__()
        self.feature = feature
        self.dummy = nn.Parameter(torch.zeros(()))  # block_fake_probabilities asks for a parameter's device

    def forward(self, x):
        fake = x[:, 0, self.feature]
        return torch.stack([torch.zeros_like(fake), fake], dim=1)


def encoded_weights(branches=("g1", "g2")):
    models = {b: EncodedModel(0 if b == "g1" else 1) for b in branches}
    return LoadedWeights(models, B, "encoded-test-models", ModelConfig())


def encoded_video(logits_g1, logits_g2, extra_frames=1):
    """A sequence whose block k makes the g1 stand-in output logit ``logits_g1[k]`` and g2 ``logits_g2[k]``."""
    n = len(logits_g1)
    frames = np.zeros((n * B + extra_frames, 136), np.float32)
    for k, (a, b) in enumerate(zip(logits_g1, logits_g2)):
        frames[k * B, 0] = a
        frames[k * B + 1, 1] = b  # difference frame1 - frame0 of feature 1 (frame0 is 0)
    return frames


def p_fake(logit):
    """The stand-in's p(fake), computed as softmax([0, logit])[1] in float32, one block at a time."""
    return float(torch.softmax(torch.tensor([[0.0, logit]], dtype=torch.float32), dim=1)[0, 1])


# ----------------------------------------------------------------------------- a hand-made split

# Per video: (label, g1 logits per block, g2 logits per block).
HAND = {
    "real_a.txt": (0, [-2.0, -1.0, 0.5], [-1.5, 0.0, -3.0]),
    "real_b.txt": (0, [1.0, 2.0], [0.2, -0.1]),
    "fake_a.txt": (1, [3.0, 0.0, -0.5, 1.0], [2.0, 0.0, 1.0, 2.0]),
    "fake_b.txt": (1, [-1.0], [-2.0]),
    "fake_c.txt": (1, [0.7, 1.2], [0.4, 2.5]),
}


def hand_split(extra_short=True):
    seqs, labels, names = [], [], []
    for name, (label, l1, l2) in HAND.items():
        seqs.append(encoded_video(l1, l2, extra_frames=1 + len(name) % 3))
        labels.append(label)
        names.append(name)
    if extra_short:
        seqs += [np.zeros((B, 136), np.float32), np.zeros((1, 136), np.float32)]  # exactly B frames; one frame
        labels += [1, 0]
        names += ["exactly_B.txt", "one_frame.txt"]
    return make_blockset(seqs, labels, names), dict(zip(names, seqs))


def expected_by_loops(branches=("g1", "g2")):
    """The reference's evaluation written as loops over videos and blocks, on the stand-in's p(fake)."""
    correct = {b: 0 for b in branches}
    correct_merged, n_blocks, video = 0, 0, {}
    for name, (label, l1, l2) in HAND.items():
        votes = 0
        for a, b in zip(l1, l2):
            p = {"g1": np.float32(p_fake(a)), "g2": np.float32(p_fake(b))}
            for br in branches:
                correct[br] += int((1 if p[br] >= 0.5 else 0) == label)
            mix = sum(p[br] for br in branches)
            merged_fake = mix >= 1 if len(branches) == 2 else mix >= 0.5
            correct_merged += int(int(merged_fake) == label)
            votes += int(mix / len(branches) >= 0.5)
            n_blocks += 1
        video[name] = (label, votes / len(l1))
    video_correct = sum(int((1 if s >= 0.5 else 0) == y) for y, s in video.values())
    fakes = [s for y, s in video.values() if y == 1]
    reals = [s for y, s in video.values() if y == 0]
    pairs = [(1.0 if f > r else 0.5 if f == r else 0.0) for f in fakes for r in reals]
    return {
        "branch": {b: correct[b] / n_blocks for b in branches},
        "sample": correct_merged / n_blocks,
        "video_scores": {k: s for k, (_, s) in video.items()},
        "video_accuracy": video_correct / len(video),
        "auc": sum(pairs) / len(pairs),
        "n_blocks": n_blocks,
    }


@pytest.mark.parametrize("branches", [("g1", "g2"), ("g1",), ("g2",)])
def test_hand_made_split_matches_loops(branches):
    test, _ = hand_split()
    report = evaluate(encoded_weights(), test, branches=branches, aggregation="vote")
    assert isinstance(report, EvaluationReport)
    want = expected_by_loops(branches)
    assert report.branches == branches
    for b in branches:
        assert report.branch_accuracy[b] == want["branch"][b]
    assert report.sample_accuracy == want["sample"]
    assert report.video_accuracy == want["video_accuracy"]
    assert report.video_auc == pytest.approx(want["auc"], abs=1e-12)
    for name, score in want["video_scores"].items():
        assert report.video_scores[report.videos.index(name)] == score
    assert report.n_blocks == want["n_blocks"]
    assert report.n_videos == len(HAND)
    assert report.videos_per_class == {"real": 2, "fake": 3}
    assert report.blocks_per_class == {"real": 5, "fake": 7}
    assert report.aggregation == "vote"


def test_short_videos_are_skipped_not_crashing():
    test, seqs = hand_split()
    report = evaluate(encoded_weights(), test)
    skipped = {s["video"]: s for s in report.skipped}
    assert set(skipped) == {"exactly_B.txt", "one_frame.txt"}
    assert skipped["one_frame.txt"]["frames"] == 1 and "1 frame," in skipped["one_frame.txt"]["reason"]
    assert skipped["exactly_B.txt"]["frames"] == B
    assert report.skipped_per_class == {"real": 1, "fake": 1}
    for name in skipped:
        assert math.isnan(report.video_scores[report.videos.index(name)])
    assert report.roc is not None and len(report.roc.fpr) == len(report.roc.tpr)
    text = format_report(report)
    assert "Skipped" in text and "one_frame.txt: 1 frames" in text


def test_thresholds_at_exactly_half():
    # block 1: g1 p = 0.5, g2 p = 0.5 -> sum exactly 1 -> fake; block 2: g1 p = 1.0, g2 p ~ 2e-22 -> sum 1.0 -> fake;
    # block 3 and 4: clearly real. Video vote = 2/4 = 0.5 exactly -> verdict fake.
    seq = encoded_video([0.0, BIG, -BIG, -3.0], [0.0, -BIG, -BIG, -3.0])
    test = make_blockset([seq, seq], [1, 0], ["fake.txt", "real.txt"])
    report = evaluate(encoded_weights(), test)
    assert report.branch_block_scores["g1"][0] == 0.5 and report.branch_block_scores["g1"][1] == 1.0
    assert report.branch_block_scores["g1"][0] + report.branch_block_scores["g2"][0] == 1.0
    assert report.sample_accuracy == 0.5  # fake video: 2 of 4 right; real video: 2 of 4 right
    assert report.branch_accuracy["g1"] == 0.5  # p exactly 0.5 counts as fake
    assert list(report.video_scores) == [0.5, 0.5]
    assert report.video_accuracy == 0.5  # 0.5 -> fake: right for the fake video, wrong for the real one
    rows = {r["video"]: r for r in report.video_rows()}
    assert rows["fake.txt"]["call"] == "fake" and rows["real.txt"]["call"] == "fake"
    # a score on the threshold: the interval contains it, so the verdict is "uncertain"
    assert rows["fake.txt"]["verdict"] == "uncertain" and rows["real.txt"]["verdict"] == "uncertain"
    assert report.confusion == {"tp": 1, "fp": 1, "tn": 0, "fn": 0}


@pytest.mark.parametrize("aggregation", ["mean-prob", "mean-logit"])
def test_other_aggregations_match_loops(aggregation):
    test, _ = hand_split(extra_short=False)
    report = evaluate(encoded_weights(), test, aggregation=aggregation)
    for name, (_, l1, l2) in HAND.items():
        merged = [(np.float32(p_fake(a)) + np.float32(p_fake(b))) / 2 for a, b in zip(l1, l2)]
        if aggregation == "mean-prob":
            want = sum(float(m) for m in merged) / len(merged)
        else:
            mean_logit = sum(math.log(m / (1 - m)) for m in map(float, merged)) / len(merged)
            want = 1 / (1 + math.exp(-mean_logit))
        assert report.video_scores[report.videos.index(name)] == pytest.approx(want, rel=1e-6)
    assert report.aggregation == aggregation and aggregation in format_report(report)


def test_one_class_split_reports_undefined_auc(tmp_path):
    seqs = [encoded_video([1.0, 2.0], [1.0, 0.5]), encoded_video([-1.0], [0.3])]
    test = make_blockset(seqs, [1, 1], ["f1.txt", "f2.txt"])
    report = evaluate(encoded_weights(), test)
    assert report.video_auc is None and report.video_eer is None and report.video_ap is None
    assert report.sample_auc is None and report.roc is None
    assert "only one class" in report.undefined["auc_video"]
    assert report.video_accuracy == 0.5
    paths = save_report(report, tmp_path)
    assert paths["roc"] is None and not (tmp_path / "roc.png").exists()
    data = json.loads(paths["json"].read_text())
    assert data["metrics"]["auc_video"] is None and "only one class" in data["undefined"]["auc_video"]
    text = format_report(report, paths)
    assert "AUC (video-level): n/a" in text and "only one class" in text


def test_split_without_any_block():
    test = make_blockset([np.zeros((1, 136), np.float32), np.zeros((B, 136), np.float32)], [0, 1], ["a", "b"])
    report = evaluate(encoded_weights(), test)
    assert report.n_blocks == 0 and report.n_videos == 0 and len(report.skipped) == 2
    assert report.sample_accuracy is None and report.video_accuracy is None and report.video_auc is None
    assert "no blocks" in report.undefined["accuracy"]
    assert "n/a" in format_report(report)


def test_save_report_files(tmp_path):
    test, _ = hand_split()
    report = evaluate(encoded_weights(), test)
    paths = save_report(report, tmp_path / "out")
    assert paths["roc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert data["metrics"]["accuracy_video"] == report.video_accuracy
    assert data["metrics"]["auc_video"] == pytest.approx(report.video_auc)
    assert data["aggregation"] == "vote" and data["videos_per_class"] == {"real": 2, "fake": 3}
    assert len(data["roc"]["fpr"]) == len(report.roc.fpr)
    assert {s["video"] for s in data["skipped"]} == {"exactly_B.txt", "one_frame.txt"}
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["video"] for r in rows] == report.videos
    for r, i in zip(rows, range(len(rows))):
        assert int(r["label"]) == report.video_labels[i] and int(r["frames"]) == report.video_frames[i]
        assert int(r["blocks"]) == report.video_blocks[i]
        if report.video_blocks[i]:
            assert float(r["score"]) == pytest.approx(report.video_scores[i], abs=1e-6)
            assert r["call"] == ("fake" if report.video_scores[i] >= 0.5 else "real")
            lo, hi = float(r["interval_lo"]), float(r["interval_hi"])
            assert r["verdict"] == ("uncertain" if lo <= 0.5 <= hi else r["call"])
        else:
            assert r["score"] == "" and r["verdict"] == r["call"] == "n/a" and r["interval_lo"] == ""
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # atomic writes leave no temporary files


def test_bad_branch_and_aggregation():
    test, _ = hand_split(extra_short=False)
    with pytest.raises(LrnetError, match="unknown aggregation"):
        evaluate(encoded_weights(), test, aggregation="median")
    with pytest.raises(LrnetError, match="no weights loaded for branch g2"):
        evaluate(encoded_weights(("g1",)), test, branches=("g1", "g2"))
    with pytest.raises(LrnetError, match="unknown branch"):
        evaluate(encoded_weights(), test, branches=("g3",))


def test_metrics_table_for_demo():
    test, _ = hand_split()
    reports = {"both": evaluate(encoded_weights(), test),
               "g1": evaluate(encoded_weights(), test, branches=("g1",))}
    table = format_metrics_table(reports)
    lines = table.splitlines()
    assert "both" in lines[0] and "g1" in lines[0]
    auc_line = next(line for line in lines if line.startswith("AUC (videos)"))
    assert f"{reports['both'].video_auc:.4f}" in auc_line and f"{reports['g1'].video_auc:.4f}" in auc_line


# ----------------------------------------------------------------------------- protocols

def test_protocol_table_with_missing_cells(tmp_path):
    test, _ = hand_split()
    calls = []

    def loader(root, dataset, level, split, block_size=30, **kwargs):
        calls.append((dataset, level, split, block_size))
        if dataset == "NT" or level == "c40":
            raise LrnetError(f"{root}/{dataset}/{level}/{split}: missing; prepare it with `lrnet generate`")
        return test

    table = evaluate_protocols(encoded_weights(), "ROOT", ["DF", "NT"], ["raw", "c40"], loader=loader)
    assert calls == [("DF", "raw", "test", B), ("DF", "c40", "test", B), ("NT", "raw", "test", B),
                     ("NT", "c40", "test", B)]
    assert table.rows == ["DF", "NT"] and table.columns == ["raw", "c40"]
    assert table.cells[("DF", "raw")].auc == evaluate(encoded_weights(), test).video_auc
    assert {(c.dataset, c.level) for c in table.missing} == {("DF", "c40"), ("NT", "raw"), ("NT", "c40")}
    text = table.format()
    df_line = next(line for line in text.splitlines() if line.startswith("DF "))
    assert f"{table.cells[('DF', 'raw')].auc:.4f}" in df_line and "missing" in df_line
    assert "missing NT/raw: ROOT/NT/raw/test: missing" in text
    paths = save_protocol_table(table, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert len(data["cells"]) == 4 and data["cells"][0]["auc_video"] == pytest.approx(table.cells[("DF", "raw")].auc)
    assert (tmp_path / "DF_raw" / "metrics.json").is_file()
    assert "DF,raw," in paths["csv"].read_text()


# ----------------------------------------------------------------------------- CLI

def _write_weights(folder: Path, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for b in ("g1", "g2"):
        torch.save(build_model(ModelConfig()).state_dict(), folder / f"{b}.pth")
    return folder


def _write_ffpp(root: Path, levels=("raw",), manipulations=("DF",), n=3, frames=(70, 95, 130)):
    from lrnet.landmarks import write_landmarks

    rng = np.random.default_rng(0)
    for level in levels:
        for folder in ("Origin",) + tuple(manipulations):
            for i in range(n):
                seq = rng.normal(scale=0.3, size=(frames[i % len(frames)], 136)).astype(np.float32)
                write_landmarks(root / folder / level / "test" / f"{i:03d}.txt", seq)
    return root


@pytest.fixture
def cli_setup(tmp_path):
    pytest.importorskip("lrnet.datasets", reason="lrnet.datasets (load_split) not available yet")
    return _write_weights(tmp_path / "weights"), _write_ffpp(tmp_path / "datasets"), tmp_path


def test_cli_single_dataset(cli_setup, capsys):
    from lrnet.cli import main

    weights, root, tmp = cli_setup
    out = tmp / "eval"
    rc = main(["evaluate", "--weights", str(weights), "--root", str(root), "-d", "DF", "-l", "raw",
               "--output", str(out), "--no-cache"])
    text = capsys.readouterr().out
    assert rc == 0
    for line in ("Evaluation (g1) - Acc:", "Evaluation (g2) - Acc:", "Accuracy (sample-level):",
                 "Accuracy (video-level):", "AUC (video-level):", "Aggregation (block -> video score): vote",
                 f"ROC curve: {out / 'roc.png'}"):
        assert line in text
    assert (out / "roc.png").is_file() and (out / "videos.csv").is_file()
    data = json.loads((out / "metrics.json").read_text())
    assert data["videos_per_class"] == {"real": 3, "fake": 3}


def test_cli_json_and_branch(cli_setup, capsys):
    from lrnet.cli import main

    weights, root, tmp = cli_setup
    rc = main(["evaluate", "--weights", str(weights), "--root", str(root), "-b", "g2", "--json",
               "--output", str(tmp / "j"), "--aggregate", "mean-prob"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["branches"] == ["g2"] and data["aggregation"] == "mean-prob"
    assert set(data["metrics"]) >= {"accuracy_g2", "accuracy_video", "auc_video", "eer_video", "ap_video"}
    assert len(data["per_video"]) == 6


def test_cli_exit_codes(cli_setup, capsys):
    from lrnet.cli import main

    weights, root, tmp = cli_setup
    # a dataset that is not prepared: one line, status 2
    assert main(["evaluate", "--weights", str(weights), "--root", str(root), "-d", "F2F",
                 "--output", str(tmp / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrnet evaluate: error:") and "F2F" in err and "Traceback" not in err
    # protocol mode: one cell missing -> table printed, status 1
    assert main(["evaluate", "--weights", str(weights), "--root", str(root), "-d", "DF", "F2F",
                 "--output", str(tmp / "p")]) == 1
    out = capsys.readouterr().out
    assert "missing F2F/raw" in out and (tmp / "p" / "protocol.csv").is_file()
    # protocol mode: nothing could be evaluated -> status 2
    assert main(["evaluate", "--weights", str(weights), "--root", str(root), "-d", "F2F", "FS",
                 "--output", str(tmp / "q")]) == 2
    # missing weights -> status 2
    assert main(["evaluate", "--weights", str(tmp / "nowhere"), "--root", str(root)]) == 2
    # bad values -> refused at parse time, status 2 with a message naming the flag
    capsys.readouterr()
    for flags in (["--threads", "0"], ["--block-size", "1"], ["--batch-size", "-3"], ["--target-fpr", "2"],
                  ["--threshold", "inf"]):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "--weights", str(weights), "--root", str(root), *flags])
        assert exc.value.code == 2 and flags[0] in capsys.readouterr().err
    # bad flag -> argparse's status 2
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--aggregate", "median"])
    assert exc.value.code == 2


def test_memory_mapped_split_scores_the_same_without_warnings(cli_setup, tmp_path):
    import warnings

    from lrnet.datasets import load_split
    from lrnet.weights import resolve_weights

    weights_dir, root, _ = cli_setup
    weights = resolve_weights(str(weights_dir))
    plain = evaluate(weights, load_split(root, "DF", "raw", "test", cache=tmp_path / "c"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mapped = evaluate(weights, load_split(root, "DF", "raw", "test", cache=tmp_path / "c", mmap=True))
    np.testing.assert_array_equal(mapped.video_scores, plain.video_scores)
    assert mapped.branch_accuracy == plain.branch_accuracy


def test_cli_training_run_folder_sets_block_size_and_model(cli_setup, capsys):
    # `lrnet train --output DIR` leaves g1.pth, g2.pth and lrnet.json (model config, block size)
    from lrnet.cli import main

    _, root, tmp = cli_setup
    run = tmp / "run"
    run.mkdir()
    for b in ("g1", "g2"):
        torch.save({"model": build_model(ModelConfig(rnn_unit=8)).state_dict(), "epoch": 3}, run / f"{b}.pth")
    (run / "lrnet.json").write_text(json.dumps({"block_size": 20, "model": {"rnn_unit": 8}}))
    rc = main(["evaluate", "--weights", str(run), "--root", str(root), "--json", "--output", str(tmp / "r")])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["block_size"] == 20
    assert data["blocks"] == sum((f - 1) // 20 for f in (70, 95, 130)) * 2  # num_blocks rule, 3 real + 3 fake


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_gpu_flag_without_gpu(cli_setup, capsys):
    from lrnet.cli import main

    weights, root, _ = cli_setup
    assert main(["evaluate", "-g", "--weights", str(weights), "--root", str(root)]) == 2
    assert "GPU" in capsys.readouterr().err


def test_cli_protocol_on_generated_data(tmp_path, capsys):
    pytest.importorskip("lrnet.datasets", reason="lrnet.datasets (load_split) not available yet")
    from lrnet.cli import main
    from lrnet.synthetic import generate_ffpp

    root = tmp_path / "synthetic"
    generate_ffpp(root, {"test": 4}, manipulations=("DF", "F2F"), levels=("raw",), frames=(40, 90), workers=1)
    weights = _write_weights(tmp_path / "weights")
    rc = main(["evaluate", "--weights", str(weights), "--root", str(root), "-d", "DF", "F2F", "NT",
               "-l", "raw", "c23", "--output", str(tmp_path / "p"), "--no-cache"])
    out = capsys.readouterr().out
    assert rc == 1  # some cells missing
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("dataset"))
    assert header.split() == ["dataset", "raw", "c23"]
    for name in ("DF", "F2F"):
        row = next(line for line in lines if line.startswith(f"{name} "))
        assert row.split()[-1] == "missing" and "/" in row.split()[1:4]  # raw evaluated, c23 missing
    assert next(line for line in lines if line.startswith("NT ")).split()[1:] == ["missing", "missing"]
    assert "NOTE: synthetic" in out and "missing NT/raw:" in out
    data = json.loads((tmp_path / "p" / "protocol.json").read_text())
    cell = next(c for c in data["cells"] if c["dataset"] == "DF" and c["level"] == "raw")
    assert cell["videos"] == 8 and cell["missing"] is None
    assert json.loads((tmp_path / "p" / "DF_raw" / "metrics.json").read_text())["synthetic"] is True


def test_root_wrapper_runs_like_the_reference(cli_setup, monkeypatch, capsys):
    # `python evaluate.py ...` executed in-process (runpy) to keep the test fast
    weights, root, tmp = cli_setup
    monkeypatch.chdir(tmp)
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "-d", "DF", "-l", "raw", "-b", "all", "--weights", str(weights),
                                      "--root", str(root), "--output", "w"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(REPO / "evaluate.py"), run_name="__main__")
    assert exc.value.code == 0
    assert "Accuracy (video-level):" in capsys.readouterr().out and (tmp / "w" / "roc.png").is_file()
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "-d", "NT", "--weights", str(weights), "--root", str(root)])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(REPO / "evaluate.py"), run_name="__main__")
    assert exc.value.code == 2 and "NT" in capsys.readouterr().err


# ----------------------------------------------------------------------------- parity with the reference

class _ReferenceLRNet(nn.Module):
    """The reference LRNet branch as published (GRU -> residual MLP -> softmax), for the parity check."""

    def __init__(self, rnn_unit=32, res_hidden=64):
        super().__init__()
        self.hidden_state = nn.Parameter(torch.zeros(2, 1, rnn_unit))
        self.gru = nn.GRU(136, rnn_unit, batch_first=True, bidirectional=True)
        d = 2 * rnn_unit
        ff = nn.Module()
        ff.net = nn.Sequential(nn.Linear(d, res_hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(res_hidden, d))
        res = nn.Module()
        res.fn = ff
        self.dense = nn.Sequential(nn.Dropout(0.5), res, nn.Dropout(0.5), nn.Linear(d, 2))

    def forward(self, x):
        _, hidden = self.gru(x, self.hidden_state.repeat(1, x.shape[0], 1))
        h = torch.cat(list(hidden), dim=1)
        h = h + self.dense[1].fn.net(h)
        return torch.softmax(self.dense[3](h), dim=1)


def _reference_style(files, labels, weight_dir, block=30, batch=1024):
    """The reference evaluate.py pipeline: np.loadtxt (float64), per-video loops over blocks, float64
    differences cast to float32, batches of 1024, Python loops for the metrics."""
    from sklearn.metrics import auc, roc_curve

    x, x_diff, y, video_y, s2v, count = [], [], [], [], [], {}
    for path, label in zip(files, labels):
        vectors = np.loadtxt(path)
        video_y.append(label)
        for i in range(0, vectors.shape[0] - block, block):
            vec = vectors[i:i + block, :]
            x.append(vec)
            nxt = np.pad(vectors[i + 1:i + block, :], ((0, 1), (0, 0)), "constant", constant_values=(0, 0))
            x_diff.append((nxt - vec)[:block - 1, :])
            y.append(label)
            count[str(path)] = count.get(str(path), 0) + 1
            s2v.append(str(path))
    inputs = {"g1": torch.tensor(np.array(x), dtype=torch.float32),
              "g2": torch.tensor(np.array(x_diff), dtype=torch.float32)}
    pred, acc = {}, {}
    for b in ("g1", "g2"):
        model = _ReferenceLRNet()
        state = torch.load(Path(weight_dir) / f"{b}.pth", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            pred[b] = np.concatenate([model(inputs[b][i:i + batch]).numpy() for i in range(0, len(y), batch)])
        acc[b] = sum(int(np.argmax(p) == t) for p, t in zip(pred[b], y)) / len(y)
    count_s, mix_predict = 0, []
    for i in range(len(y)):
        mix = pred["g1"][i][1] + pred["g2"][i][1]
        count_s += int((1 if mix >= 1 else 0) == y[i])
        mix_predict.append(mix / 2)
    votes = {}
    for p, v in zip(mix_predict, s2v):
        votes[v] = votes.get(v, 0) + (1 if p >= 0.5 else 0)
    video_scores = {v: votes[v] / count[v] for v in votes}
    prediction_video = list(video_scores.values())
    count_v = sum(int((1 if s >= 0.5 else 0) == t) for s, t in zip(prediction_video, video_y))
    fpr, tpr, _ = roc_curve(video_y, prediction_video)
    return {"acc": acc, "sample": count_s / len(y), "video": count_v / len(video_y), "auc": auc(fpr, tpr),
            "scores": video_scores, "block_probs": {b: pred[b][:, 1] for b in pred}}


def test_parity_with_reference_implementation(reference, tmp_path):
    from lrnet.landmarks import read_landmarks, write_landmarks
    from lrnet.weights import resolve_weights

    # A small set cut from the published landmark sequences: pieces of different lengths, real and fake,
    # plus one fake piece deliberately labelled real so that the AUC is not a trivial 1.0.
    pieces = [("ff_real", 0, 250, 0), ("ff_real", 250, 450, 0), ("ff_real", 450, 757, 0),
              ("ff_fake", 0, 180, 1), ("ff_fake", 180, 500, 1), ("ff_fake", 500, 757, 1),
              ("dfo_real", 0, 180, 0), ("dfo_real", 180, 369, 0), ("dfo_fake", 0, 200, 1),
              ("dfo_fake", 200, 371, 1), ("ff_fake", 100, 400, 0)]
    files, labels = [], []
    for source, a, b, label in pieces:
        frames = np.loadtxt(reference / "landmarks" / f"{source}.txt")
        path = tmp_path / ("fake" if label else "real") / f"{source}_{a}.txt"
        write_landmarks(path, frames[a:b])
        files.append(path)
        labels.append(label)
    weight_dir = reference / "weights" / "ffpp_raw"
    want = _reference_style(files, labels, weight_dir)

    test = make_blockset([read_landmarks(f) for f in files], labels, [str(f) for f in files], block_size=30)
    report = evaluate(resolve_weights(str(weight_dir)), test)
    # block probabilities agree to float32 rounding (the reference differences are taken in float64)
    for b in ("g1", "g2"):
        np.testing.assert_allclose(report.branch_block_scores[b], want["block_probs"][b], atol=2e-5)
        margin = np.abs(want["block_probs"][b] - 0.5).min()
        assert margin > 1e-4, "a block sits on the threshold: parity would hinge on rounding"
    mix = want["block_probs"]["g1"] + want["block_probs"]["g2"]
    assert np.abs(mix - 1).min() > 1e-4
    assert report.branch_accuracy == want["acc"]
    assert report.sample_accuracy == want["sample"]
    assert report.video_accuracy == want["video"]
    assert report.video_auc == want["auc"]
    for name, score in want["scores"].items():
        assert report.video_scores[report.videos.index(name)] == score
    assert 0.5 < report.video_auc < 1 and len(set(want["scores"].values())) > 2  # not a degenerate case


# ----------------------------------------------------------------------------- operating points and calibration

def test_report_has_intervals_operating_point_and_rates(tmp_path):
    test, _ = hand_split()
    report = evaluate(encoded_weights(), test)
    scored = report.video_blocks > 0
    lo, hi = report.video_intervals[scored].T
    s = report.video_scores[scored]
    assert (lo <= s).all() and (s <= hi).all() and np.isnan(report.video_intervals[~scored]).all()
    c = report.confusion
    assert c["tp"] + c["fn"] == 3 and c["tn"] + c["fp"] == 2  # scored videos only
    assert report.video_accuracy_at_threshold == report.video_accuracy  # threshold 0.5
    assert report.threshold == 0.5 and report.threshold_source == "default"
    data = json.loads(save_report(report, tmp_path)["json"].read_text())
    assert set(data["metrics"]) >= {"tpr_at_fpr_0.01", "tpr_at_fpr_0.05", "tpr_at_fpr_0.1"}
    assert data["confusion_matrix"] == c and data["threshold"] == {"value": 0.5, "source": "default"}
    assert data["per_video"][0]["interval"] is not None and "Wilson" in data["interval"]
    text = format_report(report)
    assert "Confusion matrix at the threshold" in text and "TPR at FPR 1%:" in text and "Uncertain verdicts" in text
    # another threshold changes calls and the confusion matrix, never AUC or the reference accuracy
    strict = evaluate(encoded_weights(), test, threshold=0.9)
    assert strict.video_auc == report.video_auc and strict.video_accuracy == report.video_accuracy
    assert strict.confusion["tp"] + strict.confusion["fp"] <= c["tp"] + c["fp"]


def _generated(tmp_path, videos=10):
    from lrnet.synthetic import generate_ffpp

    root = tmp_path / "synthetic"
    generate_ffpp(root, {"train": 2, "val": videos, "test": videos}, levels=("raw",), frames=(70, 160), workers=1)
    return root


def test_cli_calibrate_stores_the_threshold_and_predict_uses_it(tmp_path, capsys):
    from lrnet.cli import main

    root = _generated(tmp_path)
    run = _write_weights(tmp_path / "run")
    (run / "lrnet.json").write_text(json.dumps({"block_size": 30, "note": "kept"}))
    rc = main(["evaluate", "--weights", str(run), "--root", str(root), "--calibrate", "--target-fpr", "0.2",
               "--output", str(tmp_path / "e"), "--no-cache", "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and f"stored in {run / 'lrnet.json'}" in captured.err
    meta = json.loads((run / "lrnet.json").read_text())
    assert meta["note"] == "kept" and meta["block_size"] == 30  # read-modify-write keeps other keys
    record = meta["threshold"]
    assert record["method"] == "target-fpr" and record["target_fpr"] == 0.2 and record["fpr"] <= 0.2
    assert (record["dataset"], record["level"], record["split"], record["aggregation"]) == ("DF", "raw", "val", "vote")
    assert record["date"] and 0.0 <= record["value"] <= 1.0 + 1e-9
    data = json.loads(captured.out)
    assert data["threshold"]["value"] == record["value"]
    assert data["threshold"]["source"] == f"{run / 'lrnet.json'} (target-fpr 0.2 on DF raw val)"
    # predict on the same weights: the stored threshold decides, and every row says so
    files = sorted((root / "DF" / "raw" / "test").glob("*.txt"))
    assert main(["predict", str(files[0]), "--weights", str(run), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["threshold"] == record["value"] and "target-fpr 0.2 on DF raw val" in row["threshold_source"]
    assert row["call"] == ("fake" if row["score"] >= record["value"] else "real")
    # another aggregation: the stored threshold does not apply
    assert main(["predict", str(files[0]), "--weights", str(run), "--json", "--aggregate", "mean-prob"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["threshold"] == 0.5 and "stored threshold is for vote" in row["threshold_source"]


def test_cli_calibrate_on_a_registry_name(tmp_path, monkeypatch, capsys):
    """A registry pair has no run folder: refused in one line without --calibrate-to; with it, the folder
    stands for the pair and carries the threshold (served from a file:// mirror, offline)."""
    import hashlib

    from lrnet.cli import main
    from lrnet.weights import PRETRAINED, PretrainedPair, WeightFile

    mirror = _write_weights(tmp_path / "mirror")
    files = {}
    for b in ("g1", "g2"):
        path = mirror / f"{b}.pth"
        files[b] = WeightFile(path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setitem(PRETRAINED, "local-test", PretrainedPair("local-test", "test pair", files, fps=25.0,
                                                                 fps_source="a test", domain="tests"))
    root = _generated(tmp_path, videos=6)
    assert main(["evaluate", "--weights", "local-test", "--root", str(root), "--calibrate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calibrate-to" in err
    target = tmp_path / "calibrated"
    assert main(["evaluate", "--weights", "local-test", "--root", str(root), "--calibrate", "--calibrate-to",
                 str(target), "--output", str(tmp_path / "e"), "--no-cache"]) == 0
    assert "Threshold:" in capsys.readouterr().out
    meta = json.loads((target / "lrnet.json").read_text())
    assert meta["pretrained"] == "local-test" and meta["threshold"]["method"] == "eer"
    from lrnet.weights import resolve_weights

    weights = resolve_weights(str(target))
    assert weights.threshold == meta["threshold"]["value"] and weights.card["domain"] == "tests"
    assert weights.threshold_source == f"{target / 'lrnet.json'} (eer on DF raw val)"


@pytest.mark.misuse
def test_cli_block_size_larger_than_every_file_is_an_error(cli_setup, capsys):
    from lrnet.cli import main

    weights, root, tmp = cli_setup
    rc = main(["evaluate", "--weights", str(weights), "--root", str(root), "--block-size", "500",
               "--output", str(tmp / "o"), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no video had a block" in err and "130 frames" in err
    assert not (tmp / "o" / "metrics.json").exists()


@pytest.mark.misuse
def test_cli_output_on_a_full_disk_is_one_line(cli_setup, tmp_path):
    """Writes that fail (here: a file-size limit, EFBIG, the same OSError path as ENOSPC) end with
    `PATH: cannot write (reason)` and exit status 2, no traceback, no temporary left behind."""
    import subprocess
    import textwrap

    weights, root, _ = cli_setup
    out = tmp_path / "full"
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
        from lrnet.cli import main
        sys.exit(main(["evaluate", "--json", "--weights", {str(weights)!r}, "--root", {str(root)!r}, "--no-cache",
                       "--output", {str(out)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert ": cannot write (File too large)" in proc.stderr and str(out) in proc.stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
