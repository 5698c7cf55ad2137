"""Per-video jobs over a tree of videos (extract, compress): resumable, atomic, logged, local or on Dask.

A *job* maps input videos to output files (`Job`). `run_jobs` runs one *task* (a picklable
module-level function ``task(job, options) -> Outcome``) per video:

* in this process (``workers=1``), in a `lrnet.parallel.worker_pool` of processes on this
  machine, or on a Dask cluster (``scheduler="local:N"`` or ``"tcp://HOST:8786"``, see
  `lrnet.cluster`);
* one writer per output folder: the job holds `lrnet.locks.output_lock` for its whole run;
* finished outputs are skipped (unless ``overwrite``), so a re-run resumes; each output is written
  atomically by the process that made it, so a killed run loses only the videos in flight; stale
  temporaries of killed writes are removed when the next run starts;
* a video that fails for a content reason (`LrnetError`: no face, unreadable) comes back as an
  `Outcome` with ``error`` set, is logged and counted, and is not retried; an unexpected exception
  is retried by Dask (``retries``) and then logged the same way; a full disk stops the job;
* the per-video CSV log is kept by this (client) process alone and rewritten atomically (`JobLog`),
  so it is always a complete CSV, whatever kills the job.

`extract_folder` is the landmark-extraction job (`lrnet extract`); `lrnet.compress.compress_folder`
the re-encoding job (`lrnet compress`).
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import sys
import time
from concurrent.futures import as_completed
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import ffpp
from .atomic import atomic_path, atomic_write_text, ensure_not_inputs
from .errors import LrnetError
from .landmarks import LANDMARK_SUFFIX, write_landmarks
from .locks import output_lock
from .parallel import require_parent, worker_pool
from .vocab import VIDEO_SUFFIXES, PathLike

__all__ = [
    "DISK_ERRNOS", "Job", "Outcome", "FolderSummary", "JobLog", "find_videos", "flat_jobs",
    "ffpp_jobs",
    "refuse_overlap", "failure_message", "run_jobs", "run_task", "extract_folder", "KILL_HOOK_ENV",
]

log = logging.getLogger(__name__)

# Writing an output failed for a reason every later video shares: stop the job instead of failing each.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# Test hook: when set to a folder holding ``<output name>.kill``, the task for that output removes
# the marker and kills its own process (once), as a crashed or pre-empted worker would.
KILL_HOOK_ENV = "LRNET_TEST_KILL_DIR"


@dataclass(frozen=True)
class Job:
    """One video and the file it becomes."""

    video: Path
    output: Path


@dataclass
class Outcome:
    """What a task reports for one video, returned as a value also when the video failed.

    ``row``: the video's CSV log row (field -> value; the log adds ``output``); ``frames``:
    frames processed (for the frames/s figure); ``error``: one line naming the video, empty on
    success; ``fatal``: the output could not be written for a reason that will hit every video
    (full disk, read-only file system): the job stops.
    """

    row: Dict[str, object]
    frames: int = 0
    error: str = ""
    fatal: bool = False

    @classmethod
    def failure(cls, job: Job, message: str, fatal: bool = False) -> "Outcome":
        return cls({"video": str(job.video), "error": message}, 0, message, fatal)


@dataclass
class FolderSummary:
    """Counts of one run; ``frames`` and ``seconds`` give the throughput of the videos processed."""

    total: int
    done: int
    skipped_existing: int
    failed: int
    log: Path
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------ job lists


def find_videos(root: Path) -> List[Path]:
    """Video files (by extension) under `root`, sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def flat_jobs(input_dir: Path, output_dir: Path, suffix: str = LANDMARK_SUFFIX) -> List[Job]:
    """Mirror the input tree: ``in/a/b.mp4 -> out/a/b<suffix>``."""
    return [Job(v, (output_dir / v.relative_to(input_dir)).with_suffix(suffix)) for v in find_videos(input_dir)]


