"""Symmetric InfoNCE, and gathering features with gradients across 2 real gloo processes."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vtk.model.loss import contrastive_loss, gather_with_grad

torch.set_num_threads(1)


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reference_loss(v, t, scale):
    """Written out: mean over rows of -log p(right text | video) and -log p(right video | text)."""
    n = v.shape[0]
    sims = [[scale * float(v[i] @ t[j]) for j in range(n)] for i in range(n)]
    v2t = sum(-sims[i][i] + math.log(sum(math.exp(s) for s in sims[i])) for i in range(n)) / n
    t2v = sum(-sims[j][j] + math.log(sum(math.exp(sims[i][j]) for i in range(n)))
              for j in range(n)) / n
    return (v2t + t2v) / 2


def test_matches_the_written_out_formula():
    v, t = unit(6, 8, seed=1), unit(6, 8, seed=2)
    assert contrastive_loss(v, t, torch.tensor(14.0)).item() == pytest.approx(
        reference_loss(v, t, 14.0), rel=1e-5)


def test_is_symmetric_and_bounded_by_chance_and_zero():
    v, t = unit(8, 16, seed=3), unit(8, 16, seed=4)
    s = torch.tensor(10.0)
    assert contrastive_loss(v, t, s).item() == pytest.approx(contrastive_loss(t, v, s).item())
    # no signal at scale 0: every pair equally likely, the loss is log(batch)
    assert contrastive_loss(v, t, torch.tensor(0.0)).item() == pytest.approx(math.log(8))
    # perfectly matched pairs of orthogonal embeddings at ViCLIP's scale: loss ~ 0
    e = torch.eye(8, 16)
    assert contrastive_loss(e, e, torch.tensor(100.0)).item() < 1e-6


def test_gradient_reaches_the_temperature():
    v, t = unit(4, 8, seed=5), unit(4, 8, seed=6)
    scale = torch.tensor(10.0, requires_grad=True)
    contrastive_loss(v, t, scale).backward()
    assert scale.grad is not None and scale.grad != 0


def test_single_process_gather_is_identity():
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x


def _rank(rank, world, init, v_all, t_all, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    n = v_all.shape[0] // world
    v = v_all[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    t = t_all[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss = contrastive_loss(v, t, torch.tensor(12.0))
    loss.backward()
    out[rank] = (loss.detach(), v.grad, t.grad)
    dist.destroy_process_group()


def test_two_gloo_ranks_see_the_global_batch_and_send_gradients_home(tmp_path):
    world, v_all, t_all = 2, unit(8, 16, seed=7), unit(8, 16, seed=8)
    v_ref, t_ref = v_all.clone().requires_grad_(True), t_all.clone().requires_grad_(True)
    ref = contrastive_loss(v_ref, t_ref, torch.tensor(12.0))
    ref.backward()

    out = mp.Manager().dict()
    mp.spawn(_rank, args=(world, f"file://{tmp_path}/store", v_all, t_all, out), nprocs=world)
    for r in range(world):
        loss, gv, gt = out[r]
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6)  # every rank: the global loss
        # each rank holds world x its share of the global gradient; DDP's mean over ranks
        # then makes every weight's gradient exactly the global one
        sl = slice(r * 4, (r + 1) * 4)
        assert torch.allclose(gv, world * v_ref.grad[sl], atol=1e-6)
        assert torch.allclose(gt, world * t_ref.grad[sl], atol=1e-6)
