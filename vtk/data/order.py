"""The order of one pass over a share of shards, as a position that costs nothing to resume.

A loader worker (one *partition* of a rank: rank x worker) reads its shards in windows
(*groups*) of whole shards. Each group's samples are listed from the shards' ``.idx`` files, or
from their tar headers where there is none (no member data is read: ``list_entries``), once per
worker process (``Listings``: later passes reuse the lists) and, in training, permuted by a
generator seeded with (seed, epoch, partition, group). The worker then reads the samples in that order, each by
seeking to its members. So the place a pass has reached is two integers, (group, index in the
group's order), and resuming there skips every earlier group without opening its tars and
every earlier sample of the current group without reading it: the cost of a resume is one
group's headers, wherever in the epoch it falls.

This replaces webdataset's ``shuffle`` buffer (a reservoir whose state is the samples it holds,
which cannot be resumed without replaying the stream). A group holds at least the loader's
``shuffle_buffer`` samples (whole shards, up to ``MAX_GROUP`` of them), so a sample moves at
least as far as it could in a buffer of that size.
"""

from __future__ import annotations

import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vtk import storage
from vtk.data.shardset import looks_truncated
from vtk.shards.reader import (
    MAX_SAMPLE_BYTES,
    OVERSIZED,
    PROBLEMS,
    UNSAFE,
    member_events,
    name_problem,
)
from vtk.shards.wds_index import index_path, read_index, split_name

MAX_GROUP = 16  # shards read side by side by one worker (open files, headers in memory)