def ffpp_jobs(input_dir: Path, output_dir: Path, split_dir: Optional[Path] = None) -> List[Job]:
    """Map the FF++ video tree onto ``OUT/{Origin,DF,F2F,FS,NT}/{raw,c23,c40}/{train,val,test}/<video>.txt``.

    Reads the folders of `lrnet.ffpp.video_dir` for every subset and level; videos of other
    methods (e.g. DeepFakeDetection, FaceShifter) and videos in no split are left out.
    """
    split_of = ffpp.read_splits(split_dir or input_dir / ffpp.SPLIT_DIR)
    jobs = []
    for subset in ffpp.SUBSETS:
        for level in ffpp.LEVELS:
            folder = ffpp.video_dir(input_dir, subset, level)
            if not folder.is_dir():
                continue
            for video in sorted(folder.iterdir()):
                split = split_of.get(video.stem)
                if video.suffix.lower() in VIDEO_SUFFIXES and split is not None:
                    out = ffpp.landmark_dir(output_dir, subset, level, split) / f"{video.stem}{LANDMARK_SUFFIX}"
                    jobs.append(Job(video, out))
    if not jobs:
        raise LrnetError(f"{input_dir}: no FF++ videos found (expected {ffpp.ORIGINAL_DIR}/<level>/videos "
                         f"and {ffpp.MANIPULATED_DIR}/<method>/<level>/videos)")
    return jobs


def refuse_overlap(input_dir: Path, output_dir: Path, jobs: Sequence[Job], reread: bool,
                   same_root: bool = False) -> None:
    """Refuse (`LrnetError`) an output that is an input, or two videos written to one output.

    `reread`: the outputs are videos themselves, so an output folder inside the input folder
    would be read as input by the next run. `same_root`: the job reads and writes different
    sub-folders of one tree (FF++ levels), so output folder == input folder is allowed.
    """
    src, dst = input_dir.resolve(), output_dir.resolve()
    if src == dst and not same_root:
        raise LrnetError(f"{output_dir}: the output folder is the input folder; choose another output folder")
    if reread and src in dst.parents:
        raise LrnetError(f"{output_dir}: the output folder is inside the input folder {input_dir}, so its "
                         "videos would be read as inputs; choose a folder outside it")
    ensure_not_inputs([j.output for j in jobs], [j.video for j in jobs], reread=False,
                      fix="choose another output folder")
    seen: Dict[Path, Path] = {}
    for job in jobs:
        out = job.output.resolve()
        if out in seen:
            raise LrnetError(f"{job.output}: written by two videos ({seen[out].name} and {job.video.name}); "
                             "rename one of them")
        seen[out] = job.video


# ------------------------------------------------------------------------------------------ log


