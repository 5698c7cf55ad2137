"""The streaming pipeline and `lrnet watch`: one pipeline for files and live sources.

Unit tests check the streaming pieces against their whole-array counterparts (segments, frame
selection); the rest drive real sources: files played at their own pace, MPEG-TS streams served by
ffmpeg on 127.0.0.1 (tcp listen), a stream on stdin, a TCP server that stalls, a kill with SIGINT.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lrnet.segments import FACE, NO_FACE, REUSED, StreamSegmenter, find_segments
from lrnet.video import Frame, Resampler, keep_mask

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt install ffmpeg)")
FRAMES = 100  # frames of a sample video used per test (4 s at 25 fps): enough for 3 blocks


# ------------------------------------------------------------------------------------ unit tests

def _segments_by_stream(status, track, max_reused):
    segmenter = StreamSegmenter(max_reused)
    actions = []
    for row, (s, t) in enumerate(zip(status, track)):
        actions += segmenter.push(row, int(s), int(t))
    actions += segmenter.close()
    segments, kept = [], np.zeros(len(status), bool)
    for action, row, detail in actions:
        if action == "keep":
            kept[row] = True
            if detail:
                segments.append([row, row + 1])
            else:
                assert segments and segments[-1][1] == row, "a kept row continues the open segment"
                segments[-1][1] = row + 1
    return [tuple(s) for s in segments], kept


@pytest.mark.parametrize("seed", range(40))
def test_stream_segmenter_decides_exactly_what_find_segments_does(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    status = rng.choice([FACE, REUSED, NO_FACE], size=n, p=[0.55, 0.35, 0.10])
    track = np.cumsum(rng.random(n) < 0.05)
    max_reused = int(rng.integers(0, 6))
    expected, kept = find_segments(status, track, max_reused)
    got, got_kept = _segments_by_stream(status, track, max_reused)
    assert got == [(s.start, s.stop) for s in expected]
    assert np.array_equal(got_kept, kept)


@pytest.mark.parametrize("fps", [25.0, 30.0, 12.5])
def test_resampler_keeps_the_frames_keep_mask_keeps(fps):
    rng = np.random.default_rng(int(fps))
    times = np.cumsum(rng.uniform(0.01, 0.05, 200))
    resampler = Resampler(fps)
    kept = []
    for i, t in enumerate(times):
        kept += [f.index for f in resampler.push(Frame(i, float(t), np.zeros((1, 1, 3), np.uint8)))]
    kept += [f.index for f in resampler.close()]
    assert kept == list(np.flatnonzero(keep_mask(times, fps)))


# ------------------------------------------------------------------------- the pipeline on files

@pytest.fixture(scope="module")
def detector(reference):
    from lrnet.detector import load_detector

    return load_detector(str(reference / "weights" / "dfo"))


def _run_pipeline(source, detector, **options):
    from lrnet.video import Gap
    from lrnet.stream import StreamPipeline

    pipe = StreamPipeline(detector, source_fps=source.fps, collect=True, **options)
    events = []
    for item in source.frames():
        events += pipe.gap(item.reason) if isinstance(item, Gap) else pipe.push(item)
    events += pipe.close()
    return pipe, [e.to_dict() for e in events]


@pytest.mark.reference
def test_watch_at_real_time_gives_detect_s_landmarks_and_block_scores(reference, detector):
    from lrnet.detect import detect_video
    from lrnet.video import open_source
    from lrnet.tracking import ExtractOptions

    video = reference / "videos" / "ff_real.mp4"  # 30 fps: resampled to the weights' 25 fps on both paths
    detected = detect_video(video, detector, ExtractOptions(max_frames=FRAMES))
    with open_source(str(video), realtime=True, max_frames=FRAMES) as source:
        started = time.monotonic()
        pipe, events = _run_pipeline(source, detector)
        elapsed = time.monotonic() - started
    assert elapsed >= (FRAMES - 1) / 30.0 - 0.05  # played at its own pace, not faster
    record = pipe.main_lane().record
    assert np.array_equal(np.asarray(record.raw), detected.landmarks.raw)
    assert np.array_equal(np.asarray(record.sequence, np.float32), detected.landmarks.calibrated().sequence)
    blocks = [e for e in events if e["type"] == "block"]
    assert len(blocks) == detected.blocks >= 2
    assert [b["p_fake"] for b in blocks] == [round(float(v), 6) for v in detected.scoring.block_scores]
    summary = events[-1]
    assert summary["type"] == "summary" and summary["score"] == round(detected.score, 6)
    assert summary["verdict"] == detected.verdict


@pytest.mark.reference
def test_a_block_is_scored_three_frames_after_its_last_frame(reference, detector):
    """The stated look-ahead: the tracker's 2 frames and the reference's 1 frame after a block."""
    from lrnet.video import open_source
    from lrnet.stream import StreamPipeline

    waited = []  # frames pushed after a block's last frame until its verdict (25 fps source: no resampling)
    with open_source(str(reference / "videos" / "dfo_real.mp4"), max_frames=160) as source:
        pipe = StreamPipeline(detector, source_fps=source.fps)
        assert pipe.plan.target is None  # a source of unknown rate would be resampled: one frame more
        for frame in source.frames():
            for event in pipe.push(frame):
                if event.type == "block":
                    waited.append(frame.index - (30 * event.data["index"] + 29))
    assert len(waited) == 5
    assert min(waited) == 3  # the usual case: the tracker's 2 frames + the frame after the block
    assert max(waited) <= 3 + 10 + 1  # at most a held run of max_reused reused frames more


# ---------------------------------------------------------------------------------------- watch CLI

def _watch(*args, timeout=240, env=None):
    return subprocess.run([sys.executable, "-m", "lrnet", "watch", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _events(stdout: str):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_ts(video: Path, port: int, seconds: float, extra=()) -> subprocess.Popen:
    """ffmpeg serving `seconds` of `video` as MPEG-TS (stream copy, at its own pace) on tcp://127.0.0.1:port."""
    return subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", str(video), "-t", str(seconds), "-c", "copy",
                             *extra, "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Wait until ffmpeg listens, without connecting (it serves one client): poll /proc/net/tcp."""
    deadline = time.monotonic() + timeout
    hexport = f"{port:04X}"
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as fh:
            if any(line.split()[1].endswith(":" + hexport) and line.split()[3] == "0A" for line in fh.readlines()[1:]):
                return
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "ffmpeg exited"
        time.sleep(0.05)
    raise AssertionError("ffmpeg did not start listening")


