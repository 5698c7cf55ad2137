"""Live sessions of `lrnet serve`: a WebRTC video track in, the streaming pipeline's events out.

A client (the page's Live tab, or a program) sends an SDP offer to ``POST /api/v1/live`` with a
video track and a data channel labelled ``lrnet``; the answer comes back in the response. The
server (aiortc, which decodes with PyAV) reads the track on the event loop and hands each frame
(BGR ``(h, w, 3)`` uint8 and its time in seconds from the first frame) to a worker PROCESS of its
own that runs `lrnet.stream.StreamPipeline`. Every event the pipeline yields goes back over the
data channel as one JSON text message (see `LIVE_EVENTS`).

Bounded everywhere: at most ``max_live`` sessions (one more is refused with 503 and Retry-After);
at most `MAX_QUEUED` frames wait for a session's worker; when it is full, frames are dropped at the
server until the worker has caught up, and counted (``behind`` in block events, a ``behind`` event
at most once a second while it lasts); the pipeline marks a gap there, so no block spans a drop.
A session ends, and its worker process is stopped, when the client sends ``{"type": "stop"}``,
closes the data channel or the peer connection, the track ends, no frame arrives for `IDLE_LIMIT` seconds, ``DELETE /api/v1/live/{id}`` is called, or the server stops.
Workers also die with the server (`lrnet.parallel.die_with_parent`, as the job workers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import multiprocessing
import os
import queue
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, List, Optional, Tuple

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from ..errors import LrnetError

__all__ = ["LIVE_CHANNEL", "LIVE_EVENTS", "LiveFull", "LiveManager", "LiveRequest", "live_worker_main",
           "parse_live_request", "router"]

log = logging.getLogger(__name__)

LIVE_CHANNEL = "lrnet"  # label of the data channel the client opens; events are sent on it
MAX_QUEUED = 32  # frames waiting for a session's worker (about 1 s at 30 fps; 44 MB at 720p); then frames drop
IDLE_LIMIT = 30.0  # seconds without a frame (or without a track at the start) before a session ends
STOP_GRACE = 10.0  # seconds a worker gets to score its last blocks and send the summary
MAX_PENDING = 256  # events kept for a data channel that is not open yet
BEHIND_EVERY = 1.0  # seconds between "behind" events while frames are being dropped
RETRY_AFTER = "30"  # seconds a client refused for too many live sessions is asked to wait
MAX_WINDOW = 1000  # blocks; the largest rolling window a client may ask for
DEFAULT_WINDOW = 10
DEFAULT_ALERT = (3, 5)  # K of the last N blocks fake; the default of `lrnet watch --alert`

LIVE_EVENTS = {
    "status": "the session's state: starting (worker taken), ready (with the detector's facts), ended (reason, counts)",
    "block": "one scored block: index, segment, start_s, end_s, p_fake, p_g1, p_g2, rolling {score, verdict, call, "
             "interval, blocks} over the last `window` blocks, alert (the rule holds), alert_raised (text, when it "
             "starts to hold), latency_s (worker); the server adds behind (frames dropped so far) and lag_s",
    "cut": "a shot change (time_s): the next blocks start a new segment",
    "face_lost": "no face tracked any more (time_s)", "face_found": "a face is tracked again (time_s, segment)",
    "gap": "a segment boundary, never bridged (time_s, reason, cause): the sender sent no frame for over GAP_S s "
           "(cause 'stall'), or the server dropped frames (cause 'behind')",
    "resolution": "the sender changed the frame size (time_s, width, height, previous): a new segment",
    "behind": "the worker fell behind real time: frames were dropped at the server (time_s, dropped, "
              "dropped_total), at most once a second",
    "summary": "the last pipeline event: the whole session's verdict and counts (the server adds frames_received, "
               "frames_dropped, frames_warmup)",
    "error": "the session failed (message); it ends next",
}
GAP_S = 1.0  # seconds between two frames' times that count as a stall of the source (a segment boundary)

LIVE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["sdp", "type"], "properties": {
        "sdp": {"type": "string", "description": "the client's SDP offer: one video track (recvonly on this side) "
                                                 f"and a data channel labelled '{LIVE_CHANNEL}'"},
        "type": {"type": "string", "enum": ["offer"]},
        "weights": {"type": "string", "description": "a name from GET /api/v1/weights (default: the server's)"},
        "window": {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW,
                   "description": f"blocks in the rolling verdict (default {DEFAULT_WINDOW})"},
        "alert": {"type": ["string", "null"],
                  "description": "alert rule K/N: K of the last N blocks fake (default 3/5; null or 'off': none)"}}}}}}}
LIVE_ANSWERS: Dict[int | str, Dict[str, Any]] = {
    400: {"description": "not a JSON offer, an SDP that cannot be negotiated, or no data channel in the offer"},
    401: {"description": "missing or wrong token (servers started with --token)"},
    404: {"description": "live mode is off on this server (--max-live 0)"},
    422: {"description": "unknown weights, or a window / alert rule out of range"},
    501: {"description": "this server was installed without aiortc"},
    503: {"description": "--max-live sessions are running; retry after the Retry-After header's seconds"}}


# ------------------------------------------------------------------------------ request

@dataclass(frozen=True)
class LiveRequest:
    """A checked ``POST /api/v1/live`` body."""

    sdp: str
    weights: str
    window: int = DEFAULT_WINDOW
    alert: Optional[Tuple[int, int]] = DEFAULT_ALERT


def _alert_rule(value: Any) -> Optional[Tuple[int, int]]:
    if value is None or value in ("", "off"):
        return None
    if isinstance(value, str) and value.count("/") == 1:
        parts: List[Any] = value.split("/")
    elif isinstance(value, list) and len(value) == 2:
        parts = value
    else:
        raise HTTPException(422, f"alert must be 'K/N' (K of the last N blocks fake), not {value!r}")
    try:
        k, n = (int(str(p).strip()) for p in parts)
    except ValueError:
        raise HTTPException(422, f"alert must be 'K/N' with whole numbers, not {value!r}") from None
    if not 1 <= k <= n <= MAX_WINDOW:
        raise HTTPException(422, f"alert {k}/{n}: need 1 <= K <= N <= {MAX_WINDOW}")
    return k, n


def parse_live_request(body: Any, default_weights: str, offered: set) -> LiveRequest:
    """Check a decoded JSON body; `HTTPException` 400/422 with a one-line reason when it is wrong."""
    if not isinstance(body, dict):
        raise HTTPException(400, "expected a JSON object {sdp, type: 'offer', weights?, window?, alert?}")
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer" or not isinstance(sdp, str) or not sdp.strip():
        raise HTTPException(400, "expected an SDP offer: {\"sdp\": \"v=0...\", \"type\": \"offer\"}")
    if "m=video" not in sdp:
        raise HTTPException(400, "the offer has no video track to check")
    if "m=application" not in sdp:
        raise HTTPException(400, f"the offer has no data channel (open one labelled '{LIVE_CHANNEL}' before "
                                 "creating the offer): the verdicts are sent on it")
    weights = body.get("weights") or default_weights
    if weights not in offered:
        raise HTTPException(422, f"unknown weights {weights!r}; this server offers {sorted(offered)}")
    window = body.get("window", DEFAULT_WINDOW)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise HTTPException(422, f"window must be a whole number of blocks from 1 to {MAX_WINDOW}, not {window!r}")
    alert = _alert_rule(body["alert"]) if "alert" in body else DEFAULT_ALERT
    return LiveRequest(sdp, str(weights), window, alert)


# ------------------------------------------------------------------------------ worker process

def live_worker_main(frames: Connection, events: Connection, parent: int, weights: str, download: bool) -> None:
    """Entry of a live worker: load the detector, wait for its session, then run every frame through it.

    Loads `weights` (and builds one pipeline, so first-use costs are paid) before it is needed: the
    server keeps one such worker warm. Then receives on `frames` the session's settings
    ``{"weights", "window", "alert"}``, then ``(index, time_s, image, skipped)`` tuples (image BGR
    ``(h, w, 3)`` uint8; `skipped` frames were dropped by the server just before it: a gap) until
    ``None`` or the pipe closes, and flushes the pipeline. Sends event dicts on `events`:
    ``{"type": "status", "state": "loaded"}`` (for the server), ``{"type": "status", "state":
    "ready", ...}`` with the detector's facts (or ``{"type": "error", "message"}``), then the
    pipeline's events.
    """
    from ..parallel import die_with_parent

    die_with_parent(parent, every=1.0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    try:
        import numpy as np
        import torch

        torch.set_num_threads(1)  # one core per live stream: sessions run side by side
        from ..detector import load_detector
        from ..stream import LiveOptions, StreamPipeline
        from ..video import Frame

        detector = load_detector(weights, download=download)
        # one dark frame through a throw-away pipeline: the landmark models load now, not on the first frame
        StreamPipeline(detector, live=LiveOptions()).push(Frame(0, 0.0, np.zeros((240, 320, 3), np.uint8)))
    except LrnetError as exc:
        events.send({"type": "error", "message": str(exc)})
        return
    except Exception as exc:  # a bug or a broken install: say what happened, the session ends
        log.exception("live worker could not start")
        events.send({"type": "error", "message": f"the live worker could not start ({type(exc).__name__}: {exc})"})
        return
    events.send({"type": "status", "state": "loaded"})
    try:
        settings = frames.recv()
    except (EOFError, OSError):
        return  # the server went away before this spare was used
    if settings is None:
        return
    try:
        if settings["weights"] != weights:
            detector = load_detector(settings["weights"], download=False)
        alert = tuple(settings["alert"]) if settings.get("alert") else None
        pipe = StreamPipeline(detector, live=LiveOptions(window=settings["window"], alert=alert))
        events.send({"type": "status", "state": "ready", **detector.describe()})
        last_time: Optional[float] = None
        while True:
            try:
                item = frames.recv()
            except (EOFError, OSError):
                item = None
            if item is None:
                break
            index, seconds, image, skipped = item
            reason, cause = None, "stall"
            if skipped:  # the server dropped frames before this one: never bridge them
                reason, cause = f"{skipped} frame(s) dropped: the server fell behind real time", "behind"
            elif last_time is not None and seconds - last_time > GAP_S:  # the sender paused (hidden tab, stall)
                reason = f"no frame for {seconds - last_time:.1f} s"
            if reason is not None and last_time is not None:
                for event in pipe.gap(reason):
                    out = event.to_dict()
                    if out["type"] == "gap":
                        out["cause"] = cause  # "behind" (frames dropped by the server) or "stall" (the sender)
                    events.send(out)
            last_time = seconds
            for event in pipe.push(Frame(index, seconds, image)):
                events.send(event.to_dict())
        for event in pipe.close():
            events.send(event.to_dict())
    except LrnetError as exc:
        events.send({"type": "error", "message": str(exc)})
    except Exception as exc:
        log.exception("live worker failed")
        events.send({"type": "error", "message": f"internal error ({type(exc).__name__}: {exc})"})
    events.close()  # the server's reader sees the end now, not after the interpreter's slow teardown
    os._exit(0)  # nothing left to flush: skip torch's teardown, which takes seconds on a busy machine


# ------------------------------------------------------------------------------ server side

def _finite(value: Any) -> Any:
    """`value` with NaN/inf floats replaced by None (JSON has no NaN; browsers reject it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return _finite(value.item())
    return value


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class LiveFull(Exception):
    """All ``max_live`` session slots are taken."""


class _Worker:
    """A started live worker process, the server's ends of its two pipes, and a thread reading events.

    Until a session is attached (`attach`), its messages are kept (the ``loaded`` status only
    sets `loaded`); then each is handed to the session's sink, ``None`` marking the end of the pipe.
    """

    def __init__(self, process: multiprocessing.process.BaseProcess, frames: Connection, events: Connection):
        self.process, self.frames, self.events = process, frames, events
        self.loaded = False
        self._lock = threading.Lock()
        self._kept: List[Optional[Dict[str, Any]]] = []
        self._sink: Optional[Callable[[Optional[Dict[str, Any]]], None]] = None
        self.reader = threading.Thread(target=self._read, name=f"lrnet-live-read-{process.pid}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                message: Optional[Dict[str, Any]] = self.events.recv()
            except (EOFError, OSError):
                message = None
            with self._lock:
                if message is not None and message.get("type") == "status" and message.get("state") == "loaded":
                    self.loaded = True
                elif self._sink is None:
                    self._kept.append(message)
                else:
                    self._sink(message)
            if message is None:
                return

    def attach(self, sink: Callable[[Optional[Dict[str, Any]]], None]) -> None:
        """From now on, hand every message (and the final None) to `sink` (called on the reader thread)."""
        with self._lock:
            for message in self._kept:
                sink(message)
            self._kept.clear()
            self._sink = sink

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.frames.close()
        self.events.close()


@dataclass
class LiveSession:
    """One peer connection, its worker process and the threads that feed and read it."""

    id: str
    request: LiveRequest
    pc: Any  # aiortc.RTCPeerConnection
    worker: _Worker  # frames: (index, time_s, image) or None to it; event dicts from it
    loop: asyncio.AbstractEventLoop
    created: float = field(default_factory=time.time)
    state: str = "starting"  # starting -> live -> ending -> ended
    channel: Any = None
    pending: List[str] = field(default_factory=list)
    queue: "queue.Queue[Any]" = field(default_factory=lambda: queue.Queue(MAX_QUEUED))
    received: int = 0  # frames read from the track
    warmup: int = 0  # frames read while the worker was still loading (not scored)
    dropped: int = 0  # frames dropped because the worker was behind
    skipping: bool = False  # dropping frames until the worker has emptied the queue
    skipped: int = 0  # frames dropped since the last one queued
    blocks: int = 0
    first_arrival: Optional[float] = None  # monotonic time of the first frame
    first_time: Optional[float] = None  # the first frame's own time (s)
    last_frame: float = field(default_factory=time.monotonic)
    behind_mark: Tuple[float, int] = (0.0, 0)  # (monotonic time, dropped) of the last "behind" event
    tasks: List[asyncio.Task] = field(default_factory=list)
    holes: List[Any] = field(default_factory=list)  # MediaBlackholes reading tracks that are not checked
    manager: Optional["LiveManager"] = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""

    def view(self) -> Dict[str, Any]:
        return {"id": self.id, "state": self.state, "created": _iso(self.created), "weights": self.request.weights,
                "window": self.request.window, "alert": "/".join(map(str, self.request.alert or ())) or None,
                "frames": self.received, "dropped": self.dropped, "blocks": self.blocks,
                "worker_pid": self.worker.process.pid,
                "urls": {"self": f"/api/v1/live/{self.id}"}}

    # ------------------------------------------------------------------ events to the client
    def emit(self, event: Dict[str, Any]) -> None:
        """Send one event on the data channel (kept, up to MAX_PENDING, until the channel opens)."""
        text = json.dumps(_finite(event), separators=(",", ":"), allow_nan=False)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        else:
            self.pending.append(text)
            del self.pending[:-MAX_PENDING]

    def channel_open(self) -> None:
        for text in self.pending:
            self.channel.send(text)
        self.pending.clear()

    def on_worker_event(self, event: Dict[str, Any]) -> None:
        """A message from the worker (on the loop): annotate and forward it."""
        kind = event.get("type")
        if kind == "status" and event.get("state") == "loaded":
            return  # the spare worker's own business
        if kind == "status" and event.get("state") == "ready" and self.state == "starting":
            self.state = "live"
        elif kind == "block":
            self.blocks += 1
            event["behind"] = self.dropped
            if self.first_arrival is not None and isinstance(event.get("end_s"), (int, float)):
                # how long after its last frame arrived (on a real-time source) the verdict went out
                arrived = self.first_arrival + float(event["end_s"])  # end_s counts from the first frame sent
                event["lag_s"] = round(max(0.0, time.monotonic() - arrived), 3)
        elif kind == "summary":
            event.update(frames_received=self.received, frames_dropped=self.dropped, frames_warmup=self.warmup)
        self.emit(event)

    # ------------------------------------------------------------------ frames to the worker
    def on_frame(self, frame: Any) -> None:
        """A decoded frame from the track (on the loop): queue it for the worker, or drop it.

        A worker that falls behind fills the queue; from then on frames are dropped until it has
        emptied the queue, and the next frame carries the count of frames dropped before it (the
        worker marks a gap there). So every block is made of consecutive frames: a slow machine
        gives fewer blocks, not blocks of frames torn apart.
        """
        now = time.monotonic()
        self.last_frame = now
        index = self.received
        self.received += 1
        if self.state != "live":
            self.warmup += 1  # the worker is still loading: these frames are not scored
            return
        seconds = float(frame.time) if frame.time is not None else now
        if self.first_time is None:
            self.first_time, self.first_arrival = seconds, now
        if self.skipping and self.queue.empty():
            self.skipping = False
        if not self.skipping:
            try:
                self.queue.put_nowait((index, seconds - self.first_time, frame, self.skipped))
                self.skipped = 0
                return
            except queue.Full:
                self.skipping = True
        self.dropped += 1
        self.skipped += 1
        mark_time, mark_count = self.behind_mark
        if now - mark_time >= BEHIND_EVERY:
            self.emit({"type": "behind", "time_s": round(seconds - self.first_time, 3),
                       "dropped": self.dropped - mark_count, "dropped_total": self.dropped})
            self.behind_mark = (now, self.dropped)

    def sender(self) -> None:
        """Thread: convert queued frames to BGR arrays and send them to the worker (blocks while it works)."""
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    self.worker.frames.send(None)
                    return
                index, seconds, frame, skipped = item
                self.worker.frames.send((index, seconds, frame.to_ndarray(format="bgr24"), skipped))
            except (BrokenPipeError, EOFError, OSError, ValueError):
                return  # the worker is gone: the reader thread reports it

    def from_worker(self, message: Optional[Dict[str, Any]]) -> None:
        """The worker's reader thread: hand a message (None: the worker is gone) to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            if message is None:
                self.loop.call_soon_threadsafe(self.on_worker_exit)
            else:
                self.loop.call_soon_threadsafe(self.on_worker_event, message)

    def on_worker_exit(self) -> None:
        if self.state in ("starting", "live"):
            code = self.worker.process.exitcode
            self.emit({"type": "error", "message": "the live worker stopped unexpectedly"
                                                   + (f" (exit code {code})" if code is not None else "")})
            self.stop_soon("the worker stopped")

    def stop_soon(self, reason: str) -> None:
        """Schedule the end of the session (from a callback that cannot await)."""
        if self.manager is not None and self.state not in ("ending", "ended") \
                and not any(t.get_name() == "end" for t in self.tasks):
            self.tasks.append(self.loop.create_task(self.manager.end(self, reason), name="end"))


class LiveManager:
    """The live sessions of one server: at most `max_live`, each with its own worker process.

    Once live mode is used (`start`: the page's Live tab opening, or the first session), one more
    worker is kept loaded and waiting (a spare), so a session starts in well under a second rather
    than the many seconds that importing torch and loading the landmark models take; a session
    takes the spare and a new spare is started. Workers are never reused across sessions.
    """

    def __init__(self, max_live: int, weights: str, idle_limit: float = IDLE_LIMIT):
        self.max_live, self.weights, self.idle_limit = max_live, weights, idle_limit
        self.sessions: Dict[str, LiveSession] = {}
        self._context = multiprocessing.get_context("spawn")
        self._spare: Optional[_Worker] = None
        self._opening = 0  # sessions being negotiated: they hold a slot too
        self._lock = threading.Lock()  # guards _spare (start runs in a thread)
        # every worker is started from this one long-lived thread: the kernel's parent-death signal
        # (PR_SET_PDEATHSIG) fires when the *thread* that started a child exits, and pool threads
        # (Starlette's, asyncio's default) come and go
        self._spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lrnet-live-spawn")

    def full(self) -> bool:
        return len(self.sessions) + self._opening >= self.max_live

    def view(self) -> Dict[str, Any]:
        spare = self._spare
        return {"max_live": self.max_live, "spare": None if spare is None else "ready" if spare.loaded else "loading",
                "sessions": [s.view() for s in self.sessions.values()]}

    def start(self) -> None:
        """Start the spare worker (nothing when live mode is off); returns at once."""
        with contextlib.suppress(RuntimeError):  # the server is stopping: no new spare
            self._spawner.submit(self._start_spare)

    def _start_spare(self) -> None:
        with self._lock:
            if self.max_live > 0 and self._spare is None:
                self._spare = self._spawn()

    def _spawn(self) -> _Worker:
        frames_r, frames_w = self._context.Pipe(duplex=False)
        events_r, events_w = self._context.Pipe(duplex=False)
        # download=False: the weights were fetched at startup; the server never downloads on request
        process = self._context.Process(target=live_worker_main, name="lrnet-live-worker", daemon=True,
                                        args=(frames_r, events_w, os.getpid(), self.weights, False))
        process.start()
        frames_r.close()  # the child holds its own ends now
        events_w.close()
        return _Worker(process, frames_w, events_r)

    def _take(self) -> _Worker:
        """The spare worker if it is alive, else a fresh one."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.process.is_alive():
            return spare
        if spare is not None:
            spare.close()
        return self._spawn()

    async def open(self, request: LiveRequest) -> Tuple[LiveSession, Dict[str, str]]:
        """Start a session for `request`: worker process, peer connection, answer ``{sdp, type}``.

        `LiveFull` when `max_live` sessions run; `HTTPException` 400 when the offer cannot be
        negotiated (the slot is released again, the spare worker stays).
        """
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        if self.full():
            raise LiveFull()
        session_id = secrets.token_hex(16)
        # no STUN/TURN servers: nothing is contacted beyond the client (aiortc's default asks Google's STUN)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._opening += 1  # the slot is taken before the first await
        try:
            worker = await asyncio.wrap_future(self._spawner.submit(self._take))
        finally:
            self._opening -= 1
        session = LiveSession(session_id, request, pc, worker, asyncio.get_running_loop(), manager=self)
        self.sessions[session_id] = session
        self._wire(session)  # before the offer is applied: that is when the track arrives
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=request.sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            self.sessions.pop(session_id, None)
            session.state = "ended"  # nothing to end: the worker never saw this session
            for task in session.tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await pc.close()
            with self._lock:
                spare, self._spare = self._spare, self._spare or worker  # the unused worker is as good as a spare
            if spare is not None:
                await asyncio.to_thread(worker.close)
            raise HTTPException(400, f"cannot negotiate this offer ({type(exc).__name__}: {exc})") from None
        worker.frames.send({"weights": request.weights, "window": request.window,
                            "alert": list(request.alert) if request.alert else None})
        threading.Thread(target=session.sender, name=f"lrnet-live-send-{session_id[:6]}", daemon=True).start()
        worker.attach(session.from_worker)
        session.tasks.append(asyncio.create_task(self._watch(session), name="watch"))
        session.emit({"type": "status", "state": "starting", "session": session_id, "weights": request.weights,
                      "window": request.window, "alert": list(request.alert) if request.alert else None})
        self.start()  # the next spare
        local = pc.localDescription
        return session, {"sdp": local.sdp, "type": local.type}

    def _wire(self, session: LiveSession) -> None:
        from aiortc.contrib.media import MediaBlackhole

        pc = session.pc

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "video" and not any(t.get_name() == "track" for t in session.tasks):
                session.tasks.append(asyncio.create_task(self._read_track(session, track), name="track"))
            else:  # audio or a second video: read and thrown away, or aiortc's queue would grow
                hole = MediaBlackhole()
                hole.addTrack(track)
                session.holes.append(hole)
                session.tasks.append(asyncio.create_task(hole.start(), name="blackhole"))

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label != LIVE_CHANNEL or session.channel is not None:
                return
            session.channel = channel

            @channel.on("message")
            def on_message(message) -> None:
                try:
                    kind = json.loads(message).get("type") if isinstance(message, str) else None
                except (ValueError, AttributeError):
                    kind = None
                if kind == "stop":
                    session.stop_soon("stopped by the client")

            @channel.on("close")
            def on_close() -> None:
                session.stop_soon("the client closed the data channel")

            if channel.readyState == "open":
                session.channel_open()
            else:
                channel.on("open", session.channel_open)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                session.stop_soon(f"the connection {pc.connectionState}")

    async def _read_track(self, session: LiveSession, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                session.stop_soon("the video track ended")
                return
            session.on_frame(frame)

    async def _watch(self, session: LiveSession) -> None:
        """Ends a session whose client went quiet (no frame for `idle_limit` s) before ICE notices."""
        while session.state in ("starting", "live"):
            await asyncio.sleep(1.0)
            if time.monotonic() - session.last_frame > self.idle_limit:
                session.stop_soon(f"no video for {self.idle_limit:g} s")
                return

    async def end(self, session: LiveSession, reason: str) -> None:
        """Stop `session`: flush its worker (last blocks + summary), tell the client, close, free the slot."""
        if session.state in ("ending", "ended"):
            await session.ended.wait()
            return
        was_live = session.state == "live"
        session.state, session.end_reason = "ending", reason
        try:
            if not was_live:  # the worker has not started this session's pipeline: nothing to flush
                session.worker.process.kill()
            for task in session.tasks:
                if task.get_name() in ("track", "watch") and task is not asyncio.current_task():
                    task.cancel()
            while True:  # the end mark must get in: drop frames still waiting, they are late anyway
                try:
                    session.queue.put_nowait(None)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        session.queue.get_nowait()
            # the worker scores what it holds, sends its summary and closes its pipe: wait for that end
            await asyncio.to_thread(session.worker.reader.join, STOP_GRACE)
            process = session.worker.process
            await asyncio.to_thread(process.join, 2.0)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5.0)
            await asyncio.sleep(0)  # run the hand-overs the reader made before the pipe closed
            session.emit({"type": "status", "state": "ended", "reason": reason, "frames": session.received,
                          "dropped": session.dropped, "blocks": session.blocks})
            if session.channel is not None and session.channel.readyState == "open":
                await asyncio.sleep(0.2)  # let SCTP carry the last messages before the connection closes
            with contextlib.suppress(Exception):
                await session.pc.close()
            for hole in session.holes:
                with contextlib.suppress(Exception):
                    await hole.stop()
        finally:
            session.worker.close()
            session.state = "ended"
            self.sessions.pop(session.id, None)
            session.ended.set()

    async def close(self) -> None:
        """End every session and stop the spare worker (server shutdown)."""
        await asyncio.gather(*(self.end(s, "the server is stopping") for s in list(self.sessions.values())),
                             return_exceptions=True)
        with self._lock:
            spare, self._spare = self._spare, None
            self.max_live = 0  # no new spare from a session that was opening
        if spare is not None:
            await asyncio.to_thread(spare.close)
        self._spawner.shutdown(wait=False)


# ------------------------------------------------------------------------------ routes

router = APIRouter()


def _manager(request: Request) -> LiveManager:
    return request.app.state.live


LIVE_DESCRIPTION = (
    f"Answer a WebRTC offer holding one video track and a data channel labelled '{LIVE_CHANNEL}' (gather the "
    "ICE candidates first: no trickle). The server runs the streaming pipeline on the video and sends one JSON "
    "text message per event on the channel: "
    + "; ".join(f"{kind}: {what}" for kind, what in LIVE_EVENTS.items())
    + ". Send {\"type\": \"stop\"} on the channel to end the session (last blocks, summary, then status ended).")


@router.post("/live", status_code=201, openapi_extra=LIVE_BODY, responses=LIVE_ANSWERS,
             summary="Start a live check: send an SDP offer, get the answer; verdicts arrive on the data channel",
             description=LIVE_DESCRIPTION)
async def create_live(request: Request) -> JSONResponse:
    """Answer a WebRTC offer; 503 with Retry-After when --max-live sessions run."""
    manager, service = _manager(request), request.app.state.service
    try:
        import aiortc  # noqa: F401
    except ImportError:
        raise HTTPException(501, "live mode needs aiortc on the server (pip install 'lrnet[serve]')") from None
    if manager.max_live == 0:
        raise HTTPException(404, "live mode is off on this server (--max-live 0)")
    if manager.full():
        return _full(manager)
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "the body is not JSON; expected {sdp, type: 'offer', ...}") from None
    live = parse_live_request(body, service.config.weights, service.weight_names())
    try:
        session, answer = await manager.open(live)
    except LiveFull:
        return _full(manager)
    return JSONResponse({**answer, "id": session.id, "channel": LIVE_CHANNEL, "weights": live.weights,
                         "window": live.window, "alert": "/".join(map(str, live.alert)) if live.alert else None,
                         "urls": {"self": f"/api/v1/live/{session.id}"}},
                        status_code=201, headers={"Location": f"/api/v1/live/{session.id}"})


def _full(manager: LiveManager) -> JSONResponse:
    return JSONResponse({"detail": f"{manager.max_live} live session(s) are running, the most this server takes "
                                   "(--max-live); retry later"}, status_code=503, headers={"Retry-After": RETRY_AFTER})


def _session(request: Request, session_id: str) -> LiveSession:
    session = _manager(request).sessions.get(session_id)
    if session is None:
        raise HTTPException(404, f"no live session {session_id!r} (unknown or ended)")
    return session


@router.post("/live/warm", status_code=202, summary="Load a live worker now, so the next session starts at once")
def warm_live(request: Request) -> Dict[str, Any]:
    """The page calls this when its Live tab opens: loading torch and the landmark models takes seconds."""
    manager = _manager(request)
    if manager.max_live == 0:
        raise HTTPException(404, "live mode is off on this server (--max-live 0)")
    manager.start()
    return {"spare": manager.view()["spare"] or "loading"}


@router.get("/live", summary="Live sessions running now, the limit, and the spare worker's state")
def list_live(request: Request) -> Dict[str, Any]:
    return _manager(request).view()


@router.get("/live/{session_id}", summary="One live session: state and counts")
def get_live(request: Request, session_id: str) -> Dict[str, Any]:
    return _session(request, session_id).view()


@router.delete("/live/{session_id}", summary="End a live session (its worker stops, the slot is freed)")
async def delete_live(request: Request, session_id: str) -> Dict[str, Any]:
    session = _session(request, session_id)
    await _manager(request).end(session, "ended by DELETE /api/v1/live")
    return {"id": session_id, "status": "ended"}