class JobLog:
    """The per-video CSV log of a job, written by one process and always complete on disk.

    Rows of earlier runs (same columns) are kept; a log with other columns is moved aside to
    ``<name>.<time>.csv``. Each `add` rewrites the whole file atomically, at most every ``min(1 s,
    20 x the last rewrite's time)`` (so a long log does not cost more than a few percent); `flush`
    writes what is pending. A kill loses at most the rows of the last second, never the file.
    """

    def __init__(self, path: Path, fields: Sequence[str]):
        self.path, self.fields = Path(path), list(fields)
        self._header = self._format(None)
        self._old = self._read_old()
        self._new: List[str] = []
        self._written = len(self._new)
        self._last, self._cost = 0.0, 0.0

    def _format(self, row: Optional[Dict[str, object]]) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader() if row is None else writer.writerow(row)
        return buf.getvalue()

    def _read_old(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            raise LrnetError(f"{self.path}: cannot read the job log ({exc}); move it away") from None
        if text.startswith(self._header):
            body = text[len(self._header):]
            return body[:body.rfind("\n") + 1]  # a torn last line (older lrnet appended rows) is dropped
        if text.strip():
            aside = self.path.with_name(f"{self.path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{self.path.suffix}")
            os.replace(self.path, aside)
            log.info("%s: other columns; moved to %s", self.path, aside)
        return ""

    def add(self, row: Dict[str, object]) -> None:
        self._new.append(self._format(row))
        now = time.monotonic()
        if now - self._last >= min(1.0, 20 * self._cost):
            self.flush()

    def flush(self) -> None:
        """Write pending rows now (atomic rewrite); `LrnetError` when the disk refuses."""
        if self._written == len(self._new) and self.path.is_file():
            return
        t = time.monotonic()
        try:
            atomic_write_text(self.path, self._header + self._old + "".join(self._new))
        except OSError as exc:
            raise LrnetError(f"{self.path}: cannot write the job log ({exc.strerror or exc})") from None
        self._written = len(self._new)
        self._last = time.monotonic()
        self._cost = self._last - t


# -------------------------------------------------------------------------------------- running

Task = Callable[[Job, Any], Outcome]  # task(job, options): a picklable module-level function


def _maybe_die_for_test(job: Job) -> None:
    folder = os.environ.get(KILL_HOOK_ENV)
    if folder:
        try:
            os.unlink(os.path.join(folder, job.output.name + ".kill"))  # succeeds once
        except OSError:
            return
        os._exit(1)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_allocator_tuned = False


def _restore_malloc_thresholds() -> None:
    """Undo, once per process, the fixed malloc thresholds a Dask nanny sets for its workers.

    Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap
    threshold at 128 kB: every decoded frame (about 1 MB) is then mmap-ed, zero-filled and unmapped
    again, and extraction spends half again as much CPU time (measured: 0.72 s of system time per
    150 frames instead of 0.04 s). Frame-sized blocks go back to the heap here.
    """
    global _allocator_tuned
    if _allocator_tuned or not os.environ.get("MALLOC_TRIM_THRESHOLD_") or not sys.platform.startswith("linux"):
        return
    _allocator_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass


def run_task(task: Task, job: Job, options: object) -> Outcome:
    """Run `task` for one job inside a worker (what a pool or Dask executes)."""
    _maybe_die_for_test(job)
    _restore_malloc_thresholds()
    return task(job, options)


def _remove_stale_temporaries(jobs: Sequence[Job]) -> int:
    """Delete ``.<output name>.*.tmp`` files left beside outputs by killed atomic writes."""
    by_dir: Dict[Path, set] = {}
    for job in jobs:
        by_dir.setdefault(job.output.parent, set()).add(job.output.name)
    removed = 0
    for folder, names in by_dir.items():
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            if tmp.name[1:].rsplit(".", 2)[0] in names:
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def failure_message(job: Job, exc: BaseException) -> str:
    """One log line for a task that raised `exc` (content errors keep their own message)."""
    if isinstance(exc, LrnetError):
        return str(exc)
    name = type(exc).__name__
    if name == "KilledWorker":
        return f"{job.video}: the worker processing it died too often (out of memory or killed); see the workers' logs"
    return f"{job.video}: {name}: {exc}"


def _run_dask(jobs: Sequence[Job], task: Task, options: object, scheduler: str,
              retries: int) -> Iterator[Tuple[Job, Outcome]]:
    """One Dask task per video (paths sent absolute: workers may run elsewhere); a task that still
    raises after its retries, or whose worker died too often, becomes a failed `Outcome`."""
    from .cluster import run_on_dask

    def arguments(job: Job) -> tuple:
        return task, Job(job.video.absolute(), job.output.absolute()), options

    for job, result in run_on_dask(jobs, run_task, arguments, scheduler, retries):
        yield job, (Outcome.failure(job, failure_message(job, result)) if isinstance(result, BaseException) else result)


def _run_inline(jobs: Sequence[Job], task: Task, options: object) -> Iterator[Tuple[Job, Outcome]]:
    for job in jobs:
        try:
            yield job, run_task(task, job, options)
        except Exception as exc:  # keep the job going; the log names the video and the failure
            yield job, Outcome.failure(job, failure_message(job, exc))


def _run_pool(jobs: Sequence[Job], task: Task, options: object, workers: int,
              initializer: Optional[Callable[[], None]]) -> Iterator[Tuple[Job, Outcome]]:
    # spawn, not fork: a forked child inherits OpenCV's and dlib's thread state and can deadlock.
    with worker_pool(workers, initializer, context="spawn") as pool:
        futures = {pool.submit(run_task, task, job, options): job for job in jobs}
        for future in as_completed(futures):
            job = futures.pop(future)
            try:
                yield job, future.result()
            except Exception as exc:
                yield job, Outcome.failure(job, failure_message(job, exc))


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="video", file=sys.stderr, dynamic_ncols=True, disable=None)


