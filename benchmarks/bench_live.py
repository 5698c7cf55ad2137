"""Live detection figures: verdict latency, sustained frame rate, concurrent streams, memory over time.

Every figure runs the real streaming pipeline (`lrnet.stream.StreamPipeline`: landmarks,
calibration, blocks, the detector) on the reference videos (``../shared/reference/lrnet-official``)
with the official dfo weights, and prints what it measured:

- ``latency``: a 720p 30 fps clip (ff_real.mp4) played at its own pace; per block, the seconds from
  the moment its last frame was due (the clip's clock) to its verdict, p50 / p95. This counts any
  queueing when the pipeline falls behind real time, not just the compute of the last frames.
- ``throughput``: the same clip decoded and scored as fast as possible: decoded frames/s (a 30 fps
  stream needs 30; the target of twice that is 60) and CPU ms per decoded frame.
- ``concurrent``: K pipelines in K processes, each playing the clip at its own pace; a stream keeps
  up when it finishes within 5 % of the clip's duration and its block latency stays bounded.
- ``memory``: one pipeline fed the clip looped for ``--minutes`` of stream time as fast as possible;
  the process's resident memory (RSS) sampled every 30 s of stream time.

Usage: ``python benchmarks/bench_live.py [latency|throughput|concurrent|memory|all] [--seconds S]
[--streams K] [--minutes M]``. On a loaded machine the wall-clock figures fall; the CPU ms per
frame and the memory trend are the steadier ones.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "lrnet-official"
CLIP = REFERENCE / "videos" / "ff_real.mp4"  # 1280 x 720, 30 fps


def _detector():
    from lrnet.detector import load_detector

    return load_detector(str(REFERENCE / "weights" / "dfo"), download=False)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def play(seconds: float, realtime: bool = True) -> dict:
    """Play `seconds` of the clip through one pipeline; block latencies against the clip's clock."""
    import numpy as np

    from lrnet.video import open_source
    from lrnet.stream import StreamPipeline

    detector = _detector()
    latencies = []
    with open_source(str(CLIP), realtime=False) as source:
        frames_wanted = int(seconds * source.fps)
        pipe = StreamPipeline(detector, source_fps=source.fps)
        start = time.monotonic()
        cpu0 = time.process_time()
        decoded = 0
        for frame in source.frames():
            if decoded >= frames_wanted:
                break
            due = start + frame.time
            if realtime and due > time.monotonic():
                time.sleep(due - time.monotonic())
            decoded += 1
            for event in pipe.push(frame):
                if event.type == "block" and realtime:  # against the clock only when playing at its pace
                    # its last frame was due one frame interval before the block's end
                    last_due = start + event.data["end_s"] - 1.0 / (pipe.plan.target or source.fps)
                    latencies.append(time.monotonic() - last_due)
        pipe.close()
        wall = time.monotonic() - start
        cpu = time.process_time() - cpu0
    lat = np.asarray(latencies)
    return {"seconds_of_stream": decoded / source.fps, "wall_s": round(wall, 2), "decoded": decoded,
            "fps": round(decoded / wall, 1), "cpu_ms_per_frame": round(1000 * cpu / decoded, 1),
            "blocks": len(lat), "latency_p50_s": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
            "latency_p95_s": round(float(np.percentile(lat, 95)), 3) if len(lat) else None,
            "latency_max_s": round(float(lat.max()), 3) if len(lat) else None}


def _play_child(seconds: float, queue) -> None:
    queue.put(play(seconds, realtime=True))


def concurrent(streams: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_play_child, args=(seconds, queue)) for _ in range(streams)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    keep_up = all(r["wall_s"] <= 1.05 * r["seconds_of_stream"] + 1.0 for r in results)
    return {"streams": streams, "keep_up": keep_up, "results": results}


def memory(minutes: float) -> dict:
    from lrnet.video import Frame, VideoReader
    from lrnet.stream import StreamPipeline

    detector = _detector()
    with VideoReader(CLIP) as reader:
        fps = reader.info.fps
        clip = [f.image for f in reader]
    pipe = StreamPipeline(detector, source_fps=fps)
    total = int(minutes * 60 * fps)
    samples = []
    started = time.monotonic()
    for i in range(total):
        pipe.push(Frame(i, i / fps, clip[i % len(clip)]))  # looped: the face jumps at each loop point
        if i % int(30 * fps) == 0:
            samples.append((round(i / fps), round(_rss_mb(), 1)))
    pipe.close()
    samples.append((round(total / fps), round(_rss_mb(), 1)))
    return {"stream_minutes": minutes, "wall_s": round(time.monotonic() - started, 1), "rss_mb_by_stream_second": samples,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "blocks": sum(lane.blocks for lane in pipe.all_lanes()), "faces": len(pipe.all_lanes()),
            "segments": pipe.main_lane().segments}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=("latency", "throughput", "concurrent", "memory", "all"))
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of stream per run (default 20)")
    parser.add_argument("--streams", type=int, default=3, help="most concurrent streams to try (default 3)")
    parser.add_argument("--minutes", type=float, default=10.0, help="stream minutes for the memory run (default 10)")
    args = parser.parse_args()
    if not CLIP.is_file():
        print(f"reference videos not found at {CLIP.parent} (see the README: the official LRNet repository)")
        return 2
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    if args.what in ("latency", "all"):
        print("latency (real time):", json.dumps(play(args.seconds, realtime=True)), flush=True)
    if args.what in ("throughput", "all"):
        print("throughput (as fast as possible):", json.dumps(play(args.seconds, realtime=False)), flush=True)
    if args.what in ("concurrent", "all"):
        for k in range(1, args.streams + 1):
            print(f"concurrent {k}:", json.dumps(concurrent(k, args.seconds)), flush=True)
    if args.what in ("memory", "all"):
        print("memory:", json.dumps(memory(args.minutes)), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
