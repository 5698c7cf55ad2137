"""The HTTP side of `lrnet serve`: the page, the versioned JSON API (``/api/v1``) and health checks.

Request handlers only move bytes and records: an upload is streamed to its job folder, recognised
by content and queued; the work itself runs in the worker processes (`lrnet.serve.workers`), so
the event loop stays free for the page, progress events and ``/healthz`` while videos are processed.

With a token every ``/api/v1`` call needs ``Authorization: Bearer TOKEN``; ``EventSource`` and
``<video>`` cannot send headers, so the ``events`` and ``video`` URLs also take ``?token=TOKEN``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .. import __version__
from ..errors import LrnetError
from ..video import probe_video
from ..vocab import AGGREGATIONS, DEFAULT_AGGREGATION
from .live import LiveManager
from .live import router as live_router
from .media import browser_playable
from .service import Service, is_loopback
from .store import FINAL, Job, valid_id
from .uploads import (
    KIND_SUFFIX,
    BadUpload,
    UploadTooLarge,
    display_name,
    receive_upload,
    sniff_file,
)

__all__ = ["create_app", "job_view", "serve_forever"]

STATIC = Path(__file__).parent / "static"
RETRY_AFTER = "10"  # seconds a client refused for a full queue is asked to wait
DRAIN_LIMIT = 64 << 20  # bytes of a refused body read (and dropped) so the client sees the answer
MULTIPART_SLACK = 64 << 10  # multipart headers and form fields around the file
EVENT_POLL = 0.1  # seconds between progress checks of an event stream
HEARTBEAT = 15.0  # seconds between keep-alive comments of an event stream
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                                           "object-src 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "a video (mp4, mov, avi, mkv, webm) or a landmark .txt file; the type is "
                                "recognised by content"},
        "weights": {"type": "string", "description": "a name from GET /api/v1/weights (default: the server's)"},
        "aggregation": {"type": "string", "enum": list(AGGREGATIONS)}}}}}}}


def _service(request: Request) -> Service:
    return request.app.state.service


def require_token(request: Request) -> None:
    """401 unless the request carries the server's token (constant-time comparison)."""
    expected = _service(request).config.token
    if not expected:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    if not given and request.method in ("GET", "HEAD") and request.url.path.endswith(("/events", "/video")):
        given = request.query_params.get("token", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong token (send Authorization: Bearer TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})


def _iso(t: Optional[float]) -> Optional[str]:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def job_view(job: Job, with_result: bool = True) -> Dict[str, Any]:
    """The JSON form of a job: status, progress, result (when done), error (when failed), URLs."""
    base = f"/api/v1/jobs/{job.id}"
    urls = {"self": base, "events": f"{base}/events"}
    if job.status == "done":
        urls.update(landmarks=f"{base}/landmarks", landmarks_txt=f"{base}/landmarks.txt")
    if job.kind != "landmarks" and job.status not in ("failed", "cancelled"):
        urls["video"] = f"{base}/video"
    out: Dict[str, Any] = {
        "id": job.id, "status": job.status, "kind": job.kind, "filename": job.filename, "size": job.size,
        "weights": job.weights, "aggregation": job.aggregation, "created": _iso(job.created),
        "started": _iso(job.started), "finished": _iso(job.finished),
        "progress": {"stage": job.stage, "fraction": round(job.fraction, 4)}, "error": job.error, "urls": urls}
    if with_result:
        out["result"] = job.result
    elif job.result:
        out["verdict"], out["score"] = job.result.get("verdict"), job.result.get("score")
    return out


class _Body:
    """A request body read message by message from the ASGI receive channel."""

    def __init__(self, request: Request):
        self.receive = request.receive
        self.done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.done = True
                raise ClientDisconnect()
            self.done = not message.get("more_body", False)
            if message.get("body"):
                yield message["body"]

    async def refuse(self, status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
        """Answer `status`, after reading (and dropping) up to DRAIN_LIMIT more bytes of the body."""
        budget = DRAIN_LIMIT
        with contextlib.suppress(ClientDisconnect):
            async for chunk in self.chunks():
                budget -= len(chunk)
                if budget < 0:
                    break
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _admit(service: Service, job_id: str, folder: Path, upload) -> Job:
    """Check a received upload and build its job (runs in a thread: it reads the file's header)."""
    cfg = service.config
    name = display_name(upload.filename)
    if upload.size == 0:
        raise HTTPException(400, f"{name}: the uploaded file is empty")
    weights = upload.fields.get("weights") or cfg.weights
    if weights not in service.weight_names():
        raise HTTPException(422, f"unknown weights {weights!r}; this server offers {sorted(service.weight_names())}")
    aggregation = upload.fields.get("aggregation") or DEFAULT_AGGREGATION
    if aggregation not in AGGREGATIONS:
        raise HTTPException(422, f"unknown aggregation {aggregation!r}; expected one of {list(AGGREGATIONS)}")
    kind = sniff_file(upload.path)
    if kind is None:
        raise HTTPException(415, f"{name}: not a video (mp4, mov, avi, mkv, webm) nor a landmark file "
                                 "(text, 136 numbers per line); the type is judged by content, not by name")
    path = upload.path.rename(folder / f"upload{KIND_SUFFIX[kind]}")
    playable = False
    if kind != "landmarks":
        try:
            probe = probe_video(path)
        except LrnetError:
            probe = None  # unreadable: the worker fails the job with `lrnet detect`'s message
        if probe is not None and probe.duration and probe.duration > cfg.max_seconds:
            raise HTTPException(422, f"{name}: {probe.duration:.1f} s of video; this server takes at most "
                                     f"{cfg.max_seconds:g} s (--max-seconds)")
        playable = probe is not None and browser_playable(kind, probe)
    return Job(job_id, kind, name, path.name, weights, aggregation, playable=playable, size=upload.size)


api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)])


