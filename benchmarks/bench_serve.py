"""Speed and load of `lrnet serve` on this machine (loopback only, bounded in count and time).

Prints:

1. the server's added cost over `detect_video` on the same video: warm in-process `detect_video`
   (what a worker runs) against upload -> result through the server (client wall clock), best of
   `--repeats` runs each, interleaved; the serving cost of each job (client wall clock minus the
   time `detect_video` took inside the worker, robust to other load); and the `lrnet detect`
   command (a cold process) for reference;
2. time from the start of an upload to its 202 answer and to its first progress event;
3. a load run: `--landmark-clients` clients uploading landmark files and `--video-clients` uploading
   videos at once (each: POST, then follow its events to the end): p50 / p95 latency per kind,
   jobs done / refused with 503 / anything else (must be 0), `/healthz` latency sampled during the
   run (the event loop stays free), and the peak resident memory of the server with its workers.

Needs the reference video ``../shared/reference/lrnet-official/videos/dfo_real.mp4`` (and its dfo
weights) for parts 1 and the video clients; landmark files are synthetic.

Usage: ``PYTHONPATH=src .venv/bin/python benchmarks/bench_serve.py [--repeats 3] [--queue 32]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import requests

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "lrnet-official"
VIDEO = REFERENCE / "videos" / "dfo_real.mp4"
WEIGHTS = REFERENCE / "weights" / "dfo"
JOB_LIMIT = 600.0  # seconds any one job may take before the benchmark gives up on it


def start_server(data: Path, weights: Path, *flags: str) -> tuple:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "lrnet", "serve", "--port", "0", "--data-dir", str(data),
                             "--weights", str(weights), "--offline", *flags],
                            stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
        if match:
            return proc, match.group(1)
    raise RuntimeError("the server did not start")


def run_job(url: str, path: Path, session: Optional[requests.Session] = None) -> Dict[str, object]:
    """Upload `path`, follow its events to the end; times in seconds from the start of the upload."""
    session = session or requests.Session()
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        answer = session.post(url + "/api/v1/jobs", files={"file": (path.name, fh)}, timeout=JOB_LIMIT)
    out: Dict[str, object] = {"code": answer.status_code, "accepted_s": time.perf_counter() - t0}
    if answer.status_code != 202:
        out["retry_after"] = answer.headers.get("Retry-After")
        return out
    job = answer.json()
    with session.get(url + job["urls"]["events"], stream=True, timeout=JOB_LIMIT) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            out.setdefault("first_event_s", time.perf_counter() - t0)
            if event["status"] in ("done", "failed", "cancelled"):
                out.update(status=event["status"], done_s=time.perf_counter() - t0, result=event.get("result"))
    return out


class MemoryWatch(threading.Thread):
    """Peak resident memory (bytes) of a process and all its children, sampled every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.root, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            total = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)


def overhead(url: str, repeats: int) -> None:
    from lrnet.detect import detect_video
    from lrnet.weights import resolve_weights

    weights = resolve_weights(str(WEIGHTS))
    detect_video(VIDEO, weights)  # warm, as a worker is
    direct, served, inner, first, accepted = [], [], [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        detect_video(VIDEO, weights)
        direct.append(time.perf_counter() - t)
        job = run_job(url, VIDEO)
        served.append(job["done_s"])
        inner.append(job["result"]["timing"]["total"])  # detect_video's own time inside the worker
        first.append(job["first_event_s"])
        accepted.append(job["accepted_s"])
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lrnet", "detect", "--weights", str(WEIGHTS), str(VIDEO)],
                   check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    cli = time.perf_counter() - t
    d, s = min(direct), min(served)
    added = [a - b for a, b in zip(served, inner)]
    print(f"\n1. {VIDEO.name}: detect_video (warm, in process) best {d:.2f} s {fmt(direct)}; through the server "
          f"best {s:.2f} s {fmt(served)}: {(s / d - 1) * 100:+.1f} % end to end; `lrnet detect` command (cold "
          f"process) {cli:.2f} s")
    print(f"   serving cost per job = client wall clock - detect_video's time inside the worker: median "
          f"{statistics.median(added):.2f} s {fmt(added)}, {statistics.median(added) / statistics.median(inner) * 100:.1f} "
          f"% of detect_video")
    print(f"2. upload -> 202: median {statistics.median(accepted) * 1000:.0f} ms; upload -> first progress event: "
          f"median {statistics.median(first) * 1000:.0f} ms {fmt(first, 1000, 'ms')}")


def fmt(values: List[float], scale: float = 1.0, unit: str = "s") -> str:
    return "(" + ", ".join(f"{v * scale:.2f}" if unit == "s" else f"{v * scale:.0f}" for v in values) + f" {unit})"


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def load(url: str, pid: int, landmark_files: List[Path], videos: List[Path]) -> None:
    watch = MemoryWatch(pid)
    watch.start()
    results: List[Dict[str, object]] = []
    health: List[float] = []
    lock = threading.Lock()

    def client(path: Path, kind: str) -> None:
        try:
            job = run_job(url, path)
        except requests.RequestException as exc:  # counted as dropped
            job = {"code": f"error {type(exc).__name__}"}
        job["kind"] = kind
        with lock:
            results.append(job)

    threads = [threading.Thread(target=client, args=(p, "landmarks")) for p in landmark_files]
    threads += [threading.Thread(target=client, args=(p, "video")) for p in videos]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads) and time.perf_counter() - t0 < JOB_LIMIT:
        t = time.perf_counter()
        requests.get(url + "/healthz", timeout=10)
        health.append(time.perf_counter() - t)
        time.sleep(0.2)
    for thread in threads:
        thread.join(JOB_LIMIT)
    watch.stop.set()
    report_load(results, health, watch.peak, time.perf_counter() - t0)


