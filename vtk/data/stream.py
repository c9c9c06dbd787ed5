"""The streaming path: tars -> samples -> decoded, transformed clips -> batches, in workers.

Read top to bottom in ``ShardStream.__iter__``: shard list, split by rank and worker, the
pass order of the samples from their tar headers (shuffled in windows of shards, train;
``vtk.data.order``), each sample read by seeking to it and decoded into its place in a batch.
Each DataLoader worker runs the whole pipeline on its share and hands over finished batches
with its position (``vtk.data.batches.WorkerBatch``), so the loader can resume a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vtk import storage
from vtk.captions.layer import layer_of, load_layer, merge_layer
from vtk.curate.sidecar import load_sidecar, merge_scores
from vtk.data import order, split
from vtk.data.batches import BatchWriter, SlotRing
from vtk.data.decoders import get_decoder
from vtk.data.samples import (
    Uncaptioned,
    caption_rng,
    draw_flip,
    make_item,
    mirror_text,
    pick_caption,
    read_members,
    sample_rng,
)
from vtk.data.sampling import frame_indices
from vtk.data.stats import LoaderStats
from vtk.data.transforms import eval_crop, train_crop
from vtk.errors import VtkError
from vtk.shards.reader import MAX_SAMPLE_BYTES, problem_text, read_samples, skip_kind


@dataclass
class ClipSpec:
    """How each clip becomes a tensor and a text: what every loader path shares."""

    frames: int = 8
    size: int = 224
    train: bool = True
    captions: str = "fine"
    seed: int = 0
    normalize: str = "clip"
    flip: str = "swap"  # swap: mirror and swap left/right in the text | plain | off
    fit: str = "center"  # eval: center (short side, centre square) | full (whole frame, squashed)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, 3, self.size, self.size)

    def crop(self, frames: torch.Tensor, rng: np.random.Generator,
             flip: bool | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 T x H x W x 3 -> T x 3 x size x size, written into ``out`` when given: uint8,
        or normalised (``self.normalize``) when ``out`` is float."""
        norm = self.normalize if out is not None and out.is_floating_point() else None
        if self.train:
            return train_crop(frames, self.size, rng, flip=flip, out=out, norm=norm)
        return eval_crop(frames, self.size, out=out, norm=norm, whole=self.fit == "full")

    def view(self, key: str, frames: torch.Tensor, meta: dict, txt: str | None,
             rng: np.random.Generator, epoch: int, out: torch.Tensor | None = None) -> dict:
        """One batch item: the clip's frames cropped (and maybe mirrored) with its caption;
        with ``flip="swap"`` a mirrored view's caption says right where it said left.
        ``rng`` draws the flip and crop; the caption has its own (``caption_rng``).
        ``out``: where the cropped clip goes (its slot in the batch)."""
        flip, item = self.describe(key, meta, txt, rng, epoch)
        item["video"] = self.crop(frames, rng, flip=flip, out=out)
        return item

    def describe(self, key: str, meta: dict, txt: str | None, rng: np.random.Generator,
                 epoch: int) -> tuple[bool, dict]:
        """The first half of ``view``: whether the view is mirrored, and its item without the
        video. It reads only the sample's json and txt, so what it raises is the sample's."""
        flip = self.train and draw_flip(self.flip, rng)
        text = pick_caption(meta, txt, self.captions,
                            caption_rng(self.seed, epoch, key, self.captions))
        if flip and self.flip == "swap":
            text = mirror_text(text)
        return flip, make_item(key, None, text, meta)



