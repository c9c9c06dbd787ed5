"""The DALI path: decoding, crops and normalisation inside a DALI pipeline, fed by vtk.

    tars --vtk (host)---------------> mp4 bytes of this rank's share, in the pass's order,
                                      and each clip's frame picks, flip and crop box
         --fn.external_source-------> the pipeline's inputs, a batch per iteration
         --fn.decoders.video--------> F x H x W x 3 uint8 (device="mixed": NVDEC on the GPU)
         --fn.sequence_rearrange----> the T frames picked (ViCLIP's segment sampling)
         --fn.resize (crop box) + crop_mirror_normalize--> T x 3 x S x S float
         --DALIGenericIterator------> torch tensors -> vtk batch dicts

On a GPU (``device="mixed"``) H.264 shards decode on NVDEC and frames never visit the CPU.
Without one, DALI's CPU video decoder handles VP8, VP9 and MJPEG only, so CPU use needs shards
built with ``vtk shard --codec vp9``.

vtk reads the samples (``vtk.data.order``: the ``.idx`` beside each tar, or its headers) and
draws every random choice on the host from ``(seed, epoch, key)``, as the streaming path does
(same frames, same flip, same crop box), instead of DALI's reader and random operators. So a
pass is a pure function of its epoch: ``state_dict()`` is (epoch, next sample of the pass
order, clips found undecodable in this pass), and a resumed loader feeds DALI from there,
with nothing skipped read or decoded. (DALI's own checkpoints do not cover
``fn.decoders.video`` as of DALI 2.4.) The share of a rank is a contiguous range of the
samples of all tars in order, ``[N*r/S, N*(r+1)/S)``, permuted per epoch in training.

A corrupt mp4 stops a DALI pipeline for good. The loader then finds the clip among that
batch's (PyAV tries each; if PyAV decodes them all, the whole batch is dropped), counts and
warns about it, and rebuilds the pipeline from that batch's first sample without it.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import torch

from vtk import storage
from vtk.data import order
from vtk.data.samples import (
    caption_rng,
    draw_flip,
    mirror_text,
    pick_caption,
    read_members,
    sample_rng,
)
from vtk.data.sampling import frame_indices
from vtk.data.stats import LoaderStats
from vtk.data.transforms import NORMS, random_resized_box
from vtk.errors import VtkError, require
from vtk.shards.reader import skip_kind
from vtk.shards.wds_index import index_path, read_index

CPU_CODECS = ("vp8", "vp9", "mjpeg")


def rank_share(samples: list, rank: int, world_size: int) -> list:
    """DALI's split of a reader's samples over ``num_shards``: contiguous, [N*r/S, N*(r+1)/S)."""
    n = len(samples)
    return samples[n * rank // world_size:n * (rank + 1) // world_size]


def shard_codec(paths: list[str]) -> str | None:
    """The codec recorded in the first sample's json (the shard writer stores it); read with
    the bounded reader, so a huge first member is not read to find it."""
    from contextlib import closing

    from vtk.shards.reader import read_samples

    with closing(read_samples(paths[0])) as samples:
        for s in samples:
            if "json" in s:
                meta = json.loads(s["json"])
                return meta.get("codec") if isinstance(meta, dict) else None
    return None


class DaliLoader:
    """Iterable over vtk batch dicts; each ``iter()`` is one epoch of this rank's share."""

    OPEN_FILES = 32  # tars kept open for reads at their samples' offsets

    def __init__(self, paths: list[str], spec, batch_size: int, rank: int, world_size: int,
                 gpu: bool, threads: int = 2, raw: bool = False):
        self.dali = require("nvidia.dali", extra="dali", package="nvidia-dali-cuda120")
        self.paths, self.spec, self.batch_size = paths, spec, batch_size
        self.rank, self.world_size, self.gpu = rank, world_size, gpu
        self.raw = raw  # decode only, uint8 frames (the decode ceiling for vtk bench decode)
        self.backend = "dali"
        self.stats = LoaderStats()
        self.epoch = 0
        codec = shard_codec(paths)
        if not gpu and codec not in CPU_CODECS:
            raise VtkError(f"DALI's CPU decoder reads VP8/VP9/MJPEG only and these shards are "
                           f"{codec}; use a GPU, another --backend, or vtk shard --codec vp9")
        self.threads = threads
        self.bad: set[str] = set()  # keys of samples DALI failed on: left out from then on
        self.share = rank_share(list_samples(paths), rank, world_size)
        self._files: OrderedDict = OrderedDict()
        self._state: dict | None = None  # the pass in progress
        self._resume: dict | None = None

    # -- torchdata's Stateful protocol --------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"epoch": e}`` at a pass's start; inside one also ``next`` (the first sample of
        the pass order not handed out) and ``bad`` (clips found undecodable in this pass)."""
        if self._resume is not None:
            return json.loads(json.dumps(self._resume))
        if self._state is not None:
            return {**self._state, "bad": list(self._state["bad"])}
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        if "batches" in state:
            raise VtkError("the data position was saved by another loader path: resume with "
                           "the options the run began with")
        self.epoch, self._resume = int(state["epoch"]), dict(state)

    # -- a pass --------------------------------------------------------------------------------

    def pass_order(self, epoch: int) -> list:
        """This rank's samples in the order of pass ``epoch``."""
        if not self.spec.train:
            return list(self.share)
        perm = np.random.default_rng([self.spec.seed, epoch, self.rank, 0xDA11]).permutation(
            len(self.share))
        return [self.share[i] for i in perm]

    def __iter__(self):
        resume, self._resume = self._resume or {}, None
        epoch = int(resume.get("epoch", self.epoch))
        self.epoch = epoch + 1
        entries = self.pass_order(epoch)
        at = int(resume.get("next", 0))
        bad = set(resume.get("bad", ()))
        self._state = {"epoch": epoch, "next": at, "bad": sorted(bad)}
        try:
            while True:
                feed = _Feed(self, entries, at, epoch, bad | self.bad)
                it = self._start(feed)
                try:
                    for out in it:
                        batch, at = self._batch(out[0], feed)
                        self._state = {"epoch": epoch, "next": at, "bad": sorted(bad)}
                        yield batch
                    break
                except RuntimeError as e:  # DALI's pipeline is dead after any error
                    start = feed.start_of_next()
                    found = self._find_bad(feed.batch_at(start), e)
                    bad |= found
                    self.bad |= found
                    at = start
        finally:
            self._state = None
            self._close_files()

    def _start(self, feed):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self.pipe = self._build(feed)
        return DALIGenericIterator(self.pipe, ["video", "idx"], size=-1,
                                   last_batch_policy=LastBatchPolicy.PARTIAL,
                                   prepare_first_batch=False)

    def _build(self, feed):
        from nvidia.dali import fn, pipeline_def, types

        spec = self.spec
        mean, std = NORMS[spec.normalize]
        device_id = torch.cuda.current_device() if self.gpu else None

        @pipeline_def(batch_size=self.batch_size, num_threads=self.threads,
                      device_id=device_id, seed=spec.seed + 7919 * self.rank)
        def pipeline():
            names = feed.columns()
            types_of = {"mp4": types.UINT8, "where": types.FLOAT, "mirror": types.INT32,
                        "roi0": types.FLOAT, "roi1": types.FLOAT, "idx": types.INT64}
            got = dict(zip(names, fn.external_source(
                source=feed, num_outputs=len(names), batch=True,
                dtype=[types_of[n] for n in names])))
            mp4, where, idx = got["mp4"], got["where"], got["idx"]
            video = fn.decoders.video(mp4, device="mixed" if self.gpu else "cpu")
            # the host's picks, as positions in (0, 1) of the clip: exact when the decoded
            # length is the json's num_frames, scaled to the decoded length when it is not
            n = fn.cast(video.shape()[0], dtype=types.INT32)
            pick = fn.cast(where * fn.cast(n, dtype=types.FLOAT), dtype=types.INT32)
            import nvidia.dali.math as dmath

            video = fn.sequence_rearrange(video, new_order=dmath.min(pick, n - 1))
            if self.raw:
                return video, idx
            if spec.train:
                video = fn.resize(video, size=[spec.size, spec.size], roi_start=got["roi0"],
                                  roi_end=got["roi1"], roi_relative=True, antialias=True)
            elif spec.fit == "full":  # the whole frame, aspect not kept
                video = fn.resize(video, size=[spec.size, spec.size], antialias=True)
            else:
                video = fn.resize(video, resize_shorter=spec.size, antialias=True)
            video = fn.crop_mirror_normalize(
                video, crop=[spec.size, spec.size], crop_pos_x=0.5, crop_pos_y=0.5,
                mirror=got["mirror"], dtype=types.FLOAT, output_layout="FCHW",
                mean=[255 * m for m in mean], std=[255 * s for s in std])
            return video, idx

        pipe = pipeline()
        pipe.build()
        return pipe

    def _batch(self, out: dict, feed) -> tuple[dict, int]:
        items = [feed.items[int(i)] for i in out["idx"].cpu().reshape(-1).tolist()]
        end = feed.end_of(int(out["idx"].reshape(-1)[0]))
        for i in out["idx"].reshape(-1).tolist():
            feed.items.pop(int(i), None)
        self.stats.add("samples", len(items))
        batch = {"video": out["video"], "text": [it["text"] for it in items],
                 "key": [it["key"] for it in items], "label": [it["meta"].get("label")
                                                              for it in items],
                 "texts": [list(it["meta"].get("texts") or []) for it in items],
                 "meta": [it["meta"] for it in items]}
        return batch, end

    def _find_bad(self, entries: list, error: RuntimeError) -> set[str]:
        """The clips of a batch DALI failed on: those PyAV cannot decode, or all of them."""
        from vtk.data.decoders import get_decoder

        if not entries:
            first = next((ln for ln in str(error).splitlines() if ln.strip()), "")
            raise VtkError(f"DALI pipeline failed: {first}") from error
        pyav = get_decoder("pyav")
        found = set()
        for entry in entries:
            try:
                pyav.decode(self._read(entry)["mp4"], [0])
            except Exception:
                found.add(entry.key)
        found = found or {e.key for e in entries}
        for key in sorted(found):
            url = next(e.url for e in entries if e.key == key)
            self.stats.skip("corrupt", f"{key} in {url}", "DALI could not decode it")
        return found

    def _read(self, entry) -> dict:
        f = self._files.get(entry.url)
        if f is None:
            f = self._files[entry.url] = storage.open_random(entry.url)
            if len(self._files) > self.OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        self._files.move_to_end(entry.url)
        return order.read_entry(f, entry)

    def _close_files(self) -> None:
        while self._files:
            self._files.popitem()[1].close()


