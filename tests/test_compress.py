"""H.264 re-encoding (lrnet.compress): FF++-style c23/c40 copies, degradations, the folder job and
`lrnet compress` under misuse (its own input as output, two writers, a full disk, bad flags)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from helpers_jobs import run_lrnet, start_lrnet, wait_for, interrupt, write_video
from lrnet.cli import main
from lrnet.compress import compress_folder, degrade_video
from lrnet.errors import LrnetError

av = pytest.importorskip("av")


def probe(path: Path) -> dict:
    """Codec, pixel format, size, frame rate and decoded frame count of a video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "size": (stream.codec_context.width, stream.codec_context.height),
                "fps": float(stream.average_rate), "frames": frames}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 2-second 25 fps 160x120 clip (mp4v, so the H.264 output is a real re-encode)."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 50, size=(160, 120), fps=25.0)


def test_degrade_video_writes_h264_at_the_same_rate_size_and_frame_count(clip, tmp_path):
    out = degrade_video(clip, tmp_path / "c23.mp4", crf=23)
    assert out == tmp_path / "c23.mp4"
    assert probe(out) == {"codec": "h264", "pix_fmt": "yuv420p", "size": (160, 120), "fps": 25.0, "frames": 50}
    small = degrade_video(clip, tmp_path / "c40.mp4", crf=40)
    assert small.stat().st_size < out.stat().st_size  # a higher rate factor throws more away
    assert not list(tmp_path.glob(".*.tmp"))


def test_degradations(clip, tmp_path):
    scaled = degrade_video(clip, tmp_path / "s.mp4", crf=23, scale=60)
    assert probe(scaled)["size"] == (80, 60) and probe(scaled)["frames"] == 50
    slower = degrade_video(clip, tmp_path / "f.mp4", fps=10)
    assert probe(slower)["fps"] == 10.0 and probe(slower)["frames"] == 20  # 2 s at 10 fps
    a = degrade_video(clip, tmp_path / "n1.mp4", crf=23, blur=1.5, noise=8)
    b = degrade_video(clip, tmp_path / "n2.mp4", crf=23, blur=1.5, noise=8)
    assert a.read_bytes() == b.read_bytes()  # seeded noise: same call, same bytes
    lossless = degrade_video(clip, tmp_path / "raw.mkv")
    assert probe(lossless)["frames"] == 50 and lossless.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # Matroska


@pytest.mark.parametrize("kwargs, message", [
    ({"crf": 52}, "crf must be an integer 0..51"), ({"scale": 0}, "scale must be a positive"),
    ({"blur": -1.0}, "blur must be a positive"), ({"fps": float("nan")}, "fps must be a positive"),
])
def test_degrade_video_rejects_bad_settings(clip, tmp_path, kwargs, message):
    with pytest.raises(LrnetError, match=message):
        degrade_video(clip, tmp_path / "x.mp4", **kwargs)
    assert not (tmp_path / "x.mp4").exists()


def test_unreadable_sources_are_one_line_errors(tmp_path):
    (tmp_path / "text.mp4").write_text("no video here\n")
    with pytest.raises(LrnetError, match="text.mp4: cannot open as a video"):
        degrade_video(tmp_path / "text.mp4", tmp_path / "o.mp4", crf=23)
    with pytest.raises(LrnetError, match="missing.mp4: no such video file"):
        degrade_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", crf=23)


def test_folder_job_mirrors_the_tree_resumes_and_logs(clip, tmp_path):
    src = tmp_path / "videos"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one.avi").symlink_to(clip)
    (src / "two.mp4").symlink_to(clip)
    (src / "bad.mp4").write_text("not a video")
    summary = compress_folder(src, tmp_path / "out", crf=23, progress=False)
    assert (summary.total, summary.done, summary.failed, summary.frames) == (3, 2, 1, 100)
    assert probe(tmp_path / "out" / "a" / "one.mp4")["frames"] == 50
    again = compress_folder(src, tmp_path / "out", crf=23, progress=False)
    assert (again.done, again.skipped_existing, again.failed) == (0, 2, 1)


