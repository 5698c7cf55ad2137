"""Extraction at scale (issue 12): frames/s of `lrnet extract` locally and through Dask, and the
per-video overhead of each way of running a job.

Usage::

    python benchmarks/bench_extract_scale.py [--videos DIR] [--copies 2] [--max-frames 150] [--json]

Runs the same folder job (`lrnet.batch.extract_folder`) over the same videos (each face video of
``--videos``, default the reference videos in ../shared, linked ``--copies`` times) in four ways,
each into a fresh output folder:

* local, 1 worker (this process);
* local pool, 2 worker processes (`lrnet.parallel.worker_pool`);
* Dask LocalCluster, 2 single-threaded worker processes (``scheduler="local:2"``; start-up included);
* the same cluster already running (address passed as ``tcp://...``; start-up excluded).

Throughput is decoded frames / wall seconds of the whole job (pool or cluster start-up included
unless said). Per-video overhead is measured with a no-op task over ``--noop`` jobs: wall seconds
per job of the pool and of the cluster, minus nothing (the task does no work).

CPU seconds (this process and every child, reaped or running) give frames per CPU-second, which
a busy machine disturbs much less than wall time: on a shared machine, read those.

Also: `lrnet compress` frames/s (libx264 crf 23, one single-threaded encoder per worker, 2 workers)
over the first two videos.
Prints a table (or JSON) and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds  # noqa: E402

from lrnet.batch import Job, Outcome, extract_folder, run_jobs  # noqa: E402
from lrnet.compress import compress_folder  # noqa: E402
from lrnet.extract import ExtractOptions  # noqa: E402

DEFAULT_VIDEOS = REPO.parent / "shared" / "reference" / "lrnet-official" / "videos"


def _noop(job: Job, options: object) -> Outcome:
    return Outcome({"video": str(job.video), "error": ""}, 1)


def _tree(videos: Path, copies: int, root: Path) -> Path:
    src = root / "videos"
    src.mkdir(parents=True)
    for video in sorted(videos.glob("*.mp4")):
        for i in range(copies):
            (src / f"{video.stem}-{i}.mp4").symlink_to(video.resolve())
    return src




def _extract(src: Path, out: Path, options: ExtractOptions, **how) -> dict:
    cpu, t = cpu_seconds(), time.perf_counter()
    summary = extract_folder(src, out, options=options, progress=False, **how)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
    assert summary.failed == 0, f"{summary.failed} videos failed; see {summary.log}"
    return {"videos": summary.done, "frames": summary.frames, "seconds": wall, "fps": summary.frames / wall,
            "cpu_seconds": cpu, "frames_per_cpu_second": summary.frames / cpu}


def _noop_overhead(root: Path, n: int, **how) -> float:
    jobs = [Job(root / f"v{i}.mp4", root / "noop" / f"{i}.txt") for i in range(n)]
    t = time.perf_counter()
    run_jobs(jobs, _noop, None, command="noop", output_dir=root / "noop", log_fields=["video", "error"], **how)
    return (time.perf_counter() - t) / n


def measure(videos: Path, copies: int, max_frames: int, noop: int) -> dict:
    from distributed import LocalCluster

    options = ExtractOptions(max_frames=max_frames)
    results: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="lrnet-bench-") as tmp:
        root = Path(tmp)
        src = _tree(videos, copies, root)
        results["local-1"] = _extract(src, root / "o1", options)
        results["pool-2"] = _extract(src, root / "o2", options, workers=2)
        results["dask-local:2"] = _extract(src, root / "o3", options, scheduler="local:2")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=40)
        try:
            results["dask-running-2"] = _extract(src, root / "o4", options, scheduler=cluster.scheduler_address)
            results["overhead_s_per_video"] = {
                "inline": _noop_overhead(root / "n0", noop),
                "pool-2": _noop_overhead(root / "n1", noop, workers=2),
                "dask-running-2": _noop_overhead(root / "n2", noop, scheduler=cluster.scheduler_address),
            }
        finally:
            cluster.close()
        few = root / "to-compress"
        few.mkdir()
        for video in sorted(videos.glob("*.mp4"))[:2]:
            (few / video.name).symlink_to(video.resolve())
        cpu, t = cpu_seconds(), time.perf_counter()
        summary = compress_folder(few, root / "c23", crf=23, workers=2, progress=False)
        wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
        results["compress-pool-2"] = {"videos": summary.done, "frames": summary.frames, "seconds": wall,
                                      "fps": summary.frames / wall, "cpu_seconds": cpu,
                                      "frames_per_cpu_second": summary.frames / cpu}
    results["load_after"] = os.getloadavg()
    return results


def report(r: dict) -> str:
    lines = [f"cpus {r['cpus']}, load average before {r['load_before'][0]:.2f}, after {r['load_after'][0]:.2f}",
             f"{'run':<18} {'videos':>6} {'frames':>7} {'seconds':>8} {'frames/s':>9} {'vs pool-2':>9} "
             f"{'CPU s':>7} {'frames/CPU-s':>12}"]
    base = r["pool-2"]["fps"]
    for key in ("local-1", "pool-2", "dask-local:2", "dask-running-2", "compress-pool-2"):
        x = r[key]
        lines.append(f"{key:<18} {x['videos']:>6} {x['frames']:>7} {x['seconds']:>8.1f} {x['fps']:>9.1f} "
                     f"{x['fps'] / base:>9.2f} {x['cpu_seconds']:>7.1f} {x['frames_per_cpu_second']:>12.1f}")
    lines.append("per-video overhead (no-op task): " + ", ".join(
        f"{k} {v * 1000:.1f} ms" for k, v in r["overhead_s_per_video"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of face videos (*.mp4)")
    parser.add_argument("--copies", type=int, default=2, help="links per video (more videos per run)")
    parser.add_argument("--max-frames", type=int, default=150, help="frames per video (keeps the run short)")
    parser.add_argument("--noop", type=int, default=400, help="no-op jobs for the overhead figure")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    if not any(args.videos.glob("*.mp4")):
        sys.exit(f"{args.videos}: no .mp4 face videos (give --videos DIR)")
    r = measure(args.videos, args.copies, args.max_frames, args.noop)
    print(json.dumps(r, indent=2) if args.json else report(r))


if __name__ == "__main__":
    main()
