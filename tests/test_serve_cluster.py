"""`lrnet serve --scheduler local:2`: the service's jobs on a real Dask LocalCluster behind uvicorn on
127.0.0.1 (the same page and API as with local workers); cancel, time limit, a lost worker, and a
server restart that re-queues the interrupted job. Also `JobStore.recover` on its own."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from lrnet.serve.store import RECORD, Job, JobStore
from test_serve import Server, cli_json, make_faceless_video, make_landmark_file, run_lrnet

psutil = pytest.importorskip("psutil")
pytest.importorskip("distributed")


def test_recover_requeues_interrupted_jobs_from_their_upload(tmp_path):
    store = JobStore(tmp_path, capacity=4, keep_hours=1)
    jobs = {status: Job(JobStore.new_id(), "mp4", f"{status}.mp4", "upload.mp4", "dfo", "vote") for status in
            ("queued", "running", "done", "gone")}
    for status, job in jobs.items():
        store.add(job)
        (store.folder(job.id) / "upload.mp4").write_bytes(b"video")
        store.update(job.id, status="running" if status == "gone" else status, started=time.time(),
                     stage="landmarks", fraction=0.5)
    (store.folder(jobs["running"].id) / "landmarks.json").write_text("{}")  # half-written outputs of the old run
    (store.folder(jobs["gone"].id) / "upload.mp4").unlink()
    again = JobStore(tmp_path, capacity=4, keep_hours=1)
    assert again.recover() == {"kept": 1, "requeued": 2, "interrupted": 1, "dropped": 0}
    for status in ("queued", "running"):
        job = again.get(jobs[status].id)
        assert (job.status, job.stage, job.fraction, job.started) == ("queued", "queued", 0.0, None)
        assert sorted(p.name for p in again.folder(job.id).iterdir()) == sorted([RECORD, "upload.mp4"])
        assert json.loads((again.folder(job.id) / RECORD).read_text())["status"] == "queued"
    gone = again.get(jobs["gone"].id)
    assert (gone.status, gone.error) == ("failed", "server restarted (its upload is gone)")
    assert again.next_queued().id == jobs["queued"].id  # the order of arrival is kept


@pytest.mark.misuse
def test_an_unreachable_scheduler_stops_serve_with_one_line(tmp_path):
    started = time.monotonic()
    answer = run_lrnet("serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--scheduler", "tcp://127.0.0.1:9",
                       "--offline")
    assert answer.returncode == 2 and time.monotonic() - started < 60
    assert answer.stderr.strip().splitlines() == ["lrnet serve: error: tcp://127.0.0.1:9: cannot reach the Dask "
                                                  "scheduler (Connection refused)"]
    jobs = run_lrnet("serve", "--scheduler", "local:1", "--jobs", "2")
    assert jobs.returncode == 2 and "--jobs sizes the local worker processes" in jobs.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-dask")


@pytest.fixture(scope="module")
def weights_dir(reference) -> Path:
    return reference / "weights" / "dfo"


@pytest.fixture(scope="module")
def clip(reference, work) -> Path:
    """The first 100 frames of dfo_real.mp4 (H.264): a face video of a few seconds' work."""
    import subprocess

    out = work / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(reference / "videos" / "dfo_real.mp4"), "-frames:v",
                    "100", "-c:v", "libx264", "-preset", "veryfast", "-an", str(out)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def faceless(work) -> Path:
    return make_faceless_video(work / "faceless.mp4", frames=400)


def dask_workers(server: Server) -> list:
    """The Dask worker processes of the server's LocalCluster (spawned children)."""
    return server.workers()


@pytest.mark.slow
def test_jobs_run_on_the_cluster_with_the_numbers_of_the_cli(work, weights_dir, clip, faceless, capsys):
    server = Server(work / "data", weights_dir, "--scheduler", "local:2")
    try:
        landmarks = make_landmark_file(work / "clip.txt")
        job = server.upload(landmarks).json()
        video_job = server.upload(clip).json()
        expected = cli_json(capsys, "predict", "--json", "--blocks", "--weights", str(weights_dir), str(landmarks))
        done = server.wait(job["id"])
        assert done["status"] == "done", done
        assert (done["result"]["score"], done["result"]["block_scores"]) == (expected["score"],
                                                                             expected["block_scores"])
        assert server.get(done["urls"]["landmarks_txt"]).content == landmarks.read_bytes()
        detect = cli_json(capsys, "detect", "--json", "--blocks", "--weights", str(weights_dir), str(clip))
        video = server.wait(video_job["id"], timeout=300)
        assert video["status"] == "done", video
        for key in ("verdict", "score", "blocks", "frames", "block_scores", "landmarked"):
            assert video["result"][key] == detect[key], key
        ready = server.get("/readyz").json()
        assert ready["workers_ready"] == 2

        # cancel a running job: it stops, its files go, the cluster takes the next job
        running = server.upload(faceless).json()["id"]
        server.wait(running, statuses=("running",))
        time.sleep(1.0)
        assert server.delete(f"/api/v1/jobs/{running}").json()["status"] == "cancelled"
        deadline = time.monotonic() + 60
        folder = work / "data" / "jobs" / running
        while sorted(p.name for p in folder.iterdir()) != [RECORD]:
            assert time.monotonic() < deadline, sorted(p.name for p in folder.iterdir())
            time.sleep(0.2)
        assert server.wait(server.upload(landmarks).json()["id"])["status"] == "done"
        assert server.get(f"/api/v1/jobs/{running}").json()["status"] == "cancelled"

        # a worker lost in the middle of a job: Dask runs the job again, the result is the same
        again = server.upload(clip).json()["id"]
        server.wait(again, statuses=("running",))
        deadline = time.monotonic() + 60
        while server.get(f"/api/v1/jobs/{again}").json()["progress"]["stage"] in ("starting", "queued"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        victims = dask_workers(server)
        assert len(victims) >= 2
        for pid in victims:  # both: whichever runs the job dies
            psutil.Process(pid).kill()
        rerun = server.wait(again, timeout=300)
        assert rerun["status"] == "done", rerun
        assert rerun["result"]["score"] == video["result"]["score"]
        assert rerun["result"]["block_scores"] == video["result"]["block_scores"]
    finally:
        server.stop()


@pytest.mark.slow
def test_time_limit_and_a_restart_that_requeues_the_interrupted_job(work, weights_dir, clip, faceless):
    data = work / "restart"
    first = Server(data, weights_dir, "--scheduler", "local:1", "--job-timeout", "2")
    try:
        slow = first.wait(first.upload(faceless).json()["id"], timeout=120)
        assert (slow["status"], slow["error"]) == ("failed", "faceless.mp4: stopped after the time limit of 2 s")
        interrupted = first.upload(clip).json()["id"]
        first.wait(interrupted, statuses=("running",))
    finally:
        first.stop(signal.SIGKILL)
    second = Server(data, weights_dir, "--scheduler", "local:1")
    try:
        job = second.wait(interrupted, timeout=300)
        assert job["status"] == "done" and job["result"]["verdict"], job
    finally:
        second.stop()