UPLOAD_ANSWERS: Dict[int | str, Dict[str, Any]] = {
    400: {"description": "empty file, or not a multipart body with one 'file' part"},
    401: {"description": "missing or wrong token (servers started with --token)"},
    413: {"description": "larger than --max-upload-mb"},
    415: {"description": "neither a video (mp4, mov, avi, mkv, webm) nor a landmark file, judged by content"},
    422: {"description": "unknown weights or aggregation, or a video longer than --max-seconds"},
    503: {"description": "the queue is full; retry after the Retry-After header's seconds"}}


@api.post("/jobs", status_code=202, openapi_extra=UPLOAD_BODY, responses=UPLOAD_ANSWERS,
          summary="Upload a video or landmark file")
async def create_job(request: Request) -> JSONResponse:
    """Queue one upload; answers 202 with the job and its URLs (413 too large, 415 unknown type, 503 queue full)."""
    service, body = _service(request), _Body(request)
    cfg, store = service.config, service.store
    if store.full():
        return await body.refuse(503, "the queue is full; retry later", {"Retry-After": RETRY_AFTER})
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cfg.max_upload_bytes + MULTIPART_SLACK:
        return await body.refuse(413, f"the upload is larger than this server's limit of {cfg.max_upload_mb:g} MB")
    job_id = store.new_id()
    folder = store.folder(job_id)
    folder.mkdir(parents=True)
    try:
        upload = await receive_upload(request.headers.get("content-type", ""), body.chunks(),
                                      folder / "upload.part", cfg.max_upload_bytes)
        job = await run_in_threadpool(_admit, service, job_id, folder, upload)
    except UploadTooLarge:
        shutil.rmtree(folder, ignore_errors=True)
        return await body.refuse(413, f"the upload is larger than this server's limit of {cfg.max_upload_mb:g} MB")
    except BadUpload as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return await body.refuse(400, str(exc))
    except ClientDisconnect:
        shutil.rmtree(folder, ignore_errors=True)
        return JSONResponse({"detail": "the client went away during the upload"}, status_code=400)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not store.add(job):
        shutil.rmtree(folder, ignore_errors=True)
        return await body.refuse(503, "the queue is full; retry later", {"Retry-After": RETRY_AFTER})
    service.pool.wake()
    return JSONResponse(job_view(job), status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


def _job(request: Request, job_id: str) -> Job:
    job = _service(request).store.get(job_id) if valid_id(job_id) else None
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} (unknown, deleted or expired)")
    return job


@api.get("/jobs", summary="Recent jobs of this server")
def list_jobs(request: Request, limit: int = 50) -> Dict[str, Any]:
    return {"jobs": [job_view(j, with_result=False) for j in _service(request).store.recent(max(1, min(limit, 500)))]}


@api.get("/jobs/{job_id}", summary="Status, progress and result of a job")
def get_job(request: Request, job_id: str) -> Dict[str, Any]:
    return job_view(_job(request, job_id))


@api.get("/jobs/{job_id}/events", summary="Progress as server-sent events (ends when the job does)")
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    _job(request, job_id)
    store = _service(request).store

    async def stream() -> AsyncIterator[str]:
        version, quiet = -1, 0.0
        while True:
            job = store.get(job_id)
            if job is None:
                yield "event: gone\ndata: {}\n\n"
                return
            if job.version != version:
                version, quiet = job.version, 0.0
                yield f"data: {json.dumps(job_view(job))}\n\n"
                if job.status in FINAL:
                    return
            elif quiet >= HEARTBEAT:
                quiet = 0.0
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL)
            quiet += EVENT_POLL

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _done_file(request: Request, job_id: str, name: str) -> Path:
    job = _job(request, job_id)
    if job.status != "done":
        raise HTTPException(409 if job.status not in FINAL else 404, f"job {job_id} is {job.status}")
    return _service(request).store.folder(job_id) / name