def report_load(results: List[Dict[str, object]], health: List[float], peak: int, wall: float) -> None:
    print(f"3. load: {len(results)} clients, wall {wall:.1f} s")
    for kind in ("landmarks", "video"):
        mine = [r for r in results if r["kind"] == kind]
        done = [r["done_s"] for r in mine if r.get("status") == "done"]
        refused = [r for r in mine if r["code"] == 503]
        other = [r for r in mine if r.get("status") != "done" and r["code"] != 503]
        accept = [r["accepted_s"] for r in mine if "accepted_s" in r]
        print(f"   {kind:<9} {len(mine):>2} clients: {len(done)} done, {len(refused)} refused with 503 "
              f"(Retry-After {refused[0]['retry_after'] if refused else '-'}), {len(other)} other; "
              f"upload->result p50 {percentile(done, .5):.2f} s p95 {percentile(done, .95):.2f} s; "
              f"upload->202 p50 {percentile(accept, .5) * 1000:.0f} ms p95 {percentile(accept, .95) * 1000:.0f} ms")
        for r in other:
            print(f"     not done: {r}")
    print(f"   /healthz during the run: {len(health)} calls, p50 {percentile(health, .5) * 1000:.1f} ms, "
          f"p95 {percentile(health, .95) * 1000:.1f} ms, max {max(health) * 1000:.1f} ms")
    print(f"   peak resident memory, server + workers: {peak / 2**20:.0f} MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of part 1 (default 5)")
    parser.add_argument("--landmark-clients", type=int, default=20)
    parser.add_argument("--video-clients", type=int, default=4)
    parser.add_argument("--queue", type=int, default=32, help="the server's --queue (default 32)")
    parser.add_argument("--jobs", type=int, default=None, help="the server's --jobs (default: its own)")
    args = parser.parse_args(argv)
    if not VIDEO.is_file():
        print(f"needs {VIDEO} (the lrnet reference data)", file=sys.stderr)
        return 2
    from lrnet.landmarks import write_landmarks
    from lrnet.synthetic import real_video

    print(f"machine: {os.cpu_count()} cores; {subprocess.run(['uptime'], check=False, capture_output=True, text=True).stdout.strip()}")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        files = []
        for i in range(args.landmark_clients):
            files.append(Path(tmp) / f"clip{i:02d}.txt")
            write_landmarks(files[-1], real_video(seed=5, video=i, frames=300) / 200.0 - 1.0)
        flags = ["--queue", str(args.queue)] + (["--jobs", str(args.jobs)] if args.jobs else [])
        proc, url = start_server(Path(tmp) / "data", WEIGHTS, *flags)
        try:
            print(f"server: {url} {' '.join(flags)}")
            overhead(url, args.repeats)
            load(url, proc.pid, files, [VIDEO] * args.video_clients)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"after: {subprocess.run(['uptime'], check=False, capture_output=True, text=True).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
