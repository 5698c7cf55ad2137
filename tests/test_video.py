"""Video reading (lrnet.video): timestamp selection, the producer thread, limits, quiet FFmpeg, checked writes.

Also the helpers other test files use to build edited clips (`write_clip`, `clip_frames`).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from lrnet.errors import LrnetError
from lrnet.video import (Frame, VideoInfo, VideoReader, check_video, keep_mask, prefetch, read_frames,
                         select_frames, video_info, write_video)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def write_clip(path: Path, frames, fps: float, lossless: bool = False) -> Path:
    """Frames (BGR, one size) -> an .avi: MJPG, or FFV1 (lossless: equal frames decode equal)."""
    import cv2

    frames = list(frames)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*("FFV1" if lossless else "MJPG")), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def clip_frames(video: Path, start: int, stop: int):
    """Frames ``start:stop`` of a video."""
    return list(itertools.islice(read_frames(video), start, stop))


def noise_video(path: Path, frames: int, fps: float = 25.0, size=(96, 64)) -> Path:
    rng = np.random.default_rng(0)
    return write_clip(path, (rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) for _ in range(frames)), fps)


# ------------------------------------------------------------------------ selection by timestamp


def test_same_rate_keeps_every_frame():
    t = np.arange(90) / 30.0
    assert keep_mask(t, 30.0).all()
    assert keep_mask(np.arange(90) / 25.0, 30.0).all()  # slower than the target: nothing dropped or added


def test_twice_the_rate_keeps_every_other_frame():
    mask = keep_mask(np.arange(120) / 60.0, 30.0)
    assert mask.nonzero()[0].tolist() == list(range(0, 120, 2))


def test_one_point_two_times_the_rate_drops_one_frame_in_six():
    mask = keep_mask(np.arange(72) / 36.0, 30.0)
    assert mask.sum() == 60
    assert (~mask).nonzero()[0].tolist() == list(range(3, 72, 6))
    kept_times = (np.arange(72) / 36.0)[mask]
    # every kept frame is within half a source frame of its output time k / 30
    assert np.abs(kept_times - np.arange(60) / 30.0).max() <= 0.5 / 36 + 1e-9


def test_timestamp_jitter_does_not_drop_or_double_frames():
    rng = np.random.default_rng(1)
    # 30 fps with millisecond rounding and +-4 ms jitter, scored at 30 fps: all kept
    t = np.round(np.arange(300) / 30.0 + rng.uniform(-0.004, 0.004, 300), 3)
    t[0] = 0.0
    assert keep_mask(t, 30.0).all()
    # 60 fps with the same jitter, scored at 30: one frame per output interval, none twice
    t60 = np.round(np.arange(600) / 60.0 + rng.uniform(-0.004, 0.004, 600), 3)
    t60[0] = 0.0
    kept = t60[keep_mask(t60, 30.0)]
    assert len(kept) == 300
    assert np.abs(kept - np.arange(300) / 30.0).max() < 1 / 60


def test_variable_frame_rate_follows_timestamps_not_counts():
    # 2 s at 60 fps then 2 s at 20 fps (a VFR phone clip), scored at 30 fps
    t = np.concatenate([np.arange(120) / 60.0, 2.0 + np.arange(40) / 20.0])
    mask = keep_mask(t, 30.0)
    assert mask[:120].sum() == 60 and mask[120:].all()


def test_streaming_selection_equals_the_array_rule():
    rng = np.random.default_rng(2)
    for fps_in, fps_out in [(60, 30), (36, 30), (30, 30), (25, 30), (50, 25), (29.97, 30)]:
        t = np.cumsum(np.r_[0, rng.uniform(0.8, 1.2, 199) / fps_in])
        streamed = [f.index for f in select_frames((Frame(i, float(x), None) for i, x in enumerate(t)), fps_out)]
        assert streamed == keep_mask(t, fps_out).nonzero()[0].tolist(), (fps_in, fps_out)
    assert [f.index for f in select_frames([Frame(0, 0.0, None)], 30.0)] == [0]
    assert [f.index for f in select_frames((Frame(i, i / 60, None) for i in range(4)), None)] == [0, 1, 2, 3]


# ------------------------------------------------------------------------------ producer thread


def test_prefetch_keeps_order_and_raises_producer_errors():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(prefetch(broken()))


def test_closing_prefetch_stops_its_thread():
    before = {t.ident for t in threading.enumerate()}
    stream = prefetch(itertools.count(), depth=2, name="lrnet-test-producer")
    assert next(stream) == 0
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "lrnet-test-producer" and t.ident not in before]


# --------------------------------------------------------------------------------- the reader


def test_reader_gives_info_times_and_resamples(tmp_path):
    video = noise_video(tmp_path / "n.avi", 20, fps=50.0)
    info = video_info(video)
    assert (info.width, info.height, info.frames, info.fps) == (96, 64, 20, 50.0)
    assert info.duration == pytest.approx(0.4)
    with VideoReader(video) as reader:
        frames = list(reader)
    assert [f.index for f in frames] == list(range(20))
    assert np.allclose([f.time for f in frames], np.arange(20) / 50.0)
    with VideoReader(video, fps=25.0, max_frames=15) as reader:
        kept = [f.index for f in reader]
    assert kept == list(range(0, 15, 2)) and reader.decoded == 15


def test_leaving_a_reader_early_stops_decoding(tmp_path):
    video = noise_video(tmp_path / "n.avi", 40)
    with VideoReader(video) as reader:
        for frame in reader:
            if frame.index == 3:
                break
    assert reader.decoded < 40


def test_absurd_videos_are_refused_before_decoding():
    huge = VideoInfo("huge.mp4", 15360, 8640, 100, 30.0, 3.3)
    with pytest.raises(LrnetError, match=r"huge.mp4: frames of 15360x8640 are larger than lrnet decodes"):
        check_video(huge)
    long = VideoInfo("long.mp4", 640, 480, 10_000_000, 30.0, 333333.0)
    with pytest.raises(LrnetError, match=r"long.mp4: 10000000 frames is longer than .*--max-frames"):
        check_video(long)
    check_video(long, max_frames=1000)  # a prefix is fine


@pytest.mark.misuse
def test_a_header_that_lies_about_the_length_is_still_bounded(tmp_path):
    video = noise_video(tmp_path / "n.avi", 30)
    with pytest.raises(LrnetError, match="n.avi: more than 10 frames .the header said 30."):
        with VideoReader(video) as reader:
            reader.frame_limit = 10  # as if the header had said 10 or fewer
            list(reader)


def test_missing_and_non_video_files(tmp_path):
    with pytest.raises(LrnetError, match="missing.mp4: no such video file"):
        video_info(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video\n" * 100)
    with pytest.raises(LrnetError, match="text.mp4: cannot open as a video"):
        video_info(tmp_path / "text.mp4")


@pytest.mark.misuse
def test_a_truncated_mp4_gives_one_line_on_stderr(tmp_path):
    import cv2

    good = tmp_path / "good.mp4"
    writer = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 64))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # the moov atom is at the end: gone
    code = textwrap.dedent(f"""
        import sys
        from lrnet.errors import LrnetError
        from lrnet.extract import extract_video
        try:
            extract_video({str(cut)!r})
        except LrnetError as exc:
            print(f"lrnet: error: {{exc}}", file=sys.stderr)
            sys.exit(2)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC})
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"lrnet: error: {cut}: cannot open as a video (unreadable or not a video file)"]
    assert "moov" not in run.stdout + run.stderr


