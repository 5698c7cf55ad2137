"""Folder and list scans (`lrnet detect DIR|LIST --report FILE`, lrnet.scan): the report's header,
refusals and torn lines; results identical to one-at-a-time `lrnet detect` in this process, a local
pool and a real 2-worker Dask LocalCluster, each with a worker killed in the middle of a video."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import time
from pathlib import Path

import pytest

from lrnet import batch
from lrnet.cli import main
from lrnet.errors import LrnetError
from lrnet.scan import CSV_COLUMNS, CSV_PREFIX, MID_KILL_SUFFIX, Report, scan_jobs

MAX_FRAMES = "64"  # two blocks of the dfo weights at most: the same code path, a few seconds a video


def header(**changes) -> dict:
    base = {"lrnet_report": "detect", "format": 1, "lrnet_version": "x", "weights": "/w", "weights_sha256": "a" * 64,
            "block_size": 30, "aggregation": "vote", "threshold": 0.5, "uncertain": True, "fps_policy": "resample",
            "extraction": {"detect_every": 10, "max_frames": None}}
    base.update(changes)
    return base


def rows_of(path: Path) -> dict:
    lines = path.read_text().splitlines()
    return {r["video"]: r for r in map(json.loads, lines[1:])}


# ------------------------------------------------------------------------------------ the report


def test_report_appends_whole_lines_resumes_and_cuts_a_torn_tail(tmp_path):
    path = tmp_path / "r.jsonl"
    report = Report(path, header()).open()
    assert report.rows == {}
    report.add({"video": "/v/a.mp4", "status": "ok", "verdict": "fake"})
    report.add({"video": "/v/b.mp4", "status": "failed", "error": "/v/b.mp4: no face"})
    with pytest.raises(LrnetError, match="another scan is writing this report"):
        Report(path, header()).open()
    report.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["lrnet_report"] == "detect" and len(lines) == 3
    with open(path, "a") as fh:
        fh.write('{"video": "/v/c.mp4", "sta')  # a power cut in the middle of a line
    again = Report(path, header(created="later")).open()  # "created" does not decide verdicts
    assert again.repaired and set(again.rows) == {"/v/a.mp4", "/v/b.mp4"}
    assert again.counts() == {"fake": 1, "real": 0, "uncertain": 0, "failed": 1}
    again.close()
    assert path.read_text().endswith('"error": "/v/b.mp4: no face"}\n')


def test_a_report_that_is_not_lrnets_or_from_other_settings_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    first = Report(path, header()).open()
    first.add({"video": "/v/a.mp4", "status": "ok", "verdict": "real"})
    first.close()
    with pytest.raises(LrnetError, match=r"r.jsonl: written with other settings \(weights /w \(SHA-256 aaaaaaaaaaaa"
                                         r"\.\.\.\) here, /w \(SHA-256 bbbbbbbbbbbb\.\.\.\) now; threshold 0.5 here, "
                                         r"0.7 now\)"):
        Report(path, header(weights_sha256="b" * 64, threshold=0.7)).open()
    with pytest.raises(LrnetError, match=r"extraction.max_frames None here, 64 now"):
        Report(path, header(extraction={"detect_every": 10, "max_frames": 64})).open()
    path.write_text('{"video": "a"}\n')
    with pytest.raises(LrnetError, match="r.jsonl: not an lrnet detect report"):
        Report(path, header()).open()
    path.write_text(json.dumps(header()) + "\n" + "garbage\n")
    with pytest.raises(LrnetError, match="r.jsonl: line 2: not a report record"):
        Report(path, header()).open()
    other = tmp_path / "r.csv"
    other.write_text("video,verdict\n/v/a.mp4,fake\n")
    with pytest.raises(LrnetError, match="r.csv: not an lrnet detect report"):
        Report(other, header()).open()
    with pytest.raises(LrnetError, match="r.txt: a report is a .jsonl or .csv file"):
        Report(tmp_path / "r.txt", header())


def test_csv_report_has_the_header_record_above_one_line_rows(tmp_path):
    path = tmp_path / "r.csv"
    report = Report(path, header()).open()
    report.add({"video": "/v/odd\nname.mp4", "status": "ok", "verdict": "fake", "interval": [0.1, 0.9],
                "segments": [{}, {}], "notes": ["a", "b"], "timing": {"total": 1.5}})
    report.close()
    lines = path.read_text().splitlines()
    assert lines[0].startswith(CSV_PREFIX) and json.loads(lines[0][len(CSV_PREFIX):]) == header()
    assert len(lines) == 3  # the newline in the name is escaped: one line per video
    row = next(csv.DictReader(lines[1:]))
    assert tuple(row) == CSV_COLUMNS
    assert (row["video"], row["interval_low"], row["segments"], row["notes"], row["seconds"]) == \
        ("/v/odd\\nname.mp4", "0.1", "2", "a; b", "1.5")
    again = Report(path, header()).open()
    assert again.key(Path("/v/odd\nname.mp4")) in again.rows
    again.close()


def test_scan_jobs_from_folders_and_lists(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/b.avi", "sub/a.mp4"):
        (tmp_path / "in" / name).write_bytes(b"x")
    listed = tmp_path / "list.txt"
    listed.write_text(f"# archive\nin/a.mp4\n\n{tmp_path}/elsewhere/gone.mp4\n")
    jobs = scan_jobs([tmp_path / "in", listed], tmp_path / "lm")
    assert [(j.video.relative_to(tmp_path), j.output.relative_to(tmp_path)) for j in jobs] == [
        (Path("in/a.mp4"), Path("lm/a.txt")), (Path("in/sub/a.mp4"), Path("lm/sub/a.txt")),
        (Path("in/sub/b.avi"), Path("lm/sub/b.txt")), (Path("elsewhere/gone.mp4"), Path("lm/gone.txt"))]
    with pytest.raises(LrnetError, match="a.txt: --save-landmarks would write it for two videos"):
        scan_jobs([tmp_path / "in" / "a.mp4", tmp_path / "in" / "sub" / "a.mp4"], tmp_path / "lm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrnetError, match="empty: no video files found"):
        scan_jobs([tmp_path / "empty"])


@pytest.mark.misuse
def test_scan_misuse_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    assert main(["detect", str(tmp_path / "in")]) == 2
    assert "a folder or list scan writes its results to --report" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "in"), "--report", str(tmp_path / "r.jsonl"), "--json"]) == 2
    assert "--json is for videos scored one by one" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "in"), "--report", str(tmp_path / "r.txt")]) == 2
    assert "r.txt: a report is a .jsonl or .csv file" in capsys.readouterr().err


@pytest.mark.reference
@pytest.mark.misuse
def test_an_unreachable_scheduler_is_a_bounded_wait_one_line_and_exit_2(reference, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    report = tmp_path / "r.jsonl"
    started = time.monotonic()
    code = main(["detect", str(tmp_path / "in"), "--report", str(report), "--scheduler", "tcp://127.0.0.1:9",
                 "--weights", str(reference / "weights" / "dfo"), "--offline", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 60
    assert err.strip().splitlines() == ["lrnet detect: error: tcp://127.0.0.1:9: cannot reach the Dask scheduler "
                                        "(Connection refused)"]
    assert not report.exists()  # nothing scanned: no empty report left behind


# ------------------------------------------------------------------------------------ real scans


@pytest.fixture(scope="module")
def videos(reference, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scan-videos")
    (root / "sub").mkdir()
    (root / "real.mp4").symlink_to(reference / "videos" / "dfo_real.mp4")
    (root / "sub" / "fake.mp4").symlink_to(reference / "videos" / "ff_fake.mp4")
    (root / "broken.mp4").write_text("not a video\n" * 10)
    return root


def weights_flags(reference) -> list:
    return ["--weights", str(reference / "weights" / "dfo"), "--offline", "--max-frames", MAX_FRAMES]


@pytest.fixture(scope="module")
def one_by_one(videos, reference, tmp_path_factory) -> dict:
    """`lrnet detect --json` of each face video, one at a time (absolute paths), and its landmark files."""
    landmarks = tmp_path_factory.mktemp("one-by-one")
    out = io.StringIO()
    paths = [str(videos / "real.mp4"), str(videos / "sub" / "fake.mp4")]
    with contextlib.redirect_stdout(out):
        assert main(["detect", *paths, "--json", "--save-landmarks", str(landmarks), *weights_flags(reference)]) == 0
    results = {r["video"]: r for r in map(json.loads, out.getvalue().splitlines())}
    for row in results.values():
        row.pop("outputs")  # the files one detect run wrote; a scan writes its own (per video, same names)
    return {"results": results, "landmarks": landmarks}


def assert_same_results(report: Path, one_by_one: dict, videos: Path) -> None:
    rows = rows_of(report)
    assert set(rows) == {str(videos / "real.mp4"), str(videos / "sub" / "fake.mp4"), str(videos / "broken.mp4")}
    for video, expected in one_by_one["results"].items():
        got = dict(rows[video])
        assert got.pop("status") == "ok"
        got.pop("timing")
        assert got == {k: v for k, v in expected.items() if k != "timing"}, video
    broken = rows[str(videos / "broken.mp4")]
    assert broken["status"] == "failed" and broken["error"].startswith(f"{videos / 'broken.mp4'}: ")


@pytest.fixture(scope="module")
def kill_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kill-markers")


@pytest.fixture(scope="module")
def scheduler(kill_dir) -> str:
    """A real 2-worker LocalCluster (tcp:// on 127.0.0.1) whose workers honour the kill hook."""
    distributed = pytest.importorskip("distributed")
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


@pytest.mark.slow
def test_cluster_scan_equals_detect_one_by_one_and_survives_a_worker_killed_mid_video(
        videos, one_by_one, scheduler, kill_dir, reference, tmp_path, capsys):
    marker = kill_dir / ("real.txt" + MID_KILL_SUFFIX)  # the worker scoring real.mp4 dies after its landmarks
    marker.write_text("")
    report, landmarks = tmp_path / "report.jsonl", tmp_path / "landmarks"
    args = ["detect", str(videos), "--report", str(report), "--scheduler", scheduler, "--save-landmarks",
            str(landmarks), *weights_flags(reference)]
    assert main(args) == 1  # broken.mp4 failed; the others went on
    out = capsys.readouterr()
    assert not marker.exists(), "the kill hook did not fire"
    assert_same_results(report, one_by_one, videos)
    for name in ("real.txt", "fake.txt"):
        assert (one_by_one["landmarks"] / name).read_bytes() == \
            (landmarks / ("sub" if name == "fake.txt" else "") / name).read_bytes()
    assert "broken.mp4: " in out.err and re.search(r"^failed +1 +1$", out.out, re.M)

    before = report.read_bytes()
    assert main(args) == 0  # a re-run: everything is in the report already
    out = capsys.readouterr().out
    assert "3 of 3 videos already in" in out and "(1 of them failed; --retry-failed runs those again)" in out
    assert report.read_bytes() == before
    assert main([*args, "--aggregate", "mean-prob"]) == 2
    assert "written with other settings (aggregation 'vote' here, 'mean-prob' now" in capsys.readouterr().err


@pytest.mark.slow
def test_pool_scan_restarts_after_a_worker_dies_and_writes_csv(videos, one_by_one, kill_dir, reference, tmp_path,
                                                              capsys, monkeypatch):
    monkeypatch.setenv(batch.KILL_HOOK_ENV, str(kill_dir))
    marker = kill_dir / ("fake.mp4" + MID_KILL_SUFFIX)
    marker.write_text("")
    report = tmp_path / "report.csv"
    assert main(["detect", str(videos), "--report", str(report), "-j", "2", *weights_flags(reference)]) == 1
    assert not marker.exists(), "the kill hook did not fire"
    lines = report.read_text().splitlines()
    assert lines[0].startswith(CSV_PREFIX) and len(lines) == 2 + 3
    rows = {r["video"]: r for r in csv.DictReader(lines[1:])}
    for video, expected in one_by_one["results"].items():
        got = rows[video]
        assert (got["status"], got["verdict"], got["call"], float(got["score"]), int(got["blocks"])) == \
            ("ok", expected["verdict"], expected["call"], expected["score"], expected["blocks"])
        assert [float(got["interval_low"]), float(got["interval_high"])] == expected["interval"]
    assert rows[str(videos / "broken.mp4")]["status"] == "failed"


@pytest.mark.slow
def test_inline_scan_of_a_list_retries_failed_on_request(videos, one_by_one, reference, tmp_path, capsys):
    listed = tmp_path / "videos.txt"
    listed.write_text(f"{videos / 'real.mp4'}\nmissing.mp4\n")
    report = tmp_path / "r.jsonl"
    assert main(["detect", str(listed), "--report", str(report), *weights_flags(reference)]) == 1
    rows = rows_of(report)
    expected = one_by_one["results"][str(videos / "real.mp4")]
    assert {k: v for k, v in rows[str(videos / "real.mp4")].items() if k not in ("timing", "status")} == \
        {k: v for k, v in expected.items() if k != "timing"}
    missing = rows[str(tmp_path / "missing.mp4")]
    assert missing["status"] == "failed" and "missing.mp4" in missing["error"]
    capsys.readouterr()
    assert main(["detect", str(listed), "--report", str(report), "--retry-failed", *weights_flags(reference)]) == 1
    assert "1 of 2 videos already in" in capsys.readouterr().out
    assert len(report.read_text().splitlines()) == 1 + 3  # the failed video once more, appended
