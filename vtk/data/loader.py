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
import copy
import functools
import gc
import os
from pathlib import Path

import torch

from vtk.captions.layer import layer_of, load_layer
from vtk.data import order, split
from vtk.data.batches import BufferPool, Part, SlotRing, Tails, WorkerBatch, slot_reuse_available
from vtk.data.cache import CachedClips, EpochSampler, build_frame_cache, build_once
from vtk.data.decoders import BACKENDS, available_decoders, get_decoder
from vtk.data.samples import CAPTION_MODES, caption_failure, collate
from vtk.data.shardset import resolve_shards
from vtk.data.stats import LoaderStats
from vtk.data.stream import ClipSpec, ShardStream, warm_up
from vtk.data.transforms import NORMS, normalize
from vtk.errors import VtkError
from vtk.shards.reader import MAX_SAMPLE_BYTES
from vtk.shards.wds_index import index_path
from vtk.types import is_caption_name
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


SAMPLINGS = ("uniform", "div")
CROPS = ("center", "full")  # eval: centre square | whole frame squashed (InternVid)

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
    """Iterable over batches; each ``iter()`` is one pass (epoch) over this rank's share, and
    ``state_dict()`` / ``load_state_dict()`` (torchdata's ``Stateful`` protocol) save and
    restore the place in a pass, so that a resumed pass hands out exactly the batches the
    uninterrupted one would have, without decoding a clip it skips (docs/loader.md, "Resume").

    Streaming (``VideoLoader.streaming``): the workers are started once and kept for every
    pass (``persistent_workers``; the pass state reaches them through shared memory), and write
    batches into the loader's ring of shared slots, handed to the consumer without a copy
    (``vtk.data.batches``); the workers' short last batches are joined here into whole ones.
    One pass at a time per loader with workers (as torch's persistent workers). Frame cache
    (map-style dataset): batches are collated in uint8 and normalised here into reused buffers.
    """

    def __init__(self, dataset, workers: int, stats: LoaderStats, backend: str,
                 norm: str | None = "clip", collate_fn=None, sampler=None, batch_size=None,
                 drop_last=False, ring: SlotRing | None = None, context: str | None = None):
        self.dataset, self.workers, self.stats, self.backend = dataset, workers, stats, backend
        self._collate, self._sampler, self._batch_size = collate_fn, sampler, batch_size
        self.drop_last = drop_last
        self.norm = norm  # normalised here (frame cache); None: batches arrive final
        self.streaming = isinstance(dataset, ShardStream)
        self.epoch = 0
        self.ring = ring
        self.context = context  # the workers' start method (None: the platform's default)
        self.unslotted = 0  # batches that missed the ring (a consumer keeping many batches)
        self._pool = BufferPool()  # a fresh float batch costs page faults per clip
        self._dl = None
        self._forked = False  # the persistent workers have been started
        self._state: dict | None = None  # where the pass in progress stands
        self._resume: dict | None = None  # where the next pass starts (load_state_dict)

    @classmethod
    def streaming(cls, paths, spec: ClipSpec, backend: str, batch_size: int, workers: int,
                  rank: int, world_size: int, shuffle_buffer: int = 256, uint8: bool = False,
                  max_sample_bytes: int = MAX_SAMPLE_BYTES, drop_last: bool = False,
                  context: str | None = None, probs=None, num_samples: int | None = None,
                  div: dict | None = None) -> VideoLoader:
        """The streaming loader and its ``ShardStream``, with the ring of batch slots the
        workers write into: made here, before the workers start, so that they share it.
        In-process (``workers=0``) each batch gets a buffer of its own: there is no hand-over
        to save, and two passes may then run side by side."""
        dtype = torch.uint8 if uint8 else torch.float32
        ring = None
        if workers and slot_reuse_available():
            ring = SlotRing(workers, PREFETCH + 2, batch_size, spec.clip_shape, dtype)
        stats = LoaderStats(max(workers, 1))
        stream = ShardStream(paths, spec, backend, batch_size, stats, rank, world_size,
                             shuffle_buffer, uint8=uint8, max_sample_bytes=max_sample_bytes,
                             workers=workers, ring=ring, probs=probs,
                             num_samples=num_samples, div=div)
        return cls(stream, workers, stats, backend, norm=None,  # workers write final batches
                   drop_last=drop_last, ring=ring, context=context)

    # -- torchdata's Stateful protocol --------------------------------------------------------

    def state_dict(self) -> dict:
        """Where the next batch comes from: ``{"epoch": e}`` at a pass's start; inside a pass
        also, streaming, each worker's position (``vtk.data.order``), the worker whose batch
        is next and the short batches waiting to be joined, or, frame cache, the batches
        handed out. Plain ints and lists: it goes into checkpoint.pt and JSON as it is."""
        if self._resume is not None:
            return copy.deepcopy(self._resume)
        if self._state is not None:
            return copy.deepcopy(self._state)
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """The next ``iter()`` resumes at ``state`` (from ``state_dict``)."""
        state = copy.deepcopy(dict(state))
        if "epoch" not in state:
            raise VtkError(f"not a loader state (no epoch): {sorted(state)}")
        saved = state.get("workers")
        if saved is not None and len(saved) != max(self.workers, 1):
            raise VtkError(f"the data position was saved with {len(saved)} loader workers and "
                           f"this loader has {max(self.workers, 1)}: resume with --workers "
                           f"{len(saved) if len(saved) > 1 else 0}")
        if "batches" in state and self.streaming or saved is not None and not self.streaming:
            raise VtkError("the data position was saved by another loader path (streaming vs "
                           "--cache): resume with the options the run began with")
        self.epoch, self._state, self._resume = int(state["epoch"]), None, state

    # -- passes -------------------------------------------------------------------------------

    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._dl is None:
            self._dl = torch.utils.data.DataLoader(
                self.dataset, batch_size=self._batch_size, sampler=self._sampler,
                # batch_size=None: ``collate_fn`` is the per-batch convert step; the default
                # walks every json dict of every batch (15% of the CPU at 64 px), ours passes it on
                collate_fn=self._collate or as_is, num_workers=self.workers,
                prefetch_factor=PREFETCH if self.workers else None,
                persistent_workers=self.streaming and self.workers > 0,
                drop_last=self.drop_last if self._sampler is not None else False,
                worker_init_fn=functools.partial(_worker_init, os.getpid()),
                multiprocessing_context=self.context if self.workers else None,
            )
        return self._dl

    def _start_workers(self):
        if self.workers > 0 and not self._forked:
            # Free the parent's garbage before a fork: a worker that inherits it frees it
            # itself, and objects that own native threads (a PyAV frame's swscale context)
            # cannot be freed in a child that lacks those threads: it hangs. Only before a
            # fork: a full collection costs 0.1 s beside a loaded model, every pass.
            gc.collect()
            self._forked = self.streaming  # persistent workers: no later pass forks
        with opencv_serial(self.workers > 0):
            return iter(self._dataloader())  # the first pass starts (forks) the workers

    def _next(self, it):
        with one_thread(self.workers == 0):
            return next(it, None)

    def __iter__(self):
        resume, self._resume = self._resume, None
        epoch = int(resume["epoch"]) if resume is not None else self.epoch
        self.epoch = epoch + 1
        self._state = {**(resume or {}), "epoch": epoch}  # until the first batch is out
        if self.streaming:
            return self._stream_pass(epoch, resume or {})
        return self._map_pass(epoch, int((resume or {}).get("batches", 0)))

    def _map_pass(self, epoch: int, done: int):
        self.dataset.epoch = self._sampler.epoch = epoch  # the dataset's is copied at fork
        # batches handed out: never loaded again (read when the sampler's iterator starts)
        self._sampler.skip = done * self._batch_size
        self._state = {"epoch": epoch, "batches": done}
        it = self._start_workers()
        while (batch := self._next(it)) is not None:
            batch["video"] = self._normalised(batch["video"])
            done += 1
            self._state = {"epoch": epoch, "batches": done}
            self.stats.add("samples", len(batch["key"]))
            yield batch
        self._state = None

    def _stream_pass(self, epoch: int, resume: dict):
        workers = max(self.workers, 1)
        saved = resume.get("workers")
        starts = dict(enumerate(saved)) if saved is not None else {}
        nxt = int(resume.get("next", 0))
        self.dataset.set_pass(epoch, starts, rotation=nxt)
        pos = [list(starts.get(w, (0, 0, 0))) for w in range(workers)]
        tails = Tails(self.dataset.batch_size, expect=resume.get("tails", ()))

        def mark():
            self._state = {"epoch": epoch, "workers": [list(p) for p in pos], "next": nxt,
                           "tails": tails.pending()}

        mark()
        it = self._start_workers()
        while (got := self._next(it)) is not None:
            batch = self._output(got)
            nxt = (got.worker + 1) % workers
            if len(got) < tails.batch_size:  # a worker's last batch of the pass
                batch = tails.add(Part(batch, got.worker, got.end))
                for w, end in tails.finished():
                    pos[w] = list(end)
            else:
                pos[got.worker] = list(got.end)
            mark()
            if batch is None:
                continue
            self.stats.add("samples", len(batch["key"]))
            yield batch
        last = tails.rest()
        self._state = None  # the pass is over: the next starts at epoch + 1
        if last is not None and not self.drop_last:
            self.stats.add("samples", len(last["key"]))
            yield last

    def _output(self, got: WorkerBatch) -> dict:
        """A worker's batch as the consumer gets it: its slot handed out, or its own tensor."""
        batch = dict(got.fields)
        if got.slot is not None:
            batch["video"] = self.ring.hand_out(got.slot, len(got))
            return batch
        if self.ring is not None:  # every slot of that worker was taken: a fresh buffer
            self.unslotted += 1
        batch["video"] = got.video
        return batch

    def _normalised(self, video: torch.Tensor) -> torch.Tensor:
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
                 max_sample_bytes: int = MAX_SAMPLE_BYTES, context: str | None = None,
                 resampled: bool = False, num_samples: int | None = None,
                 weights=None, sampling: str = "uniform", crop: str = "center"):
    """A ``VideoLoader`` over ``shards`` (folder, list of tars or brace pattern).

    ``captions``: coarse | fine | both (fused) | mixed (coarse or fine, drawn per visit) | txt,
    or a caption by name: ``vlm`` (``vtk shard --vlm-model``) or a caption layer ``NAME`` /
    ``NAME.fine`` (``vtk caption --as NAME``; streaming only), merged in per shard.
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
    ``context``: the loader workers' start method (fork, spawn, forkserver; None: Python's
    default for the platform).
    ``crop`` (eval): ``center`` resizes the short side and keeps the centre square, ``full``
    resizes the whole frame to the square, aspect not kept (InternVid's test transform).

    Sampling for large corpora (streaming, training; docs/training.md, "What an epoch is"):
    ``resampled=True`` draws shards with replacement and an epoch is ``num_samples`` samples
    over all ranks (webdataset's and open_clip's resampled shards). ``weights``: ``shards`` is
    a list of shard sets and set ``k`` gets that share of the draws (implies ``resampled``).
    ``sampling="div"``: each clip is kept with probability proportional to 1 / (clips of its
    source video), as InternVid-10M-DIV (``vtk.data.order.keep_div``; the source id is the
    key's part before its clip index). Every mode resumes exactly.
    """
    if not is_caption_name(captions):
        raise VtkError(f"unknown captions mode {captions!r}; choose one of "
                       f"{', '.join(CAPTION_MODES)} or a caption name (a layer: vtk caption)")
    if normalize not in NORMS:
        raise VtkError(f"unknown normalisation {normalize!r}; choose one of {', '.join(NORMS)}")
    if sampling not in SAMPLINGS:
        raise VtkError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    sets = list(shards) if weights is not None else [shards]
    per_set = [resolve_shards(s) for s in sets]
    paths = [p for ps in per_set for p in ps]
    resampled = resampled or weights is not None
    probs = None
    if resampled:
        if not train or cache is not None or backend == "dali":
            raise VtkError("--resampled / --data-weights draw shards with replacement in the "
                           "streaming training loader: not with --cache, --backend dali or eval")
        if not num_samples:
            raise VtkError("--resampled / --data-weights: an epoch has no end of its own; give "
                           "--train-num-samples N (samples per epoch, all ranks)")
        if weights is not None and len(weights) != len(sets):
            raise VtkError(f"--data-weights has {len(weights)} weights for {len(sets)} shard "
                           "sets: give one per set")
        try:
            probs = order.shard_probs([len(ps) for ps in per_set], weights)
        except ValueError as e:
            raise VtkError(f"--data-weights: {e}") from None
    div = None
    if sampling == "div":  # clips per source, from the tar headers of every shard
        div = order.source_counts(e.key for p in paths
                                  for e in order.scan_samples(p, max_sample_bytes))
    rank, world_size = split.dist_rank_world(rank, world_size)
    if crop not in CROPS:
        raise VtkError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
    if layer_of(captions) is not None:
        check_named_captions(paths[0], captions, streaming=cache is None and backend != "dali")
    spec = ClipSpec(frames, size, train, captions, seed, normalize, flip, crop)
    drop_last = drop_last and train
    if cache is not None:
        if crop != "center" and not train:
            raise VtkError("--crop full: the frame cache stores centre squares; evaluate "
                           "without --cache")
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
    return VideoLoader.streaming(paths, spec, backend, batch_size, workers, rank, world_size,
                                 shuffle_buffer, uint8=uint8, max_sample_bytes=max_sample_bytes,
                                 drop_last=drop_last, context=context, probs=probs,
                                 num_samples=num_samples, div=div)