# ------------------------------------------------------------------------------- checked writes


def test_write_video_checks_and_renames(tmp_path):
    frames = [np.full((64, 96, 3), i * 20, np.uint8) for i in range(8)]
    assert write_video(tmp_path / "out.avi", frames, 25.0, (96, 64)) == 8
    assert video_info(tmp_path / "out.avi").frames == 8
    assert [p.name for p in tmp_path.iterdir()] == ["out.avi"]  # no temporary left


@pytest.mark.misuse
def test_a_full_disk_is_a_one_line_error_and_leaves_no_broken_file(tmp_path):
    # RLIMIT_FSIZE stands in for a full disk: writes past 200 kB fail (EFBIG) as on ENOSPC
    code = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        from lrnet.errors import LrnetError
        from lrnet.video import write_video
        rng = np.random.default_rng(0)
        frames = (rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(60))
        try:
            write_video({str(tmp_path / "vis.mp4")!r}, frames, 25.0, (320, 240))
        except LrnetError as exc:
            print(f"lrnet: error: {{exc}}", file=sys.stderr)
            sys.exit(1)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC})
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lrnet: error: {tmp_path / 'vis.mp4'}: cannot write"), lines
    assert list(tmp_path.iterdir()) == []


def test_written_videos_get_the_usual_permissions(tmp_path):
    # --visualize went through mkstemp and kept its 0600; lrnet's other writes give 0666 & ~umask
    import stat

    mask = os.umask(0)
    os.umask(mask)
    frames = [np.full((64, 96, 3), i * 20, np.uint8) for i in range(4)]
    for name in ("vis.mp4", "vis.avi"):
        write_video(tmp_path / name, frames, 25.0, (96, 64))
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    (tmp_path / "vis.mp4").chmod(0o640)  # a file being replaced keeps its mode
    write_video(tmp_path / "vis.mp4", frames, 25.0, (96, 64))
    assert stat.S_IMODE((tmp_path / "vis.mp4").stat().st_mode) == 0o640