@api.get("/jobs/{job_id}/landmarks", summary="Raw and calibrated landmarks per frame (JSON)")
def job_landmarks(request: Request, job_id: str) -> FileResponse:
    return FileResponse(_done_file(request, job_id, "landmarks.json"), media_type="application/json")


@api.get("/jobs/{job_id}/landmarks.txt", summary="The calibrated landmark file (published format)")
def job_landmark_file(request: Request, job_id: str) -> FileResponse:
    stem = Path(_job(request, job_id).filename).stem or "landmarks"
    return FileResponse(_done_file(request, job_id, "landmarks.txt"), media_type="text/plain",
                        filename=f"{stem}.txt")


@api.get("/jobs/{job_id}/video", summary="The video in a form browsers play")
def job_video(request: Request, job_id: str) -> FileResponse:
    job = _job(request, job_id)
    folder = _service(request).store.folder(job_id)
    if job.kind == "landmarks" or job.status in ("failed", "cancelled"):
        raise HTTPException(404, f"job {job_id} has no video")
    if job.playable:
        return FileResponse(folder / job.upload, media_type=MEDIA_TYPES["webm" if job.kind == "webm" else "mp4"])
    if job.status != "done":
        raise HTTPException(409, f"job {job_id} is {job.status}; its playable copy is made at the end")
    return FileResponse(folder / "video.mp4", media_type="video/mp4")


api.add_api_route("/jobs/{job_id}/video", job_video, methods=["HEAD"], include_in_schema=False)


@api.delete("/jobs/{job_id}", summary="Cancel a queued or running job, or delete a finished one")
def delete_job(request: Request, job_id: str) -> Dict[str, Any]:
    service = _service(request)
    job = _job(request, job_id)
    if job.status not in FINAL and service.store.finish(job_id, "cancelled", error="cancelled") is not None:
        service.pool.wake()  # the dispatcher kills the worker running it
        return {"id": job_id, "status": "cancelled"}
    service.store.remove(job_id)
    return {"id": job_id, "status": "deleted"}


@api.get("/weights", summary="Weights and aggregations this server offers, and its limits")
def list_weights(request: Request) -> Dict[str, Any]:
    service = _service(request)
    cfg = service.config
    return {"default": cfg.weights, "weights": service.info.get("weights", []),
            "aggregations": list(AGGREGATIONS),
            "limits": {"max_upload_mb": cfg.max_upload_mb, "max_seconds": cfg.max_seconds,
                       "keep_hours": cfg.keep_hours, "queue": cfg.queue, "jobs": cfg.jobs, "max_live": cfg.max_live}}


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html", headers=PAGE_HEADERS)


def _docs_page(request: Request) -> HTMLResponse:
    """The API page, its curl examples addressed to this server as the client reached it (host:port)."""
    origin = html.escape(str(request.base_url).rstrip("/"), quote=True)
    text = (STATIC / "docs.html").read_text(encoding="utf-8").replace("{{ORIGIN}}", origin)
    return HTMLResponse(text, headers=PAGE_HEADERS)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application of a started `Service`; the pool is closed when the app shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await app.state.live.close()
        await run_in_threadpool(service.close)

    app = FastAPI(title="lrnet", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Deepfake video detection from facial landmarks (LRNet). Upload a video or a "
                              "landmark file, follow its progress, read the verdict.")
    app.state.service = service
    app.state.live = LiveManager(service.config.max_live, service.config.weights)
    app.include_router(api)
    app.include_router(live_router, prefix="/api/v1", dependencies=[Depends(require_token)])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/", lambda: _page("index.html"), include_in_schema=False)
    app.add_api_route("/docs", _docs_page, include_in_schema=False)
    app.add_api_route("/healthz", lambda: {"status": "ok"}, summary="Alive")
    app.add_api_route("/readyz", lambda: _readiness(service), summary="Workers loaded and queue not full")
    return app


def _readiness(service: Service) -> JSONResponse:
    counts = service.store.counts()
    workers = service.pool.ready_workers()
    ready = workers > 0 and counts["queued"] < service.config.queue
    body = {"ready": ready, "workers_ready": workers, "workers": service.config.jobs,
            "queued": counts["queued"], "running": counts["running"], "queue": service.config.queue}
    return JSONResponse(body, status_code=200 if ready else 503)


def serve_forever(service: Service, host: str, port: int,
                  on_listen: Optional[Callable[[str], None]] = None) -> None:
    """Serve the app on `host`:`port` until SIGINT/SIGTERM; `on_listen(url)` once the socket is bound."""
    import uvicorn

    if not is_loopback(host) and not service.config.token:
        raise LrnetError(f"refusing to listen on {host} without --token: anyone on the network could use "
                         "this server (bind to 127.0.0.1, or set --token)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LrnetError(f"{host}:{port}: cannot listen here ({exc.strerror or exc})") from None
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    if on_listen is not None:
        on_listen(f"http://{shown}:{bound_port}/")
    server.run(sockets=[sock])
