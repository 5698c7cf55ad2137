"""``lrnet serve``: a local web page and HTTP API (``/api/v1``) for verdicts on uploaded videos."""

from __future__ import annotations

import argparse
import os

from .common import add_weights_flag, int_range, nonneg_int, port_number, positive_float, positive_int
from .jobflags import scheduler_address


def register(sub) -> None:
    from ..serve.service import ServeConfig  # its defaults are the flags' defaults (no fastapi needed)

    d = ServeConfig
    p = sub.add_parser("serve", help="start a local web page and HTTP API that score uploaded videos",
                       description="Serve a page and a JSON API (/api/v1, documented at /docs) that take a video "
                                   "or a landmark file and return the verdict of `lrnet detect` / `lrnet predict`. "
                                   "Listens on 127.0.0.1 unless told otherwise; any other address needs --token.")
    net = p.add_argument_group("where it listens")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    net.add_argument("--port", type=port_number, default=8000, help="TCP port; 0 picks a free one (default: 8000)")
    net.add_argument("--token", default=os.environ.get("LRNET_SERVE_TOKEN"), metavar="TOKEN",
                     help="require 'Authorization: Bearer TOKEN' on the API (default: $LRNET_SERVE_TOKEN; "
                          "needed to listen on a non-loopback address)")
    model = p.add_argument_group("weights")
    add_weights_flag(model, d.weights)
    model.add_argument("--offline", action="store_true", help="never download pretrained weights")
    limits = p.add_argument_group("work and limits")
    limits.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                        help="worker processes, i.e. jobs run at the same time (default: half the CPU cores)")
    limits.add_argument("--scheduler", type=scheduler_address, metavar="local:N|tcp://HOST:8786",
                        help="run the jobs on Dask instead of local worker processes: local:N starts N workers "
                             "here; an address uses your cluster, whose workers must see --data-dir at the same "
                             "path (needs lrnet[cluster])")
    limits.add_argument("--retries", type=int_range(0, 100), default=2, metavar="N",
                        help="with --scheduler: re-runs of a job whose worker died (default: 2)")
    limits.add_argument("--queue", type=positive_int, default=d.queue, metavar="N",
                        help="jobs that may wait for a worker; more are refused with 503 (default: %(default)s)")
    limits.add_argument("--max-live", type=nonneg_int, default=d.max_live, metavar="N",
                        help="live sessions (Live tab, POST /api/v1/live) at once, a worker process each; "
                             "more get 503; 0: live mode off (default: %(default)s)")
    limits.add_argument("--max-upload-mb", type=positive_float, default=d.max_upload_mb, metavar="MB",
                        help="largest upload accepted (default: %(default)g)")
    limits.add_argument("--max-seconds", type=positive_float, default=d.max_seconds, metavar="S",
                        help="longest video accepted, in seconds of footage (default: %(default)g)")
    limits.add_argument("--job-timeout", type=positive_float, default=d.job_timeout, metavar="S",
                        help="a job still running after this many seconds is stopped and failed (default: %(default)g)")
    store = p.add_argument_group("storage")
    store.add_argument("--data-dir", default=None, metavar="DIR",
                       help="uploads and results (default: $XDG_DATA_HOME/lrnet/serve, ~/.local/share/lrnet/serve)")
    store.add_argument("--keep-hours", type=positive_float, default=24.0, metavar="H",
                       help="finished jobs are deleted after this many hours (default: 24)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import LrnetError
    from ..serve import (
        ServeConfig,
        default_data_dir,
        is_loopback,
        running_service,
        serve_forever,
    )

    if not is_loopback(args.host) and not args.token:
        raise LrnetError(f"refusing to listen on {args.host} without --token: anyone who can reach it could use "
                         "this server (listen on 127.0.0.1, or set --token / $LRNET_SERVE_TOKEN)")
    if args.scheduler and args.jobs is not None:
        raise LrnetError("--jobs sizes the local worker processes; with --scheduler use local:N or size your Dask "
                         "cluster")
    jobs = args.jobs or max(1, (os.cpu_count() or 2) // 2)
    config = ServeConfig(data_dir=Path(args.data_dir).expanduser() if args.data_dir else default_data_dir(),
                         weights=args.weights, jobs=jobs, queue=args.queue, max_upload_mb=args.max_upload_mb,
                         max_seconds=args.max_seconds, keep_hours=args.keep_hours, job_timeout=args.job_timeout,
                         token=args.token or None, download=not args.offline, scheduler=args.scheduler,
                         retries=args.retries, max_live=args.max_live)
    with running_service(config) as service:
        weights = service.info["weights"][0]
        workers = f"Dask {config.scheduler}" if config.scheduler else f"{config.jobs} worker(s)"

        def announce(url: str) -> None:
            print(f"lrnet serve: listening on {url} (API {url}api/v1, docs {url}docs; weights {weights['source']}, "
                  f"{workers}, {config.max_live} live session(s) at most, data {config.data_dir}{', token required' if config.token else ''})",
                  flush=True)

        serve_forever(service, args.host, args.port, announce)
    return 0
