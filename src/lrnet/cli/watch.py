"""``lrnet watch SOURCE``: a verdict for every 30-frame block of a live source, as it arrives.

SOURCE is a video file (as fast as it decodes, or at its own pace with ``--realtime``), a network
stream (rtsp://, http(s)://, udp://, tcp://, srt://), a V4L2 camera (/dev/video0) or ``-`` (a
stream on stdin). One line per block (time span, p(fake), the rolling verdict over the last
``--window`` blocks), or JSON lines with ``--json``; cuts, lost faces, gaps and alerts as they
happen; a summary at the end or on Ctrl-C.

Exit status: 0 the source ended and the alert rule never held; 1 no block could be judged (no
face, too short); 3 the alert rule held at some point (``--alert K/N``: K of the last N blocks
fake); 2 a usage error or a source that cannot be opened; 130 interrupted (after the summary).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, Optional, Tuple

from .common import add_face_flags, add_gpu_flag, add_operating_flags, add_weights_flag, nonneg_int, positive_float, positive_int

EXIT_ALERT = 3


def alert_rule(text: str) -> Optional[Tuple[int, int]]:
    """``K/N`` (1 <= K <= N <= 1000), or ``off``."""
    if text.strip().lower() == "off":
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (e.g. 3/5) or off") from None
    if not 1 <= k <= n <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= K <= N <= 1000")
    return k, n


def register(sub) -> None:
    w = sub.add_parser("watch", help="live: a verdict for every block of a stream, camera or file as it plays",
                       description="Score a live source block by block: one line per 30-frame block with its "
                                   "p(fake) and the rolling verdict; cuts, lost faces and stalls as they happen; "
                                   "a summary at the end or on Ctrl-C. Exit status 3 when the alert rule held.")
    w.add_argument("source", metavar="SOURCE",
                   help="a video file, a stream URL (rtsp://, http://, udp://, tcp://, srt://), a camera "
                        "(/dev/video0) or - (a stream on standard input)")
    add_weights_flag(w, "dfo")
    live = w.add_argument_group("live reading")
    live.add_argument("--window", type=positive_int, default=10, metavar="N",
                      help="blocks in the rolling verdict (default: 10)")
    live.add_argument("--alert", type=alert_rule, default=(3, 5), metavar="K/N",
                      help="alert while K of the last N blocks look fake (default: 3/5; off: no alert)")
    live.add_argument("--json", action="store_true", help="print every event as a JSON line")
    source = w.add_argument_group("source")
    source.add_argument("--realtime", action="store_true",
                        help="play a file at its own pace (a stream or camera always plays live)")
    source.add_argument("--reconnect", type=nonneg_int, default=3, metavar="N",
                        help="reopen a dropped or stalled network stream up to N times, with backoff (default: 3)")
    source.add_argument("--open-timeout", type=positive_float, default=10.0, metavar="S",
                        help="give up opening a stream after S seconds (default: 10)")
    source.add_argument("--stall", type=positive_float, default=5.0, metavar="S",
                        help="a stream with no frame for S seconds has stalled (default: 5)")
    source.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="stop after N frames")
    model = w.add_argument_group("scoring")
    model.add_argument("--aggregate", choices=("vote", "mean-prob", "mean-logit"), default="vote",
                       help="how block scores become the rolling and final score (default: vote)")
    model.add_argument("--fps-policy", choices=("resample", "keep"), default="resample",
                       help="resample a source faster than the weights' frame rate (default) or keep every frame")
    add_face_flags(model)
    model.add_argument("--offline", action="store_true", help="never download pretrained weights")
    add_operating_flags(model)
    add_gpu_flag(model)
    w.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..detector import load_detector
    from ..device import select_device
    from ..video import Gap, open_source
    from ..stream import LiveOptions, StreamPipeline

    source = open_source(args.source, realtime=args.realtime, open_timeout=args.open_timeout,
                         read_timeout=args.stall, reconnect=args.reconnect, max_frames=args.max_frames)
    with source:
        detector = load_detector(args.weights, aggregation=args.aggregate, threshold=args.threshold,
                                 uncertain=args.uncertain, device=select_device(args.gpu), download=not args.offline)
        pipe = StreamPipeline(detector, live=LiveOptions(args.window, args.alert), source_fps=source.fps,
                              fps_policy=args.fps_policy, name=args.source, faces=args.faces, min_face=args.min_face)
        show = _printer(args.json)
        if not args.json:
            print(f"watching {args.source} ({source.kind}{', real time' if args.realtime else ''})   weights: "
                  f"{detector.source}   threshold: {detector.threshold:.4f} ({detector.threshold_source})", flush=True)
        try:
            for item in source.frames():
                events = pipe.gap(item.reason) if isinstance(item, Gap) else pipe.push(item)
                for event in events:
                    show(event.to_dict())
        except KeyboardInterrupt:
            show({"type": "summary", **pipe.summary(), "interrupted": True})  # what was scored so far
            raise
        for event in pipe.close():
            show(event.to_dict())
    if pipe.alerts:
        return EXIT_ALERT
    return 0 if any(lane.blocks for lane in pipe.all_lanes()) else 1  # 1: nothing could be judged


def _printer(as_json: bool):
    def show(event: Dict[str, Any]) -> None:
        line = json.dumps(event) if as_json else _line(event)
        if line:
            print(line, flush=True)
    return show


def _line(e: Dict[str, Any]) -> str:
    kind = e["type"]
    if kind == "block":
        r = e["rolling"]
        verdict = r["verdict"] if r["verdict"] != "uncertain" else f"uncertain ({r['call']})"
        alert = "  ALERT" if e["alert"] else ""
        raised = f"  <- {e['alert_raised']}" if e.get("alert_raised") else ""
        return (f"{_clock(e['start_s'])}-{_clock(e['end_s'])}  block {e['index']:>4}  p(fake) {e['p_fake']:.3f}   "
                f"last {r['blocks']:>2}: {verdict:<16} {r['score']:.2f} [{r['interval'][0]:.2f}, "
                f"{r['interval'][1]:.2f}]{alert}{raised}")
    if kind == "summary":
        verdict = e["verdict"] if e["verdict"] != "uncertain" else f"uncertain ({e['call']})"
        score = "-" if e["score"] is None else f"{e['score']:.4f}"
        interval = "" if e.get("interval") is None else f" [{e['interval'][0]:.3f}, {e['interval'][1]:.3f}]"
        latency = e.get("latency_s") or {}
        lat = f", verdict latency p50 {latency['p50'] * 1000:.0f} ms p95 {latency['p95'] * 1000:.0f} ms" if latency else ""
        return (f"summary: {verdict} (score {score}{interval}, {e['aggregation']}) over {e['blocks']} blocks, "
                f"{e['duration_s']:.1f} s, {e['segments']} segments, {len(e['cuts'])} cuts, {e['alerts']} alerts, "
                f"{e['dropped_frames']} frames dropped{lat}")
    details = {k: v for k, v in e.items() if k not in ("type", "time_s")}
    extra = "  " + "  ".join(f"{k}={v}" for k, v in details.items()) if details else ""
    return f"{_clock(e.get('time_s', 0.0))}  {kind.replace('_', ' ')}{extra}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, float(seconds)), 60.0)
    return f"{int(minutes):02d}:{rest:04.1f}"