class ShardStream(torch.utils.data.IterableDataset):
    """``WorkerBatch``es from tar shards: ``video`` float32 normalised, or uint8 with
    ``uint8=True``. Made by the loader (``vtk.data.loader.VideoLoader.streaming``), which owns
    the shared pass state this reads at the start of each pass (the epoch, and where each
    worker resumes) and the ring of batch slots the workers write into (``vtk.data.batches``).
    A sample over ``max_sample_bytes`` is skipped unread and counted as ``oversized``.
    """

    def __init__(self, shards: list[str], spec: ClipSpec, backend: str, batch_size: int,
                 stats: LoaderStats, rank: int, world_size: int, shuffle_buffer: int = 256,
                 uint8: bool = False, max_sample_bytes: int = MAX_SAMPLE_BYTES,
                 workers: int = 0, ring: SlotRing | None = None, probs=None,
                 num_samples: int | None = None, div: dict | None = None):
        self.shards, self.spec, self.backend = shards, spec, backend
        self.max_sample_bytes = max_sample_bytes
        self.batch_size = batch_size
        self.stats, self.rank, self.world_size = stats, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.dtype = torch.uint8 if uint8 else torch.float32
        self.workers = max(workers, 1)
        self.ring = ring
        # resampled: each shard's draw probability, and the samples of an epoch (all ranks)
        self.probs, self.num_samples = probs, num_samples
        self.div = div  # --sampling div: clips per source id (vtk.data.order.keep_div)
        # shared with persistent workers: [epoch, rotation], and per worker [group, index]
        self._pass = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._starts = torch.zeros((self.workers, 3), dtype=torch.int64).share_memory_()
        self._decoder = None
        self._listings: order.Listings | None = None  # each worker's own, made there
        self._sidecar: dict = {}  # scores by key, of the shards this pass read
        self._layer_name = layer_of(spec.captions)  # a caption layer the captions come from
        self._layer: dict = {}  # that layer's captions by key, likewise
        self._pass_epoch = 0
        self._report_tars = True

    @property
    def epoch(self) -> int:
        return int(self._pass[0])

    def set_pass(self, epoch: int, starts: dict | None = None, rotation: int = 0) -> None:
        """What the next pass reads (the loader, before it starts one): its epoch, and for a
        resumed pass each worker's position and which worker's batch comes first."""
        self._pass[0], self._pass[1] = epoch, rotation
        self._starts.zero_()
        for w, pos in (starts or {}).items():
            self._starts[int(w)] = torch.tensor([*(int(v) for v in pos), 0, 0][:3])

    def __iter__(self):
        worker, workers = split.worker()
        epoch, rotation = int(self._pass[0]), int(self._pass[1])
        # a resumed pass begins with the batch of the worker that was next: DataLoader asks
        # its workers in turn from worker 0, so worker w plays the part of worker w + rotation
        me = (worker + rotation) % workers
        start = tuple(int(v) for v in self._starts[me])  # (group, index, taken)
        if self.ring is not None:
            self.ring.start_pass()
        self._pass_epoch = epoch  # this pass's, whatever the loader sets next
        self._sidecar, self._layer = {}, {}  # sidecars are looked up again each pass
        part, parts = split.partition(self.rank, self.world_size, me, workers)
        shards = list(self.shards)
        if self.spec.train:  # the same permutation in every partition, so the split is exact
            np.random.default_rng([self.spec.seed, epoch]).shuffle(shards)
        mine, by_sample = split.assign(shards, part, parts)
        # fewer shards than partitions: every partition reads every shard, so one reports its
        # damage (partition 0, on rank 0: summed over ranks, the count is right)
        self._report_tars = not by_sample or part == 0
        limit = (order.quota(self.num_samples, self.rank, self.world_size, me, workers)
                 if self.probs is not None else float("inf"))
        samples = self._samples(mine, by_sample, part, parts, epoch, start, limit)
        return self._decode_batches(samples, me, start)

    # -- stages ------------------------------------------------------------------------------

    def _samples(self, mine, by_sample, part, parts, epoch, start, limit):
        """(position after it, sample) for this partition's samples in pass order, from
        ``start`` on (``vtk.data.order``): earlier groups are never opened, earlier samples
        of the start group never read. A position is (group, index in the group's order,
        samples yielded); resampled, a group is one shard drawn with replacement and the pass
        ends after ``limit`` samples."""
        size = 1  # shards per group
        if self.probs is not None:  # resampled: draw g is a shard of all the sets
            def group(g):
                return [self.shards[order.draw_shard(self.probs, self.spec.seed, epoch, part, g)]]
            groups = None
        elif mine:
            size = order.group_size(len(self._scan(mine[0], report=False)), self.shuffle_buffer)

            def group(g):
                return mine[g * size:(g + 1) * size]
            groups = -(-len(mine) // size)
        else:
            groups = 0
        div = self.div
        fewest = min(div.values()) if div else 1
        g, first_index, taken = start
        empty = 0  # resampled draws in a row that gave nothing (every shard unreadable?)
        while taken < limit and (groups is None or g < groups):
            entries = []
            for s, tar in enumerate(group(g), start=g * size):
                found = self._scan(tar, report=True)
                entries += [e for j, e in enumerate(found)
                            if not by_sample or groups is None or split.keeps(s, j, part, parts)]
            ids = (order.permutation(len(entries), self.spec.seed, epoch, part, g)
                   if self.spec.train else range(len(entries)))
            files: dict[str, object] = {}
            before = taken
            try:
                for i in range(first_index, len(entries)):
                    entry = entries[ids[i]]
                    if div and not order.keep_div(div.get(order.source_of(entry.key), 1),
                                                  fewest, self.spec.seed, epoch, part, g, i):
                        continue
                    try:
                        f = files.get(entry.url) or files.setdefault(
                            entry.url, storage.open_random(entry.url))
                        sample = order.read_entry(f, entry)
                    except (OSError, EOFError) as e:
                        if self._report_tars:
                            self.stats.skip("tar_errors", entry.url, f"unreadable tar data ({e})")
                        continue
                    taken += 1
                    yield (g, i + 1, taken), sample
                    if taken >= limit:
                        break
            finally:
                for f in files.values():
                    f.close()
            empty = empty + 1 if taken == before else 0
            if groups is None and empty > max(100, 10 * len(self.shards)):
                raise VtkError(f"{empty} shard draws in a row gave no readable sample "
                               f"(shards like {self.shards[0]})")
            g, first_index = g + 1, 0
        yield (g, 0, taken), None  # the end: nothing left to resume

    def _scan(self, tar: str, report: bool) -> list:
        """The tar's samples (``order.Listings``: listed once in this worker, kept for later
        passes); what is wrong with the tar is counted in every pass that reads it."""
        if self._listings is None:
            self._listings = order.Listings(self.max_sample_bytes)
        listing = self._listings(tar)
        if report and self._report_tars:
            for problem in listing.problems:  # go on with what was whole
                self.stats.skip("tar_errors", tar, problem)
        return listing.entries

    def _decode_batches(self, samples, worker: int, start):
        """Decode each sample straight into its place in the batch being filled."""
        writer = BatchWriter(self.batch_size, self.spec.clip_shape, self.dtype, self.ring,
                             worker=worker, start=start)
        pos = start
        for pos, sample in samples:
            if sample is None:
                break
            key = sample.get("__key__", "?")
            where = f"{key} in {sample.get('__url__', '?')}"
            kind = skip_kind(sample)
            if kind is not None:  # oversized or unsafe: its data was never read
                self.stats.skip(kind, where, problem_text(sample))
                continue
            if "mp4" not in sample:
                self.stats.skip("missing", where, "no mp4 member")
                continue
            out = writer.clip_out()  # outside the try: a failure here is no sample's fault
            try:
                key, frames, meta, txt, rng, epoch = self.read(sample)
                flip, item = self.spec.describe(key, meta, txt, rng, epoch)
            except VtkError:
                raise
            except Uncaptioned as e:  # its caption failed when it was made: nothing to train on
                self.stats.skip("uncaptioned", where, e)
                continue
            except Exception as e:  # corrupt mp4 or json: skip it, training goes on
                self.stats.skip("corrupt", where, f"{type(e).__name__}: {e}")
                continue
            item["video"] = self.spec.crop(frames, rng, flip=flip, out=out)  # errors: ours
            batch = writer.add(item, pos)
            if batch is not None:
                yield batch
        last = writer.flush(pos)  # the loader joins the workers' short last batches
        if last is not None:
            yield last

    def _scores(self, tar) -> dict:
        """``vtk score``'s sidecar of this shard (``vtk.curate.sidecar``), {} without one:
        its scores appear in each sample's ``meta["scores"]``."""
        return _per_tar(self._sidecar, tar, lambda: load_sidecar(tar))

    def _captions(self, tar) -> dict:
        """The caption layer's sidecar of this shard (``vtk.captions.layer``), {} without one."""
        return _per_tar(self._layer, tar, lambda: load_layer(tar, self._layer_name))

    def read(self, sample: dict) -> tuple:
        """Parse and decode one raw tar sample: the arguments of ``ClipSpec.view`` but ``out``.
        Errors here are the sample's (a corrupt mp4 or json)."""
        if self._decoder is None:  # one per worker process, created there
            self._decoder = get_decoder(self.backend)
        key = sample["__key__"]
        meta, txt = read_members(sample)
        meta = merge_scores(meta, self._scores(sample.get("__url__")).get(key))
        if self._layer_name is not None:
            meta = merge_layer(meta, self._layer_name, self._captions(sample.get("__url__"))
                               .get(key))
        rng = sample_rng(self.spec.seed, self._pass_epoch, key)
        t, train = self.spec.frames, self.spec.train
        frames, _ = self._decoder.decode(sample["mp4"], lambda n: frame_indices(n, t, train, rng))
        return key, frames, meta, txt, rng, self._pass_epoch


def _per_tar(kept: dict, tar, load) -> dict:
    """A shard's sidecar rows, looked up once per pass: the samples of a group come from up
    to ``order.MAX_GROUP`` shards in turn, and each lookup is a ``stat`` (the pass start
    clears ``kept``, so a sidecar written meanwhile is read in the next pass)."""
    rows = kept.get(tar)
    if rows is None:
        if len(kept) >= 2 * order.MAX_GROUP:
            del kept[next(iter(kept))]
        rows = kept[tar] = (load() or {}) if tar else {}
    return rows


def warm_up(tar: str, backend: str, spec: ClipSpec,
            max_sample_bytes: int = MAX_SAMPLE_BYTES) -> None:
    """Decode and crop one clip in the main process before the workers fork. The first call
    into a decoder and into torch's resize kernels sets up state that every forked worker then
    inherits; without it each worker paid seconds at the start of the first epoch (torchcodec)."""
    from contextlib import closing

    try:
        with closing(read_samples(tar, max_sample_bytes)) as samples:
            data = next(s["mp4"] for s in samples if "mp4" in s)
        frames, _ = get_decoder(backend).decode(data, [0])
        spec.crop(frames, np.random.default_rng(0))  # uint8, and normalised float below
        spec.crop(frames, np.random.default_rng(0), out=torch.empty((1, *spec.clip_shape[1:])))
    except Exception:  # a bad first sample is the loader's business, not the warm-up's
        pass
