"""`vtk bench pipeline SOURCES`: every stage of the pipeline beside its own ceiling, in one run.

For each stage, on the same data: vtk's stage (what the pipeline runs) and the stage's ceiling,
the bare library operation alone; CPU ms per clip of each, clips/s, and ``ratio`` = ceiling
CPU / stage CPU (1.0: vtk adds nothing around the library call). The stages:

- source decode: vtk's decode stage (frames, their times, the resampling to the clip rate) |
  PyAV's decode loop alone, one thread;
- scene detection: the detector's small copy made from the YUV planes and
  ``ContentDetector`` | ``ContentDetector`` alone on the same copies;
- resize: the output frame (swscale to RGB at the short side, turned upright) | the swscale
  call alone;
- encode: ``encode_mp4`` (RGB -> I420, frames, x264, MP4 muxing) | x264 alone on the same
  I420 frames;
- coarse + fine captions: ``Captioning.run`` (frame choice, cache, summariser) | each
  captioner's ``caption`` on the same frames;
- scores (``vtk score``: codec motion vectors and frame hashes) | the clip's decode alone;
- loader decode (``vtk bench decode``'s loader and ceiling, 2 workers);
- train step (a short ``vtk train`` on the shards, tiny model, streaming loader) | the model's
  forward, backward and AdamW step alone on one batch (``vtk bench train``).

The first four are timed in one thread over each source once (thread CPU time), the clips cut
as ``vtk shard --clips scenes`` cuts them; ``vtk shard`` end to end (its workers) is a row of
its own. The projection: core-hours per million clips, from the CPU ms per clip, under the
assumptions it states (the clips' lengths are these sources', one epoch, CPU only).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import click
import numpy as np


def _row(stage, clips, cpu_s, ceiling_s=None, **extra) -> dict:
    ms = 1000 * cpu_s / max(clips, 1)
    row = {"stage": stage, "clips": clips, "cpu_ms_per_clip": round(ms, 3),
           "clips_per_s": round(clips / cpu_s, 2) if cpu_s else None,
           "ceiling_cpu_ms_per_clip": None, "ratio": None, **extra}
    if ceiling_s is not None:
        row["ceiling_cpu_ms_per_clip"] = round(1000 * ceiling_s / max(clips, 1), 3)
        row["ratio"] = round(ceiling_s / cpu_s, 3) if cpu_s else None
    return row


def _bare_decode(path: str) -> float:
    """Thread CPU seconds of PyAV's decode loop over a file, one decode thread."""
    from vtk.clips.decode import open_video

    container, stream = open_video(path)
    t0 = time.thread_time()
    for _ in container.decode(stream):
        pass
    cpu = time.thread_time() - t0
    container.close()
    return cpu


def _bare_encode(frames: np.ndarray, fps: float) -> float:
    """Thread CPU seconds of x264 alone on a clip's frames, converted to I420 beforehand."""
    from fractions import Fraction

    import av
    import cv2

    from vtk.clips.encode import _yuv420_frame, x264_asm

    t, h, w = frames.shape[:3]
    yuv = [_yuv420_frame(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2YUV_I420), w, h)
           for f in frames]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base = Fraction(1, 1) / Fraction(fps).limit_denominator(1001)
    ctx.thread_count = 1
    ctx.options = {"preset": "veryfast", "crf": "23",
                   **({"x264-params": f"asm={x264_asm()}"} if x264_asm() else {})}
    t0 = time.thread_time()
    for i, f in enumerate(yuv):
        f.pts = i
        ctx.encode(f)
    ctx.encode(None)
    return time.thread_time() - t0


