"""Verdicts for a folder or a list of videos, at scale: ``lrnet detect DIR|LIST.txt --report FILE``.

One `lrnet.detect.detect_video` per video, run in this process, in a local pool of processes, or on
a Dask cluster (``local:N`` or ``tcp://HOST:8786``, `lrnet.cluster`), with the per-video task
machinery of `lrnet.batch` (`run_task`, Dask retries, the kill hook of the tests). The results go
to one *report*, written by this (client) process alone:

* **format**: ``.jsonl`` (one JSON object per line) or ``.csv``. The first line is the *header
  record*, ``{"lrnet_report": "detect", ...}`` (lrnet version, weights source and SHA-256, block
  size, aggregation, threshold, fps policy, extraction settings; `report_header`); in a CSV it is
  written as ``# lrnet report {JSON}`` above the column names (read it with ``skiprows=1``). Then
  one line per video as each finishes: ``status`` "ok" with every key of
  `DetectResult.to_dict()` (JSONL) or `CSV_COLUMNS` (CSV), or ``status`` "failed" with ``error``.
  ``video`` is the absolute path. When a video has several lines (``--retry-failed``), the last wins.
* **line-safe**: each line goes out in one ``write`` on an ``O_APPEND`` descriptor and is
  ``fdatasync``-ed; the report is ``flock``-ed for the run, so a second scan of the same report is
  refused; a line torn by a power cut (no final newline) is cut off when the report is next opened.
* **resume**: a re-run reads the report, skips every video it already holds (and says how many),
  and appends the rest. Failed videos are skipped too unless ``retry_failed``.
* **refusal**: a report whose first line is not lrnet's header record, or whose header differs in
  what decides a verdict (`COMPARED`: version, weights SHA-256, block size, aggregation,
  threshold, uncertainty, fps policy, extraction settings), is refused naming the differences.
* **worker loss**: on Dask the scheduler re-runs a video whose worker died (up to ``retries + 1``
  deaths, then a failed line); a local pool that loses a process is restarted and the videos in
  flight are re-run, each at most ``retries`` times.

Workers load the weights once per process and check their SHA-256 against the report's header, so
a cluster whose workers see other weights stops the scan instead of mixing verdicts.
"""

from __future__ import annotations

import concurrent.futures
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import socket
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .batch import (DISK_ERRNOS, KILL_HOOK_ENV, Job, Outcome, _run_dask, _run_inline, failure_message, find_videos,
                    run_task)
from .errors import LrnetError, one_line
from .extract import ExtractOptions

__all__ = ["COMPARED", "CSV_COLUMNS", "LIST_SUFFIXES", "REPORT_SUFFIXES", "Report", "ScanOptions", "ScanSummary",
           "load_scan_detector", "report_header", "scan", "scan_jobs", "weights_digest"]

PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger(__name__)

REPORT_KIND = "detect"
FORMAT = 1
REPORT_SUFFIXES = (".jsonl", ".csv")
LIST_SUFFIXES = (".txt", ".lst", ".list")
CSV_PREFIX = "# lrnet report "
# Header fields that decide a verdict: a report is only resumed when all of them agree.
COMPARED = ("format", "lrnet_version", "weights_sha256", "branches", "block_size", "aggregation", "threshold",
            "uncertain", "fps_policy", "extraction")
CSV_COLUMNS = ("video", "status", "verdict", "call", "score", "interval_low", "interval_high", "threshold",
               "blocks", "frames", "decoded_frames", "fps", "fps_used", "fps_warning", "segments", "cuts",
               "dropped_frames", "notes", "seconds", "error")
VERDICTS = ("fake", "real", "uncertain")
# Test hook (with `lrnet.batch.KILL_HOOK_ENV`): ``<output name>.mid.kill`` kills the worker once, at the
# first progress step of reading the video (frame 25), i.e. in the middle of the video.
MID_KILL_SUFFIX = ".mid.kill"


# ------------------------------------------------------------------------------------ settings

@dataclass(frozen=True)
class ScanOptions:
    """What every worker needs to score a video as the client asked (picklable).

    `weights`: a spec the workers can resolve (registry name or absolute folder); `weights_sha256`:
    `weights_digest` of the client's copy, checked by each worker; `threshold`: the override given
    (None: the weights' own); `save_landmarks`: write each job's calibrated landmarks to its output.
    """

    weights: str
    weights_sha256: str
    aggregation: str = "vote"
    threshold: Optional[float] = None
    uncertain: bool = True
    fps_policy: str = "resample"
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    device: str = "cpu"
    download: bool = False
    save_landmarks: bool = False
    one_thread: bool = False  # set for pool and Dask workers: one OpenCV and one torch thread per process


