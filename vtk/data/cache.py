"""Decode once: a memory-mapped uint8 frame cache for small corpora.

Decoding a batch of 64 small clips from mp4 costs more than a training step on a CPU
(docs/background.md, "Decode once"), so for corpora that fit on disk as raw frames every clip is
decoded once, and
every epoch of every run that names the same cache folder samples frames from memory.

Layout of ``ROOT/<fingerprint>/`` (the fingerprint hashes the shard names, sizes, mtimes and
the frame size, so one root serves several shard sets and sizes, and a rebuilt shard set gets
a fresh cache):
- ``frames-000000.npy``: uint8 ``F x S x S x 3``, all frames of that shard's clips, back to
  back. Each frame is the **centre square** of the clip, resized to ``S`` as the streaming
  path resizes (``vtk.data.transforms.crop_resize``): eval's resize + centre crop is then
  exact, and training's RandomResizedCrop works inside that square (the sides of wide clips
  are lost; synthetic clips are square).
- ``manifest.json``: per clip ``key, shard, offset, count, meta (json), txt``; skipped samples
  with reasons.
It is built in a temporary folder and renamed when complete, so readers never see half a cache.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from vtk import storage
from vtk.data.decoders import get_decoder
from vtk.data.samples import read_members, sample_rng
from vtk.data.sampling import frame_indices
from vtk.data.shardset import looks_truncated, resolve_shards
from vtk.data.transforms import center_box, crop_resize
from vtk.errors import VtkError
from vtk.locks import lock_folder, try_lock_folder
from vtk.shards.reader import MAX_SAMPLE_BYTES, problem_text, read_samples, skip_kind
from vtk.workers import exit_with_parent

VERSION = 2  # 2: frames resized with OpenCV (bilinear; area for 2x shrinks)


def fingerprint(paths: list[str], size: int, max_bytes: int = MAX_SAMPLE_BYTES) -> str:
    h = hashlib.sha1(f"v{VERSION} size={size}".encode())
    if max_bytes != MAX_SAMPLE_BYTES:  # another cap keeps other clips (the default: the
        h.update(f" max_sample_bytes={max_bytes}".encode())  # names caches had before it)
    for p in paths:  # a URL's ETag stands for the mtime (the same text as before for files)
        h.update(f"{storage.absolute(p)}:{storage.stamp(p)}".encode())
    return h.hexdigest()[:16]


def square_frames(frames: torch.Tensor, size: int) -> np.ndarray:
    """uint8 T x H x W x 3 -> uint8 T x size x size x 3: centre square, resized."""
    _, h, w, _ = frames.shape
    if h == w == size:
        return frames.numpy()
    return crop_resize(frames, center_box(h, w), size).permute(0, 2, 3, 1).contiguous().numpy()


def _cache_shard(job) -> dict:
    """Decode every clip of one tar into ``out/frames-NNNNNN.npy``; returns its records."""
    shard_no, tar, out, size, backend, max_bytes = job
    decoder = get_decoder(backend)
    arrays, clips, skipped, offset = [], [], [], 0

    def tar_error(exn) -> None:  # unreadable tar data: recorded, and what came before is kept
        skipped.append({"key": None, "shard": tar, "kind": "tar_errors",
                        "reason": f"unreadable tar data: {type(exn).__name__}: {exn}"})

    if looks_truncated(tar):
        skipped.append({"key": None, "shard": tar, "kind": "tar_errors",
                        "reason": "truncated tar; reading what is there"})
    for sample in _samples(tar, max_bytes, tar_error):
        key = sample["__key__"]
        kind = skip_kind(sample)
        if kind is not None:  # oversized or unsafe: never read, recorded as the loader does
            skipped.append({"key": key, "shard": tar, "kind": kind,
                            "reason": problem_text(sample)})
            continue
        try:
            if "mp4" not in sample:
                raise ValueError("no mp4 member")
            meta, txt = read_members(sample)  # a json of the wrong shape: ValueError, skipped
            frames, n = decoder.decode(sample["mp4"], None)
            arrays.append(square_frames(frames, size))
        except Exception as e:  # a corrupt sample is left out of the cache and reported
            skipped.append({"key": key, "shard": tar, "kind": "corrupt",
                            "reason": f"{type(e).__name__}: {e}"})
            continue
        clips.append({"key": key, "shard": shard_no, "offset": offset, "count": int(len(arrays[-1])),
                      "meta": meta, "txt": txt})
        offset += len(arrays[-1])
    data = np.concatenate(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    path = Path(out) / f"frames-{shard_no:06d}.npy"
    try:
        np.save(path, data)
    except OSError as e:  # a full disk: one line, not a traceback from the worker
        # (numpy reports a short write without an errno: "N requested and M written")
        raise VtkError(f"cannot write {path}: {e.strerror or f'{e} (is the disk full?)'}") from None
    return {"clips": clips, "skipped": skipped}


def _samples(tar: str, max_bytes: int, on_error):
    """The tar's samples (``vtk.shards.reader``: judged on their headers, an oversized one
    never read); a tar error ends the tar, reported to ``on_error``."""
    try:
        yield from read_samples(tar, max_bytes)
    except (tarfile.TarError, OSError, EOFError) as e:
        on_error(e)


def build_frame_cache(shards, size: int, root, backend: str = "pyav", workers: int = 2,
                      progress: bool = True, max_sample_bytes: int = MAX_SAMPLE_BYTES) -> Path:
    """Decode every clip of ``shards`` once into ``root/<fingerprint>/``; returns that folder.
    An existing complete cache for the same shards and size is reused as it is.

    One build per ``root`` at a time (``root/.lock``): a second process waits for the first,
    then reuses what it built (both asked for the same clips). The build that holds the lock
    first removes the ``.building-*`` folders of builds that were killed."""
    paths = resolve_shards(shards)
    final = Path(root) / fingerprint(paths, size, max_sample_bytes)
    if (final / "manifest.json").is_file() and damaged(final, size) is None:
        _sweep_if_idle(final.parent)
        return final
    with lock_folder(final.parent, wait=True, on_wait=lambda who: print(
            f"waiting for {who}, which is building a frame cache in {final.parent}",
            file=sys.stderr, flush=True)):
        remove_stale_builds(final.parent)
        if (final / "manifest.json").is_file():  # the build we waited for made it
            problem = damaged(final, size)
            if problem is None:
                return final
            print(f"the frame cache {final} is damaged ({problem}): rebuilding it",
                  file=sys.stderr, flush=True)
            try:
                shutil.rmtree(final)
            except OSError as e:
                raise VtkError(f"the frame cache {final} is damaged ({problem}) and cannot be "
                               f"removed ({e.strerror or e}): remove it, or pass another "
                               f"--cache") from None
        return _build(paths, final, size, backend, workers, progress, max_sample_bytes)


def damaged(folder: Path, size: int) -> str | None:
    """What is wrong with a complete-looking cache folder (its manifest of the wrong shape, a
    frames file cut short or of other frames than the manifest's), None when it is whole.
    Reads the manifest and the ``.npy`` headers only."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        clips = manifest["clips"]
        if not isinstance(manifest.get("skipped"), list) or not isinstance(clips, list):
            raise TypeError("clips or skipped is not a list")
        ends: dict[int, int] = {}
        for c in clips:
            if not (isinstance(c, dict) and isinstance(c.get("key"), str)
                    and isinstance(c.get("meta"), dict) and all(
                        isinstance(c.get(k), int) and c[k] >= 0
                        for k in ("shard", "offset", "count"))):
                raise TypeError(f"a clip record of the wrong shape: {str(c)[:60]}")
            ends[c["shard"]] = max(ends.get(c["shard"], 0), c["offset"] + c["count"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"manifest.json: {e}"
    for shard, end in sorted(ends.items()):
        path = folder / f"frames-{shard:06d}.npy"
        try:  # the header, and the file as long as it says (a mapping checks the length)
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            return f"{path.name}: {e}"
        if arr.dtype != np.uint8 or arr.shape[1:] != (size, size, 3) or arr.shape[0] < end:
            return f"{path.name}: {arr.dtype} {arr.shape}, the manifest needs {end} frames"
    return None


def _build(paths, final: Path, size, backend, workers, progress, max_sample_bytes) -> Path:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    except OSError as e:
        raise VtkError(f"cannot write the frame cache in {final.parent}: {e.strerror or e}") from None
    jobs = [(i, p, str(tmp), size, backend, max_sample_bytes) for i, p in enumerate(paths)]
    try:
        results = _run_jobs(jobs, workers, progress)
    except BaseException:  # interrupted or failed: leave no half-built folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = {"version": VERSION, "size": size, "layout": "centre-square", "shards": paths,
                "clips": [c for r in results for c in r["clips"]],
                "skipped": [s for r in results for s in r["skipped"]]}
    for s in manifest["skipped"]:
        what = s["key"] or "data"
        warnings.warn(f"frame cache skipped {what} in {s['shard']}: {s['reason']}",
                      RuntimeWarning, stacklevel=3)
    try:
        (tmp / "manifest.json").write_text(json.dumps(manifest))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VtkError(f"cannot write {tmp / 'manifest.json'}: {e.strerror or e}") from None
    try:
        tmp.rename(final)
    except OSError:  # a build without the lock (an older vtk) finished it first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def remove_stale_builds(root: Path) -> list[str]:
    """Remove the ``.building-*`` folders in ``root`` and return their names. A build killed
    by SIGKILL cannot remove its own (hundreds of MB of frames); call this holding ``root``'s
    lock, when no build of another process is live."""
    removed = []
    for tmp in sorted(Path(root).glob(".building-*")):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    return removed


def _sweep_if_idle(root: Path) -> None:
    """A complete cache is read without the lock; the killed builds' leftovers beside it are
    removed only when nobody is building (the lock is free) and the root is writable."""
    if not any(Path(root).glob(".building-*")):
        return
    try:
        lock = try_lock_folder(root)
    except VtkError:  # a read-only cache root: leave it as it is
        return
    if lock is not None:
        with lock:
            remove_stale_builds(root)


def _init_decoder(parent: int) -> None:
    """A decoding worker: ends with its parent (a Pool worker of a killed build would wait on
    its task queue forever), and runs torch on one thread."""
    exit_with_parent(parent)
    torch.set_num_threads(1)


def _run_jobs(jobs, workers: int, progress: bool) -> list[dict]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from vtk.progress import bar as progress_bar

    line = "decoding shards into the frame cache"
    with progress_bar(TextColumn(line), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      line=line, stderr=True, disable=not progress) as bar:
        task = bar.add_task(line, total=len(jobs))
        if workers <= 1 or len(jobs) == 1:
            out = []
            for job in jobs:
                out.append(_cache_shard(job))
                bar.update(task, completed=len(out))
            return out
        # fork: the workers inherit the imported modules. One torch thread each: OpenMP's pool
        # does not survive a fork, and a forked child that uses it hangs.
        with mp.get_context("fork").Pool(min(workers, len(jobs)), initializer=_init_decoder,
                                         initargs=(os.getpid(),)) as pool:
            out = []
            for r in pool.imap(_cache_shard, jobs):
                out.append(r)
                bar.update(task, completed=len(out))
            return out


class CachedClips(torch.utils.data.Dataset):
    """Map-style dataset over a built cache: item i -> one batch item (sampled + transformed)."""

    def __init__(self, folder, spec):
        self.folder, self.spec = Path(folder), spec
        manifest = json.loads((self.folder / "manifest.json").read_text())
        self.clips = manifest["clips"]
        self.skipped = manifest["skipped"]
        self.epoch = 0
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def frames(self, i: int, idx: np.ndarray) -> torch.Tensor:
        """uint8 T x S x S x 3: frames ``idx`` of clip ``i`` (copied out of the memory map)."""
        c = self.clips[i]
        arr = self._arrays.get(c["shard"])
        if arr is None:  # opened lazily, so every worker maps the file itself
            arr = np.load(self.folder / f"frames-{c['shard']:06d}.npy", mmap_mode="r")
            self._arrays[c["shard"]] = arr
        return torch.from_numpy(arr[c["offset"] + idx])

    def __getitem__(self, i: int) -> dict:
        c, spec = self.clips[i], self.spec
        rng = sample_rng(spec.seed, self.epoch, c["key"])
        idx = frame_indices(c["count"], spec.frames, spec.train, rng)
        return spec.view(c["key"], self.frames(i, idx), c["meta"], c["txt"], rng, self.epoch)


class EpochSampler(torch.utils.data.Sampler):
    """This rank's indices: a fresh seeded permutation each epoch (train) or in order (eval);
    rank r takes positions r, r + world, ... so ranks never share a clip. In training the
    permutation is cut to a multiple of ``world_size`` so every DDP rank takes the same number
    of steps (a rank with one batch more would wait forever in all-reduce); eval keeps all."""

    def __init__(self, n: int, rank: int, world_size: int, train: bool, seed: int):
        self.n, self.rank, self.world, self.train, self.seed = n, rank, world_size, train, seed
        self.epoch = 0
        self.skip = 0  # indices of this pass already handed out (a resumed pass)

    def __iter__(self):
        order = np.arange(self.n)
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return iter(order[:self._used()][self.rank::self.world][self.skip:].tolist())

    def _used(self) -> int:
        return self.n - self.n % self.world if self.train else self.n

    def __len__(self) -> int:
        return len(range(self.rank, self._used(), self.world))


def build_once(build):
    """Under torch.distributed, rank 0 runs ``build`` while the others wait, then they run it
    and find its result (a complete cache is reused as it is); without it, every rank decoded
    the whole corpus at once. On a disk the ranks do not share, each node builds its own."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return build()
    if dist.get_rank() == 0:
        result = build()
        dist.barrier()
        return result
    dist.barrier()
    return build()
