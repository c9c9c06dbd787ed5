"""Spread shards over DDP ranks x loader workers so every sample is read exactly once.

Each (rank, worker) pair is one *partition* of ``world_size * num_workers``. With at least as
many shards as partitions, partition ``p`` reads shards ``p, p + parts, ...`` (no tar is opened
twice). With fewer shards than partitions — where open_clip-style loaders hang or leave
workers empty — every partition reads every shard and keeps the samples that fall to it
(``keeps``): still exactly once, at the cost of reading small tars several times. (A *slot*
is something else: a batch buffer of the loader's ring, ``vtk.data.batches``.)
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


def worker() -> tuple[int, int]:
    """(this DataLoader worker's id, number of workers); (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def partition(rank: int, world_size: int, worker: int, workers: int) -> tuple[int, int]:
    """(this worker's partition, number of partitions)."""
    return rank * workers + worker, world_size * workers


def assign(shards: list[str], part: int, parts: int) -> tuple[list[str], bool]:
    """(shards this partition reads, whether it must also keep only its share of samples)."""
    if len(shards) >= parts:
        return shards[part::parts], False
    return list(shards), True


def keeps(shard: int, sample: int, part: int, parts: int) -> bool:
    """With fewer shards than partitions: whether sample ``sample`` of shard ``shard`` (its
    place in the pass's shard list) is this partition's. Staggered by shard, so small shards
    do not all feed partition 0."""
    return (shard + sample) % parts == part


def every_nth(samples, start: int, step: int):
    """Samples ``start, start + step, ...`` of a stream."""
    for i, sample in enumerate(samples):
        if i % step == start:
            yield sample