def test_write_video_refuses_an_unwritable_folder_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LrnetError, match=r"vis.mp4: cannot write \(Not a directory\)"):
        write_video(tmp_path / "file" / "vis.mp4", [np.zeros((64, 96, 3), np.uint8)], 25.0, (96, 64))


# ------------------------------------------------------------------------------- PyAV: probe and H.264


def test_h264_copy_probe_and_permissions(tmp_path):
    pytest.importorskip("av")
    import stat

    from lrnet.video import probe_video, transcode_h264, write_h264

    source = noise_video(tmp_path / "n.avi", 12, fps=25.0, size=(97, 65))  # odd size: cut to even
    mask = os.umask(0)
    os.umask(mask)
    copy = transcode_h264(source, tmp_path / "copy.mp4")
    info = probe_video(copy)
    assert isinstance(info, VideoInfo)
    assert (info.codec, info.pix_fmt, info.frames, info.width, info.height) == ("h264", "yuv420p", 12, 96, 64)
    assert info.fps == 25.0 and info.duration == pytest.approx(12 / 25, abs=0.05)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.mp4", "n.avi"]  # no temporary left
    with pytest.raises(LrnetError, match="empty.mp4: no frame could be decoded"):
        write_h264(tmp_path / "out.mp4", [], 25, (96, 64), crf=23, source=tmp_path / "empty.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_pyav_refuses_missing_and_non_video_files(tmp_path):
    pytest.importorskip("av")
    from lrnet.video import count_frames, probe_video

    with pytest.raises(LrnetError, match="missing.mp4: no such video file"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video\n" * 100)
    with pytest.raises(LrnetError, match="text.mp4: cannot open as a video"):
        probe_video(tmp_path / "text.mp4")
    assert count_frames(tmp_path / "text.mp4") is None
    assert count_frames(noise_video(tmp_path / "n.avi", 7)) == 7


def test_one_video_info_class_and_writable_containers():
    import lrnet.serve.media as media
    from lrnet.video import PYAV_FORMATS, probe_video
    from lrnet.vocab import VIDEO_SUFFIXES, WRITABLE_VIDEO_SUFFIXES

    assert media.VideoInfo is VideoInfo and media.probe_video is probe_video  # the server's probe is lrnet.video's
    assert set(PYAV_FORMATS) == set(WRITABLE_VIDEO_SUFFIXES) < set(VIDEO_SUFFIXES)