def test_ffpp_layout_writes_levels_beside_raw_for_extract(clip, tmp_path):
    from lrnet.batch import ffpp_jobs

    root = tmp_path / "ffpp"
    for folder in ("original_sequences/youtube/raw/videos", "manipulated_sequences/Deepfakes/raw/videos"):
        (root / folder).mkdir(parents=True)
    (root / "original_sequences/youtube/raw/videos/000.mp4").symlink_to(clip)
    (root / "manipulated_sequences/Deepfakes/raw/videos/000_003.mp4").symlink_to(clip)
    (root / "splits").mkdir()
    for split, pairs in (("train", [["000", "003"]]), ("val", []), ("test", [])):
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    assert main(["compress", str(root), str(root), "--layout", "ffpp", "--crf", "40", "-q"]) == 0
    assert probe(root / "manipulated_sequences/Deepfakes/c40/videos/000_003.mp4")["frames"] == 50
    outputs = sorted(str(j.output.relative_to(tmp_path)) for j in ffpp_jobs(root, tmp_path / "lm"))
    assert outputs == ["lm/DF/c40/train/000_003.txt", "lm/DF/raw/train/000_003.txt",
                       "lm/Origin/c40/train/000.txt", "lm/Origin/raw/train/000.txt"]
    assert main(["compress", str(root), str(root), "--layout", "ffpp", "--crf", "40", "--blur", "1"]) == 2


# ----------------------------------------------------------------------------------------- misuse


@pytest.mark.misuse
@pytest.mark.parametrize("where", ["same", "inside", "link"])
def test_compress_never_writes_over_or_into_its_input(clip, tmp_path, capsys, where):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").symlink_to(clip)
    (tmp_path / "link").symlink_to(src)  # another name for the input folder
    out = {"same": src, "inside": src / "c23", "link": tmp_path / "link"}[where]
    code = main(["compress", str(src), str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert ("inside the input folder" if where == "inside" else "the output folder is the input folder") in err
    assert (src / "a.mp4").is_symlink() and not (src / "c23").exists()


@pytest.mark.misuse
def test_an_output_that_is_an_input_file_is_refused(tmp_path):
    from lrnet.batch import Job, refuse_overlap

    a, b = tmp_path / "in" / "a.mp4", tmp_path / "in" / "b.mp4"
    with pytest.raises(LrnetError, match="b.mp4: the output is the input .*b.mp4; choose another output folder"):
        refuse_overlap(tmp_path / "in", tmp_path / "out", [Job(a, b), Job(b, tmp_path / "out" / "b.mp4")], False)
    with pytest.raises(LrnetError, match="written by two videos"):
        refuse_overlap(tmp_path / "in", tmp_path / "out", [Job(a, tmp_path / "o.mp4"), Job(b, tmp_path / "o.mp4")],
                       False)


@pytest.mark.misuse
@pytest.mark.parametrize("flags", [["--crf", "52"], ["--crf", "-1"], ["--scale", "0"], ["--fps", "nan"],
                                   ["--blur", "-2"], ["--noise", "inf"], ["-j", "0"], ["--retries", "x"]])
def test_compress_flags_are_checked_at_parse_time(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(tmp_path), str(tmp_path / "out"), *flags])
    assert exc.value.code == 2 and "argument" in capsys.readouterr().err


@pytest.mark.misuse
def test_a_second_compress_on_the_same_output_is_stopped(tmp_path):
    src = tmp_path / "videos"
    for i in range(40):
        write_video(src / f"v{i:02d}.mp4", 30, size=(320, 240), seed=i)
    out = tmp_path / "out"
    first = start_lrnet(["compress", str(src), str(out), "-q"])
    try:
        lock = out / ".lrnet.lock"
        wait_for(lambda: lock.exists() and str(first.pid) in lock.read_text(), 30, "the first job's lock")
        second = run_lrnet(["compress", str(src), str(out), "-q"], timeout=60)
        assert second.returncode == 2 and second.stderr.count("\n") == 1
        assert f"in use by `lrnet compress` (pid {first.pid}" in second.stderr
    finally:
        interrupt(first)
        _, err = first.communicate(timeout=10)
    assert first.returncode in (0, 130) and "Traceback" not in err


@pytest.mark.misuse
def test_full_disk_is_one_line(clip, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "a.mp4").symlink_to(clip)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))  # noqa: E731
    result = run_lrnet(["compress", str(src), str(tmp_path / "out"), "--crf", "0", "-q"], preexec_fn=limit)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "a.mp4: cannot write" in result.stderr
    assert not (tmp_path / "out" / "a.mp4").exists() and not list((tmp_path / "out").glob(".*.tmp"))
