"""`vtk bench train`: training step time and peak memory at several masking ratios, one run.

Each ratio times full training steps (forward, symmetric InfoNCE, backward, AdamW) of the same
model on the same random batch, after a few warm-up steps; the text tower is frozen and cached
as in ViCLIP, so the numbers are the video tower's. Measured speed-up is set beside the ideal
one from the token count ((1 + L) / (1 + K) tokens through the transformer) and the FLOP count
(patch embedding of all L tokens stays, attention is quadratic).
"""

from __future__ import annotations

import json
import time

import click


def flops(tokens: int, cfg, L: int, patch_dim: int) -> float:
    """Forward matmul FLOPs of the video tower for one clip with ``tokens`` tokens (incl. CLS)."""
    w, layers = cfg.hidden_size, cfg.num_hidden_layers
    per_layer = 24 * tokens * w * w + 4 * tokens * tokens * w  # qkv+out+mlp, scores+values
    return 2 * L * patch_dim * w + layers * per_layer


def measure(model, opt, video, texts, ratio, steps, device, autocast) -> list[float]:
    """Seconds of each of ``steps`` training steps at masking ``ratio``."""
    from vtk.model.loss import contrastive_loss
    from vtk.train import meters

    times = []
    for _ in range(steps):
        meters.sync(device)
        t0 = time.perf_counter()
        with autocast():
            v, t, s = model(video, texts, ratio)
            loss = contrastive_loss(v, t, s)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        meters.sync(device)
        times.append(time.perf_counter() - t0)
    return times


def run(ratios, model_size=None, size=None, frames=8, batch_size=None, steps=None, warmup=3,
        rounds=5, device="auto", seed=0) -> list[dict]:
    """One dict per ratio: median step time over ``steps`` timed steps (taken in ``rounds``
    interleaved rounds after ``warmup`` untimed ones), clips/s, peak memory, speed-ups."""
    import torch

    from vtk.environment import pick_device
    from vtk.model import build_model
    from vtk.train import meters
    from vtk.train.runtime import autocast as make_autocast
    from vtk.train.trainer import make_optimizer

    dev = pick_device(device)
    gpu = dev.type == "cuda"
    model_size = model_size or ("b16" if gpu else "tiny")
    size = size or (224 if model_size != "tiny" else 32)
    batch_size = batch_size or (32 if model_size != "tiny" else 64)
    steps = steps or (30 if gpu or model_size == "tiny" else 5)
    rounds = min(rounds, steps)
    torch.manual_seed(seed)
    model = build_model(dict(model=model_size, text="tiny", freeze_text=True, frames=frames,
                             size=size)).to(dev).train()
    opt = make_optimizer(model, 1e-4, 0.05, (0.9, 0.98), fused=dev.type == "cpu")  # training's
    autocast, _ = make_autocast(dev, "bf16" if gpu and torch.cuda.is_bf16_supported() else "off")
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch_size, frames, 3, size, size, generator=g).to(dev)
    texts = [f"caption {i}" for i in range(batch_size)]
    vc = model.video.config
    L = frames * (size // vc.patch_size) ** 2
    patch_dim = 3 * vc.patch_size**2
    # Ratios take turns in rounds, so load from other processes hits them all alike.
    times = {r: [] for r in ratios}
    peaks = {r: 0 for r in ratios}
    for r in ratios:
        measure(model, opt, video, texts, r, warmup, dev, autocast)
    for i in range(rounds):
        for r in ratios:
            meters.reset_peak_memory(dev)
            n = steps // rounds + (i < steps % rounds)
            times[r] += measure(model, opt, video, texts, r, n, dev, autocast)
            peaks[r] = max(peaks[r], meters.peak_memory_bytes(dev))
    out = []
    for r in ratios:
        step_s = float(torch.tensor(times[r]).median())
        k = round((1 - r) * L)
        out.append({"mask": r, "step_s": round(step_s, 5),
                    "clips_per_s": round(batch_size / step_s, 2), "peak_mem_bytes": peaks[r],
                    "tokens": 1 + k, "device": meters.device_name(dev), "model": model_size,
                    "size": size, "frames": frames, "batch_size": batch_size, "steps": steps,
                    "threads": torch.get_num_threads(),
                    "ideal_flops_speedup": flops(1 + L, vc, L, patch_dim)
                    / flops(1 + k, vc, L, patch_dim)})
    base = out[0]["step_s"] if out and out[0]["mask"] == 0 else None
    for row in out:
        row["speedup"] = round(base / row["step_s"], 3) if base else None
        row["ideal_speedup"] = round((1 + L) / row["tokens"], 3)
        row["ideal_flops_speedup"] = round(row["ideal_flops_speedup"], 3)
    return out


@click.command("train")
@click.option("--ratios", default="0,0.5,0.7,0.9", show_default=True,
              help="masking ratios, comma-separated (the first should be 0: the baseline)")
@click.option("--model", "model_size", type=click.Choice(["tiny", "b16", "l14"]),
              help="video tower  [tiny on CPU, b16 on GPU]")
@click.option("--size", type=int, help="pixels  [32 for tiny, 224 otherwise]")
@click.option("--frames", type=int, default=8, show_default=True)
@click.option("--batch-size", type=int, help="clips per step  [64 tiny, 32 otherwise]")
@click.option("--steps", type=int, help="timed steps per ratio (after 3 warm-up steps), "
              "in 5 rounds that interleave the ratios  [30]")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, help="CPU threads for torch  [torch's default]")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="write one object per ratio (a JSON list) to this file")
def command(ratios, model_size, size, frames, batch_size, steps, device, threads, json_out):
    """Training step time and peak memory at masking ratios 0, 0.5, 0.7, 0.9.

    \b
    Example:  vtk bench train --json bench-train.json
    """
    import torch
    from rich.console import Console
    from rich.table import Table

    if threads:
        torch.set_num_threads(threads)
    rows = run([float(r) for r in ratios.split(",")], model_size, size, frames, batch_size,
               steps, device=device)
    r0 = rows[0]
    table = Table(title=f"vtk bench train: {r0['model']}, {r0['frames']} x {r0['size']} px, "
                        f"batch {r0['batch_size']}, median of {r0['steps']} steps a ratio")
    for col in ("mask", "tokens", "step s", "clips/s", "peak MiB", "speedup", "ideal tok",
                "ideal FLOPs"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['mask']:.2f}", str(r["tokens"]), f"{r['step_s']:.4f}",
                      f"{r['clips_per_s']:.1f}", f"{r['peak_mem_bytes'] / 2**20:.0f}",
                      "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                      f"{r['ideal_speedup']:.2f}x", f"{r['ideal_flops_speedup']:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"device: {r0['device']}, {r0['threads']} torch threads")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=2)