def weights_digest(weights) -> str:
    """SHA-256 (hex) of the parameters of a `LoadedWeights` (or a `Detector`'s): per branch (sorted)
    and tensor (sorted by name), the name, dtype, shape and raw bytes. The same numbers give the
    same digest whatever the file format (.pth, Keras .h5) or folder they came from."""
    import torch

    weights = getattr(weights, "weights", weights)  # a Detector holds its LoadedWeights
    h = hashlib.sha256()
    for branch in sorted(weights.models):
        for name, tensor in sorted(weights.models[branch].state_dict().items()):
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{branch}/{name}:{t.dtype}:{tuple(tensor.shape)}\n".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def report_header(detector, options: ScanOptions) -> Dict[str, Any]:
    """The header record of a report made with `detector` (a `lrnet.detector.Detector` built from
    `options`: weights, aggregation, threshold, uncertainty) and `options`."""
    from . import __version__

    extraction = asdict(options.extract)
    extraction.pop("fps", None)  # set per video from the fps policy
    return {"lrnet_report": REPORT_KIND, "format": FORMAT, "lrnet_version": __version__,
            "weights": detector.source, "weights_sha256": options.weights_sha256, "branches": list(detector.branches),
            "block_size": detector.block_size, "model_fps": detector.fps, "aggregation": detector.aggregation,
            "threshold": round(float(detector.threshold), 6), "threshold_source": detector.threshold_source,
            "uncertain": detector.uncertain, "fps_policy": options.fps_policy, "extraction": extraction,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def load_scan_detector(options: ScanOptions, device: Optional[str] = None):
    """The `lrnet.detector.Detector` that `options` describe (on `device`, default ``options.device``)."""
    from .detector import load_detector

    return load_detector(options.weights, aggregation=options.aggregation, threshold=options.threshold,
                         uncertain=options.uncertain, device=device or options.device, download=options.download)


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    out = []
    for key in COMPARED:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k} {a.get(k)!r} here, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        elif a != b:
            if key == "weights_sha256":
                out.append(f"weights {old.get('weights')} (SHA-256 {str(a)[:12]}...) here, {new.get('weights')} "
                           f"(SHA-256 {str(b)[:12]}...) now")
            else:
                out.append(f"{key} {a!r} here, {b!r} now")
    return out


# ------------------------------------------------------------------------------------ job lists

