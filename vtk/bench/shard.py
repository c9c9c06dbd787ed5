"""`vtk bench shard FILE...`: how fast sharding runs next to how fast the files merely decode.

In one run, on one machine:
(a) a plain PyAV decode loop over the files (frames/s), with one decode thread (what each
    shard worker uses) and with FFmpeg's default threading;
(b) `vtk shard FILE... --clips scenes --size S --captions none` through the real pipeline into
    a temporary folder, once per ``--engine`` (local, ray or both, on the same inputs): clips/s
    and source frames/s, wall clock including writing the tars. For Ray the cluster is
    started (or joined) before the clock starts and its start-up is reported apart
    (``cluster_start_s``): a cluster serves many runs; the job's worker start-up is inside.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time

import click


def decode_rate(path: str, threads: int | None) -> dict:
    """Frames/s of ``for frame in container.decode(video)`` (no conversion, no copy)."""
    import av

    with av.open(path) as c:
        stream = c.streams.video[0]
        if threads is not None:
            stream.thread_type = "SLICE"
            stream.codec_context.thread_count = threads
        else:
            stream.thread_type = "AUTO"
        t0 = time.perf_counter()
        n = sum(1 for _ in c.decode(stream))
        dt = time.perf_counter() - t0
    return {"frames": n, "seconds": round(dt, 3), "frames_per_s": round(n / dt, 1)}


def _sum_rates(rates: list[dict]) -> dict:
    frames, seconds = sum(r["frames"] for r in rates), sum(r["seconds"] for r in rates)
    return {"frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1) if seconds else None}


def shard_rate(path, size: int, fps: float, workers: int, codec: str, out: str,
               engine: str = "local", ray_address: str | None = None) -> dict:
    """Shard the file(s) with scene detection; rates over the whole wall clock."""
    from vtk.clips import ClipConfig
    from vtk.shards.engines import make_engine
    from vtk.shards.writer import ShardWriter
    from vtk.sources import open_sources

    paths = [path] if isinstance(path, str) else list(path)
    cfg = ClipConfig(mode="scenes", size=size, fps=fps)
    runner = make_engine(engine, ray_address=ray_address)
    started_cluster, cluster_s = _start_cluster(engine, ray_address, workers)
    writer = ShardWriter(out, samples_per_shard=1000)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        totals = runner.run(open_sources(paths), writer, cfg, codec, None, workers=workers)
        index = writer.close({})
        dt = time.perf_counter() - t0
    finally:
        if started_cluster:
            import ray

            ray.shutdown()
    workers = workers if engine == "local" else 0  # the driver's CPU time says nothing
    # CPU time of this process (both threads; workers' time is not seen when workers > 1):
    # on a shared machine it says what the work costs when the wall clock cannot.
    cpu = time.process_time() - cpu0
    return {"clips": totals.clips, "scenes": totals.cuts + 1, "source_frames": totals.frames_decoded,
            "seconds": round(dt, 3), "clips_per_s": round(totals.clips / dt, 2),
            "source_frames_per_s": round(totals.frames_decoded / dt, 1),
            "cpu_s": round(cpu, 3) if workers <= 1 else None,
            "cpu_ms_per_source_frame": round(1000 * cpu / max(totals.frames_decoded, 1), 3)
            if workers <= 1 else None,
            "bytes": index["num_bytes"], "failures": index["failures"]["total"],
            "engine": runner.describe(), "cluster_start_s": cluster_s}


def _start_cluster(engine: str, address: str | None, workers: int) -> tuple[bool, float | None]:
    """For Ray: join or start the cluster now, off the clock; (we did, seconds it took)."""
    if engine != "ray":
        return False, None
    from vtk.errors import require

    ray = require("ray", extra="ray")
    if ray.is_initialized():
        return False, 0.0
    t0 = time.perf_counter()
    kwargs = {"num_cpus": workers, "include_dashboard": False} if address in (None, "local") \
        else {}
    ray.init(address=address, logging_level="WARNING", log_to_driver=False, **kwargs)
    return True, round(time.perf_counter() - t0, 3)


@click.command("shard")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--size", type=int, default=224, show_default=True, help="Clip short side (px).")
@click.option("--fps", type=float, default=8.0, show_default=True)
@click.option("--codec", type=click.Choice(["h264", "vp9"]), default="h264", show_default=True)
@click.option("--workers", type=int, default=1, show_default=True,
              help="Shard workers (one file keeps one busy; its decode thread is a second).")
@click.option("--engine", "engines", type=click.Choice(["local", "ray"]), multiple=True,
              default=("local",), show_default=True,
              help="Shard engine; give it twice (local and ray) to run both on the same "
                   "inputs, side by side.")
@click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
              help="The Ray cluster for --engine ray (default: a new local one of --workers "
                   "CPUs).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the figures here.")
def command(files, size, fps, codec, workers, engines, ray_address, json_out):
    """Decode rate of FILE(s) next to the rate of sharding them with scene detection.

    \b
    Examples (the Big Buck Bunny film, see README; Ray beside the local pool):
      vtk bench shard /tmp/bbb/bbb.mp4 --size 224 --json bench-shard.json
      vtk bench shard a.mp4 b.mp4 c.mp4 d.mp4 --workers 2 --engine local --engine ray
    """
    from rich.console import Console
    from rich.table import Table

    from vtk.shards.build_set import versions

    console = Console(stderr=True)
    paths = [os.path.abspath(f) for f in files]
    result = {"file": paths[0] if len(paths) == 1 else paths, "size": size, "fps": fps,
              "codec": codec, "workers": workers, "cpus": os.cpu_count(),
              "machine": platform.machine(), "load_avg_before": list(os.getloadavg()),
              "versions": versions()}
    with console.status("decode loop, 1 thread"):
        result["decode_1_thread"] = _sum_rates([decode_rate(f, threads=1) for f in paths])
    with console.status("decode loop, FFmpeg default threads"):
        result["decode_default_threads"] = _sum_rates([decode_rate(f, threads=None)
                                                       for f in paths])
    for engine in dict.fromkeys(engines):
        with console.status(f"sharding with scene detection at {size} px ({engine})"), \
                tempfile.TemporaryDirectory() as tmp:
            result[f"shard_{engine}"] = shard_rate(paths, size, fps, workers, codec, tmp,
                                                   engine=engine, ray_address=ray_address)
    result["shard"] = result[f"shard_{engines[0]}"]  # the first engine: the figures of old
    if "shard_local" in result and "shard_ray" in result:
        result["ray_vs_local"] = round(result["shard_ray"]["clips_per_s"]
                                       / result["shard_local"]["clips_per_s"], 3)
    result["load_avg_after"] = list(os.getloadavg())
    # ru_maxrss is in KiB on Linux: the whole run's peak, shard pipeline included
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["shard_vs_decode"] = round(result["shard"]["source_frames_per_s"]
                                      / result["decode_1_thread"]["frames_per_s"], 3)
    name = os.path.basename(paths[0]) + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
    table = Table(title=f"vtk bench shard: {name} "
                        f"({result['shard']['source_frames']} frames, {os.cpu_count()} CPUs)")
    for col in ("step", "source frames/s", "clips/s", "wall (s)"):
        table.add_column(col, justify="right" if col != "step" else "left")
    d1, dd = result["decode_1_thread"], result["decode_default_threads"]
    table.add_row("PyAV decode loop, 1 thread", f"{d1['frames_per_s']:.0f}", "", f"{d1['seconds']:.1f}")
    table.add_row("PyAV decode loop, default threads", f"{dd['frames_per_s']:.0f}", "",
                  f"{dd['seconds']:.1f}")
    for engine in dict.fromkeys(engines):
        s = result[f"shard_{engine}"]
        start = f", cluster start {s['cluster_start_s']:.1f} s apart" \
            if s.get("cluster_start_s") else ""
        table.add_row(f"vtk shard --clips scenes --size {size} --engine {engine} "
                      f"({s['scenes']} scenes -> {s['clips']} clips{start})",
                      f"{s['source_frames_per_s']:.0f}", f"{s['clips_per_s']:.2f}",
                      f"{s['seconds']:.1f}")
    Console().print(table)
    s = result["shard"]
    if "ray_vs_local" in result:
        console.print(f"Ray engine / local engine throughput: {result['ray_vs_local']:.2f}x")
    if s["cpu_ms_per_source_frame"]:
        console.print(f"sharding CPU: {s['cpu_ms_per_source_frame']:.2f} ms per source frame "
                      f"over both threads ({s['cpu_s'] / s['seconds']:.2f} cores busy); load "
                      f"average before/after: {result['load_avg_before'][0]:.1f}/"
                      f"{result['load_avg_after'][0]:.1f} on {os.cpu_count()} CPUs; peak "
                      f"memory {result['peak_rss_mb']:.0f} MB")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=2)
