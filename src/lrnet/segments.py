"""Segments of a video: the shots (runs of frames with one tracked face) that are calibrated and scored apart.

Real footage is edited. A video is therefore a list of *segments*: maximal runs of frames with
landmarks from one face track, inside one shot. Per frame the extractor records a status
(`FACE`: own landmarks; `REUSED`: the previous landmarks repeated because detection failed or
was rejected; `NO_FACE`) and a track id (a new id at each shot cut or re-acquired face).
`find_segments` turns those arrays into segments:

- frames without a face belong to no segment;
- a new track starts a new segment (calibration's stable face box and optical flow never span a cut);
- a run of more than ``max_reused`` consecutive reused frames ends the segment; those frames are
  dropped (never scored: frozen landmarks look like a real face) and counted.

Blocks are cut per segment with the reference rule (`lrnet.features.num_blocks`), so no block
straddles a segment boundary; with one segment the blocks are exactly the reference's.
Everything here is array bookkeeping, vectorised, and unit-tested on hand-made arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .features import num_blocks

__all__ = ["FACE", "NO_FACE", "REUSED", "Segment", "StreamSegmenter", "block_starts", "find_segments", "gather_blocks",
           "longest", "segment_of_rows"]

NO_FACE, FACE, REUSED = 0, 1, 2  # per-frame status codes


@dataclass(frozen=True)
class Segment:
    """Rows ``start:stop`` (one past the end) of a frame-ordered array; ``len()`` frames."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def _run_starts(member: np.ndarray, track: np.ndarray) -> np.ndarray:
    """Where a run of `member` rows with one track id begins, ``(rows,)`` bool."""
    same = np.zeros(len(member), bool)
    same[1:] = member[:-1] & (track[1:] == track[:-1])
    return member & ~same


def find_segments(status: np.ndarray, track: np.ndarray, max_reused: int) -> Tuple[List[Segment], np.ndarray]:
    """Segments of a video from per-frame ``status`` and ``track`` ids (both ``(frames,)``).

    Returns ``(segments, kept)``: segments as row ranges of the *input* arrays, in order, and the
    ``(frames,)`` bool mask of rows inside a segment. Rows in a segment are contiguous except
    where a dropped reused run ended one segment and the track went on in the next.
    """
    status = np.asarray(status)
    track = np.asarray(track)
    if status.shape != track.shape or status.ndim != 1:
        raise ValueError(f"status {status.shape} and track {track.shape} must be equal (frames,) arrays")
    reused = status == REUSED
    run_id = np.cumsum(_run_starts(reused, track)) * reused
    run_length = np.bincount(run_id)[run_id]
    kept = (status != NO_FACE) & ~(reused & (run_length > max_reused))
    starts = np.flatnonzero(_run_starts(kept, track))
    ends = np.flatnonzero(_run_starts(kept[::-1], track[::-1]))  # run ends, counted from the back
    stops = (len(kept) - ends)[::-1]
    return [Segment(int(a), int(b)) for a, b in zip(starts, stops)], kept


def segment_of_rows(segments: Sequence[Segment]) -> np.ndarray:
    """For segments laid end to end (as `VideoLandmarks` stores them): each row's segment index."""
    lengths = np.array([len(s) for s in segments], dtype=np.int64)
    return np.repeat(np.arange(len(segments)), lengths)


def block_starts(lengths: Sequence[int], block_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Blocks of segments laid end to end: ``(start row, segment index)``, each ``(blocks,)`` int64.

    Segment ``s`` of ``n`` frames gives the reference's ``range(0, n - B, B)`` blocks, offset by
    the rows of the segments before it; no block crosses into the next segment.
    """
    frames = np.asarray(lengths, dtype=np.int64)
    counts = np.asarray(num_blocks(frames, block_size), dtype=np.int64).reshape(-1)
    segment = np.repeat(np.arange(len(frames)), counts)
    first_block = np.cumsum(counts) - counts
    offsets = np.cumsum(frames) - frames
    k = np.arange(len(segment)) - first_block[segment]
    return offsets[segment] + k * block_size, segment


def gather_blocks(sequence: np.ndarray, starts: np.ndarray, block_size: int) -> np.ndarray:
    """``(frames, F)`` sequence -> ``(blocks, B, F)`` float32 blocks starting at rows `starts`."""
    rows = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(block_size)
    return np.asarray(sequence, dtype=np.float32)[rows]


def longest(segments: Sequence[Segment]) -> int:
    """Index of the longest segment (the earliest among equals); ValueError when there is none."""
    if not segments:
        raise ValueError("no segments")
    return int(np.argmax([len(s) for s in segments]))


class StreamSegmenter:
    """`find_segments` one row at a time, for a stream: ``push(item, status, track)`` returns what is
    now decided, as a list of actions in row order:

    - ``("keep", item, starts_segment)``: the row is in a segment (a new one when `starts_segment`);
    - ``("drop", item, reason)``: the row is in no segment (no face, or a dropped reused run);
    - ``("end", None, reason)``: the open segment ended before the next action.

    Reused rows are held until their run ends or exceeds `max_reused` (then all of the run is
    dropped); everything else is decided at once. `close` decides what is held.
    """

    def __init__(self, max_reused: int):
        self.max_reused = max_reused
        self.run: List[Tuple[object, int]] = []  # held reused rows: (item, track)
        self.dropping: Optional[int] = None  # track of a reused run being dropped
        self.open_track: Optional[int] = None  # track of the open segment, None: no open segment

    def push(self, item: object, status: int, track: int) -> List[Tuple[str, object, object]]:
        out: List[Tuple[str, object, object]] = []
        if self.run and (status != REUSED or track != self.run[0][1]):
            out += self._release_run()
        if status != REUSED or track != self.dropping:
            self.dropping = None
        if status == NO_FACE:
            out += self._end("no face") + [("drop", item, "no face")]
        elif status == FACE:
            out += self._keep(item, track)
        elif self.dropping is not None:
            out.append(("drop", item, "reused run too long"))
        else:
            self.run.append((item, track))
            if len(self.run) > self.max_reused:
                run, self.run, self.dropping = self.run, [], track
                out += self._end(f"face lost: more than {self.max_reused} frames without landmarks of their own")
                out += [("drop", it, "reused run too long") for it, _ in run]
        return out

    def close(self, reason: str = "end") -> List[Tuple[str, object, object]]:
        """The stream ended (or has a gap): release the held run and end the open segment."""
        out = self._release_run() + self._end(reason)
        self.dropping = None
        return out

    def _release_run(self) -> List[Tuple[str, object, object]]:
        run, self.run = self.run, []
        out: List[Tuple[str, object, object]] = []
        for it, track in run:
            out += self._keep(it, track)
        return out

    def _keep(self, item: object, track: int) -> List[Tuple[str, object, object]]:
        out: List[Tuple[str, object, object]] = []
        new = self.open_track != track
        if new and self.open_track is not None:
            out += self._end("new face track")
        self.open_track = track
        return out + [("keep", item, new)]

    def _end(self, reason: str) -> List[Tuple[str, object, object]]:
        if self.open_track is None:
            return []
        self.open_track = None
        return [("end", None, reason)]