def _list_file(path: Path) -> List[Path]:
    """Videos named in a list file: one path a line; blank lines and ``#`` comments skipped; relative
    paths are relative to the list's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LrnetError(f"{path}: cannot read the video list ({exc})") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def scan_jobs(sources: Sequence[PathLike], landmarks_dir: Optional[PathLike] = None) -> List[Job]:
    """One `Job` per video of `sources` (folders: their videos, recursively; list files (`LIST_SUFFIXES`):
    the videos they name; other paths: videos), absolute, duplicates dropped, in order.

    A job's output is its landmark file: ``landmarks_dir`` mirrors a folder's tree, and takes
    ``<stem>.txt`` for listed videos; without `landmarks_dir` it is the video itself (never written).
    Two videos mapped to one landmark file are refused (`LrnetError`). A listed video that does not
    exist stays a job: its report line says so.
    """
    jobs: List[Job] = []
    seen: Dict[Path, Path] = {}
    outs: Dict[Path, Path] = {}
    for source in map(Path, sources):
        if source.is_dir():
            videos = [(v, v.relative_to(source)) for v in find_videos(source)]
            if not videos:
                raise LrnetError(f"{source}: no video files found in this folder")
        elif source.suffix.lower() in LIST_SUFFIXES:
            videos = [(v, Path(v.name)) for v in _list_file(source)]
            if not videos:
                raise LrnetError(f"{source}: the video list names no video")
        else:
            videos = [(source, Path(source.name))]
        for video, relative in videos:
            video = Path(os.path.abspath(video))
            if video in seen:
                continue
            seen[video] = video
            output = video
            if landmarks_dir is not None:
                output = Path(os.path.abspath(Path(landmarks_dir) / relative.with_suffix(".txt")))
                if output in outs:
                    raise LrnetError(f"{output}: --save-landmarks would write it for two videos ({outs[output]} and "
                                     f"{video}); rename one or scan them separately")
                if output in seen:
                    raise LrnetError(f"{output}: --save-landmarks would overwrite an input")
                outs[output] = video
            jobs.append(Job(video, output))
    if landmarks_dir is not None:
        inputs = set(seen)
        for out in outs:
            if out in inputs:
                raise LrnetError(f"{out}: --save-landmarks would overwrite an input")
    return jobs


# ------------------------------------------------------------------------------------ the report

def _csv_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """The CSV columns of a report row (lists flattened; text one line)."""
    interval = row.get("interval") or [None, None]
    timing = row.get("timing") or {}
    out = {k: row.get(k) for k in CSV_COLUMNS}
    out.update(interval_low=interval[0], interval_high=interval[1],
               segments=len(row["segments"]) if isinstance(row.get("segments"), list) else None,
               cuts=" ".join(str(c) for c in row.get("cuts") or []), notes="; ".join(row.get("notes") or []),
               seconds=timing.get("total") if isinstance(timing, dict) else None)
    return {k: "" if v is None else one_line(str(v)) for k, v in out.items()}


class Report:
    """The report file of one scan: validated and locked by `open`, appended line by line by `add`.

    `rows` maps each video (absolute path, as written) to its last row (CSV rows hold strings).
    """

    def __init__(self, path: PathLike, header: Dict[str, Any]):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in REPORT_SUFFIXES:
            raise LrnetError(f"{self.path}: a report is a .jsonl or .csv file (by its extension)")
        self.csv = suffix == ".csv"
        self.header = header
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.repaired = False  # a torn last line was cut off
        self._fd: Optional[int] = None
        self._fresh = True  # no header on disk yet

    # ---------------------------------------------------------------- reading
    def open(self) -> "Report":
        try:
            if self.path.parent and not self.path.parent.is_dir():
                raise LrnetError(f"{self.path}: its folder does not exist")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise LrnetError(f"{self.path}: cannot open the report ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LrnetError(f"{self.path}: another scan is writing this report; wait for it or choose "
                             "another --report") from None
        self._fd = fd
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def _load(self) -> None:
        assert self._fd is not None
        with open(self.path, "rb") as fh:
            data = fh.read()
        if not data:
            return
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                raise LrnetError(f"{self.path}: not an lrnet report (one line without an lrnet header record); "
                                 "choose another --report or move it away")
            os.ftruncate(self._fd, cut)
            data = data[:cut]
            self.repaired = True
            log.warning("%s: cut off a partial last line (an interrupted write)", self.path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise LrnetError(f"{self.path}: not an lrnet report (not UTF-8 text); choose another --report "
                             "or move it away") from None
        lines = text.splitlines()
        first = lines[0]
        if self.csv:
            first = first[len(CSV_PREFIX):] if first.startswith(CSV_PREFIX) else ""
        try:
            old = json.loads(first)
        except ValueError:
            old = None
        if not isinstance(old, dict) or old.get("lrnet_report") != REPORT_KIND:
            raise LrnetError(f"{self.path}: not an lrnet detect report (its first line is not lrnet's header "
                             "record); choose another --report or move it away")
        differences = _differences(old, self.header)
        if differences:
            raise LrnetError(f"{self.path}: written with other settings ({'; '.join(differences)}); use the "
                             "same settings to resume it, or another --report")
        self._fresh = False
        if self.csv:
            reader = csv.reader(lines[1:])
            columns = next(reader, None)
            if columns is not None and tuple(columns) != CSV_COLUMNS:
                raise LrnetError(f"{self.path}: line 2: not the columns of an lrnet report "
                                 f"({', '.join(columns[:4])} ...)")
            for number, values in enumerate(reader, start=3):
                if len(values) != len(CSV_COLUMNS):
                    raise LrnetError(f"{self.path}: line {number}: {len(values)} fields, expected "
                                     f"{len(CSV_COLUMNS)}; the report is damaged")
                row = dict(zip(CSV_COLUMNS, values))
                self.rows[row["video"]] = row
        else:
            for number, line in enumerate(lines[1:], start=2):
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict) or not isinstance(row.get("video"), str):
                    raise LrnetError(f"{self.path}: line {number}: not a report record; the report is damaged")
                self.rows[row["video"]] = row

    def key(self, video: Path) -> str:
        """How `video` is named in this report's rows."""
        return one_line(str(video)) if self.csv else str(video)

    # ---------------------------------------------------------------- writing
    def _write(self, text: str) -> None:
        assert self._fd is not None
        data = text.encode("utf-8")
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            raise LrnetError(f"{self.path}: cannot write the report ({exc.strerror or exc})") from None

    def add(self, row: Dict[str, Any]) -> None:
        """Append one video's row (the header first, when the file has none yet)."""
        if self._fresh:
            if self.csv:
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerow(CSV_COLUMNS)
                self._write(CSV_PREFIX + json.dumps(self.header) + "\n" + buf.getvalue())
            else:
                self._write(json.dumps(self.header) + "\n")
            self._fresh = False
        if self.csv:
            flat = _csv_row(row)
            buf = io.StringIO()
            csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n").writerow(flat)
            self._write(buf.getvalue())
            self.rows[flat["video"]] = flat
        else:
            self._write(json.dumps(row, allow_nan=False, default=str) + "\n")
            self.rows[row["video"]] = row

    def close(self) -> None:
        if self._fd is None:
            return
        if self._fresh and os.fstat(self._fd).st_size == 0:
            self.path.unlink(missing_ok=True)  # nothing was scanned: leave no empty report behind
        os.close(self._fd)
        self._fd = None

    def counts(self, videos: Optional[Iterable[str]] = None) -> Dict[str, int]:
        """Videos per outcome (fake, real, uncertain, failed) over the rows (of `videos` when given)."""
        rows = self.rows.values() if videos is None else [self.rows[v] for v in videos if v in self.rows]
        out = {k: 0 for k in (*VERDICTS, "failed")}
        for row in rows:
            key = "failed" if row.get("status") != "ok" else str(row.get("verdict"))
            out[key] = out.get(key, 0) + 1
        return out


