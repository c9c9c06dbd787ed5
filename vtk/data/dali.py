"""The DALI path: tar reading, decoding, crops and normalisation inside a DALI pipeline.

    tars --fn.readers.webdataset--> mp4, json, txt (+ source_info: the sample's key)
         --fn.decoders.video------> F x H x W x 3 uint8 (device="mixed": NVDEC on the GPU)
         --fn.sequence_rearrange--> T frames picked by ViCLIP's segment sampling
         --random_resized_crop / resize + crop_mirror_normalize--> F x 3 x S x S float
         --DALIGenericIterator----> torch tensors -> vtk batch dicts

On a GPU (``device="mixed"``) H.264 shards decode on NVDEC and frames never visit the CPU.
Without one, DALI's CPU video decoder handles VP8, VP9 and MJPEG only, so CPU use needs shards
built with ``vtk shard --codec vp9``. The reader needs the ``.idx`` index beside each tar
(``vtk shard`` writes them). Frame indices follow the rule of vtk.data.sampling (as every other
backend), written as DALI graph arithmetic on the decoded length, so the pipeline keeps DALI's
asynchronous executor. Each clip is decoded whole and the frames are picked after (a forward
decode to the last segment costs about the same for short clips; long clips cost memory: a
30 s clip at 8 fps and 224 px holds 240 frames, 64 MB, until the pick).

A corrupt mp4 stops a DALI pipeline for good, and its error names the sample (its source_info).
The loader then counts and warns about that sample, and rebuilds the pipeline over what is
left of this rank's share in this pass, through filtered copies of the ``.idx`` files; later
passes read the share without it. The share is DALI's own split (contiguous ranges of the
samples of all tars in order), so other ranks, which never saw the error, split the same way.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from vtk.data.samples import caption_rng, mirror_text, pick_caption
from vtk.data.stats import LoaderStats
from vtk.data.transforms import NORMS
from vtk.errors import VtkError, require
from vtk.shards.wds_index import format_index, index_path, read_index, split_name

CPU_CODECS = ("vp8", "vp9", "mjpeg")


def key_of(source_info: str) -> str:
    """DALI's source_info ``/x/shard-000000.tar:512:KEY.mp4`` -> ``KEY``."""
    return split_name(source_info.rsplit(":", 1)[-1])[0]


_SOURCE_INFO = re.compile(r"([^\s\"']+\.tar:\d+:[^\s\"']+)")


def failed_sample(message: str) -> str | None:
    """The source_info (``TAR:OFFSET:MEMBER``) a DALI error names, or None."""
    m = _SOURCE_INFO.search(message)
    return m.group(1) if m else None