def shard_stages(paths: list[str], size: int, fps: float, keep: int = 12):
    """The four shard stages over each source once, in this thread (module docstring); and
    up to ``keep`` of the clips, for the caption stage."""
    from vtk.clips import ClipConfig, ClipStats, encode_mp4
    from vtk.clips.cut import _clip, _Cutter, _detector, _timecode
    from vtk.clips.decode import _decode, _out_rgb, _small_bgr, _upright, open_video
    from vtk.types import SourceItem

    cfg = ClipConfig(mode="scenes", size=size, fps=fps)
    cpu = dict.fromkeys(("decode", "detect", "detect_bare", "resize", "resize_bare", "encode",
                         "encode_bare", "decode_bare"), 0.0)
    clips, kept = 0, []
    for path in paths:
        item = SourceItem(id=os.path.basename(path), path=path)
        container, stream = open_video(path)
        stats = ClipStats(source_fps=float(stream.average_rate or 25))
        detector, cutter = _detector(cfg), _Cutter(cfg, "scenes")
        frames = _decode(container, stream, item, cfg, "scenes", stats)
        done = []
        while True:
            t0 = time.thread_time()
            frame = next(frames, None)
            cpu["decode"] += time.thread_time() - t0
            if frame is None:
                break
            t0 = time.thread_time()
            small = _small_bgr(frame.detect, cfg.detect_width)
            t1 = time.thread_time()
            cuts = detector.process_frame(_timecode(frame.index, stats.source_fps), small)
            t2 = time.thread_time()
            cpu["detect"] += t2 - t0
            cpu["detect_bare"] += t2 - t1
            done += cutter.cuts(cuts)
            if frame.times:
                t0 = time.thread_time()
                rgb = _upright(_out_rgb(frame.output, size), (False, False, False))
                cpu["resize"] += time.thread_time() - t0
                w, h = rgb.shape[1], rgb.shape[0]
                t0 = time.thread_time()
                frame.output.reformat(w, h, "rgb24", interpolation="BILINEAR")
                cpu["resize_bare"] += time.thread_time() - t0
                done += cutter.push(frame.index, frame.t, rgb, frame.times)
        container.close()
        done += cutter.cuts(detector.post_process(_timecode(max(stats.frames_decoded - 1, 0),
                                                            stats.source_fps)))
        done += cutter.flush()
        for seg in done:
            clip = _clip(item, cfg, clips, seg, stats.end)
            t0 = time.thread_time()
            encode_mp4(clip.frames, clip.fps, "h264")
            cpu["encode"] += time.thread_time() - t0
            cpu["encode_bare"] += _bare_encode(clip.frames, clip.fps)
            clips += 1
            if len(kept) < keep:
                kept.append(clip)
        cpu["decode_bare"] += _bare_decode(path)
    rows = [_row("source decode", clips, cpu["decode"], cpu["decode_bare"]),
            _row("scene detection", clips, cpu["detect"], cpu["detect_bare"]),
            _row("resize", clips, cpu["resize"], cpu["resize_bare"]),
            _row("encode", clips, cpu["encode"], cpu["encode_bare"])]
    return rows, kept


