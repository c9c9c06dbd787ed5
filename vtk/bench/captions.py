"""Captioning throughput per model: clips/s for coarse + fine captions on this machine.

    vtk bench captions [--models shapes,tagger,hf:tiny-blip] [--clips 64] [--mode both]
                       [--fine-fps 4] [--size 64] [--batch 16] [--json]

Clips come from the synthetic world (16 frames at 8 fps, ``--size`` pixels), so every model
sees the same pixels. ``hf:tiny-<arch>`` (blip, blip2, git) builds a tiny random model offline
in a temporary folder (``--summarizer hf:tiny-gpt2`` / ``hf:tiny-t5`` likewise): it measures
the plumbing (processor, generate, decode), not a real model's cost. Model loading is timed apart from captioning (one warm-up call first).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import click

from vtk.captions import Captioning, CaptionSpec, fine_indices
from vtk.sources import synth
from vtk.types import SHARD_CAPTION_MODES, Clip


def _clips(n: int, size: int, seed: int = 31) -> list[Clip]:
    import cv2
    import numpy as np

    preset = synth.get_preset("train")
    out = []
    for i in range(n):
        frames, truth = synth.make_clip(preset, seed, i)
        if size != frames.shape[1]:
            frames = np.stack([cv2.resize(f, (size, size)) for f in frames])
        out.append(Clip(f"synth-bench-{i:06d}", 0, frames, preset.fps, 0.0, 2.0,
                        meta={"synth": truth}))
    return out


def _resolve(model: str, tmp: str) -> str:
    if model.startswith("hf:tiny-"):  # built once per arch in this run's folder
        from vtk.captions.testing import BUILDERS

        arch = model.removeprefix("hf:tiny-")
        folder = f"{tmp}/{arch}"
        if not os.path.exists(folder):
            BUILDERS[arch](folder)
        return "hf:" + folder
    return model


def bench_captions(models: list[str], clips: int = 64, mode: str = "both",
                   fine_fps: float = 4.0, size: int = 64, batch: int = 16,
                   summarizer: str = "rules", device: str = "auto") -> list[dict]:
    """One row per model: clips/s, captioned frames/s, load seconds, an example caption."""
    data = _clips(clips, size)
    per_clip = (mode in ("coarse", "both")) + (len(fine_indices(
        len(data[0].frames), data[0].fps, fine_fps)) if mode in ("fine", "both") else 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            name = _resolve(model, tmp)
            spec = CaptionSpec(mode=mode, coarse_model=name, fine_model=name,
                               summarizer=_resolve(summarizer, tmp), fine_fps=fine_fps,
                               device=device)
            cap = Captioning(spec)
            t0 = time.perf_counter()
            cap.run(data[:1])  # loads the models (once per process) and warms up
            load = time.perf_counter() - t0
            t0 = time.perf_counter()
            results = []
            for i in range(0, len(data), batch):
                results += cap.run(data[i:i + batch])
            seconds = time.perf_counter() - t0
            ok = [r for r in results if "error" not in r]
            example = ok[0]["captions"] if ok else {}
            rows.append({
                "model": model, "mode": mode, "clips": len(data), "errors": len(data) - len(ok),
                "clips_per_s": len(data) / seconds, "frames_per_s": len(data) * per_clip / seconds,
                "frames_per_clip": per_clip, "load_s": load, "size": size, "fine_fps": fine_fps,
                "example": example.get("fused") or example.get("fine") or example.get("coarse"),
            })
    return rows


@click.command("captions")
@click.option("--models", default="shapes,tagger,hf:tiny-blip", show_default=True,
              help="Comma-separated captioners (hf:tiny-blip|blip2|git: a tiny random model).")
@click.option("--clips", type=int, default=64, show_default=True)
@click.option("--mode", type=click.Choice([m for m in SHARD_CAPTION_MODES if m != "none"]),
              default="both", show_default=True)
@click.option("--fine-fps", type=float, default=4.0, show_default=True)
@click.option("--size", type=int, default=64, show_default=True, help="Clip side (px).")
@click.option("--batch", type=int, default=16, show_default=True,
              help="Clips per Captioning.run call.")
@click.option("--summarizer", default="rules", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "json_out", is_flag=True, help="Print the rows as JSON instead.")
def command(models, clips, mode, fine_fps, size, batch, summarizer, device, json_out):
    """Captioning throughput per model: clips/s and captioned frames/s on synthetic clips.

    \b
    Example:  vtk bench captions --models shapes,hf:tiny-blip --clips 32
    """
    rows = bench_captions(models.split(","), clips, mode, fine_fps, size, batch, summarizer,
                          device)
    if json_out:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'model':24s} {'clips/s':>9s} {'frames/s':>9s} {'load s':>7s}  example")
    for r in rows:
        click.echo(f"{r['model']:24s} {r['clips_per_s']:9.1f} {r['frames_per_s']:9.1f} "
                   f"{r['load_s']:7.2f}  {r['example']}")
