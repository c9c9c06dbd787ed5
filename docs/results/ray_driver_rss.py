"""The `vtk shard` driver's peak memory against the number of manifest rows.

    python docs/results/ray_driver_rss.py --rows 1000 100000 --engine ray --engine local \\
        --json docs/results/ray-driver-rss.json

Rows point at a few short files: one 2 s, 32x32, 8 fps H.264 clip written here, reached by
``--links`` hard links (an input is a file and a range: rows must differ in one of them to
count, and hard links are distinct files to vtk's duplicate check) with starts 1 ms apart,
each row a 0.5 s clip. Every row is a real source: decoded, cut, encoded and written.

``--stub-decode`` (for row counts a full run on 2 cores cannot reach in reasonable time:
100k rows at ~70 clips/s is ~25 min per engine) runs the same driver, `vtk shard`, but each
source's ``process_source`` is replaced by one that returns one 2 KB placeholder sample per
row without decoding: the driver still reads every row, checks it for duplicates, plans,
and writes (local engine) or submits, tracks and commits (Ray) every shard with every key,
exactly as in a real run; only the decode/encode is skipped. With the Ray engine the tasks
run the stub; with the local engine the stub runs in the parent itself (``--workers 1``,
vtk's in-process path), whose peak is then the parent's bookkeeping and the stub's one
sample at a time. Compare stubbed and real runs at the row counts both reach.

Each run is `python -m vtk shard MANIFEST --engine E ... -q` in a subprocess; its peak RSS
is the kernel's high-water mark (``VmHWM`` in /proc/PID/status) of that process alone, read
until it exits: for the Ray engine the driver (the cluster, started here by
``ray start --head``, is other processes), for the local engine the parent that plans and
writes (its workers are other processes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_inputs(folder: str, rows: int, links: int) -> str:
    from vtk.clips import encode_mp4

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    base = os.path.join(folder, "clip-0000.mp4")
    with open(base, "wb") as f:
        f.write(encode_mp4(frames, 8.0, "h264"))
    for j in range(1, links):
        os.link(base, os.path.join(folder, f"clip-{j:04d}.mp4"))
    manifest = os.path.join(folder, f"rows-{rows}.csv")
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end"])
        for i in range(rows):
            start = (i // links) / 1000
            w.writerow([f"clip-{i % links:04d}.mp4", f"{start:.3f}", f"{start + 0.5:.3f}"])
    return manifest


def placeholder(item):
    """One 2 KB sample for a source, without decoding it (see --stub-decode)."""
    from vtk.shards.build import SourceResult

    result = SourceResult(item.id, item.meta.get("input") or item.describe())
    result.samples.append({"__key__": f"{item.id}_000000", "mp4": b"\0" * 2048, "txt": "",
                           "json": {"source": item.describe(), "start": item.start,
                                    "end": item.end}})
    return result


def stub_driver(argv: list[str]) -> None:
    """`vtk shard ARGV` with the per-source work replaced (see --stub-decode)."""
    from vtk.cli import cli
    from vtk.shards import build

    if "ray" in argv:
        import ray

        from vtk.shards.engines import ray_engine

        real = ray_engine.shard_task

        @ray.remote(num_cpus=1, max_retries=ray_engine.TASK_RETRIES, retry_exceptions=False)
        def stub_task(*args):
            task = real._function  # shipped by value: patch the globals it was shipped with
            task.__globals__["process_source"] = placeholder
            return task(*args)

        ray_engine.shard_task = stub_task
    else:  # --workers 1: the parent runs process_source itself
        build.process_source = placeholder
    cli.main(["shard", *argv], standalone_mode=True)


def peak_rss(cmd: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hwm = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.2)
    err = proc.stderr.read().decode()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return {"peak_rss_mb": round(hwm / 1024, 1), "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 100000])
    ap.add_argument("--engine", action="append", choices=["ray", "local"])
    ap.add_argument("--links", type=int, default=100)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--stub-decode", action="store_true",
                    help="sources are not decoded (see the module docstring)")
    ap.add_argument("--label", default=None, help="stored with the results (the vtk version)")
    if sys.argv[1:2] == ["--driver"]:  # the subprocess of a --stub-decode run
        stub_driver(sys.argv[2:])
        return
    args = ap.parse_args()
    engines = args.engine or ["ray"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               OMP_NUM_THREADS="1")
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    results = {"label": args.label, "cpus": os.cpu_count(), "links": args.links,
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "runs": []}
    with tempfile.TemporaryDirectory(prefix="vtkrss-", dir="/tmp") as tmp:
        head = None
        address = None
        if "ray" in engines:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            head = subprocess.Popen([ray_bin, "start", "--head", "--block", "--port", str(port),
                                     "--num-cpus", str(args.cpus), "--include-dashboard",
                                     "false", "--node-ip-address", "127.0.0.1",
                                     "--temp-dir", os.path.join(tmp, "ray")], env=env,
                                    start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            address = f"127.0.0.1:{port}"
            time.sleep(15)
        try:
            for rows in args.rows:
                manifest = make_inputs(tempfile.mkdtemp(dir=tmp), rows, args.links)
                for engine in engines:
                    out = tempfile.mkdtemp(dir=tmp)
                    stub = args.stub_decode
                    head_cmd = [sys.executable, os.path.abspath(__file__), "--driver"] \
                        if stub else [sys.executable, "-m", "vtk", "shard"]
                    cmd = [*head_cmd, manifest, "--out", out,
                           "--size", "32", "--fps", "8", "--clips", "whole",
                           "--samples-per-shard", "1000", "--no-caption-cache", "-q",
                           "--engine", engine]
                    cmd += ["--ray-address", address] if engine == "ray" else \
                        ["--workers", "1" if stub else str(args.cpus)]
                    run = {"rows": rows, "engine": engine, "stub_decode": stub,
                           "load_average": round(os.getloadavg()[0], 2), **peak_rss(cmd, env)}
                    with open(os.path.join(out, "index.json")) as f:
                        card = json.load(f)
                    shutil.rmtree(out, ignore_errors=True)  # 1M rows are ~4 GB of tars
                    run.update(samples=card["num_samples"], failures=card["failures"]["total"],
                               clips_per_s=card["last_run"]["clips_per_s"],
                               command=" ".join(cmd[1:]).replace(tmp, "$TMP"))
                    print(json.dumps(run), flush=True)
                    results["runs"].append(run)
        finally:
            if head is not None:
                os.killpg(head.pid, signal.SIGTERM)
                head.wait(60)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