def run_jobs(jobs: Sequence[Job], task: Task, options: object, *, command: str, output_dir: Path,
             log_path: Optional[PathLike] = None, log_fields: Sequence[str], workers: int = 1,
             scheduler: Optional[str] = None, retries: int = 2, progress: bool = False, overwrite: bool = False,
             initializer: Optional[Callable[[], None]] = None) -> FolderSummary:
    """Run `task` over `jobs` (see the module doc) and return the counts.

    `command` names the job in the lock and the progress bar; `log_path` defaults to
    ``output_dir/<command>_log.csv``; `initializer` runs once in each local pool worker.
    """
    output_dir = Path(output_dir)
    with output_lock(output_dir, command):
        stale = _remove_stale_temporaries(jobs)
        if stale:
            log.info("removed %d temporary files of an interrupted run", stale)
        todo = [j for j in jobs if overwrite or not j.output.is_file()]
        joblog = JobLog(Path(log_path) if log_path else output_dir / f"{command}_log.csv", ["output", *log_fields])
        if scheduler:
            results: Iterable[Tuple[Job, Outcome]] = _run_dask(todo, task, options, scheduler, retries)
        elif workers <= 1 or len(todo) <= 1:
            results = _run_inline(todo, task, options)
        else:
            results = _run_pool(todo, task, options, workers, initializer)
        summary = FolderSummary(len(jobs), 0, len(jobs) - len(todo), 0, joblog.path)
        bar = _bar(len(todo), command, progress)
        started = time.monotonic()
        try:
            for job, outcome in results:
                joblog.add({"output": str(job.output), **outcome.row})
                summary.frames += outcome.frames
                summary.seconds = time.monotonic() - started
                if outcome.fatal:
                    raise LrnetError(outcome.error)
                if outcome.error:
                    summary.failed += 1
                    log.error("%s", outcome.error)
                else:
                    summary.done += 1
                    log.info("%s: %d frames", job.output, outcome.frames)
                if bar is not None:
                    bar.set_postfix_str(f"{summary.frames_per_second:.0f} frames/s, {summary.failed} failed",
                                        refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stops the pool or cluster at once when we leave early
            joblog.flush()
    return summary


# ----------------------------------------------------------------------------------- extraction


def _limit_threads() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core: no oversubscription inside OpenCV


def _extract_one(job: Job, options) -> Outcome:
    """Task: extract, calibrate and write one video; content failures come back as the outcome's error."""
    from .extract import VideoStats, extract_video

    _limit_threads()
    try:
        result = extract_video(job.video, options)
    except LrnetError as exc:
        return Outcome(VideoStats(video=str(job.video), error=str(exc)).row(), 0, str(exc))
    try:
        with atomic_path(job.output) as tmp:
            write_landmarks(tmp, result.sequence)
            require_parent()
    except OSError as exc:
        message = f"{job.output}: cannot write ({exc.strerror or exc})"
        fatal = exc.errno in DISK_ERRNOS
        return Outcome(VideoStats(video=str(job.video), error=message).row(), 0, message, fatal)
    return Outcome(result.stats.row(), result.stats.frames)


def extract_folder(input_dir: PathLike, output_dir: PathLike, layout: str = "flat",
                   split_dir: Optional[PathLike] = None, workers: int = 1, options=None,
                   log_path: Optional[PathLike] = None, progress: bool = True, overwrite: bool = False,
                   scheduler: Optional[str] = None, retries: int = 2) -> FolderSummary:
    """Turn a folder of videos into landmark files (`lrnet extract`); see the module doc.

    `layout`: "flat" mirrors the input tree (``in/a/b.mp4 -> out/a/b.txt``); "ffpp" maps the FF++
    video tree (`ffpp_jobs`, `split_dir` default ``INPUT_DIR/splits``). `options`:
    `lrnet.extract.ExtractOptions`. The log defaults to ``OUTPUT_DIR/extract_log.csv``.
    `scheduler`: None (this machine, `workers` processes), ``"local:N"`` or a Dask scheduler
    address; `retries`: Dask retries of a video whose task raised unexpectedly.
    """
    from .extract import ExtractOptions, VideoStats

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise LrnetError(f"{input_dir}: input folder not found")
    if layout == "ffpp":
        jobs = ffpp_jobs(input_dir, output_dir, Path(split_dir) if split_dir else None)
    elif layout == "flat":
        jobs = flat_jobs(input_dir, output_dir)
        if not jobs:
            raise LrnetError(f"{input_dir}: no video files ({', '.join(VIDEO_SUFFIXES[:4])} ...) found")
    else:
        raise ValueError(f"unknown layout {layout!r}")
    refuse_overlap(input_dir, output_dir, jobs, reread=False)
    return run_jobs(jobs, _extract_one, options or ExtractOptions(), command="extract", output_dir=output_dir,
                    log_path=log_path, log_fields=[f.name for f in fields(VideoStats)], workers=workers,
                    scheduler=scheduler, retries=retries, progress=progress, overwrite=overwrite,
                    initializer=_limit_threads)
