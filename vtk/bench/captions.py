"""Captioning throughput per model: clips/s for coarse + fine captions on this machine.

    vtk bench captions [--models shapes,tagger,hf:tiny-blip,vlm:tiny-qwen2.5-vl] [--clips 64]
                       [--mode both] [--fine-fps 4] [--size 64] [--batch 16] [--json]

Clips come from the synthetic world (16 frames at 8 fps, ``--size`` pixels), so every model
sees the same pixels. ``hf:tiny-<arch>`` (blip, blip2, git) builds a tiny random model offline
in a temporary folder (``--summarizer hf:tiny-gpt2`` / ``hf:tiny-t5`` likewise): it measures
the plumbing (processor, generate, decode), not a real model's cost. Model loading is timed apart from captioning (one warm-up call first).

A video captioner (``vlm:ID``; ``vlm:tiny-qwen2.5-vl`` and ``vlm:tiny-smolvlm`` are tiny random
ones built offline) writes the fine caption (``--vlm-*`` settings), and its row adds prompt and
output tokens per clip, output tokens/s, windows, and where a window's time goes: preparing its
frames (sampling, resizing), the processor (chat template, tokenizer, video processor), the
model's generate, decoding, and the rest of vtk's bookkeeping.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import click

from vtk.captions import Captioning, CaptionSpec, fine_indices, get_captioner
from vtk.commands.options import vlm_options
from vtk.errors import VtkError
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
    for family in ("hf:", "vlm:"):
        if model.startswith(family + "tiny-"):  # built once per arch in this run's folder
            from vtk.captions.testing import BUILDERS, VLM_BUILDERS

            arch = model.removeprefix(family + "tiny-")
            builders = BUILDERS if family == "hf:" else VLM_BUILDERS
            if arch not in builders:
                raise VtkError(f"{model}: no such tiny model (known: "
                               f"{', '.join(family + 'tiny-' + a for a in builders)})")
            folder = f"{tmp}/{arch}"
            if not os.path.exists(folder):
                builders[arch](folder)
            return family + folder
    return model


def bench_captions(models: list[str], clips: int = 64, mode: str = "both",
                   fine_fps: float = 4.0, size: int = 64, batch: int = 16,
                   summarizer: str = "rules", device: str = "auto", vlm=None) -> list[dict]:
    """One row per model: clips/s, captioned frames/s, load seconds, an example caption;
    a video captioner's also its tokens and where a window's time goes (module docstring).
    ``vlm``: the video captioners' ``VLMSettings``."""
    from vtk.captions.base import is_video_model
    from vtk.captions.vlm import VLMSettings

    vlm = vlm or VLMSettings()
    data = _clips(clips, size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            name = _resolve(model, tmp)
            video = is_video_model(name)
            used = "fine" if video else mode  # a video captioner writes the fine caption
            per_clip = (used in ("coarse", "both")) + (len(fine_indices(
                len(data[0].frames), data[0].fps, vlm.fps if video else fine_fps,
                4)) if used in ("fine", "both") else 0)
            spec = CaptionSpec(mode=used, coarse_model=None if video else name,
                               fine_model=name, summarizer=_resolve(summarizer, tmp),
                               fine_fps=fine_fps, device=device, vlm=vlm if video else None)
            cap = Captioning(spec)
            t0 = time.perf_counter()
            cap.run(data[:1])  # loads the models (once per process) and warms up
            load = time.perf_counter() - t0
            tick = dict(get_captioner(name, device).timings) if video else {}
            t0 = time.perf_counter()
            results = []
            for i in range(0, len(data), batch):
                results += cap.run(data[i:i + batch])
            seconds = time.perf_counter() - t0
            ok = [r for r in results if "error" not in r and "caption_errors" not in r]
            example = ok[0]["captions"] if ok else {}
            row = {
                "model": model, "mode": used, "clips": len(data), "errors": len(data) - len(ok),
                "clips_per_s": len(data) / seconds, "frames_per_s": len(data) * per_clip / seconds,
                "frames_per_clip": per_clip, "load_s": load, "size": size, "fine_fps": fine_fps,
                "example": example.get("fused") or example.get("fine") or example.get("coarse"),
            }
            if video:
                row.update(_video_figures(cap, name, data, ok, seconds, vlm, device, tick))
            rows.append(row)
    return rows


def _video_figures(cap, name, data, ok, seconds, vlm, device, timings) -> dict:
    """Tokens, windows, and the split of a window's time (module docstring)."""
    model = get_captioner(name, device)
    infos = [r["caption_info"]["fine"] for r in ok]
    windows = sum(len(i["windows"]) for i in infos) or 1
    calls = windows + sum("summary" in i for i in infos)
    out_tokens = sum(i["output_tokens"] for i in infos)
    parts = {k: (model.timings.get(k, 0.0) - timings.get(k, 0.0))
             for k in ("prepare_s", "processor_s", "generate_s", "decode_s")}
    rest = seconds - sum(parts.values())

    def ms(x):
        return round(1000 * x / windows, 2)

    return {"windows": windows, "generations": calls, "vlm": vlm.key(),
            "prompt_tokens_per_clip": sum(i["prompt_tokens"] for i in infos) / max(len(infos), 1),
            "output_tokens_per_clip": out_tokens / max(len(infos), 1),
            "output_tokens_per_s": out_tokens / seconds,
            "per_window_ms": {"total": ms(seconds), "prepare": ms(parts["prepare_s"]),
                              "processor": ms(parts["processor_s"]),
                              "generate": ms(parts["generate_s"]),
                              "decode": ms(parts["decode_s"]), "other": ms(rest)}}


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
@vlm_options
@click.option("--json", "json_out", is_flag=True, help="Print the rows as JSON instead.")
def command(models, clips, mode, fine_fps, size, batch, summarizer, device, vlm_fps,
            vlm_window, vlm_mode, vlm_max_tokens, vlm_prompt, vlm_batch, json_out):
    """Captioning throughput per model: clips/s and captioned frames/s on synthetic clips;
    for a video captioner (vlm:) also tokens per clip, output tokens/s and where a window's
    time goes.

    \b
    Examples:  vtk bench captions --models shapes,hf:tiny-blip --clips 32
               vtk bench captions --models vlm:tiny-qwen2.5-vl,vlm:tiny-smolvlm --json
    """
    from vtk.shards.build_set import vlm_settings

    vlm = vlm_settings(**click.get_current_context().params)
    rows = bench_captions(models.split(","), clips, mode, fine_fps, size, batch, summarizer,
                          device, vlm)
    if json_out:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'model':24s} {'clips/s':>9s} {'frames/s':>9s} {'load s':>7s}  example")
    for r in rows:
        click.echo(f"{r['model']:24s} {r['clips_per_s']:9.1f} {r['frames_per_s']:9.1f} "
                   f"{r['load_s']:7.2f}  {(r['example'] or '')[:60]}")
        if "per_window_ms" in r:
            w = r["per_window_ms"]
            click.echo(f"{'':24s} {r['prompt_tokens_per_clip']:.0f} prompt + "
                       f"{r['output_tokens_per_clip']:.0f} output tokens a clip, "
                       f"{r['output_tokens_per_s']:.1f} output tokens/s; a window: "
                       + ", ".join(f"{k} {v:.1f} ms" for k, v in w.items()))
