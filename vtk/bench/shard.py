"""`vtk bench shard FILE`: how fast sharding runs next to how fast the file merely decodes.

In one run, on one machine:
(a) a plain PyAV decode loop over the file (frames/s), with one decode thread (what each shard
    worker uses) and with FFmpeg's default threading;
(b) `vtk shard FILE --clips scenes --size S --captions none` through the real pipeline into a
    temporary folder: clips/s and source frames/s, wall clock including writing the tars.
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


def shard_rate(path: str, size: int, fps: float, workers: int, codec: str, out: str) -> dict:
    """Shard one file with scene detection; rates over the whole wall clock."""
    from vtk.clips import ClipConfig
    from vtk.shards.build import run_sources
    from vtk.shards.writer import ShardWriter
    from vtk.sources import open_sources

    cfg = ClipConfig(mode="scenes", size=size, fps=fps)
    writer = ShardWriter(out, samples_per_shard=1000)
    t0, cpu0 = time.perf_counter(), time.process_time()
    totals = run_sources(open_sources([path]), writer, cfg, codec, None, workers=workers)
    index = writer.close({})
    dt = time.perf_counter() - t0
    # CPU time of this process (both threads; workers' time is not seen when workers > 1):
    # on a shared machine it says what the work costs when the wall clock cannot.
    cpu = time.process_time() - cpu0
    return {"clips": totals.clips, "scenes": totals.cuts + 1, "source_frames": totals.frames_decoded,
            "seconds": round(dt, 3), "clips_per_s": round(totals.clips / dt, 2),
            "source_frames_per_s": round(totals.frames_decoded / dt, 1),
            "cpu_s": round(cpu, 3) if workers <= 1 else None,
            "cpu_ms_per_source_frame": round(1000 * cpu / max(totals.frames_decoded, 1), 3)
            if workers <= 1 else None,
            "bytes": index["num_bytes"], "failures": index["failures"]["total"]}


@click.command("shard")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--size", type=int, default=224, show_default=True, help="Clip short side (px).")
@click.option("--fps", type=float, default=8.0, show_default=True)
@click.option("--codec", type=click.Choice(["h264", "vp9"]), default="h264", show_default=True)
@click.option("--workers", type=int, default=1, show_default=True,
              help="Shard workers (one file keeps one busy; its decode thread is a second).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the figures here.")
def command(file, size, fps, codec, workers, json_out):
    """Decode rate of FILE next to the rate of sharding it with scene detection.

    \b
    Example (the Big Buck Bunny film, see README):
      vtk bench shard /tmp/bbb/bbb.mp4 --size 224 --json bench-shard.json
    """
    from rich.console import Console
    from rich.table import Table

    from vtk.shards.build_set import versions

    console = Console(stderr=True)
    result = {"file": os.path.abspath(file), "size": size, "fps": fps, "codec": codec,
              "workers": workers, "cpus": os.cpu_count(), "machine": platform.machine(),
              "load_avg_before": list(os.getloadavg()), "versions": versions()}
    with console.status("decode loop, 1 thread"):
        result["decode_1_thread"] = decode_rate(file, threads=1)
    with console.status("decode loop, FFmpeg default threads"):
        result["decode_default_threads"] = decode_rate(file, threads=None)
    with console.status(f"sharding with scene detection at {size} px"), \
            tempfile.TemporaryDirectory() as tmp:
        result["shard"] = shard_rate(file, size, fps, workers, codec, tmp)
    result["load_avg_after"] = list(os.getloadavg())
    # ru_maxrss is in KiB on Linux: the whole run's peak, shard pipeline included
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["shard_vs_decode"] = round(result["shard"]["source_frames_per_s"]
                                      / result["decode_1_thread"]["frames_per_s"], 3)
    table = Table(title=f"vtk bench shard: {os.path.basename(file)} "
                        f"({result['shard']['source_frames']} frames, {os.cpu_count()} CPUs)")
    for col in ("step", "source frames/s", "clips/s", "wall (s)"):
        table.add_column(col, justify="right" if col != "step" else "left")
    d1, dd, s = result["decode_1_thread"], result["decode_default_threads"], result["shard"]
    table.add_row("PyAV decode loop, 1 thread", f"{d1['frames_per_s']:.0f}", "", f"{d1['seconds']:.1f}")
    table.add_row("PyAV decode loop, default threads", f"{dd['frames_per_s']:.0f}", "",
                  f"{dd['seconds']:.1f}")
    table.add_row(f"vtk shard --clips scenes --size {size} ({s['scenes']} scenes -> "
                  f"{s['clips']} clips)",
                  f"{s['source_frames_per_s']:.0f}", f"{s['clips_per_s']:.2f}",
                  f"{s['seconds']:.1f}")
    Console().print(table)
    if s["cpu_ms_per_source_frame"]:
        console.print(f"sharding CPU: {s['cpu_ms_per_source_frame']:.2f} ms per source frame "
                      f"over both threads ({s['cpu_s'] / s['seconds']:.2f} cores busy); load "
                      f"average before/after: {result['load_avg_before'][0]:.1f}/"
                      f"{result['load_avg_after'][0]:.1f} on {os.cpu_count()} CPUs; peak "
                      f"memory {result['peak_rss_mb']:.0f} MB")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=2)