def caption_stage(clips, mode: str, device: str) -> dict:
    """``Captioning.run`` on the clips against each captioner's ``caption`` alone on the
    frames it is shown (the middle frame, the fine frames)."""
    from vtk.captions import Captioning, CaptionSpec, fine_indices, get_captioner

    spec = CaptionSpec(mode=mode, device=device)
    cap = Captioning(spec)
    cap.run(clips[:1])  # loads the models
    t0 = time.process_time()
    cap.run(clips)
    vtk_s = time.process_time() - t0
    coarse = get_captioner(spec.coarse_model or "tagger", device)
    fine = get_captioner(spec.fine_model or "tagger", device)
    bare = 0.0
    for c in clips:
        if mode in ("coarse", "both"):
            mid = c.frames[len(c.frames) // 2][None]
            t0 = time.process_time()
            coarse.caption(mid)
            bare += time.process_time() - t0
        if mode in ("fine", "both"):
            idx = fine_indices(len(c.frames), c.fps, spec.fine_fps, 4)
            sel = c.frames[idx]
            t0 = time.process_time()
            fine.caption(sel)
            bare += time.process_time() - t0
    return _row(f"captions ({mode}: {spec.coarse_model or 'tagger'})", len(clips), vtk_s, bare)


def score_stage(folder: str) -> dict:
    """``vtk score --scores motion,hashes`` on the set against the clips' bare decode."""
    from vtk.bench.decode import cpu_seconds
    from vtk.curate import score_set
    from vtk.data.decoders import get_decoder
    from vtk.data.shardset import resolve_shards
    from vtk.shards.reader import read_samples

    c0 = cpu_seconds()
    summary = score_set(folder, scores="motion,hashes", workers=0, progress=False)
    vtk_s = cpu_seconds() - c0
    dec, bare = get_decoder("pyav"), 0.0
    for tar in resolve_shards(folder):
        for s in read_samples(tar):
            t0 = time.process_time()
            dec.decode(s["mp4"])
            bare += time.process_time() - t0
    return _row("scores (motion vectors, hashes)", summary["samples_scored"], vtk_s, bare)


def train_stage(folder: str, out: str, steps: int, captions: str, batch: int) -> dict:
    """A short ``vtk train`` (tiny, 32 px, streaming pyav loader, 2 workers) against the same
    model's step alone (``vtk bench train`` at mask 0, a batch of the same size)."""
    from vtk.bench import train as T
    from vtk.bench.decode import cpu_seconds
    from vtk.train import train

    c0 = cpu_seconds()
    summary = train(dict(data=folder, out=out, model="tiny", text="tiny", size=32, frames=8,
                         batch_size=batch, steps=steps, workers=2, backend="pyav", quiet=True,
                         captions=captions,
                         device="cpu", checkpoint_every=10_000))
    cpu = cpu_seconds() - c0
    clips = steps * batch
    ceil = T.run([0.0], model_size="tiny", size=32, frames=8, batch_size=batch, steps=10,
                 device="cpu")[0]
    row = _row(f"train step (tiny, 32 px, batch {batch})", clips, cpu, ceil["step_s"] * steps,
               clips_per_s_wall=summary.get("clips_per_s"))
    row["ratio_wall"] = round(summary["clips_per_s"] / ceil["clips_per_s"], 3) \
        if summary.get("clips_per_s") else None
    return row


def projection(rows: list[dict]) -> dict:
    """Core-hours per million clips from the stages' CPU ms per clip."""
    build = [r for r in rows if r["stage"].split(" ")[0] in
             ("source", "scene", "resize", "encode", "captions", "scores")]
    epoch = [r for r in rows if r["stage"].startswith(("loader", "train"))]

    def hours(rs):
        return round(sum(r["cpu_ms_per_clip"] for r in rs) * 1e6 / 3.6e6, 2)

    return {"core_hours_per_million_clips": {"build (decode .. scores)": hours(build),
                                             "train, per epoch": hours(epoch)},
            "gpu_hours_per_million_clips": None,
            "assumptions": [
                "CPU only (no GPU here): a GPU moves the model stages (captions, clip-text, the "
                "train step) off the cores; these figures do not project GPU-hours",
                "clips as these sources give them (their length and scene count); the decode, "
                "detection and resize stages scale with source frames, encode with clip frames",
                "one core per stage at the measured CPU ms per clip, stages added up; the wall "
                "time is that over the cores, less what a shared machine takes",
                "captions with the offline models named in their row; a VLM costs more by "
                "orders of magnitude (vtk bench captions)",
                "train: the tiny CPU model at 32 px, batch 16, one pass over the clips"]}


@click.command("pipeline")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--size", type=int, default=224, show_default=True, help="Clip short side (px).")
@click.option("--fps", type=float, default=8.0, show_default=True)
@click.option("--captions", type=click.Choice(["none", "coarse", "fine", "both"]),
              default="both", show_default=True)
@click.option("--workers", type=int, default=2, show_default=True,
              help="Workers of vtk shard end to end and of the loader.")
@click.option("--train-steps", type=int, default=20, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def command(sources, size, fps, captions, workers, train_steps, device, json_out):
    """Every pipeline stage beside its ceiling (the bare library call), CPU ms per clip and
    their ratio, in one run; core-hours per million clips.

    \b
    Example:
      vtk bench pipeline film.mp4 --json docs/results/bench-pipeline.json
    """
    from rich.console import Console
    from rich.table import Table

    from vtk.bench.decode import bench_backend, cpu_seconds
    from vtk.bench.motion import cpu
    from vtk.shards import build_shard_set

    console = Console(stderr=True)
    paths = [os.path.abspath(s) for s in sources]
    load_before = [round(x, 2) for x in os.getloadavg()]
    with console.status("shard stages, one thread"):
        rows, kept = shard_stages(paths, size, fps)
    if captions != "none":
        with console.status("captions"):
            rows.append(caption_stage(kept, captions, device))
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "shards")
        with console.status(f"vtk shard end to end, {workers} workers"):
            t0, c0 = time.perf_counter(), cpu_seconds()
            index = build_shard_set(paths, folder, clip_mode="scenes", size=size, fps=fps,
                                    workers=workers, samples_per_shard=16, captions=captions,
                                    caption_device=device, no_caption_cache=True)
            wall, cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
        n = index["num_samples"]
        rows.append({**_row(f"vtk shard end to end ({workers} workers, captions {captions})",
                            n, cpu_s), "clips_per_s_wall": round(n / wall, 2)})
        with console.status("scores"):
            rows.append(score_stage(folder))
        with console.status("loader decode"):
            r = bench_backend(folder, "pyav", 8, size, workers, 32, 3, tmp)
            rows.append({**_row("loader decode (pyav, 8 frames)", r["clips"],
                                r["cpu_ms_per_clip"] * r["clips"] / 1000,
                                r["ceiling_cpu_ms_per_clip"] * r["clips"] / 1000),
                         "clips_per_s_wall": r["clips_per_s"], "ratio_wall": r["ratio"]})
        if captions != "none":  # training needs a caption
            with console.status("train step"):
                rows.append(train_stage(folder, os.path.join(tmp, "run"), train_steps,
                                        "fine" if captions in ("fine", "both") else "coarse",
                                        batch=max(1, min(16, n // 2))))
    result = {"sources": paths, "size": size, "fps": fps, "cpu": cpu(),
              "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
              "stages": rows, **projection(rows)}
    table = Table(title=f"vtk bench pipeline ({result['cpu']}; load {load_before[0]}-"
                        f"{result['load_after'][0]})")
    for col in ("stage", "clips", "CPU ms/clip", "ceiling CPU ms/clip", "ratio", "clips/s (wall)"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in rows:
        table.add_row(r["stage"], str(r["clips"]), f"{r['cpu_ms_per_clip']:.2f}",
                      "-" if r["ceiling_cpu_ms_per_clip"] is None
                      else f"{r['ceiling_cpu_ms_per_clip']:.2f}",
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                      str(r.get("clips_per_s_wall") or "-"))
    Console().print(table)
    for k, v in result["core_hours_per_million_clips"].items():
        console.print(f"core-hours per million clips, {k}: {v}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=1)
