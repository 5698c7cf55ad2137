"""``lrnet serve``: a local web page and JSON API that turn an uploaded video into a verdict.

Modules: `uploads` (streamed multipart bodies, file type by content), `media` (video header probe,
browser-playable copy), `store` (job records, queue, expiry, restart), `runner` (what a worker
does with a job), `workers` (worker processes and the dispatcher), `service` (settings, startup)
and `app` (FastAPI routes and the uvicorn server). The page lives in ``static/``.

Needs the ``serve`` extra (fastapi, uvicorn, python-multipart).
"""

from .app import serve_forever
from .service import ServeConfig, Service, default_data_dir, is_loopback, running_service

__all__ = ["ServeConfig", "Service", "default_data_dir", "is_loopback", "running_service", "serve_forever"]
