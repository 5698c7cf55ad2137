"""lrnet.atomic: atomic writes that never leave a partial file or a temporary, and name their target;
ensure_not_input."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fulldisk import file_size_limit, full_disk_dir
from lrnet.atomic import (TEMP_GLOBS, atomic_open, atomic_path, atomic_write_bytes, atomic_write_text,
                          ensure_not_input, remove_temporaries, save_figure)
from lrnet.errors import LrnetError

SRC = Path(__file__).resolve().parents[1] / "src"


def _temporaries(folder: Path):
    return [p for pattern in TEMP_GLOBS for p in folder.rglob(pattern)]


def test_write_replaces_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert _temporaries(tmp_path) == []


@pytest.mark.misuse
@pytest.mark.parametrize("exc", [RuntimeError("writer bug"), KeyboardInterrupt()])
def test_never_overwrite_failed_write_keeps_old_target(tmp_path, exc):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(type(exc)):
        with atomic_open(target, "w") as fh:
            fh.write("new, half written")
            raise exc
    assert target.read_text() == "old"
    assert _temporaries(tmp_path) == []


def test_suffix_is_the_last_extension(tmp_path):
    target = tmp_path / "clip.mp4"
    with atomic_path(target, suffix=".mp4") as tmp:
        assert tmp.name.startswith(".clip.mp4.") and tmp.name.endswith(".tmp.mp4")
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"


def test_file_mode_is_usual_or_kept(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept.sh"
    kept.write_text("old")
    kept.chmod(0o750)
    atomic_write_text(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o750


@pytest.mark.misuse
def test_every_write_failure_names_the_target_on_a_full_disk(tmp_path):
    """Promise 8: a full disk is an OSError naming the target; the old file and no temporary remain."""
    with full_disk_dir(tmp_path, free=0) as full:
        before = sorted(p.name for p in full.iterdir())
        with pytest.raises(OSError) as err:
            atomic_write_bytes(full / "out.bin", b"x" * 100_000)
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(full / "out.bin")
        assert sorted(p.name for p in full.iterdir()) == before


@pytest.mark.misuse
def test_every_write_failure_torch_save_on_full_disk_is_enospc(tmp_path):
    """torch.save to a path turns ENOSPC into an opaque RuntimeError; atomic_path reports it as ENOSPC."""
    torch = pytest.importorskip("torch")
    with full_disk_dir(tmp_path, free=0) as full:
        with pytest.raises(OSError) as err:
            with atomic_path(full / "w.pth") as tmp:
                torch.save({"w": torch.zeros(100_000)}, tmp)
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(full / "w.pth")
        assert _temporaries(full) == [] and not (full / "w.pth").exists()


@pytest.mark.misuse
def test_every_write_failure_file_size_limit_is_efbig(tmp_path):
    """The fallback where mounting is not permitted: RLIMIT_FSIZE makes writes fail with EFBIG."""
    script = textwrap.dedent(f"""
        import sys
        from lrnet.atomic import atomic_write_bytes
        try:
            atomic_write_bytes({str(tmp_path / 'big.bin')!r}, b"x" * 100_000)
        except OSError as exc:
            print(exc.errno, exc.filename)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, preexec_fn=file_size_limit(4096))
    assert proc.stdout.split() == [str(errno.EFBIG), str(tmp_path / "big.bin")], proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.misuse
def test_every_write_failure_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as err:
        atomic_write_text(tmp_path / "file" / "sub" / "a.txt", "y")
    assert err.value.filename == str(tmp_path / "file")


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2), dpi=50)
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_save_figure_format_from_extension_atomically(tmp_path):
    fig = _figure()
    assert save_figure(fig, tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_figure(fig, tmp_path / "a.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in save_figure(fig, tmp_path / "a.svg").read_bytes()[:500]
    assert save_figure(fig, tmp_path / "plot").read_bytes()[:4] == b"\x89PNG"  # no extension: PNG
    assert _temporaries(tmp_path) == []


@pytest.mark.misuse
def test_save_figure_failures_are_one_line_errors_naming_the_target(tmp_path):
    fig = _figure()
    with pytest.raises(LrnetError, match=r"b\.txt: Matplotlib cannot write \.txt files; use one of .*\.png"):
        save_figure(fig, tmp_path / "b.txt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LrnetError) as err:
        save_figure(fig, tmp_path / "file" / "c.png")
    assert str(err.value) == f"{tmp_path / 'file' / 'c.png'}: cannot write (Not a directory)"
    (tmp_path / "d.png").mkdir()  # the figure is drawn, then cannot replace a folder: nothing changes
    (tmp_path / "d.png" / "kept").write_text("x")
    with pytest.raises(LrnetError) as err:
        save_figure(fig, tmp_path / "d.png")
    assert str(err.value) == f"{tmp_path / 'd.png'}: cannot write (Is a directory)"
    assert (tmp_path / "d.png" / "kept").is_file() and _temporaries(tmp_path) == []


def test_remove_temporaries(tmp_path):
    (tmp_path / ".a.txt.x1.tmp").write_text("")
    (tmp_path / ".b.png.x2.tmp.png").write_text("")
    (tmp_path / "keep.txt").write_text("")
    assert remove_temporaries(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.misuse
def test_never_overwrite_input_same_path_symlink_hardlink(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"video")
    (tmp_path / "link.mp4").symlink_to(src)
    os.link(src, tmp_path / "hard.mp4")
    for output in (src, tmp_path / "link.mp4", tmp_path / "hard.mp4", tmp_path / "x" / ".." / "in.mp4"):
        with pytest.raises(LrnetError, match="is the input"):
            ensure_not_input(output, [src], what="landmark file")
    ensure_not_input(tmp_path / "in.txt", [src])  # another file is fine


@pytest.mark.misuse
def test_never_overwrite_input_output_inside_input_folder(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    with pytest.raises(LrnetError, match="inside the input folder"):
        ensure_not_input(videos / "landmarks", [videos], what="output folder")
    ensure_not_input(videos / "landmarks", [videos], what="output folder", reread=False)
    ensure_not_input(tmp_path / "landmarks", [videos], what="output folder")


@pytest.mark.misuse
def test_many_outputs_checked_at_once_and_the_advice_is_the_callers(tmp_path):
    from lrnet.atomic import ensure_not_inputs, same_file

    videos = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for v in videos:
        v.write_bytes(b"video")
    os.link(videos[2], tmp_path / "hard.mp4")
    ensure_not_inputs([tmp_path / "out" / v.name for v in videos], videos + [None], reread=False)
    with pytest.raises(LrnetError, match=r"hard.mp4: the output is the input .*v2.mp4; choose another folder"):
        ensure_not_inputs([tmp_path / "x.mp4", tmp_path / "hard.mp4"], videos, reread=False, fix="choose another folder")
    with pytest.raises(LrnetError, match=r"inside the input folder .*; choose another --output$"):
        ensure_not_input(tmp_path / "sub" / "run", [tmp_path], fix="choose another --output")
    assert same_file(tmp_path / "hard.mp4", videos[2]) and same_file(tmp_path / "new", tmp_path / "x" / ".." / "new")
    assert not same_file(videos[0], videos[1])


def test_writing_turns_os_errors_into_one_line(tmp_path):
    from lrnet.atomic import writing

    with pytest.raises(LrnetError, match=r"^out.txt: cannot write \(No space left on device\)$"):
        with writing("out.txt"):
            raise OSError(28, "No space left on device")
    with writing("out.txt"):
        pass
