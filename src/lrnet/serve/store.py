"""Jobs of the server: their records in memory and on disk, the bounded queue, expiry and restart.

Each job owns one folder ``DATA/jobs/<id>/`` named by a random 128-bit id (never by the upload's
name). ``job.json`` is its record, rewritten atomically on every change of status; the folder
also holds ``upload.<ext>`` (the file as received), and once done ``landmarks.json``,
``landmarks.txt`` and, for a video browsers cannot play, ``video.mp4``.

On start (`JobStore.recover`) finished jobs are kept; jobs that were queued or running when the
previous server stopped are queued again (oldest first, as before), whichever backend ran them:
whatever a running job had written but its upload is removed, and the job restarts from its upload.
Its client can still follow it by id; one whose upload is gone fails with the reason "server
restarted". Finished jobs older than ``keep_hours`` and folders without a readable record are deleted.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..atomic import atomic_write_text

__all__ = ["FINAL", "RESTARTED", "STATUSES", "Job", "JobStore", "Task", "valid_id"]

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
RESTARTED = "server restarted"
RECORD = "job.json"
_ID = re.compile(r"^[0-9a-f]{32}$")


def valid_id(job_id: str) -> bool:
    """Whether `job_id` has the form of an id this server hands out (32 hex digits)."""
    return bool(_ID.match(job_id))



@dataclass(frozen=True)
class Task:
    """One job as the server sends it to a worker. `upload` and `folder` are server paths."""

    job_id: str
    kind: str
    upload: str
    folder: str
    filename: str
    weights: str
    aggregation: str
    playable: bool

@dataclass
class Job:
    """One upload and its processing. Times are Unix seconds."""

    id: str
    kind: str  # mp4, mov, avi, mkv, webm or landmarks
    filename: str  # the client's name, for display only
    upload: str  # file name of the upload inside the job folder
    weights: str
    aggregation: str
    playable: bool = False  # browsers play the upload as it is
    size: int = 0  # bytes uploaded
    status: str = "queued"
    stage: str = "queued"
    fraction: float = 0.0
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    error: Optional[str] = None
    result: Optional[Dict[str, Any]] = None
    version: int = 0  # bumped on every change (progress included); not stored

    def record(self) -> Dict[str, Any]:
        out = asdict(self)
        out.pop("version")
        return out

    @classmethod
    def from_record(cls, data: Dict[str, Any]) -> Job:
        names = {f.name for f in fields(cls)} - {"version"}
        return cls(**{k: v for k, v in data.items() if k in names})


class JobStore:
    """Thread-safe job records under ``root/jobs`` with a bounded queue of `capacity` waiting jobs."""

    def __init__(self, root: Path, capacity: int, keep_hours: float):
        self.root = Path(root) / "jobs"
        self.capacity = capacity
        self.keep_seconds = keep_hours * 3600.0
        self._jobs: Dict[str, Job] = {}
        self._lock = threading.RLock()
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ folders
    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    def folder(self, job_id: str) -> Path:
        if not valid_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def _save(self, job: Job) -> None:
        atomic_write_text(self.folder(job.id) / RECORD, json.dumps(job.record()))

    def clean_files(self, job_id: str) -> None:
        """Remove everything of a job but its record (failed and cancelled jobs keep no upload)."""
        folder = self.folder(job_id)
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name != RECORD:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def discard_files(self, job_id: str) -> None:
        """After a job was stopped: its files but the record go, or its whole folder if it was deleted."""
        if self.get(job_id) is None:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        else:
            self.clean_files(job_id)

    # ------------------------------------------------------------------ queries
    def get(self, job_id: str) -> Optional[Job]:
        """A copy of the job (safe to read without the lock), None when unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            return replace(job) if job is not None else None

    def recent(self, limit: int = 50) -> List[Job]:
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)[:limit]
            return [replace(j) for j in jobs]

    def counts(self) -> Dict[str, int]:
        with self._lock:
            out = {s: 0 for s in STATUSES}
            for job in self._jobs.values():
                out[job.status] += 1
            return out

    def full(self) -> bool:
        return self.counts()["queued"] >= self.capacity

    def next_queued(self) -> Optional[Job]:
        with self._lock:
            queued = [j for j in self._jobs.values() if j.status == "queued"]
            return replace(min(queued, key=lambda j: j.created)) if queued else None

    # ------------------------------------------------------------------ changes
    def add(self, job: Job) -> bool:
        """Queue `job` when there is room (False: the queue is full, nothing stored)."""
        with self._lock:
            if self.full():
                return False
            self._jobs[job.id] = job
            self._save(job)
            return True

    def update(self, job_id: str, persist: bool = True, **changes: Any) -> Optional[Job]:
        """Change fields of a job that is not final yet; returns the new state (None: unknown or final)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status in FINAL:
                return None
            for name, value in changes.items():
                setattr(job, name, value)
            job.version += 1
            if persist:
                self._save(job)
            return replace(job)

    def progress(self, job_id: str, stage: str, fraction: float) -> None:
        self.update(job_id, persist=False, stage=stage, fraction=float(fraction))

    def finish(self, job_id: str, status: str, error: Optional[str] = None,
               result: Optional[Dict[str, Any]] = None) -> Optional[Job]:
        """Make a job final (done, failed or cancelled); failed and cancelled ones lose their files."""
        job = self.update(job_id, status=status, error=error, result=result, finished=time.time(),
                          stage=status, fraction=1.0 if status == "done" else 0.0)
        if job is not None and status != "done":
            self.clean_files(job_id)
        return job

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def expire(self, now: Optional[float] = None) -> int:
        """Delete final jobs finished more than ``keep_hours`` ago; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            old = [j.id for j in self._jobs.values()
                   if j.status in FINAL and (j.finished or j.created) < now - self.keep_seconds]
        for job_id in old:
            self.remove(job_id)
        return len(old)

    def recover(self) -> Dict[str, int]:
        """Load the records left by a previous server (see the module docstring); returns counts."""
        counts = {"kept": 0, "requeued": 0, "interrupted": 0, "dropped": 0}
        for folder in sorted(self.root.iterdir()):
            job = self._read(folder)
            if job is None:
                shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink()
                counts["dropped"] += 1
                continue
            self._jobs[job.id] = job
            if job.status in FINAL:
                counts["kept"] += 1
            elif (folder / job.upload).is_file():
                self._requeue(job)
                counts["requeued"] += 1
            else:
                self.finish(job.id, "failed", error=f"{RESTARTED} (its upload is gone)")
                counts["interrupted"] += 1
        counts["dropped"] += self.expire()
        return counts

    def _requeue(self, job: Job) -> None:
        """Queue an interrupted job again: its record reset, its files but the record and upload removed."""
        was = job.status
        for path in self.folder(job.id).iterdir():
            if path.name not in (RECORD, job.upload):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        self.update(job.id, status="queued", stage="queued", fraction=0.0, started=None, error=None, result=None)
        log.info("job %s (%s) was %s when the server stopped: queued again", job.id, job.filename, was)

    def _read(self, folder: Path) -> Optional[Job]:
        if not (folder.is_dir() and valid_id(folder.name)):
            return None
        try:
            job = Job.from_record(json.loads((folder / RECORD).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: dropping a job folder without a readable record (%s)", folder, exc)
            return None
        return job if job.id == folder.name else None
