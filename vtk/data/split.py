"""Spread shards over DDP ranks x loader workers so every sample is read exactly once.

Each (rank, worker) pair is one *slot* of ``world_size * num_workers``. With at least as many
shards as slots, slot ``s`` reads shards ``s, s + slots, ...`` (no tar is opened twice). With
fewer shards than slots — where open_clip-style loaders hang or leave workers empty — every slot
reads every shard and keeps samples ``s, s + slots, ...`` of the stream: still exactly once,
at the cost of reading small tars several times.
"""

from __future__ import annotations

import torch


def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit values win; otherwise torch.distributed's when initialised; else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def slot(rank: int, world_size: int) -> tuple[int, int]:
    """(this worker's slot, number of slots) inside a DataLoader worker or the main process."""
    info = torch.utils.data.get_worker_info()
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nw + wid, world_size * nw


def assign(shards: list[str], my_slot: int, slots: int) -> tuple[list[str], bool]:
    """(shards this slot reads, whether it must also keep every ``slots``-th sample only)."""
    if len(shards) >= slots:
        return shards[my_slot::slots], False
    return list(shards), True


def every_nth(samples, start: int, step: int):
    """Samples ``start, start + step, ...`` of a stream."""
    for i, sample in enumerate(samples):
        if i % step == start:
            yield sample