def rank_share(samples: list, rank: int, world_size: int) -> list:
    """DALI's split of a reader's samples over ``num_shards``: contiguous, [N*r/S, N*(r+1)/S)."""
    n = len(samples)
    return samples[n * rank // world_size:n * (rank + 1) // world_size]


def as_text(arr) -> str:
    """A padded uint8 row -> str (the padding is NUL bytes)."""
    return bytes(np.asarray(arr, dtype=np.uint8)).rstrip(b"\0").decode("utf-8")


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


def segment_frames(video, spec):
    """ViCLIP's frame indices (vtk.data.sampling) as DALI graph arithmetic on the decoded
    length F: segment i is [i*F//T, (i+1)*F//T); eval takes its lower middle, training a
    uniform frame in it (DALI's seeded RNG); an empty segment (F < T) takes its start."""
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, types

    t = spec.frames
    n = fn.cast(video.shape()[0], dtype=types.INT32)
    i = types.Constant(np.arange(t, dtype=np.int32))
    lo, hi = (i * n) // t, ((i + 1) * n) // t
    if spec.train:
        u = fn.random.uniform(range=[0.0, 1.0], shape=[t])
        pick = lo + fn.cast(dmath.floor(u * fn.cast(hi - lo, dtype=types.FLOAT)),
                            dtype=types.INT32)
    else:
        pick = (lo + hi - 1) // 2
    return dmath.min(dmath.max(pick, lo), n - 1)


class DaliLoader:
    """Iterable over vtk batch dicts; each ``iter()`` is one epoch of this rank's share."""

    def __init__(self, paths: list[str], spec, batch_size: int, rank: int, world_size: int,
                 gpu: bool, threads: int = 2, raw: bool = False):
        self.dali = require("nvidia.dali", extra="dali", package="nvidia-dali-cuda120")
        self.paths, self.spec, self.batch_size = paths, spec, batch_size
        self.rank, self.world_size, self.gpu = rank, world_size, gpu
        self.raw = raw  # decode only, uint8 frames (the decode ceiling for vtk bench decode)
        self.backend = "dali"
        self.stats = LoaderStats()
        self.epoch = 0
        for p in paths:
            if not Path(index_path(p)).is_file():
                raise VtkError(f"DALI needs {index_path(p)} (the wds2idx index beside each tar); "
                               "rebuild the shards with vtk shard, which writes them")
        codec = shard_codec(paths)
        if not gpu and codec not in CPU_CODECS:
            raise VtkError(f"DALI's CPU decoder reads VP8/VP9/MJPEG only and these shards are "
                           f"{codec}; use a GPU, another --backend, or vtk shard --codec vp9")
        self.threads = threads
        self.bad: set[str] = set()  # keys of samples DALI failed on: left out from then on
        self._tmp = None
        self._builds = 0
        self._pass_epoch, self._done, self._skip_batches = 0, None, 0  # the pass in progress
        self._iter = self._start(self.paths, [index_path(p) for p in self.paths],
                                 self.rank, self.world_size)

    def _start(self, paths, index_paths, shard_id, num_shards):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self.pipe = self._build(self.threads, paths, index_paths, shard_id, num_shards)
        return DALIGenericIterator(
            self.pipe, ["video", "json", "info", "txt", "mirror"], reader_name="reader",
            auto_reset=True, last_batch_policy=LastBatchPolicy.PARTIAL,
            prepare_first_batch=False)  # a first batch's error then surfaces in __iter__

    def _restart(self, skip: set[str]):
        """A pipeline over this rank's share minus the bad samples and ``skip`` (those already
        handed out in this pass); None when nothing is left."""
        share = rank_share([(tar, sample) for tar in self.paths
                            for sample in read_index(index_path(tar))],
                           self.rank, self.world_size)
        left: dict[str, list] = {}
        for tar, sample in share:
            key = key_of(sample[0][3])  # the member name, as in a source_info
            if key not in self.bad and key not in skip:
                left.setdefault(tar, []).append(sample)
        if not left:
            return None
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vtk-dali-idx-")
        idx = []
        for i, samples in enumerate(left.values()):
            idx.append(str(Path(self._tmp.name) / f"{i:06d}.idx"))
            Path(idx[-1]).write_text(format_index(samples))
        return self._start(list(left), idx, 0, 1)

    def _build(self, threads: int, paths, index_paths, shard_id, num_shards):
        from nvidia.dali import fn, pipeline_def, types

        spec = self.spec
        mean, std = NORMS[spec.normalize]
        device_id = torch.cuda.current_device() if self.gpu else None

        # a rebuilt pipeline (after a corrupt sample) must not replay the first one's shuffle
        @pipeline_def(batch_size=self.batch_size, num_threads=threads, device_id=device_id,
                      seed=spec.seed + 7919 * self.rank + 104729 * self._builds)
        def pipeline():
            mp4, js, txt = fn.readers.webdataset(
                paths=paths, index_paths=index_paths,
                ext=["mp4", "json", "txt"], dtypes=[types.UINT8] * 3,
                missing_component_behavior="empty", shard_id=shard_id,
                num_shards=num_shards, random_shuffle=spec.train, initial_fill=256,
                # pad the last batch so the next epoch starts at the shard's start again (the
                # iterator drops the padding); without it epochs roll over and repeat samples
                pad_last_batch=True, stick_to_shard=True, name="reader")
            info = fn.get_property(mp4, key="source_info")
            video = fn.decoders.video(mp4, device="mixed" if self.gpu else "cpu")
            video = fn.sequence_rearrange(video, new_order=segment_frames(video, spec))
            # drawn in the graph and handed out, so a mirrored view's caption can follow it
            mirror = fn.random.coin_flip(
                probability=0.5 if spec.train and spec.flip != "off" and not self.raw else 0.0)
            if self.raw:
                return video, fn.pad(js, fill_value=0), fn.pad(
                    fn.cast(info, dtype=types.UINT8), fill_value=0), fn.pad(
                    txt, fill_value=0), mirror
            if spec.train:
                video = fn.random_resized_crop(video, size=[spec.size, spec.size],
                                               random_area=[0.5, 1.0],
                                               random_aspect_ratio=[3 / 4, 4 / 3],
                                               antialias=True)
            else:
                video = fn.resize(video, resize_shorter=spec.size, antialias=True)
            video = fn.crop_mirror_normalize(
                video, crop=[spec.size, spec.size], crop_pos_x=0.5, crop_pos_y=0.5,
                mirror=mirror, dtype=types.FLOAT, output_layout="FCHW",
                mean=[255 * m for m in mean], std=[255 * s for s in std])
            # text members vary in length; padding makes them one dense tensor per batch
            return (video, fn.pad(js, fill_value=0), fn.pad(fn.cast(info, dtype=types.UINT8),
                                                              fill_value=0),
                    fn.pad(txt, fill_value=0), mirror)

        pipe = pipeline()
        pipe.build()
        self._builds += 1
        return pipe

    # -- torchdata's Stateful protocol ---------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"epoch": e}`` between passes, ``{"epoch": e, "batches": n}`` inside one. DALI's
        own checkpoints cannot help: its video decoder does not support them (DALI 2.4)."""
        if self._done is None:
            return {"epoch": self.epoch}
        return {"epoch": self._pass_epoch, "batches": self._done}

    def load_state_dict(self, state: dict) -> None:
        """The next pass is epoch ``state["epoch"]`` from batch ``state["batches"]`` on. In
        eval (no shuffle) the pipeline is rebuilt over the rest of this rank's share, nothing
        skipped is read; in training DALI's reader shuffles with a state of its own, so the
        pass is replayed (decoded) up to that batch and, as DALI's shuffle state is not the
        uninterrupted loader's past epoch 0, the order after it is DALI's, not the one an
        uninterrupted loader would have had (docs/loader.md)."""
        self.epoch = int(state["epoch"])
        self._skip_batches = int(state.get("batches", 0))

    def __iter__(self):
        handed_out: set[str] = set()
        partial = False  # the pipeline reads a filtered remainder of the share, after an error
        finished = False
        self._pass_epoch, skip, self._skip_batches = self.epoch, self._skip_batches, 0
        self._done = skip
        if skip and not self.spec.train:  # the first `skip` batches of the share, unread
            share = rank_share([(tar, sample) for tar in self.paths
                                for sample in read_index(index_path(tar))],
                               self.rank, self.world_size)
            handed_out = {key_of(sample[0][3]) for _, sample in share[:skip * self.batch_size]}
            self._iter, partial, skip = self._restart(skip=handed_out), True, 0
        try:
            while self._iter is not None:
                try:
                    for out in self._iter:
                        if skip:  # training: DALI's order is its own, replayed to the place
                            skip -= 1
                            continue
                        batch = self._batch(out[0])
                        handed_out.update(batch["key"])
                        self._done += 1
                        yield batch
                    break
                except RuntimeError as e:  # DALI's pipeline is dead after any error
                    self._skip_failed(e)
                    self._iter, partial = self._restart(skip=handed_out), True
            finished = True
        finally:
            self.epoch, self._done = self._pass_epoch + 1, None
            # the next pass reads the whole share again, minus bad samples; an abandoned pass
            # needs a fresh pipeline too (DALI ignores a reset in the middle of an epoch)
            if partial or not finished:
                self._iter = self._restart(skip=set())

    def _skip_failed(self, error: RuntimeError) -> None:
        """Count and warn about the sample a DALI error names; re-raise errors naming none."""
        where = failed_sample(str(error))
        key = key_of(where) if where else None
        if key is None or key in self.bad:
            first = next((ln for ln in str(error).splitlines() if ln.strip()), "")
            raise VtkError(f"DALI pipeline failed: {first}") from error
        self.bad.add(key)
        tar = where.rsplit(":", 2)[0]
        self.stats.skip("corrupt", f"{key} in {tar}", "DALI could not decode it")

    def _batch(self, out: dict) -> dict:
        # a sample without a json member reads as empty (missing_component_behavior)
        metas = [json.loads(as_text(row) or "{}") for row in out["json"].cpu()]
        keys = [key_of(as_text(row)) for row in out["info"].cpu()]
        txts = [as_text(row) or None for row in out["txt"].cpu()]
        texts = [pick_caption(m, t, self.spec.captions,
                              caption_rng(self.spec.seed, self.epoch, k, self.spec.captions))
                 for m, t, k in zip(metas, txts, keys)]
        if self.spec.flip == "swap":
            mirrored = out["mirror"].cpu().reshape(-1).tolist()
            texts = [mirror_text(t) if m else t for t, m in zip(texts, mirrored)]
        self.stats.add("samples", len(keys))
        return {"video": out["video"], "text": texts, "key": keys,
                "label": [m.get("label") for m in metas],
                "texts": [list(m.get("texts") or []) for m in metas], "meta": metas}


def dali_loader(paths, spec, batch_size, rank, world_size, device=None):
    """The DALI path of ``build_loader``: mixed (GPU) decode on CUDA, else the CPU decoder."""
    gpu = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    return DaliLoader(paths, spec, batch_size, rank, world_size, gpu)
