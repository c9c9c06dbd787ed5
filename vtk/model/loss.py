"""Symmetric InfoNCE over video and text embeddings, with features gathered across ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends every rank's gradient back to the rank that made the
    features (an all_reduce of the gathered gradient, then this rank's slice)."""

    @staticmethod
    def forward(ctx, x):
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """B x D on each of W ranks -> (W*B) x D, rank-major; gradients flow back to every rank.

    Every rank computes the same global loss, and backward sums each rank's gradient onto the
    owner of the features; DDP's gradient averaging then gives exactly the global gradient.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def contrastive_loss(video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor):
    """(video->text + text->video) / 2 cross-entropy; video, text: B x D, L2-normalised.

    Pair i is the positive of row i. Under DDP the negatives are the whole global batch.
    """
    video, text = gather_with_grad(video), gather_with_grad(text)
    logits = logit_scale * video.float() @ text.float().T  # (W*B) x (W*B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
