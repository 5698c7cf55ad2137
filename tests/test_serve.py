"""`lrnet serve`: the HTTP API on a real uvicorn server (subprocess, 127.0.0.1, ephemeral port).

Checked against the CLI: a landmark upload gives the numbers of `lrnet predict --json --blocks`,
a video the numbers and landmark file of `lrnet detect` (with the reference data). Misuse: empty,
unknown-type and over-size uploads, unknown ids, a full queue, tokens, hostile file names,
cancellation (the worker process is killed), kill -9 of the server and a restart on the same data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 180.0  # seconds; a loaded 2-core machine imports torch slowly
JOB_TIMEOUT = 120.0


# ------------------------------------------------------------------------------ helpers (also used by test_serve_page)

def lrnet_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


class Server:
    """`python -m lrnet serve --port 0 ...` in a subprocess; the bound URL is read from its first line."""

    def __init__(self, data_dir: Path, weights: Path, *flags: str, token: Optional[str] = None):
        self.token = token
        args = [sys.executable, "-m", "lrnet", "serve", "--port", "0", "--data-dir", str(data_dir),
                "--weights", str(weights), "--offline", *flags] + (["--token", token] if token else [])
        self.data = data_dir
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=lrnet_env(), cwd=str(data_dir.parent))
        self._url: Optional[str] = None
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @property
    def url(self) -> str:
        """The bound URL, waiting for the server's first line (so several servers can start at once)."""
        if self._url is None:
            self._url = self._read_url()
        return self._url

    def _read_url(self) -> str:
        lines: List[str] = []
        timer = threading.Timer(STARTUP_TIMEOUT, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                lines.append(line)
                match = re.search(r"listening on (http://127\.0\.0\.1:\d+/)", line)
                if match:
                    return match.group(1).rstrip("/")
        finally:
            timer.cancel()
        raise RuntimeError(f"server did not start: {''.join(lines)} {self.proc.stderr.read()}")

    def get(self, path: str, **kw):
        return self.session.get(self.url + path, timeout=30, **kw)

    def delete(self, path: str, **kw):
        return self.session.delete(self.url + path, timeout=30, **kw)

    def upload(self, path: Path, name: Optional[str] = None, data: Optional[bytes] = None, **fields):
        content = path.read_bytes() if data is None else data
        files = {"file": (name or path.name, content, "application/octet-stream")}
        return self.session.post(self.url + "/api/v1/jobs", files=files, data=fields, timeout=60)

    def wait(self, job_id: str, statuses=("done", "failed", "cancelled"), timeout: float = JOB_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")

    def workers(self) -> List[int]:
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]

    def stop(self, sig=signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            self.session.close()
            self.proc.stdout.close()
            self.proc.stderr.close()


def run_lrnet(*args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrnet", *args], check=False, capture_output=True, text=True,
                          env=lrnet_env(), cwd=str(cwd) if cwd else None, timeout=300)


def make_weights(folder: Path) -> Path:
    """A g1.pth/g2.pth pair of untrained (seeded) LRNet branches, the official layout."""
    import torch

    from lrnet.model import build_model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for branch in ("g1", "g2"):
        torch.save(build_model().state_dict(), folder / f"{branch}.pth")
    return folder


def make_landmark_file(path: Path, frames: int = 200, video: int = 0) -> Path:
    from lrnet.landmarks import write_landmarks
    from lrnet.synthetic import real_video

    write_landmarks(path, real_video(seed=3, video=video, frames=frames) / 200.0 - 1.0)
    return path


def make_faceless_video(path: Path, frames: int = 250, size=(640, 480)) -> Path:
    """An H.264 MP4 of a sliding gradient: every frame goes through the face detector, none has a face."""
    import av

    w, h = size
    yy, xx = np.mgrid[0:h, 0:2 * w]
    pattern = np.stack([xx % 256, (2 * yy) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "superfast"}
        for i in range(frames):
            shift = 3 * i % w
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pattern[:, shift:shift + w]), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def cli_json(capsys, *args: str) -> dict:
    """`lrnet ARGS` run in this process (the same code as the console script); its one JSON line."""
    from lrnet.cli import main

    main(list(args))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def weights_dir(work) -> Path:
    """The official dfo weights when the reference data is here, else a seeded untrained pair."""
    from conftest import REFERENCE

    official = REFERENCE / "weights" / "dfo"
    return official if official.is_dir() else make_weights(work / "weights")


@pytest.fixture(scope="module")
def servers(work, weights_dir):
    """Both servers of this module, started at the same time: the default one, and a strict one with
    one worker, a queue of one, 2 MB uploads and a token (the restart test kills it at the end)."""
    default = Server(work / "data", weights_dir)
    strict = Server(work / "strict", weights_dir, "--jobs", "1", "--queue", "1", "--max-upload-mb", "2",
                    token="s3cret-token")
    yield default, strict
    assert default.stop() in (0, 130)
    strict.stop()


@pytest.fixture(scope="module")
def server(servers) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def strict_server(servers) -> Server:
    return servers[1]


@pytest.fixture(scope="module")
def landmarks(work) -> Path:
    return make_landmark_file(work / "clip.txt")


@pytest.fixture(scope="module")
def faceless(work) -> Path:
    return make_faceless_video(work / "faceless.mp4")


# ------------------------------------------------------------------------------ results agree with the CLI

def test_landmark_upload_gives_the_numbers_of_lrnet_predict(server, landmarks, weights_dir, work):
    answer = server.upload(landmarks)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert re.fullmatch(r"[0-9a-f]{32}", job["id"]) and job["id"] not in landmarks.name
    assert answer.headers["Location"] == job["urls"]["self"]
    cli = subprocess.Popen([sys.executable, "-m", "lrnet", "predict", "--json", "--blocks", "--weights",
                            str(weights_dir), str(landmarks)], stdout=subprocess.PIPE, text=True, env=lrnet_env())
    done = server.wait(job["id"])
    assert done["status"] == "done", done
    expected = json.loads(cli.communicate(timeout=300)[0])
    result = done["result"]
    for key in ("verdict", "score", "blocks", "frames", "aggregation", "block_scores", "block_scores_g1",
                "block_scores_g2"):
        assert result[key] == expected[key], key
    details = result["block_details"]
    assert [d["p_fake"] for d in details] == expected["block_scores"]
    assert [d["p_g1"] for d in details] == expected["block_scores_g1"]
    assert all(d["end_s"] > d["start_s"] for d in details)
    text = server.get(f"/api/v1/jobs/{job['id']}/landmarks.txt")
    assert text.status_code == 200 and text.content == landmarks.read_bytes()
    assert 'filename="clip.txt"' in text.headers["content-disposition"]
    assert server.get(f"/api/v1/jobs/{job['id']}/video").status_code == 404


def test_other_aggregation_is_passed_through(server, landmarks, weights_dir, capsys):
    done = server.wait(server.upload(landmarks, aggregation="mean-prob").json()["id"])
    cli = cli_json(capsys, "predict", "--json", "--aggregate", "mean-prob", "--weights", str(weights_dir),
                   str(landmarks))
    assert (done["result"]["aggregation"], done["result"]["score"]) == ("mean-prob", cli["score"])
    bad = server.upload(landmarks, aggregation="median")
    assert bad.status_code == 422 and "median" in bad.json()["detail"]
    assert server.upload(landmarks, weights="/etc").status_code == 422


def test_events_stream_progress_until_the_job_ends(server, landmarks):
    job = server.upload(landmarks).json()
    with server.session.get(server.url + job["urls"]["events"], stream=True, timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in stream.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1]["status"] == "done" and events[-1]["result"]["verdict"] in ("real", "fake")
    assert [e["status"] for e in events[:-1]] == [e["status"] for e in events[:-1] if e["status"] != "done"]


PREFIX = 100  # frames of dfo_real.mp4 in the sample clips: three 30-frame blocks


@pytest.fixture(scope="module")
def sample_clips(reference, work) -> Dict[str, Path]:
    """The first PREFIX frames of dfo_real.mp4 as H.264 MP4 (browsers play it) and as MJPG AVI (they do not)."""
    import av
    import cv2

    clips = {"mp4": work / "sample.mp4", "avi": work / "sample.avi"}
    source = cv2.VideoCapture(str(reference / "videos" / "dfo_real.mp4"))
    avi = cv2.VideoWriter(str(clips["avi"]), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    with av.open(str(clips["mp4"]), "w") as mp4:
        stream = mp4.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for _ in range(PREFIX):
            frame = source.read()[1]
            avi.write(frame)
            mp4.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        mp4.mux(stream.encode(None))
    avi.release()
    source.release()
    return clips


@pytest.mark.reference
def test_video_upload_gives_the_result_and_landmarks_of_lrnet_detect(server, reference, sample_clips, work,
                                                                     capsys):
    video = sample_clips["mp4"]
    job = server.upload(video).json()
    assert job["kind"] == "mp4" and job["urls"]["video"]
    expected = cli_json(capsys, "detect", "--json", "--blocks", "--weights", str(reference / "weights" / "dfo"),
                        "--save-landmarks", str(work / "cli.txt"), str(video))
    done = server.wait(job["id"])
    assert done["status"] == "done", done
    result = done["result"]
    for key in ("verdict", "score", "blocks", "frames", "block_scores", "landmarked", "reused", "skipped",
                "decoded_frames"):
        assert result[key] == expected[key], key
    assert result["video"] == "sample.mp4" and result["weights"] == str(reference / "weights" / "dfo")
    assert [d["start_s"] for d in result["block_details"]] == pytest.approx([0, 1.2, 2.4])
    assert set(result["timing"]) >= {"decode", "landmarks", "calibration", "scoring", "total"}
    urls = done["urls"]
    assert server.get(urls["landmarks_txt"]).content == (work / "cli.txt").read_bytes()
    marks = server.get(urls["landmarks"]).json()
    assert len(marks["raw"]) == len(marks["calibrated"]) == len(marks["times"]) == result["frames"] == PREFIX
    assert len(marks["raw"][0]) == 136 and marks["width"] == 640
    clip = server.get(urls["video"], headers={"Range": "bytes=0-99"})
    assert clip.status_code == 206 and clip.content == video.read_bytes()[:100]  # served as uploaded


@pytest.mark.reference
def test_a_video_browsers_cannot_play_is_reencoded_to_h264(server, sample_clips, work):
    from lrnet.serve.media import probe_video

    job = server.upload(sample_clips["avi"]).json()
    assert server.get(job["urls"]["video"]).status_code in (409, 200)  # the copy is made at the end
    done = server.wait(job["id"])
    assert done["status"] == "done" and done["kind"] == "avi", done
    copy = work / "copy.mp4"
    copy.write_bytes(server.get(done["urls"]["video"]).content)
    info = probe_video(copy)
    assert (info.codec, info.pix_fmt, info.frames, info.width) == ("h264", "yuv420p", PREFIX, 640)


FAST = 75  # frames of a 30 fps clip: 2.5 s, resampled to 63 frames (two blocks) by 25 fps weights


@pytest.mark.slow
@pytest.mark.reference
def test_a_30fps_video_scored_with_25fps_weights_keeps_its_real_duration(server, reference, work):
    """The time axis is the video's clock: 75 frames at 30 fps last 2.5 s, not 75 / 25 = 3.0 s."""
    import av
    import cv2

    clip = work / "fast.mp4"
    source = cv2.VideoCapture(str(reference / "videos" / "dfo_fake.mp4"))
    with av.open(str(clip), "w") as mp4:
        stream = mp4.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for _ in range(FAST):
            frame = cv2.resize(source.read()[1], (640, 480))
            mp4.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        mp4.mux(stream.encode(None))
    source.release()
    done = server.wait(server.upload(clip).json()["id"])
    assert done["status"] == "done", done
    result = done["result"]
    assert (result["fps"], result["fps_used"]) == (30.0, 25.0)  # the case: resampled to the weights' rate
    true_s = FAST / 30.0
    assert abs(result["duration_s"] - true_s) <= 1 / 30, result["duration_s"]
    ends = [b["end_s"] for b in result["block_details"]]
    assert len(ends) == result["blocks"] >= 2 and max(ends) <= result["duration_s"]
    marks = server.get(done["urls"]["landmarks"]).json()
    assert marks["times"][-1] < result["duration_s"] and len(marks["times"]) == result["frames"]


def test_video_duration_comes_from_the_clock_not_the_scoring_rate():
    from lrnet.serve.runner import video_duration

    kept = np.arange(100) / 25.0  # 120 frames of 30 fps kept at 25 fps: the last at 3.96 s
    assert video_duration(4.0, kept, 30.0, 120) == 4.0  # the header's length
    assert video_duration(None, kept, 30.0, 120) == pytest.approx(4.0)  # else frames at the file's own rate
    assert video_duration(3.0, kept, 30.0, 120) == pytest.approx(3.96 + 1 / 30)  # never before the last frame ends
    assert video_duration(None, np.zeros(0), 0.0) == 0.0


def test_a_failing_video_reports_the_message_of_lrnet_detect(server, weights_dir, work, capsys, monkeypatch):
    from lrnet.cli import main

    faceless = make_faceless_video(work / "faceless_short.mp4", frames=40)
    broken = work / "broken.mp4"
    broken.write_bytes(b"\0\0\0\x18ftypisom" + bytes(range(256)) * 8)  # MP4 magic, no video inside
    jobs = {p: server.upload(p).json()["id"] for p in (faceless, broken)}
    monkeypatch.chdir(work)
    for path, job_id in jobs.items():
        assert main(["detect", "--weights", str(weights_dir), path.name]) == 1
        message = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("lrnet detect: error: ")
        done = server.wait(job_id)
        assert done["status"] == "failed" and done["error"] == message, (done, message)
        assert done["result"] is None
        assert sorted(p.name for p in (server_data(server) / job_id).iterdir()) == ["job.json"]  # upload removed


def test_a_too_short_landmark_file_fails_like_lrnet_predict(server, work):
    short = make_landmark_file(work / "short.txt", frames=20)
    done = server.wait(server.upload(short).json()["id"])
    assert done["status"] == "failed"
    assert done["error"] == "short.txt: too short: 20 frames, need more than 30 for one block"


def server_data(server: Server) -> Path:
    return server.data / "jobs"


# ------------------------------------------------------------------------------ misuse

@pytest.mark.misuse
def test_uploads_are_judged_by_content_not_by_name(server, landmarks, work):
    empty = server.upload(landmarks, data=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    png = server.upload(landmarks, name="clip.mp4", data=b"\x89PNG\r\n\x1a\n" + bytes(2000))
    assert png.status_code == 415
    prose = server.upload(landmarks, name="notes.txt", data=b"hello world\n" * 50)
    assert prose.status_code == 415
    disguised = server.upload(landmarks, name="clip.mp4")
    assert disguised.status_code == 202 and disguised.json()["kind"] == "landmarks"
    no_file = server.session.post(server.url + "/api/v1/jobs", data={"weights": "x"}, timeout=30)
    assert no_file.status_code == 400
    server.wait(disguised.json()["id"])
    assert not [p for p in server_data(server).iterdir() if not (p / "job.json").is_file()]  # refused: nothing left


@pytest.mark.misuse
def test_unknown_ids_are_404(server):
    for job_id in ("0" * 32, "../../etc/passwd", "nothex" * 5):
        assert server.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert server.delete(f"/api/v1/jobs/{'f' * 32}").status_code == 404
    assert server.get(f"/api/v1/jobs/{'0' * 32}/landmarks.txt").status_code == 404


@pytest.mark.misuse
def test_a_hostile_file_name_never_becomes_a_path(server, landmarks, work):
    before = {p for p in work.parent.rglob("*passwd*")}
    answer = server.upload(landmarks, name="../../etc/passwd.txt")
    assert answer.status_code == 202
    job = server.wait(answer.json()["id"])
    assert job["status"] == "done" and job["filename"] == "passwd.txt"
    folder = server_data(server) / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["job.json", "landmarks.json", "landmarks.txt", "upload.txt"]
    assert {p for p in work.parent.rglob("*passwd*")} == before


def test_health_readiness_weights_and_docs(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers_ready"] == 1
    weights = server.get("/api/v1/weights").json()
    assert weights["aggregations"] == ["vote", "mean-prob", "mean-logit"] and weights["weights"][0]["block_size"] == 30
    page = server.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text + server.get("/docs").text)  # nothing external
    assert "/api/v1/jobs" in server.get("/openapi.json").json()["paths"]
    docs = server.get("/docs")
    assert docs.status_code == 200 and "default-src 'self'" in docs.headers["content-security-policy"]
    assert f"curl -F file=@clip.mp4 {server.url}/api/v1/jobs " in docs.text  # this server's host:port, not 8000
    assert ":8000" not in docs.text and "{{" not in docs.text
    spoofed = server.get("/docs", headers={"Host": 'x"><script>alert(1)</script>'})
    assert spoofed.status_code == 200 and "<script>alert" not in spoofed.text  # a forged Host never becomes markup
    recent = server.get("/api/v1/jobs").json()["jobs"]
    assert recent and "result" not in recent[0]


@pytest.mark.misuse
def test_the_token_guards_every_api_call(strict_server, landmarks):
    url = strict_server.url
    assert requests.get(url + "/api/v1/weights", timeout=10).status_code == 401
    wrong = requests.get(url + "/api/v1/weights", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    files = {"file": ("clip.txt", landmarks.read_bytes())}
    assert requests.post(url + "/api/v1/jobs", files=files, timeout=10).status_code == 401
    assert requests.get(url + "/api/v1/weights?token=s3cret-token", timeout=10).status_code == 401  # header only
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    job = strict_server.upload(landmarks).json()
    events = requests.get(f"{url}{job['urls']['events']}?token=s3cret-token", timeout=60)
    assert events.status_code == 200 and '"status": "done"' in events.text


@pytest.mark.misuse
def test_an_oversize_upload_is_cut_off_with_413(strict_server, work):
    answer = strict_server.upload(work / "big.mp4", data=b"\0\0\0\x18ftypisom" + bytes(5 << 20))
    assert answer.status_code == 413 and "2 MB" in answer.json()["detail"]
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}  # no Content-Length: chunked, cut mid-stream
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\n" + bytes(1 << 20)
            for _ in range(3))
    chunked = strict_server.session.post(strict_server.url + "/api/v1/jobs", data=body, headers=headers, timeout=30)
    assert chunked.status_code == 413
    assert list(server_data(strict_server).iterdir()) == [p for p in server_data(strict_server).iterdir()
                                                          if (p / "job.json").is_file()]


@pytest.mark.misuse
def test_full_queue_503_and_cancel_kills_the_running_worker(strict_server, faceless, landmarks):
    old_workers = strict_server.workers()
    running = strict_server.upload(faceless).json()["id"]
    strict_server.wait(running, statuses=("running",))
    queued = strict_server.upload(faceless).json()["id"]
    refused = strict_server.upload(landmarks)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert strict_server.get("/readyz").status_code == 503
    assert strict_server.delete(f"/api/v1/jobs/{queued}").json()["status"] == "cancelled"
    assert strict_server.delete(f"/api/v1/jobs/{running}").json()["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in old_workers):
        assert time.monotonic() < deadline, "the worker running the cancelled job is still alive"
        time.sleep(0.1)
    for job_id in (running, queued):
        job = strict_server.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled"
        assert sorted(p.name for p in (server_data(strict_server) / job_id).iterdir()) == ["job.json"]
    after = strict_server.wait(strict_server.upload(landmarks).json()["id"])  # a fresh worker takes over
    assert after["status"] == "done"
    assert strict_server.delete(f"/api/v1/jobs/{running}").json()["status"] == "deleted"
    assert strict_server.get(f"/api/v1/jobs/{running}").status_code == 404


# ------------------------------------------------------------------------------ server lifetime

@pytest.mark.misuse
def test_kill_and_restart_keep_results_and_fail_interrupted_jobs(strict_server, weights_dir, landmarks, faceless):
    first, data = strict_server, strict_server.data
    finished = first.wait(first.upload(landmarks).json()["id"])
    interrupted = first.upload(faceless).json()["id"]
    first.wait(interrupted, statuses=("running",))
    workers = first.workers()
    assert workers
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in workers):
        assert time.monotonic() < deadline, "worker processes outlived a killed server"
        time.sleep(0.1)
    second = Server(data, weights_dir, token=first.token)
    try:
        again = second.get(f"/api/v1/jobs/{finished['id']}").json()
        assert again["status"] == "done" and again["result"] == finished["result"]
        lost = second.get(f"/api/v1/jobs/{interrupted}").json()
        assert (lost["status"], lost["error"]) == ("failed", "server restarted")
        assert sorted(p.name for p in (data / "jobs" / interrupted).iterdir()) == ["job.json"]
        rival = run_lrnet("serve", "--port", "0", "--data-dir", str(data), "--weights", str(weights_dir))
        assert rival.returncode == 2 and "in use by `lrnet serve`" in rival.stderr
    finally:
        assert second.stop(signal.SIGTERM) in (0, 143, -signal.SIGTERM)  # 143: lrnet's exit status for SIGTERM


@pytest.mark.misuse
def test_refuses_a_public_address_without_a_token_and_bad_flags(work, weights_dir):
    public = run_lrnet("serve", "--host", "0.0.0.0", "--data-dir", str(work / "public"), "--weights", str(weights_dir))
    assert public.returncode == 2 and "without --token" in public.stderr
    assert len(public.stderr.strip().splitlines()) == 1 and not (work / "public").exists()
    for flag, value in (("--port", "70000"), ("--jobs", "0"), ("--max-upload-mb", "-1"), ("--keep-hours", "nan")):
        bad = run_lrnet("serve", flag, value)
        assert bad.returncode == 2 and flag in bad.stderr


def test_file_types_are_told_by_their_first_bytes():
    from lrnet.serve.uploads import display_name, sniff_kind

    line = " ".join(["0.12345"] * 136) + "\n"
    assert sniff_kind(b"\0\0\0\x20ftypisom" + bytes(20)) == "mp4"
    assert sniff_kind(b"\0\0\0\x14ftypqt  " + bytes(20)) == "mov"
    assert sniff_kind(b"RIFF\x10\0\0\0AVI LIST" + bytes(20)) == "avi"
    assert sniff_kind(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + bytes(20)) == "webm"
    assert sniff_kind(b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska" + bytes(20)) == "mkv"
    assert sniff_kind((line * 3).encode(), whole=True) == "landmarks"
    assert sniff_kind((line * 3).encode()[:-200]) == "landmarks"  # a sniff window cutting the last line
    assert sniff_kind(line.encode()[:-200], whole=True) is None  # ... but a file whose only line is short
    assert sniff_kind((" ".join(["0.1"] * 135) + "\n").encode(), whole=True) is None
    assert sniff_kind((" ".join(["nan"] * 136) + "\n").encode(), whole=True) is None
    assert sniff_kind(b"RIFF\x10\0\0\0WAVEfmt " + bytes(20)) is None  # RIFF, but audio
    assert display_name("..\\..\\evil\x00name.mp4") == "evilname.mp4" and display_name("../") == "upload"
