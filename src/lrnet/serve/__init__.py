"""``lrnet serve``: a local web page and JSON API that turn an uploaded video into a verdict.

Modules: `uploads` (streamed multipart bodies, file type by content), `media` (which uploads
browsers play as they are; the probe and the H.264 copy are `lrnet.video`'s), `store` (job records,
queue, expiry, restart), `runner` (what a worker does with a job), `workers` (worker processes and
the dispatcher), `service` (settings, startup) and `app` (FastAPI routes and the uvicorn server).
The page lives in ``static/``.

Needs the ``serve`` extra (fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServeConfig", "Service", "default_data_dir", "is_loopback", "running_service", "serve_forever"]

# Loaded on first use, so `lrnet.serve.service.ServeConfig` (the CLI's flag defaults) is importable
# without the serve extra; only `serve_forever` (the app) needs fastapi.
_HOMES = {"serve_forever": ".app", "ServeConfig": ".service", "Service": ".service",
          "default_data_dir": ".service", "is_loopback": ".service", "running_service": ".service"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
