"""Training: fused GRU equivalence, learning, best checkpoint, resume, seeds, stopping rules, run folder."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lrnet.config import load_config
from lrnet.datasets import blockset_from_arrays
from lrnet.errors import LrnetError
from lrnet.synthetic import fake_video, real_video
from lrnet.training import History, train, train_branch, validation_accuracy
from lrnet.weights import load_branch, resolve_weights

B = 30


def _blockset(ids, name, difficulty=6.0, frames=160):
    seqs, labels, names = [], [], []
    for v in ids:
        seqs.append(real_video(0, v, frames)); labels.append(0); names.append(f"real/{v:03d}.txt")
        seqs.append(fake_video(0, v, v + 1, frames, difficulty=difficulty)); labels.append(1)
        names.append(f"fake/{v:03d}_{v + 1:03d}.txt")
    return blockset_from_arrays(seqs, labels, names, B, name=name)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batches: one intra-op thread is fastest and immune to a busy machine's scheduling delays."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data():
    return _blockset(range(0, 24), "train"), _blockset(range(200, 206), "val")


def _cfg(**values):
    base = {"BATCH_SIZE": 32, "LEARNING_RATE_g1": 1e-2, "LEARNING_RATE_g2": 1e-2, "EPOCHS_g1": 4, "EPOCHS_g2": 4,
            "seed": 3, "rnn_unit": 8, "res_hidden": 16}
    base.update(values)
    return load_config(values=base)


def _same_state(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------- training

def test_gather_batch_with_reused_buffers_equals_fresh():
    from lrnet.training import gather_batch

    frames = torch.randn(40 * B, 136)
    workspace = {}
    for branch in ("g1", "g2"):
        for idx in (torch.tensor([3, 1, 7, 30]), torch.tensor([5, 2]), torch.tensor([0, 39, 12, 4])):
            fresh = gather_batch(frames, idx, B, branch)
            reused = gather_batch(frames, idx, B, branch, workspace)
            assert reused.shape == fresh.shape == (idx.numel(), B if branch == "g1" else B - 1, 136)
            assert torch.equal(reused, fresh)
            assert reused.transpose(0, 1).is_contiguous()  # time-major storage, as the fused GRU reads it



def test_loss_decreases_and_best_checkpoint_written(data, tmp_path):
    train_set, val_set = data
    cfg = _cfg()
    res = train_branch(None, train_set, val_set, "g2", config=cfg, epochs=12, output=tmp_path, progress=False)
    h = res.history
    assert h.epoch == list(range(1, 13))
    assert np.mean(h.loss[-3:]) < h.loss[0] - 0.1
    assert max(h.val_acc) > 0.6
    # best = the last epoch reaching the maximum (>= rule), and g1.pth holds exactly those weights
    assert h.best_val_acc == max(h.val_acc)
    assert h.best_epoch == max(e for e, a in zip(h.epoch, h.val_acc) if a == h.best_val_acc)
    loaded = load_branch(tmp_path / "g2.pth", cfg.model)
    assert _same_state(loaded.state_dict(), res.model.state_dict())
    xv = torch.from_numpy(val_set.blocks)
    yv = torch.from_numpy(val_set.block_labels)
    assert validation_accuracy(loaded, xv, yv, "g2") == pytest.approx(h.best_val_acc)
    saved = json.loads((tmp_path / "history_g2.json").read_text())
    assert saved["val_acc"] == h.val_acc
    assert len((tmp_path / "history_g2.csv").read_text().splitlines()) == 13


def test_same_seed_same_weights_and_concurrency_does_not_change_results(data):
    train_set, val_set = data
    cfg = _cfg(EPOCHS_g1=2, EPOCHS_g2=2)
    a = train(replace(cfg, concurrent="off"), train_set, val_set, progress=False)
    b = train(replace(cfg, concurrent="on"), train_set, val_set, progress=False)
    for branch in ("g1", "g2"):
        assert _same_state(a.models[branch].state_dict(), b.models[branch].state_dict())
        assert a.histories[branch].loss == b.histories[branch].loss
    c = train(replace(cfg, seed=4, concurrent="off"), train_set, val_set, branches=("g1",), progress=False)
    assert not _same_state(a.models["g1"].state_dict(), c.models["g1"].state_dict())


def test_resume_after_interruption_mid_epoch_equals_uninterrupted_run(data, tmp_path):
    train_set, val_set = data
    cfg = _cfg()
    full = train_branch(None, train_set, val_set, "g1", config=cfg, epochs=5, output=tmp_path / "full",
                        progress=False)

    def interrupt(epoch, batch):
        if epoch == 4 and batch == 2:
            raise KeyboardInterrupt

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_branch(None, train_set, val_set, "g1", config=cfg, epochs=5, output=out, progress=False,
                     on_batch=interrupt)
    partial = json.loads((out / "history_g1.json").read_text())
    assert partial["epoch"] == [1, 2, 3]
    assert load_branch(out / "g1.pth", cfg.model) is not None  # a valid best checkpoint survives the kill
    resumed = train_branch(None, train_set, val_set, "g1", config=cfg, epochs=5, output=out, progress=False,
                           resume=True)
    assert resumed.history.epoch == [1, 2, 3, 4, 5]
    assert resumed.history.loss == full.history.loss
    assert resumed.history.val_acc == full.history.val_acc
    assert _same_state(load_branch(out / "g1.pth", cfg.model).state_dict(),
                       load_branch(tmp_path / "full" / "g1.pth", cfg.model).state_dict())
    # resuming a finished run trains nothing more
    again = train_branch(None, train_set, val_set, "g1", config=cfg, epochs=5, output=out, progress=False,
                         resume=True)
    assert again.history.epoch == [1, 2, 3, 4, 5]


def test_non_finite_loss_stops_with_clear_error(data):
    train_set, val_set = data
    bad = replace(train_set, blocks=train_set.blocks.copy())
    bad.blocks[:] = np.nan
    with pytest.raises(LrnetError, match="became nan at epoch 1"):
        train_branch(None, bad, val_set, "g1", config=_cfg(), epochs=2, progress=False)


def test_patience_stops_when_val_accuracy_stalls(data):
    train_set, val_set = data
    cfg = _cfg(LEARNING_RATE_g1=1e-12, patience=2)  # weights barely move: val accuracy stays put
    res = train_branch(None, train_set, val_set, "g1", config=cfg, epochs=10, progress=False)
    assert res.history.epoch == [1, 2, 3]
    assert res.history.stopped.startswith("early stopping")
    res = train_branch(None, train_set, val_set, "g1", config=replace(cfg, patience=None), epochs=4, progress=False)
    assert res.history.epoch == [1, 2, 3, 4] and res.history.stopped == "completed"


def test_train_writes_a_run_folder_that_resolve_weights_reads(data, tmp_path):
    train_set, val_set = data
    cfg = _cfg(EPOCHS_g1=2, EPOCHS_g2=2, weights_name_g1="g1_test.pth")
    res = train(cfg, train_set, val_set, output=tmp_path, progress=False)
    for name in ("g1.pth", "g2.pth", "g1.ckpt", "g2.ckpt", "history_g1.json", "history_g2.csv", "lrnet.json",
                 "training_curves.png", "g1_test.pth"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((tmp_path / "lrnet.json").read_text())
    assert meta["block_size"] == B and meta["model"]["rnn_unit"] == 8
    loaded = resolve_weights(str(tmp_path))
    x = torch.from_numpy(val_set.blocks[:7])
    with torch.no_grad():
        for branch in ("g1", "g2"):
            inp = x if branch == "g1" else x[:, 1:] - x[:, :-1]
            assert torch.allclose(loaded.models[branch](inp), res.models[branch](inp), atol=1e-6)


def test_training_rejects_unusable_data(data):
    train_set, val_set = data
    real_only = blockset_from_arrays([real_video(0, 1, 100)], [0], ["a"], B)
    with pytest.raises(LrnetError, match="both classes"):
        train_branch(None, real_only, val_set, "g1", config=_cfg(), epochs=1, progress=False)
    other = _blockset(range(2), "val60", frames=200)
    other = blockset_from_arrays([real_video(0, 1, 200), fake_video(0, 1, 2, 200)], [0, 1], ["a", "b"], 60)
    with pytest.raises(LrnetError, match="60-frame"):
        train_branch(None, train_set, other, "g1", config=_cfg(), epochs=1, progress=False)
    with pytest.raises(LrnetError, match="BLOCK_SIZE 60"):
        train(_cfg(BLOCK_SIZE=60), train_set, val_set, progress=False)


def test_history_csv_roundtrip():
    h = History("g1", [1, 2], [0.5, 0.25], [0.6, 0.7], [0.55, 0.65], [1.0, 1.1], 0.65, 2, 2, "completed")
    assert History.from_dict(h.to_dict()) == h
    assert h.to_csv().splitlines()[0] == "epoch,loss,train_acc,val_acc,seconds"


def test_bf16_option_trains_and_needs_the_fused_gru(data):
    train_set, val_set = data
    res = train_branch(None, train_set, val_set, "g2", config=_cfg(bf16=True), epochs=2, progress=False)
    exact = train_branch(None, train_set, val_set, "g2", config=_cfg(bf16=False), epochs=2, progress=False)
    assert all(np.isfinite(res.history.loss)) and res.history.loss != exact.history.loss  # bf16 was used
    assert res.model.gru_impl == "torch"  # the returned model infers with nn.GRU in fp32
    with pytest.raises(LrnetError, match="fused GRU only"):
        train_branch(None, train_set, val_set, "g2", config=_cfg(bf16=True, gru="torch"), epochs=1, progress=False)


def test_torch_gru_option_gives_the_same_training_as_fused(data):
    """gru=torch (nn.GRU) and gru=fused train to the same weights up to float32 rounding (this also
    checks that dropout masks fall on the same samples: they follow the memory layout of h_n)."""
    train_set, val_set = data
    a = train_branch(None, train_set, val_set, "g1", config=_cfg(gru="torch"), epochs=1, progress=False)
    b = train_branch(None, train_set, val_set, "g1", config=_cfg(gru="fused", bf16=False), epochs=1, progress=False)
    for k, v in a.model.state_dict().items():
        diff = (v - b.model.state_dict()[k]).abs()
        # Float rounding differs between the paths; Adam's first steps turn it into up to ~lr/100
        # for the rare weights whose gradient is ~eps (1e-8), so: nearly all within 1e-5, all
        # within 1e-3 (masks on other samples would move most weights by ~lr = 1e-2).
        assert diff.max().item() < 1e-3 and (diff > 1e-5).float().mean().item() < 1e-3, k


def test_concurrent_failure_stops_the_other_branch():
    """When one branch fails while both train at once, the other stops too (no waiting out its epochs)."""
    from dataclasses import replace as _replace

    from lrnet.config import TrainConfig
    from lrnet.training import train

    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(95, 136)).astype(np.float32) for _ in range(8)]
    data = blockset_from_arrays(seqs, [0, 1] * 4, [f"v{i}" for i in range(8)])
    cfg = _replace(TrainConfig(), epochs_g1=300, epochs_g2=300, batch_size=8, seed=0, concurrent="on", threads=1)
    seen = {"g1": 0, "g2": 0}

    def callback(branch, epoch, history):
        seen[branch] = epoch
        if branch == "g2" and epoch == 2:
            raise RuntimeError("g2 failed")

    with pytest.raises(RuntimeError, match="g2 failed"):
        train(cfg, data, data, progress=False, callback=callback)
    assert seen["g2"] == 2 and seen["g1"] < 50


# ----------------------------------------------------------------------------------------- the steps

def test_resolve_settings_explicit_arguments_win_over_the_config(tmp_path):
    from lrnet.training import resolve_settings

    cfg = _cfg(patience=7, bf16=False)
    s = resolve_settings(cfg, "g2", epochs=9, lr=0.5, output=tmp_path)
    assert (s.epochs, s.lr, s.batch_size, s.patience, s.seed, s.bf16) == (9, 0.5, 32, 7, 3, False)
    assert s.checkpoint_path == tmp_path / "g2.ckpt" and s.weights_path == tmp_path / "g2.pth"
    auto = resolve_settings(_cfg(bf16=None), "g1")
    from lrnet.fastgru import native_bf16

    assert auto.bf16 == native_bf16()  # automatic: on where the CPU has native bfloat16
    assert resolve_settings(_cfg(bf16=None, gru="torch"), "g1").bf16 is False
    with pytest.raises(LrnetError, match="unknown branch 'g3'"):
        resolve_settings(cfg, "g3")


def test_core_share_gives_a_lone_branch_every_core():
    from lrnet.training import CoreShare

    share = CoreShare(3, ("g1", "g2"))
    assert (share.threads("g1"), share.threads("g2")) == (2, 1)
    share.leave("g2")
    assert share.threads("g1") == 3
    assert CoreShare(1, ("g1", "g2")).threads("g2") == 1  # never fewer than one


def test_branch_left_alone_takes_every_core_with_the_same_results(data):
    """g2 finishes first; g1 then runs on both threads. Thread counts do not change the numbers:
    the result equals one branch after the other on one thread."""
    train_set, val_set = data
    cfg = _cfg(EPOCHS_g1=6, EPOCHS_g2=2)
    seen = {"g1": [], "g2": []}

    def callback(branch, epoch, history):
        seen[branch].append(torch.get_num_threads())

    torch.set_num_threads(2)
    together = train(replace(cfg, concurrent="on"), train_set, val_set, progress=False, callback=callback)
    assert seen["g2"] == [1, 1]  # one core each while both train ...
    assert seen["g1"][-1] == 2  # ... and g1, left alone, takes both
    torch.set_num_threads(1)
    apart = train(replace(cfg, concurrent="off"), train_set, val_set, progress=False)
    for branch in ("g1", "g2"):
        assert _same_state(together.models[branch].state_dict(), apart.models[branch].state_dict())
        assert together.histories[branch].loss == apart.histories[branch].loss


def test_one_training_step_keeps_every_tensor_on_the_training_device(data):
    """The device path (-g) checked on the meta device: data, batch gathering, model, loss,
    backward and Adam run there; a tensor left on the CPU would raise a device mismatch."""
    from lrnet.model import build_model
    from lrnet.training import EpochData, train_step

    train_set, val_set = data
    meta = torch.device("meta")
    epoch_data = EpochData.of(train_set, val_set, meta)
    assert {t.device.type for t in (epoch_data.frames, epoch_data.samples, epoch_data.val_blocks)} == {"meta"}
    for branch in ("g1", "g2"):
        model = build_model(_cfg().model, gru="fused", bf16=True).to(meta).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss, hits = train_step(model, optimizer, epoch_data, epoch_data.samples[:5], branch, {})
        assert loss.device == hits.device == meta
        assert all(p.grad is not None and p.grad.device == meta for p in model.parameters())


@pytest.mark.misuse
def test_train_refuses_a_folder_holding_a_run_unless_resumed_or_overwritten(data, tmp_path):
    train_set, val_set = data
    cfg = _cfg(EPOCHS_g1=1, EPOCHS_g2=1)
    train(cfg, train_set, val_set, branches=("g1",), output=tmp_path, progress=False)
    with pytest.raises(LrnetError, match="holds a training run"):
        train(cfg, train_set, val_set, branches=("g1",), output=tmp_path, progress=False)
    again = train(cfg, train_set, val_set, branches=("g1",), output=tmp_path, progress=False, resume=True)
    assert again.histories["g1"].epoch == [1]
    train(cfg, train_set, val_set, branches=("g1",), output=tmp_path, progress=False, overwrite=True)
    with pytest.raises(LrnetError, match="is a file"):
        train(cfg, train_set, val_set, output=tmp_path / "g1.pth", progress=False)
