"""How a model is spread over the ranks of a torchrun job: DDP (every rank holds the whole
model and averages gradients) or FSDP (``--fsdp``: torch's ``fully_shard``, FSDP2, shards
parameters, gradients and optimiser state over the ranks, each transformer block a unit), and
the checkpoint parts that gather an FSDP model's state whole, so that a checkpoint is the same
file whichever way the run was spread."""

from __future__ import annotations

import contextlib

import torch

from vtk.train import dist


def wrap(model: torch.nn.Module, d: dist.Dist, fsdp: bool) -> torch.nn.Module:
    """The module the training step calls: ``model`` itself on one rank, else DDP or FSDP."""
    if d.world == 1:
        return model
    if not fsdp:
        ids = [d.device.index] if d.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for layer in blocks(model):  # each block a unit: one all-gather at a time
        fully_shard(layer)
    fully_shard(model)  # the rest (embeddings, norms, projections, the logit scale)
    return model


def blocks(model) -> list:
    """The transformer blocks of the video tower and of a text tower built on transformers'
    encoders (CLIP's text model, BERT's MiniLM, the tiny tower), in order."""
    out = list(model.video.encoder.layers)
    for path in (("backbone", "encoder", "layers"), ("backbone", "encoder", "layer"),
                 ("encoder", "layers"), ("encoder", "layer")):
        module = model.text
        for name in path:
            module = getattr(module, name, None)
        if module is not None:
            return out + list(module)
    return out


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def grad_sync(net: torch.nn.Module, sync: bool):
    """A context for one micro-batch's backward: gradients are reduced over the ranks only
    when ``sync`` (the last micro-batch of an accumulated step)."""
    if isinstance(net, torch.nn.parallel.DistributedDataParallel) and not sync:
        return net.no_sync()
    if is_sharded(net):
        net.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def full(t: torch.Tensor) -> torch.Tensor:
    """A tensor whole: an FSDP parameter's shards gathered (a collective: every rank calls)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


class ShardedWeights:
    """An FSDP model's persistent weights, gathered whole on every rank to save and sharded
    again on load: the checkpoint part ``model`` (``checkpoint.Weights`` for DDP)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        whole = get_model_state_dict(self.model, options=_options())
        keep = self.model.persistent_state_dict().keys()  # a frozen pretrained tower: not saved
        return {k: v for k, v in whole.items() if k in keep}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        missing, unexpected = set_model_state_dict(
            self.model, state, options=StateDictOptions(full_state_dict=True, strict=False))
        skip = tuple(f"text.{p}." for p in getattr(self.model.text, "external", ()))
        missing = [k for k in missing if not k.startswith(skip)]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")


class ShardedOptimizer:
    """An optimiser over FSDP parameters, its state gathered whole (keyed by parameter name)
    to save and sharded again on load: the checkpoint part ``optimizer``."""

    def __init__(self, model, opt):
        self.model, self.opt = model, opt

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, self.opt, options=_options())

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(self.model, self.opt, state,
                                 options=StateDictOptions(full_state_dict=True))