def check_named_captions(tar: str, captions: str, streaming: bool = True) -> None:
    """A caption asked for by name must be somewhere before the loader starts: a caption layer
    of that name beside the first shard (read by the streaming loader only), or a caption of
    that name in its first sample's json (``vlm``). A VtkError line otherwise."""
    from contextlib import closing

    from vtk.data.samples import read_members
    from vtk.shards.reader import read_samples

    layer = layer_of(captions)
    if load_layer(tar, layer) is not None:
        if not streaming:
            raise VtkError(f"--captions {captions}: caption layers are read by the streaming "
                           f"loader; train on them without --cache and --backend dali")
        return
    try:
        with closing(read_samples(tar)) as samples:
            meta, _ = read_members(next(s for s in samples if "json" in s))
        caps, failed = meta.get("captions") or {}, meta.get("caption_errors") or {}
        if captions in caps or captions in failed:
            return
        have = sorted(caps)
    except (StopIteration, ValueError, OSError):
        return  # an unreadable first sample: the loader reports it in its place
    raise VtkError(f"--captions {captions}: no caption layer {layer!r} (vtk caption DIR --as "
                   f"{layer} ...) and the samples have no {captions!r} caption (they have "
                   f"{', '.join(have) or 'none'})")


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
    kept = []
    for c in dataset.clips:  # a clip whose caption failed when it was made: nothing to train on
        failed = caption_failure(c["meta"], spec.captions)
        if failed:
            stats.skip("uncaptioned", c["key"], failed)
        else:
            kept.append(c)
    dataset.clips = kept
    sampler = EpochSampler(len(dataset), rank, world_size, spec.train, spec.seed)
    return VideoLoader(dataset, workers, stats, "cache", None if uint8 else spec.normalize,
                       sampler=sampler,
                       collate_fn=collate, batch_size=batch_size, drop_last=drop_last)
