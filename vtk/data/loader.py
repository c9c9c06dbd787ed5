"""``build_loader``: batches of clips and texts from a shard set, with the backend you name.

    >>> loader = build_loader("shards/train", frames=8, size=224, batch_size=32)
    >>> for batch in loader:            # one pass = one epoch; iterate again for the next
    ...     batch["video"]               # float32 B x T x 3 x 224 x 224, CLIP-normalised
    >>> loader.stats.as_dict()           # samples, corrupt, missing, tar_errors, oversized

Three paths, one batch format (``vtk.data.samples``):
- streaming (``backend`` pyav | decord | torchcodec): a webdataset pipeline per worker
  (``vtk.data.stream``);
- frame cache (``cache=PATH``): every clip decoded once into memory-mapped uint8 arrays, then
  sampled and transformed from memory every epoch (``vtk.data.cache``); for small corpora;
- DALI (``backend="dali"``): decode and transforms inside a DALI pipeline (``vtk.data.dali``).

Eval mode (``train=False``) is deterministic and yields every sample exactly once over all
ranks; train mode reshuffles every pass (seeded by ``seed`` and the pass number).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from pathlib import Path

import torch

from vtk.data import split
from vtk.data.batches import BufferPool, SlotRing, Tails
from vtk.data.cache import CachedClips, EpochSampler, build_frame_cache, build_once
from vtk.data.decoders import BACKENDS, available_decoders, get_decoder
from vtk.data.samples import CAPTION_MODES, collate
from vtk.data.shardset import resolve_shards
from vtk.data.stats import LoaderStats
from vtk.data.stream import ClipSpec, ShardStream, warm_up
from vtk.data.transforms import NORMS, normalize
from vtk.errors import VtkError
from vtk.shards.reader import MAX_SAMPLE_BYTES
from vtk.shards.wds_index import index_path
from vtk.workers import exit_with_parent


def dali_installed() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def pick_backend(backend: str = "auto", device: str | None = None, shards=()) -> str:
    """``auto``: DALI (GPU decode) on CUDA when installed and every shard has its ``.idx``,
    else the fastest installed CPU decoder (torchcodec > decord > pyav, by the
    single-thread decode speeds in docs/background.md)."""
    if backend != "auto":
        if backend != "dali" and backend not in BACKENDS:
            raise VtkError(f"unknown backend {backend!r}; choose auto, dali, {', '.join(BACKENDS)}")
        return backend
    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    indexed = all(Path(index_path(p)).is_file() for p in shards)
    if cuda and indexed and dali_installed():
        return "dali"
    return available_decoders()[0]


PREFETCH = 2  # batches each worker may have ready ahead of the consumer (torch's default)


def as_is(batch):
    return batch


def _worker_init(parent: int, worker_id: int) -> None:
    """A worker ends with the process that started it: torch's own check of its parent runs
    only between batches (every 5 s), and a worker blocked elsewhere outlived a SIGKILLed
    ``vtk train`` for good (``vtk.workers``)."""
    exit_with_parent(parent)


@contextlib.contextmanager
def _one_thread_of(get_threads, set_threads):
    before = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)


def opencv_serial(active: bool = True):
    """OpenCV on one thread while loader workers fork, so they inherit one thread each (a pool
    of their own would only contend for the cores the workers share). It has to be set here,
    in the parent: ``cv2.setNumThreads`` in a forked worker whose parent had used OpenCV's
    thread pool never returns (it waits on pool threads that do not exist in the child)."""
    if not active:
        return contextlib.nullcontext()
    import cv2

    return _one_thread_of(cv2.getNumThreads, cv2.setNumThreads)


def one_thread(active: bool):
    """Run the loader's many tiny per-clip ops on one intra-op thread. Spreading a 64 px crop
    over two OpenMP threads made it 5-20x slower on a busy 2-core machine; training gets its
    thread count back between batches."""
    if not active:
        return contextlib.nullcontext()
    return _one_thread_of(torch.get_num_threads, torch.set_num_threads)


class VideoLoader:
    """Iterable over batches; each ``iter()`` is one pass (epoch) over this rank's share.

    Streaming (a ``ShardStream``): the workers are started once and kept for every pass
    (``persistent_workers``; the epoch reaches them through shared memory), and write batches
    into a ring of shared slots that is handed to the consumer without a copy
    (``vtk.data.batches``); the workers' short last batches are joined here into whole ones.
    One pass at a time per loader with workers (as torch's persistent workers). Frame cache
    (map-style dataset): batches are collated in uint8 and normalised here into reused buffers.
    """

    def __init__(self, dataset, workers: int, stats: LoaderStats, backend: str,
                 norm: str | None = "clip", collate_fn=None, sampler=None, batch_size=None,
                 drop_last=False):
        self.dataset, self.workers, self.stats, self.backend = dataset, workers, stats, backend
        self._collate, self._sampler, self._batch_size = collate_fn, sampler, batch_size
        self.drop_last = drop_last
        self.norm = norm  # normalised here (frame cache); None: batches arrive final
        self.streaming = isinstance(dataset, ShardStream)
        self.epoch = 0
        self.ring: SlotRing | None = None
        self.unslotted = 0  # batches that missed the ring (a consumer keeping many batches)
        self._pool = BufferPool()  # a fresh float batch costs page faults per clip
        self._dl = None

    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._dl is None:
            if self.streaming and self.workers:  # made before the workers start, so they share it
                d = self.dataset  # (in-process, each batch gets its own buffer: no hand-over
                # to save, and two passes may then run side by side)
                self.ring = d.ring = SlotRing(self.workers, PREFETCH + 2, d.batch_size,
                                              d.spec.clip_shape, d.dtype)
            self._dl = torch.utils.data.DataLoader(
                self.dataset, batch_size=self._batch_size, sampler=self._sampler,
                # batch_size=None: ``collate_fn`` is the per-batch convert step; the default
                # walks every json dict of every batch (15% of the CPU at 64 px), ours passes it on
                collate_fn=self._collate or as_is, num_workers=self.workers,
                prefetch_factor=PREFETCH if self.workers else None,
                persistent_workers=self.streaming and self.workers > 0,
                drop_last=self.drop_last if self._sampler is not None else False,
                worker_init_fn=functools.partial(_worker_init, os.getpid()),
            )
        return self._dl

    def __iter__(self):
        self.dataset.epoch = self.epoch  # streaming: shared with the workers; cache: copied at fork
        if self._sampler is not None:
            self._sampler.epoch = self.epoch
        self.epoch += 1
        if self.workers > 0:
            # Free the parent's garbage before the fork: a worker that inherits it frees it
            # itself, and objects that own native threads (a PyAV frame's swscale context)
            # cannot be freed in a child that lacks those threads: it hangs.
            gc.collect()
        with opencv_serial(self.workers > 0):
            it = iter(self._dataloader())  # the first pass starts (forks) the workers
        tails = Tails(self.dataset.batch_size) if self.streaming else None
        while True:
            with one_thread(self.workers == 0):
                batch = next(it, None)
            if batch is None:
                break
            batch["video"] = self._output(batch)
            if tails is not None and len(batch["key"]) < tails.batch_size:
                batch = tails.add(batch)  # a worker's last batch of the pass
                if batch is None:
                    continue
            self.stats.add("samples", len(batch["key"]))
            yield batch
        last = tails.rest() if tails is not None else None
        if last is not None and not self.drop_last:
            self.stats.add("samples", len(last["key"]))
            yield last

    def _output(self, batch: dict) -> torch.Tensor:
        """The batch's video as the consumer gets it."""
        slot = batch.pop("slot", None)
        if slot is not None:
            return self.ring.hand_out(slot, len(batch["key"]))
        if self.ring is not None:  # every slot of that worker was taken: a fresh buffer
            self.unslotted += 1
        video = batch["video"]
        if self.norm is None:
            return video
        with one_thread(True):  # many small per-frame ops: threads only add contention
            return normalize(video, self.norm, out=self._pool.take(video.shape, torch.float32))

    def __len__(self):  # known only for the frame cache
        if self._sampler is None:
            raise TypeError("a streaming loader has no length")
        if self.drop_last:
            return len(self._sampler) // self._batch_size
        return -(-len(self._sampler) // self._batch_size)


def build_loader(shards, backend: str = "auto", frames: int = 8, size: int = 224,
                 train: bool = True, batch_size: int = 32, workers: int = 2,
                 captions: str = "fine", seed: int = 0, normalize: str = "clip",
                 cache=None, rank: int | None = None, world_size: int | None = None,
                 shuffle_buffer: int = 256, drop_last: bool = False, device: str | None = None,
                 uint8: bool = False, flip: str = "swap",
                 max_sample_bytes: int = MAX_SAMPLE_BYTES):
    """A ``VideoLoader`` over ``shards`` (folder, list of tars or brace pattern).

    ``captions``: coarse | fine | both (fused) | mixed (coarse or fine, drawn per visit) | txt.
    ``cache``: a folder for the decoded-frame cache (built on first use, then reused by every
    epoch and every run that names it). ``rank``/``world_size`` default to torch.distributed's.
    ``drop_last`` drops the pass's one short batch in training (never in eval); the workers'
    short last batches are joined first (``vtk.data.batches.Tails``). Streaming ranks read
    whole shards, so their batch counts may differ; ``vtk train`` counts steps, not epochs.
    ``flip``: training views are mirrored half the time; ``swap`` (default) also swaps "left"
    and "right" in their captions, ``plain`` mirrors pixels only (as ViCLIP), ``off`` never.
    ``uint8=True`` leaves ``video`` as uint8 B x T x 3 x S x S for the consumer to normalise on
    its device (``vtk.data.transforms.normalize(video.to(dev), normalize)``; ``vtk train``
    does so on CUDA): a quarter of the bytes to share and copy, and the float32 write (most of
    a worker's work on a clip beside decoding: docs/results/timings.md) moves to the GPU. The
    DALI path always normalises inside its pipeline.
    ``max_sample_bytes``: a sample whose tar members together declare more is skipped without
    being read and counted as ``oversized`` (streaming and the frame cache build).
    """
    if captions not in CAPTION_MODES:
        raise VtkError(f"unknown captions mode {captions!r}; choose one of {', '.join(CAPTION_MODES)}")
    if normalize not in NORMS:
        raise VtkError(f"unknown normalisation {normalize!r}; choose one of {', '.join(NORMS)}")
    paths = resolve_shards(shards)
    rank, world_size = split.dist_rank_world(rank, world_size)
    spec = ClipSpec(frames, size, train, captions, seed, normalize, flip)
    drop_last = drop_last and train
    if cache is not None:
        return _cached_loader(paths, cache, spec, batch_size, workers, rank, world_size,
                              drop_last, decoder=None if backend in ("auto", "dali") else backend,
                              uint8=uint8, max_sample_bytes=max_sample_bytes)
    backend = pick_backend(backend, device, paths)
    if backend == "dali":
        from vtk.data.dali import dali_loader

        return dali_loader(paths, spec, batch_size, rank, world_size, device=device)
    get_decoder(backend)  # fails here with the install hint, and imports the library before
    # the workers fork, so they do not each pay its import (seconds for torchcodec)
    warm_up(paths[0], backend, spec, max_sample_bytes)
    stats = LoaderStats()
    stream = ShardStream(paths, spec, backend, batch_size, stats, rank, world_size,
                         shuffle_buffer, uint8=uint8, max_sample_bytes=max_sample_bytes)
    return VideoLoader(stream, workers, stats, backend, norm=None,  # workers write final batches
                       drop_last=drop_last)


def _cached_loader(paths, root, spec, batch_size, workers, rank, world_size, drop_last,
                   decoder=None, uint8=False, max_sample_bytes=MAX_SAMPLE_BYTES):
    """The frame-cache path of ``build_loader``: builds the cache on first use (``workers``
    processes decode), then loads batches in the main process on small machines: a clip is cheap to
    read from the cache, and on 2 cores loader workers only fight the training step for the
    CPU (docs/results/timings.md)."""
    folder = build_once(lambda: build_frame_cache(
        paths, spec.size, root, backend=decoder or available_decoders()[0],
        workers=max(workers, 1), max_sample_bytes=max_sample_bytes))
    if (os.cpu_count() or 1) <= 4:
        workers = 0
    dataset = CachedClips(folder, spec)
    stats = LoaderStats()
    for s in dataset.skipped:
        stats.add(s.get("kind", "corrupt"))
    sampler = EpochSampler(len(dataset), rank, world_size, spec.train, spec.seed)
    return VideoLoader(dataset, workers, stats, "cache", None if uint8 else spec.normalize,
                       sampler=sampler,
                       collate_fn=collate, batch_size=batch_size, drop_last=drop_last)