# ------------------------------------------------------------------------------------ the task

_loaded: Dict[Tuple[Any, ...], Tuple[Any, str]] = {}  # per worker process: settings -> (detector, digest)


def _detector_in_worker(options: ScanOptions):
    key = (options.weights, options.device, options.aggregation, options.threshold, options.uncertain)
    if key not in _loaded:
        detector = load_scan_detector(options)
        _loaded[key] = (detector, weights_digest(detector))
    return _loaded[key]


def _limit_threads() -> None:
    """One thread per worker process: N processes on N cores, no oversubscription."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _maybe_die_mid_video(job: Job) -> None:
    folder = os.environ.get(KILL_HOOK_ENV)
    if folder:
        try:
            os.unlink(os.path.join(folder, job.output.name + MID_KILL_SUFFIX))  # succeeds once
        except OSError:
            return
        os._exit(1)


def failed_row(video: PathLike, message: str) -> Dict[str, Any]:
    return {"video": str(video), "status": "failed", "error": message}


def _scan_one(job: Job, options: ScanOptions) -> Outcome:
    """Task: detect one video (and write its landmarks); a content failure is the outcome's error."""
    from .detect import detect_video
    from .landmarks import write_landmarks

    if options.one_thread:
        _limit_threads()
    detector, digest = _detector_in_worker(options)
    if digest != options.weights_sha256:
        message = (f"{options.weights}: the worker on {socket.gethostname()} loaded other weights (SHA-256 "
                   f"{digest[:12]}...) than the client ({options.weights_sha256[:12]}...); every worker must see "
                   "the same weights")
        return Outcome(failed_row(job.video, message), 0, message, fatal=True)

    def progress(stage: str, fraction: float) -> None:
        if stage == "landmarks":  # called every 25 frames while the video is read
            _maybe_die_mid_video(job)

    try:
        result = detect_video(job.video, detector, replace(options.extract), progress=progress,
                              fps_policy=options.fps_policy)
    except LrnetError as exc:
        return Outcome(failed_row(job.video, str(exc)), 0, str(exc))
    if options.save_landmarks:
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
            write_landmarks(job.output, result.landmarks.sequence)
        except OSError as exc:
            message = f"{job.output}: cannot write ({exc.strerror or exc})"
            return Outcome(failed_row(job.video, message), 0, message, fatal=exc.errno in DISK_ERRNOS)
    row = {"video": str(job.video), "status": "ok", **result.to_dict()}
    row["video"] = str(job.video)
    return Outcome(row, result.landmarks.stats.frames)


# ------------------------------------------------------------------------------------ running