@needs_ffmpeg
@pytest.mark.reference
@pytest.mark.slow
def test_watch_a_tcp_stream_from_ffmpeg_gives_detect_s_block_scores(reference, detector, tmp_path):
    from lrnet.detect import detect_video
    from lrnet.tracking import ExtractOptions

    video = reference / "videos" / "dfo_real.mp4"  # 25 fps
    port = _free_port()
    server = _serve_ts(video, port, 5)
    try:
        _wait_listening(port, server)
        done = _watch(f"tcp://127.0.0.1:{port}", "--weights", reference / "weights" / "dfo", "--json",
                      "--max-frames", FRAMES, "--reconnect", 0)
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 0, done.stderr
    blocks = [e for e in _events(done.stdout) if e["type"] == "block"]
    detected = detect_video(video, detector, ExtractOptions(max_frames=FRAMES))
    assert [b["p_fake"] for b in blocks] == [round(float(v), 6) for v in detected.scoring.block_scores]


@needs_ffmpeg
@pytest.mark.reference
@pytest.mark.slow
def test_a_dropped_stream_is_reopened_and_the_gap_is_a_segment_boundary(reference, tmp_path):
    video = reference / "videos" / "dfo_real.mp4"
    port = _free_port()
    first = _serve_ts(video, port, 3)
    _wait_listening(port, first)
    watcher = subprocess.Popen([sys.executable, "-m", "lrnet", "watch", f"tcp://127.0.0.1:{port}", "--weights",
                                str(reference / "weights" / "dfo"), "--json", "--reconnect", "3", "--stall", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first.wait(timeout=60)  # served its 3 s and closed the connection
        second = _serve_ts(video, port, 3)  # back on the same port before the first retry (1 s backoff)
        out, err = watcher.communicate(timeout=240)
        second.wait(timeout=30)
    finally:
        for proc in (first, watcher):
            if proc.poll() is None:
                proc.kill()
    events = _events(out)
    gaps = [e for e in events if e["type"] == "gap"]
    assert gaps and "reconnecting" in gaps[0]["reason"], err
    summary = events[-1]
    assert summary["type"] == "summary" and summary["segments"] >= 2
    found = [e["time_s"] for e in events if e["type"] == "face_found"]
    assert len(found) >= 2 and found[1] > gaps[0]["time_s"]  # the second connection starts a new segment
    assert sum(e["type"] == "block" for e in events) >= 2


@pytest.mark.reference
def test_a_stalled_stream_is_reported_and_watch_ends_with_a_summary(reference, tmp_path):
    """A server that sends 2 s of stream and then nothing, holding the connection open."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (apt install ffmpeg)")
    ts = tmp_path / "clip.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(reference / "videos" / "dfo_real.mp4"), "-t", "2", "-c", "copy",
                    "-f", "mpegts", str(ts)], check=True)
    data = ts.read_bytes()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    release = threading.Event()

    def serve():
        conn, _ = server.accept()
        conn.sendall(data)
        release.wait(60)  # stall: the connection stays open, no more bytes
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        done = _watch(f"tcp://127.0.0.1:{port}", "--weights", reference / "weights" / "dfo", "--json", "--stall", "2",
                      "--reconnect", "0", timeout=120)
    finally:
        release.set()
        server.close()
    assert time.monotonic() - started < 100
    events = _events(done.stdout)
    assert events[-1]["type"] == "summary", done.stderr
    assert events[-1]["selected_frames"] >= 40  # the 2 s that came were scored
    assert done.returncode == 0


@pytest.mark.reference
@pytest.mark.misuse
def test_ctrl_c_prints_the_summary_and_exits_130(reference):
    watcher = subprocess.Popen([sys.executable, "-m", "lrnet", "watch", str(reference / "videos" / "dfo_real.mp4"),
                                "--realtime", "--weights", str(reference / "weights" / "dfo")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        for line in watcher.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if " block " in line:
                watcher.send_signal(signal.SIGINT)
                break
        rest, err = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 130, err
    assert "summary:" in rest and "interrupted" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------- bad input

@pytest.mark.misuse
def test_sources_that_cannot_be_opened_are_one_line_errors(tmp_path):
    from lrnet.cli import main

    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    closed = _free_port()
    silent = socket.socket()  # accepts and never sends: the open must give up after --open-timeout
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    cases = [([str(text)], "cannot open as a video"), (["/dev/video97"], "no such camera"),
             ([str(tmp_path / "missing.mp4")], "no such file"),
             ([f"tcp://127.0.0.1:{closed}", "--open-timeout", "2"], "cannot open the stream"),
             ([f"tcp://127.0.0.1:{silent.getsockname()[1]}", "--open-timeout", "2"], "cannot open the stream")]
    try:
        for args, message in cases:
            started = time.monotonic()
            done = _watch(*args, "--offline", timeout=60)
            assert done.returncode == 2, (args, done.stderr)
            assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert time.monotonic() - started < 30
    finally:
        silent.close()
    assert main  # imported: the CLI module loads without the optional extras


@needs_ffmpeg
@pytest.mark.reference
def test_a_stream_without_a_face_and_a_resolution_change_on_stdin(reference, tmp_path):
    """Two MPEG-TS pieces on stdin: 2 s of a test pattern (no face) at 320x240, then a face at 640x480."""
    pattern, face = tmp_path / "pattern.ts", tmp_path / "face.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "2",
                    "-c:v", "mpeg2video", "-q:v", "4", "-f", "mpegts", str(pattern)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(reference / "videos" / "dfo_real.mp4"), "-t", "3",
                    "-output_ts_offset", "2", "-c:v", "mpeg2video", "-q:v", "4", "-an", "-f", "mpegts", str(face)],
                   check=True)
    stream = pattern.read_bytes() + face.read_bytes()
    done = subprocess.run([sys.executable, "-m", "lrnet", "watch", "-", "--weights", str(reference / "weights" / "dfo"),
                           "--json"], input=stream, capture_output=True, timeout=240)
    events = _events(done.stdout.decode())
    summary = events[-1]
    assert summary["type"] == "summary", done.stderr.decode()
    assert summary["skipped"] >= 40  # the pattern frames: no face, never scored
    assert summary["blocks"] >= 1 and done.returncode == 0
    # FFmpeg via OpenCV hands over every frame at one size; the pipeline's own handling of a size change:
    from lrnet.detector import load_detector
    from lrnet.stream import StreamPipeline

    pipe = StreamPipeline(load_detector(str(reference / "weights" / "dfo")), source_fps=25.0)
    small = np.zeros((240, 320, 3), np.uint8)
    kinds = [e.type for i in range(5) for e in pipe.push(Frame(i, i / 25, small))]
    kinds += [e.type for e in pipe.push(Frame(5, 0.2, np.zeros((480, 640, 3), np.uint8)))]
    kinds += [e.type for e in pipe.close()]
    assert "resolution" in kinds and kinds[-1] == "summary"


@needs_ffmpeg
@pytest.mark.reference
def test_a_60_fps_source_is_resampled_to_the_weights_rate(reference, tmp_path):
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(reference / "videos" / "dfo_real.mp4"), "-t", "2.6",
                    "-vf", "fps=60", "-c:v", "libx264", "-preset", "ultrafast", str(fast)], check=True)
    done = _watch(fast, "--weights", reference / "weights" / "dfo", "--json")
    summary = _events(done.stdout)[-1]
    assert summary["fps_used"] == 25.0 and summary["fps_warning"] is None
    assert 60 <= summary["selected_frames"] <= 66 and summary["decoded_frames"] >= 150
    assert summary["blocks"] == 2


# ------------------------------------------------------------------------------------- every face

@pytest.mark.reference
@pytest.mark.slow
def test_a_forged_face_beside_a_real_one_is_found_and_judged(reference, detector, tmp_path):
    """Two people in frame: ff_real's face on the left, ff_fake's forged face on the right (640 px each)."""
    from lrnet.detect import detect_video, save_landmarks
    from lrnet.landmarks import read_landmarks
    from test_video import clip_frames, write_clip

    real = clip_frames(reference / "videos" / "ff_real.mp4", 0, 150)
    fake = clip_frames(reference / "videos" / "ff_fake.mp4", 0, 150)
    clip = write_clip(tmp_path / "two.avi", [np.concatenate([r[:, 260:900], f[:, 283:923]], axis=1)
                                             for r, f in zip(real, fake)], 30.0, lossless=True)
    every = detect_video(clip, detector)
    assert len(every.faces) == 2
    left, right = sorted(every.faces, key=lambda f: f["box"][0])
    assert left["call"] == "real" and right["call"] == "fake"
    assert every.face == right["face"] and every.scoring.call == "fake"  # the most suspicious face decides
    assert right["box"][0] >= 640 and left["box"][2] <= 640
    assert any("2 faces followed" in n for n in every.notes)
    row = every.to_dict()
    assert row["face"] == right["face"] and len(row["faces"]) == 2
    out = save_landmarks(every, tmp_path / "two.txt")
    per_face = sorted(tmp_path.glob("two.face*.txt"))
    assert len(per_face) == 2 and len(read_landmarks(out)) > 90
    largest = detect_video(clip, detector, faces="largest")  # the old blind spot: one face, called real
    assert len(largest.faces) == 1 and largest.scoring.call == "real"


@pytest.mark.reference
def test_one_face_gives_the_same_result_whether_all_faces_or_the_largest_are_followed(reference, detector):
    from lrnet.detect import detect_video
    from lrnet.tracking import ExtractOptions

    video = reference / "videos" / "dfo_real.mp4"
    every = detect_video(video, detector, ExtractOptions(max_frames=FRAMES))
    largest = detect_video(video, detector, ExtractOptions(max_frames=FRAMES), faces="largest")
    assert len(every.faces) == 1
    assert np.array_equal(every.scoring.block_scores, largest.scoring.block_scores)
    assert np.array_equal(every.landmarks.raw, largest.landmarks.raw)
