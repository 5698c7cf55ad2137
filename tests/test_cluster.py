"""Per-video jobs on Dask (lrnet.cluster): one LocalCluster of 2 worker processes for the module,
reached through its tcp:// address as a user's cluster would be."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from helpers_jobs import write_video
from lrnet import batch
from lrnet.cli import main
from lrnet.cluster import SchedulerSpec, parse_scheduler
from lrnet.compress import compress_folder
from lrnet.errors import LrnetError
from lrnet.extract import ExtractOptions

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def kill_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kill-markers")


@pytest.fixture(scope="module")
def scheduler(kill_dir) -> str:
    """Address of a LocalCluster whose workers honour the kill hook (`batch.KILL_HOOK_ENV`)."""
    old = os.environ.get(batch.KILL_HOOK_ENV)
    os.environ[batch.KILL_HOOK_ENV] = str(kill_dir)  # inherited by the worker processes
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address="127.0.0.1:0", silence_logs=40)
    finally:
        if old is None:
            os.environ.pop(batch.KILL_HOOK_ENV)
        else:
            os.environ[batch.KILL_HOOK_ENV] = old
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_video(root / f"sub{i % 2}" / f"clip{i}.mp4", 12 + i, seed=i)
    (root / "broken.mp4").write_text("not a video\n" * 20)
    return root


def _rows(log: Path) -> list:
    with open(log, newline="") as fh:
        return list(csv.DictReader(fh))


def test_parse_scheduler():
    assert parse_scheduler("local:3") == SchedulerSpec(local_workers=3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == SchedulerSpec(address="tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "tcp://a b", ""):
        with pytest.raises(ValueError):
            parse_scheduler(bad)


def test_compress_on_dask_matches_the_local_job_and_a_rerun_skips_everything(scheduler, clips, tmp_path):
    local = compress_folder(clips, tmp_path / "local", crf=30, progress=False)
    dask = compress_folder(clips, tmp_path / "dask", crf=30, scheduler=scheduler, progress=False)
    assert (dask.total, dask.done, dask.failed) == (local.total, local.done, local.failed) == (5, 4, 1)
    for out in (tmp_path / "local").rglob("*.mp4"):
        twin = tmp_path / "dask" / out.relative_to(tmp_path / "local")
        assert twin.read_bytes() == out.read_bytes(), out
    rows = _rows(dask.log)
    assert len(rows) == 5 and [r["video"] for r in rows if r["error"]] == [str((clips / "broken.mp4").absolute())]
    again = compress_folder(clips, tmp_path / "dask", crf=30, scheduler=scheduler, progress=False)
    assert (again.done, again.skipped_existing, again.failed) == (0, 4, 1)  # the failed one is tried again
    assert len(_rows(dask.log)) == 6  # ... and logged once more, once


def test_a_worker_killed_during_a_video_loses_only_that_video(scheduler, clips, kill_dir, tmp_path):
    marker = kill_dir / "clip2.mp4.kill"
    marker.write_text("")
    summary = compress_folder(clips, tmp_path / "out", crf=30, scheduler=scheduler, retries=1, progress=False)
    assert not marker.exists(), "the kill hook did not fire"
    assert (summary.done, summary.failed) == (4, 1)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.mp4")) == ["clip0.mp4", "clip1.mp4", "clip2.mp4",
                                                                           "clip3.mp4"]
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    rows = _rows(summary.log)
    assert sum(r["output"].endswith("clip2.mp4") for r in rows) == 1 and len(rows) == 5


def test_a_content_failure_is_a_value_not_a_retried_exception(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    outcome = batch.run_task(batch._extract_one, batch.Job(bad, tmp_path / "bad.txt"), ExtractOptions())
    assert outcome.error.startswith(f"{bad}: ") and not outcome.fatal


@pytest.mark.reference
def test_extract_on_dask_gives_the_local_job_bytes(scheduler, reference, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "real.mp4").symlink_to(reference / "videos" / "dfo_real.mp4")
    (src / "fake.mp4").symlink_to(reference / "videos" / "dfo_fake.mp4")
    write_video(src / "noface.mp4", 6)
    options = ExtractOptions(max_frames=32)
    local = batch.extract_folder(src, tmp_path / "local", options=options, progress=False)
    dask = batch.extract_folder(src, tmp_path / "dask", options=options, scheduler=scheduler, progress=False)
    assert (local.done, local.failed) == (dask.done, dask.failed) == (2, 1)
    for name in ("real.txt", "fake.txt"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert sum("no face found" in r["error"] for r in _rows(dask.log)) == 1


def test_cli_extract_and_compress_through_a_scheduler(scheduler, clips, tmp_path, capsys):
    assert main(["compress", str(clips), str(tmp_path / "c"), "--scheduler", scheduler, "-q"]) == 1
    out = capsys.readouterr().out
    assert "5 videos: 4 compressed, 0 already done, 1 failed" in out
    assert main(["extract", str(tmp_path / "c"), str(tmp_path / "x"), "--scheduler", scheduler, "-q"]) == 1
    assert "4 videos: 0 extracted, 0 already done, 4 failed" in capsys.readouterr().out  # noise: no face


def test_unreachable_scheduler_is_one_line(tmp_path, clips):
    with pytest.raises(LrnetError, match="tcp://127.0.0.1:9: cannot reach the Dask scheduler"):
        compress_folder(clips, tmp_path / "out", scheduler="tcp://127.0.0.1:9", progress=False)


def test_scheduler_local_starts_and_stops_its_own_cluster(clips, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    (one / "clip0.mp4").symlink_to(clips / "sub0" / "clip0.mp4")
    assert main(["compress", str(one), str(tmp_path / "out"), "--scheduler", "local:1", "-q"]) == 0
    assert "1 videos: 1 compressed" in capsys.readouterr().out
    assert (tmp_path / "out" / "clip0.mp4").is_file()