def _run_pool(jobs: Sequence[Job], options: ScanOptions, workers: int,
              retries: int) -> Iterator[Tuple[Job, Outcome]]:
    """A local pool of `workers` processes, fed `workers` jobs at a time. When a process dies the pool
    breaks: it is restarted and the videos that were in flight go again (each at most `retries` times)."""
    from .parallel import worker_pool

    queue = list(reversed(jobs))
    deaths: Dict[Job, int] = {}
    while queue:
        broken: List[Job] = []
        with worker_pool(workers, _limit_threads, context="spawn") as pool:
            running: Dict[concurrent.futures.Future, Job] = {}
            while queue or running:
                while queue and len(running) < workers and not broken:
                    job = queue.pop()
                    running[pool.submit(run_task, _scan_one, job, options)] = job
                if not running:
                    break
                done, _ = concurrent.futures.wait(list(running), return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    try:
                        yield job, future.result()
                    except BrokenProcessPool:
                        broken.append(job)
                    except Exception as exc:
                        yield job, Outcome.failure(job, failure_message(job, exc))
        for job in broken:
            deaths[job] = deaths.get(job, 0) + 1
            if deaths[job] > retries:
                message = f"{job.video}: a worker process died while processing it {deaths[job]} times " \
                          "(out of memory or killed)"
                yield job, Outcome(failed_row(job.video, message), 0, message)
            else:
                log.warning("%s: a worker process died; running it again", job.video)
                queue.append(job)


@dataclass
class ScanSummary:
    """Counts of one scan. `now`: this run's videos by outcome; `report`: every video of the report."""

    total: int
    skipped: int
    skipped_failed: int
    now: Dict[str, int]
    report: Dict[str, int]
    path: Path
    frames: int = 0
    seconds: float = 0.0
    repaired: bool = False

    @property
    def failed(self) -> int:
        return self.now.get("failed", 0)


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="detect", unit="video", file=sys.stderr, dynamic_ncols=True, disable=None)


def scan(jobs: Sequence[Job], report_path: PathLike, options: ScanOptions, header: Dict[str, Any], *,
         workers: int = 1, scheduler: Optional[str] = None, retries: int = 2, retry_failed: bool = False,
         progress: bool = False, on_failure: Optional[Callable[[str], None]] = None) -> ScanSummary:
    """Score `jobs` into the report at `report_path` (see the module doc); returns the counts.

    `header`: `report_header` of the client's weights and `options`; `workers`: local processes
    (1: this process); `scheduler`: ``local:N`` or a Dask address (then `workers` is unused);
    `on_failure(message)`: called for each failed video (the CLI prints it).
    """
    report = Report(report_path, header).open()
    try:
        todo, skipped_failed = [], 0
        for job in jobs:
            row = report.rows.get(report.key(job.video))
            if row is None or (retry_failed and row.get("status") != "ok"):
                todo.append(job)
            elif row.get("status") != "ok":
                skipped_failed += 1
        if len(todo) < len(jobs):
            log.info("%s already holds %d of the %d videos: skipped", report.path, len(jobs) - len(todo), len(jobs))
        if scheduler or (workers > 1 and len(todo) > 1):
            options = replace(options, one_thread=True)
        if scheduler:
            results: Iterable[Tuple[Job, Outcome]] = _run_dask(todo, _scan_one, options, scheduler, retries)
        elif workers <= 1 or len(todo) <= 1:
            results = _run_inline(todo, _scan_one, options)
        else:
            results = _run_pool(todo, options, workers, retries)
        summary = ScanSummary(len(jobs), len(jobs) - len(todo), skipped_failed, {k: 0 for k in (*VERDICTS, "failed")},
                              {}, report.path, repaired=report.repaired)
        bar = _bar(len(todo), progress)
        started = time.monotonic()
        try:
            for job, outcome in results:
                if outcome.fatal:
                    raise LrnetError(outcome.error)
                row = outcome.row if outcome.row.get("status") else failed_row(job.video, outcome.error)
                report.add(row)
                key = "failed" if row["status"] != "ok" else str(row.get("verdict"))
                summary.now[key] = summary.now.get(key, 0) + 1
                summary.frames += outcome.frames
                summary.seconds = time.monotonic() - started
                if outcome.error and on_failure is not None:
                    if bar is not None:
                        bar.clear()
                    on_failure(outcome.error)
                if bar is not None:
                    rate = summary.frames / summary.seconds if summary.seconds else 0.0
                    bar.set_postfix_str(f"{rate:.0f} frames/s, {summary.now['failed']} failed", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stops the pool or the cluster's tasks at once when we leave early
        summary.report = report.counts()
        return summary
    finally:
        report.close()
