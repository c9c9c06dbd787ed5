"""The per-GPU memory table of docs/training.md: vtk.train.limits.memory_per_gpu for ViCLIP-B/16
and L/14 (8 frames, 224 px, batch 32 a GPU, bf16, 8 ranks), DDP and FSDP, masks 0-0.9.

    python docs/results/memory_per_gpu.py > docs/results/memory-per-gpu.md
"""

import torch

from vtk.model import build_model
from vtk.train.config import TrainConfig
from vtk.train.limits import memory_per_gpu

WORLD, GIB = 8, 2**30
print(f"| model | params (trainable) | mask | DDP (GiB) | FSDP x{WORLD} (GiB) |")
print("|---|---|---|---|---|")
for size in ("b16", "l14"):
    cfg = TrainConfig(model=size, text="viclip", frames=8, size=224, batch_size=32).fill_defaults()
    with torch.device("meta"):  # shapes only: counts without allocating the weights
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for mask in (0.0, 0.5, 0.7, 0.9):
        cfg.mask = mask
        ddp, fsdp = (memory_per_gpu(cfg, params, trainable, WORLD, f) for f in (False, True))
        print(f"| {size} | {params / 1e6:.0f}M ({trainable / 1e6:.0f}M) | {mask:g} | "
              f"{ddp['total_bytes'] / GIB:.1f} | {fsdp['total_bytes'] / GIB:.1f} |")
