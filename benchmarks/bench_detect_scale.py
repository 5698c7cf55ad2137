"""Detection at scale (issue 22): videos per minute and frames per CPU-second of a folder scan
(`lrnet detect DIR --report`, `lrnet.scan.scan`) in one process, a local pool of 2 and Dask ``local:2``.

Usage::

    python benchmarks/bench_detect_scale.py [--videos DIR] [--seconds 4] [--files 40] [--weights DIR] [--json]

The face videos of ``--videos`` (default: the reference videos in ../shared) are cut to their first
``--seconds`` with ffmpeg (H.264, no audio) and linked repeatedly into one folder of ``--files``
videos; the same scan then runs three ways, each into a fresh report:

* ``inline``: this process (weights already loaded; 1 CPU thread for OpenCV and torch as in the
  workers, so the three use the same per-video work);
* ``pool-2``: a local pool of 2 spawned processes (``-j 2``; start-up included: spawning, imports,
  each worker loading dlib's models and the weights);
* ``dask-local:2``: a Dask LocalCluster of 2 single-threaded worker processes (``--scheduler
  local:2``; cluster start-up included).

Figures: wall seconds, videos per minute, decoded frames per wall second and per CPU-second (this
process and all its children: what a busy shared machine disturbs least), and the *overhead per
video*: ``(wall x processes - sum of each video's detect_video time) / videos``, i.e. the time a
worker slot spends on anything but detection (start-up, imports, model loading, dispatch, the
report), spread over the videos. Last, an estimate for 100,000 videos on N machines of C cores
(assumptions printed with it). Prints the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds  # noqa: E402

from lrnet.scan import ScanOptions, load_scan_detector, report_header, scan, scan_jobs, weights_digest  # noqa: E402

REFERENCE = REPO.parent / "shared" / "reference" / "lrnet-official"
RUNS = ("inline", "pool-2", "dask-local:2")




def make_clips(videos: Path, seconds: float, files: int, root: Path) -> Path:
    """Cut each video to `seconds` and link the cuts into ``root/videos`` until there are `files`."""
    cuts = []
    for video in sorted(videos.glob("*.mp4")):
        out = root / "cuts" / video.name
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-t", str(seconds), "-c:v", "libx264",
                        "-preset", "veryfast", "-an", str(out)], check=True)
        cuts.append(out)
    src = root / "videos"
    src.mkdir()
    for i in range(files):
        cut = cuts[i % len(cuts)]
        (src / f"{cut.stem}-{i:03d}.mp4").symlink_to(cut)
    return src


def _one_thread() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def run(src: Path, root: Path, weights_dir: Path, name: str) -> dict:
    from dataclasses import replace

    options = ScanOptions(weights=str(weights_dir), weights_sha256="")
    detector = load_scan_detector(options)
    options = replace(options, weights_sha256=weights_digest(detector))
    header = report_header(detector, options)
    jobs = scan_jobs([src])
    how = {"inline": {}, "pool-2": {"workers": 2}, "dask-local:2": {"scheduler": "local:2"}}[name]
    processes = 1 if name == "inline" else 2
    report = root / f"{name.replace(':', '-')}.jsonl"
    cpu, t = cpu_seconds(), time.perf_counter()
    summary = scan(jobs, report, options, header, progress=False, **how)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
    rows = [json.loads(line) for line in report.read_text().splitlines()[1:]]
    assert summary.failed == 0, f"{summary.failed} videos failed; see {report}"
    detect_seconds = sum(r["timing"]["total"] for r in rows)
    n = len(rows)
    return {"videos": n, "frames": summary.frames, "seconds": wall, "videos_per_minute": 60 * n / wall,
            "frames_per_second": summary.frames / wall, "cpu_seconds": cpu,
            "frames_per_cpu_second": summary.frames / cpu, "cpu_seconds_per_video": cpu / n,
            "detect_seconds_per_video": detect_seconds / n,
            "overhead_s_per_video": (wall * processes - detect_seconds) / n,
            "verdicts": sorted({(Path(r["video"]).name.rsplit("-", 1)[0], r["verdict"], r["score"]) for r in rows})}


def estimate(r: dict, cores: int, seconds: float) -> list:
    """Wall hours for 100,000 videos on N machines of `cores` cores, from the measured CPU per video."""
    per_video = r["dask-local:2"]["cpu_seconds_per_video"]
    lines = [f"estimate for 100,000 videos (assumptions: {per_video:.2f} CPU-s per {seconds:g}-s video as measured "
             "in dask-local:2, start-up included, growing linearly with a video's length; each machine runs "
             f"{cores} single-threaded Dask workers, one per core, each as fast per CPU-second as here (wall time on "
             "this shared machine is not used); videos, weights and the report on storage every machine reads "
             "fast enough; a scheduler handles 100,000 tasks of seconds each without becoming the bottleneck):"]
    for machines in (1, 10, 100):
        hours = 100_000 * per_video / (machines * cores) / 3600
        lines.append(f"  {machines:>3} machine{'s' if machines > 1 else ' '} x {cores} cores: {hours:7.2f} h "
                     f"for {seconds:g}-s clips, {hours * 60 / seconds:7.2f} h for 60-s videos")
    return lines


def report(r: dict, cores: int, seconds: float) -> str:
    lines = [f"cpus {r['cpus']}, load average before {r['load_before'][0]:.2f}, after {r['load_after'][0]:.2f}; "
             f"{r['inline']['videos']} videos of {seconds:g} s",
             f"{'run':<14} {'videos':>6} {'frames':>7} {'wall s':>7} {'videos/min':>10} {'frames/s':>9} "
             f"{'CPU s':>7} {'frames/CPU-s':>12} {'detect s/video':>14} {'overhead s/video':>16}"]
    for key in RUNS:
        x = r[key]
        lines.append(f"{key:<14} {x['videos']:>6} {x['frames']:>7} {x['seconds']:>7.1f} "
                     f"{x['videos_per_minute']:>10.1f} "
                     f"{x['frames_per_second']:>9.1f} {x['cpu_seconds']:>7.1f} {x['frames_per_cpu_second']:>12.1f} "
                     f"{x['detect_seconds_per_video']:>14.2f} {x['overhead_s_per_video']:>16.2f}")
    same = len({json.dumps(r[k]["verdicts"]) for k in RUNS}) == 1
    lines.append(f"verdicts and scores identical in the three runs: {same}")
    lines += estimate(r, cores, seconds)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=REFERENCE / "videos", help="folder of face videos (*.mp4)")
    parser.add_argument("--weights", type=Path, default=REFERENCE / "weights" / "dfo", help="weights folder")
    parser.add_argument("--seconds", type=float, default=4.0, help="length each video is cut to (s)")
    parser.add_argument("--files", type=int, default=40, help="videos in the scanned folder (repeats)")
    parser.add_argument("--cores", type=int, default=16, help="cores per machine for the estimate")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    if not any(args.videos.glob("*.mp4")):
        sys.exit(f"{args.videos}: no .mp4 face videos (give --videos DIR)")
    _one_thread()
    results: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="lrnet-bench-detect-") as tmp:
        root = Path(tmp)
        src = make_clips(args.videos, args.seconds, args.files, root)
        for name in RUNS:
            results[name] = run(src, root, args.weights, name)
            print(f"{name}: {results[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2) if args.json else report(results, args.cores, args.seconds))


if __name__ == "__main__":
    main()