class _Feed:
    """The external source of one pipeline: batch ``i`` is the next ``batch_size`` good
    samples of the pass order from where the previous batch ended; a sample whose json is
    bad, or that is oversized or unsafe, is counted and skipped here, on the host."""

    def __init__(self, loader: DaliLoader, entries: list, start: int, epoch: int, bad: set):
        self.loader, self.entries, self.epoch, self.bad = loader, entries, epoch, bad
        self.cursor = start
        self.items: dict[int, dict] = {}  # sample index -> what the batch dict needs
        self.spans: dict[int, tuple[int, int]] = {}  # first sample index -> (start, end)
        self.handed = start  # where the first batch not yet handed out starts

    def __call__(self, iteration: int):
        L = self.loader
        spec = L.spec
        begin, cols = self.cursor, ([], [], [], [], [], [])
        first = None
        while len(cols[0]) < L.batch_size and self.cursor < len(self.entries):
            i, entry = self.cursor, self.entries[self.cursor]
            self.cursor += 1
            if entry.key in self.bad:
                continue
            try:
                sample = self._good(entry)
                if sample is None:
                    continue
                meta, txt = read_members(sample)
            except (OSError, EOFError) as e:
                L.stats.skip("tar_errors", entry.url, f"unreadable tar data ({e})")
                continue
            except ValueError as e:
                L.stats.skip("corrupt", f"{entry.key} in {entry.url}", f"bad json ({e})")
                continue
            rng = sample_rng(spec.seed, self.epoch, entry.key)
            n = int(meta.get("num_frames") or 0) or 1000  # unknown: fine positions, scaled
            picks = frame_indices(n, spec.frames, spec.train, rng)
            flip = spec.train and draw_flip(spec.flip, rng)
            h, w = int(meta.get("height") or 0), int(meta.get("width") or 0)
            if spec.train and h and w:
                top, left, ch, cw = random_resized_box(h, w, rng)
                roi0, roi1 = [top / h, left / w], [(top + ch) / h, (left + cw) / w]
            else:
                roi0, roi1 = [0.0, 0.0], [1.0, 1.0]
            text = pick_caption(meta, txt, spec.captions,
                                caption_rng(spec.seed, self.epoch, entry.key, spec.captions))
            if flip and spec.flip == "swap":
                text = mirror_text(text)
            first = i if first is None else first
            self.items[i] = {"key": entry.key, "text": text, "meta": meta, "entry": entry}
            values = {"mp4": np.frombuffer(sample["mp4"], dtype=np.uint8),
                      "where": ((np.asarray(picks) + 0.5) / n).astype(np.float32),
                      "mirror": np.int32(flip), "roi0": np.float32(roi0),
                      "roi1": np.float32(roi1), "idx": np.int64(i)}
            for col, name in zip(cols, self.columns()):
                col.append(np.asarray(values[name]))
        if not cols[0]:
            raise StopIteration
        self.spans[first] = (begin, self.cursor)
        return cols[:len(self.columns())]

    def columns(self) -> list[str]:
        """The pipeline inputs this loader's graph uses (DALI warns about unused ones)."""
        if self.loader.raw:
            return ["mp4", "where", "idx"]
        if self.loader.spec.train:
            return ["mp4", "where", "mirror", "roi0", "roi1", "idx"]
        return ["mp4", "where", "mirror", "idx"]

    def _good(self, entry) -> dict | None:
        L = self.loader
        sample = L._read(entry)
        where = f"{entry.key} in {entry.url}"
        kind = skip_kind(sample)
        if kind is not None:
            L.stats.skip(kind, where, "; ".join(m for _, m in sample.get("__problems__", ())))
            return None
        if "mp4" not in sample:
            L.stats.skip("missing", where, "no mp4 member")
            return None
        return sample

    def end_of(self, first: int) -> int:
        """Where the batch whose first sample is ``first`` ends in the pass order."""
        start, end = self.spans.pop(first)
        self.handed = end
        return end

    def start_of_next(self) -> int:
        return self.handed

    def batch_at(self, start: int) -> list:
        """The entries of the batch that starts at ``start`` (the one DALI failed on)."""
        span = next((v for v in self.spans.values() if v[0] == start), None)
        if span is None:
            return []
        return [e for e in self.entries[span[0]:span[1]] if e.key not in self.bad]


def list_samples(paths: list[str]) -> list:
    """Every sample of the tars in order (``vtk.data.order.Entry``), from each tar's ``.idx``
    where there is one, else from its headers."""
    out = []
    for tar in paths:
        idx = index_path(tar)
        if storage.exists(idx):
            out += order.entries_from_index(tar, read_index(idx))
        else:
            out += order.scan_headers(tar)
    return out


def dali_loader(paths, spec, batch_size, rank, world_size, device=None):
    """The DALI path of ``build_loader``: mixed (GPU) decode on CUDA, else the CPU decoder."""
    gpu = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    return DaliLoader(paths, spec, batch_size, rank, world_size, gpu)