@dataclass
class Entry:
    """One sample of a tar, from its headers: members as (ext, data offset, size)."""

    key: str
    url: str
    members: list[tuple[str, int, int]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


class Listing(NamedTuple):
    """A tar's samples as a pass reads them, and what is wrong with the tar (messages)."""

    entries: list[Entry]
    problems: tuple[str, ...] = ()


def list_entries(path: str, max_bytes: int = MAX_SAMPLE_BYTES) -> Listing:
    """The samples of one tar from its ``.idx`` where that is current (written after the tar,
    and not pointing past its end), else from its headers (``scan_headers``). A truncated tar
    is listed from its headers, up to the cut. Errors of the tar are problems, not raised:
    the samples before them are listed."""
    problems = []
    try:
        if looks_truncated(path):
            problems.append("truncated tar; reading what is there")
        else:
            indexed = _from_current_index(path, max_bytes)
            if indexed is not None:
                return Listing(indexed)
        return Listing(scan_headers(path, max_bytes), tuple(problems))
    except (tarfile.TarError, OSError, EOFError) as e:
        return Listing(getattr(e, "entries", []), (*problems, f"unreadable tar data ({e})"))


def _from_current_index(path: str, max_bytes: int) -> list[Entry] | None:
    idx = index_path(path)
    if not storage.store(path).local:
        return entries_from_index(path, read_index(idx), max_bytes) if storage.exists(idx) \
            else None
    try:
        tar, ix = os.stat(path), os.stat(idx)
    except OSError:
        return None
    if ix.st_mtime_ns < tar.st_mtime_ns:  # the tar was written again after its index
        return None
    try:
        samples = read_index(idx)
    except (ValueError, IndexError):  # not an index we can read: the headers say it all
        return None
    if samples and max(o + s for m in samples for _, o, s, _ in m) > tar.st_size:
        return None
    return entries_from_index(path, samples, max_bytes)


class Listings:
    """Each tar's ``Listing``, made once per process and kept for the passes after it: a pass
    over a small set then starts in the time of a few ``stat`` calls (a local tar is listed
    again when its size or time changes). Tars with errors are listed again every time (the
    error may pass, as a network one). At most ``limit`` samples are kept: on a corpus larger
    than that a pass is long beside listing its tars again."""

    def __init__(self, max_bytes: int = MAX_SAMPLE_BYTES, limit: int = 500_000):
        self.max_bytes, self.limit = max_bytes, limit
        self._kept: OrderedDict[str, tuple] = OrderedDict()
        self._samples = 0

    def __call__(self, path: str) -> Listing:
        stamp = _stamp(path)
        kept = self._kept.get(path)
        if kept is not None and kept[0] == stamp:
            self._kept.move_to_end(path)
            return kept[1]
        listing = list_entries(path, self.max_bytes)
        if kept is not None:
            self._drop(path)
        if not any(p.startswith("unreadable") for p in listing.problems):
            self._kept[path] = (stamp, listing)
            self._samples += len(listing.entries)
            while self._samples > self.limit and len(self._kept) > 1:
                self._drop(next(iter(self._kept)))
        return listing

    def _drop(self, path: str) -> None:
        self._samples -= len(self._kept.pop(path)[1].entries)


def _stamp(path: str):
    if not storage.store(path).local:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def scan_samples(path: str, max_bytes: int = MAX_SAMPLE_BYTES) -> list[Entry]:
    """The samples of one tar (``scan_headers``); for a shard at a URL with its ``.idx``
    beside it, from the index (one small request instead of a seek per member header)."""
    if not storage.store(path).local:
        idx = index_path(path)
        if storage.exists(idx):
            return entries_from_index(path, read_index(idx), max_bytes)
    return scan_headers(path, max_bytes)


def entries_from_index(path: str, samples, max_bytes: int = MAX_SAMPLE_BYTES) -> list[Entry]:
    """Entries from a parsed ``.idx`` (``vtk.shards.wds_index.read_index``), with the member
    name and size checks of ``scan_headers`` (an index lists regular files only)."""
    out = []
    for members in samples:
        entry = Entry(split_name(members[0][3])[0], path)
        for ext, offset, size, name in members:
            problem = name_problem(name)
            if problem is not None:
                entry.problems.append((UNSAFE, f"member {name!r} {problem}"))
            else:
                entry.members.append((ext.lower(), offset, size))
        if sum(size for _, _, size in entry.members) > max_bytes:
            entry.members.clear()
            entry.problems.append((OVERSIZED, f"over the {max_bytes} bytes of "
                                   "--max-sample-bytes; skipped unread"))
        out.append(entry)
    return out


def scan_headers(path: str, max_bytes: int = MAX_SAMPLE_BYTES) -> list[Entry]:
    """The samples of one tar from its headers alone, grouped and checked as
    ``vtk.shards.reader.read_samples`` groups and checks them (``member_events``): a sample
    over ``max_bytes`` keeps no members and an ``oversized`` problem, an unsafe member is left
    out with an ``unsafe`` problem. Errors of the tar itself propagate with the complete
    samples before them in ``error.entries``."""
    entries: list[Entry] = []
    try:
        with storage.open_random(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for event in member_events(tar, max_bytes):
                if event[0] == "sample":
                    entries.append(Entry(event[1], path))
                elif event[0] == "problem":
                    _, kind, message, drop = event
                    if drop:
                        entries[-1].members.clear()
                    entries[-1].problems.append((kind, message))
                else:
                    _, m, ext = event
                    entries[-1].members.append((ext, m.offset_data, m.size))
    except (tarfile.TarError, OSError, EOFError) as e:
        e.entries = entries[:-1]  # the last sample may be cut: only those before it are whole
        raise
    return entries


def read_entry(f, entry: Entry) -> dict:
    """A sample dict (``__key__``, ``__url__``, ext: bytes, and ``PROBLEMS`` when something
    was not read) from an open tar file, by seeking to each member."""
    sample: dict = {"__key__": entry.key, "__url__": entry.url}
    for ext, offset, size in entry.members:
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise EOFError(f"{entry.url}: member {entry.key}.{ext} is cut short")
        sample[ext] = data
    if entry.problems:
        sample[PROBLEMS] = list(entry.problems)
    return sample


def group_size(samples_in_first_shard: int, shuffle_buffer: int) -> int:
    """Shards per group: enough for ``shuffle_buffer`` samples, 1 to ``MAX_GROUP``."""
    per = max(samples_in_first_shard, 1)
    return int(min(MAX_GROUP, max(1, -(-shuffle_buffer // per))))


def permutation(n: int, seed: int, epoch: int, partition: int, group: int) -> np.ndarray:
    """The training order of a group's ``n`` samples."""
    return np.random.default_rng([seed, epoch, partition, group, 0x5EED]).permutation(n)


# -- sampling for large corpora: pure functions of (seed, epoch, partition, draw) -------------


def shard_probs(set_sizes: list[int], set_weights: list[float] | None = None) -> np.ndarray:
    """Each shard's probability of being drawn, shards of set ``k`` in order: set ``k``'s
    weight (default: its share of the shards) spread evenly over its ``set_sizes[k]`` shards.
    ``--data-weights 0.7,0.3`` thus gives 70% of the draws to the first set however many
    shards each has (as webdataset's and open_clip's resampled mixing, when shards hold
    equally many samples)."""
    sizes = np.asarray(set_sizes, dtype=float)
    weights = sizes if set_weights is None else np.asarray(set_weights, dtype=float)
    if len(weights) != len(sizes) or not np.isfinite(weights).all() or (weights < 0).any() \
            or (sizes < 1).any():
        raise ValueError(f"weights {weights.tolist()} do not fit shard sets of "
                         f"{list(set_sizes)} (each a finite number >= 0)")
    with np.errstate(over="ignore", invalid="ignore"):
        shares = weights / weights.max() if weights.max() > 0 else weights  # 1e308s sum to inf
        probs = np.repeat(shares / shares.sum() / sizes, sizes.astype(int))
        probs = probs / probs.sum()
    if not (np.isfinite(probs).all() and probs.sum() > 0):
        raise ValueError(f"weights {weights.tolist()} give no probabilities (all 0?)")
    return probs


def draw_shard(probs: np.ndarray, seed: int, epoch: int, partition: int, draw: int) -> int:
    """The shard of a partition's ``draw``-th draw with replacement (resampled mode)."""
    u = np.random.default_rng([seed, epoch, partition, draw, 0xD4A]).random()
    return int(min(np.searchsorted(np.cumsum(probs), u, side="right"), len(probs) - 1))


def source_of(key: str) -> str:
    """The source id in a vtk sample key (``{source_id}_{clip index:06d}``)."""
    head, _, tail = key.rpartition("_")
    return head if head and tail.isdigit() else key


def source_counts(keys) -> dict[str, int]:
    """Clips per source among ``keys``."""
    counts: dict[str, int] = {}
    for k in keys:
        s = source_of(k)
        counts[s] = counts.get(s, 0) + 1
    return counts


def keep_div(clips_of_source: int, fewest: int, seed: int, epoch: int, partition: int,
             draw: int, index: int) -> bool:
    """InternVid-10M-DIV's weighting by thinning: a clip is kept with probability
    ``fewest / clips_of_source``, so each clip's frequency is proportional to 1 / (clips from
    its source video), and every source is seen about equally often."""
    u = np.random.default_rng([seed, epoch, partition, draw, index, 0xD17]).random()
    return bool(u < fewest / clips_of_source)


def quota(num_samples: int, rank: int, world_size: int, worker: int, workers: int) -> int:
    """A worker's share of an epoch of ``num_samples`` samples (resampled mode): the ranks
    split it evenly (what is left over is dropped, so every rank takes as many steps), then
    the rank's workers (the first ones take one more)."""
    per_rank = num_samples // world_size
    return per_rank // workers + (1 if worker < per_rank % workers else 0)
