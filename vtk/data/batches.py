"""Batch memory: how a batch of clips reaches the consumer without copies or page faults.

On a 2-core machine, what the streaming loader does beside decoding is mostly moving bytes.
Collating crops into a batch, a fresh shared-memory batch for the hand-over (page faults), a
fresh float32 batch (page faults again) and normalising it in the main process each cost a
share of a clip's decode time (docs/loader.md, "Where the time goes"; docs/results/timings.md).
So:

- ``SlotRing``: a few batch buffers per loader worker in shared memory, made once before the
  (persistent) workers start. A worker writes each clip, already normalised, straight into the
  next free slot (``BatchWriter``) and sends only the slot's number.
- The main process hands the slot itself to the consumer (an alias of it, ``SlotRing.hand_out``)
  and gives it back to its worker once nothing else references its memory (torch's storage use
  count, ``sole_owner``): a batch a consumer keeps is never overwritten.
- With every slot taken (a consumer that keeps many batches), a worker falls back to a fresh
  shared buffer for that batch: slower, never blocked.

Slot states live in a small shared int32 tensor: FREE -> FILLING (worker claims) -> HELD (main
hands out) -> FREE (main, once unreferenced). A worker turns its own FILLING slots back to FREE
when a pass starts: those were batches of an abandoned pass that torch discarded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from vtk.data.samples import item_fields

FREE, FILLING, HELD = 0, 1, 2


def _use_count(t: torch.Tensor) -> int | None:
    counter = getattr(torch._C, "_storage_Use_Count", None)  # torch >= 2.1
    return None if counter is None else counter(t.untyped_storage()._cdata)


_ALONE = _use_count(torch.empty(1))  # the count of a tensor nobody else references
_warned_no_reuse = False


def slot_reuse_available() -> bool:
    """Whether this torch has the private storage use count that tells when a handed-out slot
    is free again (``torch._C._storage_Use_Count``). Without it a ring would never get a slot
    back: the loader then warns once and gives every batch a buffer of its own."""
    if _use_count(torch.empty(1)) is not None:
        return True
    global _warned_no_reuse
    if not _warned_no_reuse:
        _warned_no_reuse = True
        warnings.warn(
            "vtk loader: this torch build lacks torch._C._storage_Use_Count, which batch-slot "
            "reuse relies on; every batch now gets a fresh shared buffer (correct, but slower: "
            "page faults per batch). Please report your torch version.", RuntimeWarning,
            stacklevel=2)
    return False


def sole_owner(t: torch.Tensor) -> bool:
    """True when no other tensor, view or numpy array shares ``t``'s memory."""
    n = _use_count(t)
    return n is not None and n <= _ALONE


def shared_empty(shape, dtype=torch.uint8) -> torch.Tensor:
    """An uninitialised tensor in shared memory, no page touched until written
    (``share_memory_`` on a fresh tensor would copy it, faulting every page in)."""
    numel = 1
    for s in shape:
        numel *= s
    storage = torch.UntypedStorage._new_shared(numel * torch.empty(0, dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)  # not a view: no hidden base


class SlotRing:
    """``slots`` batch buffers (``batch_size x clip_shape``, ``dtype``) per worker, each its
    own shared-memory block, with a shared state per slot. Row ``w`` belongs to worker ``w``
    (row 0 to the calling process outside DataLoader workers)."""

    def __init__(self, workers: int, slots: int, batch_size: int, clip_shape, dtype):
        rows = max(workers, 1)
        shape = (batch_size, *clip_shape)
        self.data = [[shared_empty(shape, dtype) for _ in range(slots)] for _ in range(rows)]
        self.state = shared_empty((rows, slots), torch.int32)
        self.state.fill_(FREE)
        self.slots = slots
        self._next = 0
        self._held: list[tuple[int, int]] = []  # main process: slots the consumer may hold

    # -- worker side ---------------------------------------------------------------------------

    @staticmethod
    def _row() -> int:
        info = torch.utils.data.get_worker_info()
        return 0 if info is None else info.id

    def start_pass(self) -> None:
        """Free this worker's slots left FILLING by an abandoned pass."""
        row = self.state[self._row()]
        row[row == FILLING] = FREE

    def claim(self) -> tuple[int, int] | None:
        """A free slot of this worker, now FILLING; None when every slot is taken."""
        row = self._row()
        for _ in range(self.slots):
            slot, self._next = self._next, (self._next + 1) % self.slots
            if int(self.state[row, slot]) == FREE:
                self.state[row, slot] = FILLING
                return row, slot
        return None

    def buffer(self, where: tuple[int, int]) -> torch.Tensor:
        return self.data[where[0]][where[1]]

    # -- main side -----------------------------------------------------------------------------

    def hand_out(self, where: tuple[int, int], n: int) -> torch.Tensor:
        """The first ``n`` clips of a filled slot, as a new alias the consumer owns."""
        self.reclaim()
        self.state[where] = HELD
        self._held.append(where)
        return self.buffer(where)[:n].view(n, *self.buffer(where).shape[1:])

    def reclaim(self) -> None:
        """Give back every handed-out slot that nothing references any more."""
        keep = []
        for where in self._held:
            if sole_owner(self.buffer(where)):
                self.state[where] = FREE
            else:
                keep.append(where)
        self._held = keep


@dataclass
class WorkerBatch:
    """What a worker hands over for one batch: the items' fields (lists, ``item_fields``), the
    clips either in a ring slot (``slot`` = (row, slot)) or in a tensor of their own
    (``video``), and where the worker's pass stands before and after it (``vtk.data.order``
    positions: (group, index)). The loader turns it into the consumer's batch dict."""

    fields: dict
    video: torch.Tensor | None = None
    slot: tuple[int, int] | None = None
    worker: int = 0
    start: tuple[int, ...] = (0, 0, 0)
    end: tuple[int, ...] = (0, 0, 0)

    def __len__(self) -> int:
        return len(self.fields["key"])


class BatchWriter:
    """Worker side: collects one batch at a time, its clips written in place.

        out = writer.clip_out()          # T x 3 x S x S: write the next clip into it
        batch = writer.add(item, pos)    # a WorkerBatch when full, else None
        batch = writer.flush(pos)        # the last, partial batch (or None)

    ``pos``: the worker's position once this item's sample is consumed (the batch's ``end``).
    """

    def __init__(self, batch_size: int, clip_shape, dtype, ring: SlotRing | None = None,
                 worker: int = 0, start: tuple[int, ...] = (0, 0, 0)):
        self.batch_size, self.clip_shape, self.dtype = batch_size, tuple(clip_shape), dtype
        self.ring, self.worker, self._start = ring, worker, tuple(start)
        self._buf: torch.Tensor | None = None
        self._slot: tuple[int, int] | None = None
        self._items: list[dict] = []

    def clip_out(self) -> torch.Tensor:
        if self._buf is None:
            self._slot = self.ring.claim() if self.ring is not None else None
            if self._slot is not None:
                self._buf = self.ring.buffer(self._slot)
            else:
                shape = (self.batch_size, *self.clip_shape)
                in_worker = torch.utils.data.get_worker_info() is not None
                self._buf = (shared_empty(shape, self.dtype) if in_worker
                             else torch.empty(shape, dtype=self.dtype))
        return self._buf[len(self._items)]

    def add(self, item: dict, pos: tuple[int, ...] = (0, 0, 0)) -> WorkerBatch | None:
        """Keep ``item`` (its clip already written to ``clip_out()``)."""
        self._items.append(item)
        return self._emit(pos) if len(self._items) == self.batch_size else None

    def flush(self, pos: tuple[int, ...] = (0, 0, 0)) -> WorkerBatch | None:
        return self._emit(pos) if self._items else None

    def _emit(self, pos) -> WorkerBatch:
        items, n = self._items, len(self._items)
        batch = WorkerBatch(item_fields(items), None if self._slot is not None else self._buf[:n],
                            self._slot, self.worker, self._start, tuple(pos))
        self._buf, self._slot, self._items, self._start = None, None, [], tuple(pos)
        return batch


@dataclass
class Part:
    """A short batch waiting in ``Tails``: its rows not yet handed out, the worker it came
    from, how many of its rows went into earlier batches, and the worker's position once all
    of it is handed out."""

    batch: dict
    worker: int = 0
    end: tuple[int, ...] = (0, 0, 0)
    drop: int = 0

    def __len__(self) -> int:
        return len(self.batch["key"])

    def after(self, rows: int) -> Part:
        return Part({k: v[rows:] for k, v in self.batch.items()}, self.worker, self.end,
                    self.drop + rows)


class Tails:
    """Main side: the partial batches a pass ends with, one per worker, joined into whole ones.
    Without it a rank would lose up to ``workers x (batch_size - 1)`` clips per pass to
    ``drop_last`` and hand out that many short batches without it; with it, at most one.

        whole = tails.add(part)          # a full batch once the tails add up to one, else None
        last = tails.rest()              # what is left at the end of the pass (or None)
        tails.finished()                 # [(worker, end)] of the parts handed out whole since
        tails.pending()                  # [(worker, rows already handed out)], in order

    A resumed pass passes the ``pending`` list it was saved with as ``expect``: those workers
    send the same parts again, which are then joined in the saved order, their first ``drop``
    rows left out, before any other part.

    The first short batch's buffer has room for a whole batch (its slot), so the others are
    copied into it: a tenth of the time of a new tensor (``torch.cat``: page faults on fresh
    memory; docs/results/timings.md).
    """

    def __init__(self, batch_size: int, expect=()):
        self.batch_size = batch_size
        self._parts: list[Part] = []
        self._expect = [(int(w), int(d)) for w, d in expect]
        self._arrived: dict[int, Part] = {}
        self._finished: list[tuple[int, tuple[int, ...]]] = []

    def add(self, part: Part) -> dict | None:
        if self._expect:
            drops = dict(self._expect)
            if part.worker in drops and part.worker not in self._arrived:
                self._arrived[part.worker] = part.after(drops[part.worker]) if drops[
                    part.worker] else part
            else:
                self._parts.append(part)
            if len(self._arrived) < len(self._expect):
                return None
            self._parts = [self._arrived[w] for w, _ in self._expect] + self._parts
            self._expect, self._arrived = [], {}
        else:
            self._parts.append(part)
        if sum(len(p) for p in self._parts) < self.batch_size:
            return None
        return self._fill(self.batch_size)

    def rest(self) -> dict | None:
        if self._expect:  # parts that never came again (the shards changed): none to join
            self._parts = [self._arrived[w] for w, _ in self._expect if w in self._arrived
                           ] + self._parts
            self._expect, self._arrived = [], {}
        if not self._parts:
            return None
        return self._fill(sum(len(p) for p in self._parts))

    def finished(self) -> list[tuple[int, tuple[int, int]]]:
        done, self._finished = self._finished, []
        return done

    def pending(self) -> list[list[int]]:
        if self._expect:
            arrived = [[w, d] for w, d in self._expect]
            return arrived + [[p.worker, p.drop] for p in self._parts]
        return [[p.worker, p.drop] for p in self._parts]

    def _fill(self, rows: int) -> dict:
        """A batch of ``rows`` clips from the parts, in order; the overflow stays."""
        takes, left, at = [], [], 0
        for part in self._parts:
            take = min(len(part), rows - at)
            if take > 0:
                takes.append((part, take))
                at += take
            if take < len(part):
                left.append(part.after(max(take, 0)) if take > 0 else part)
        first = takes[0][0].batch
        video = _widen(first["video"], rows)
        whole = {k: [] for k in first if k != "video"}
        at = 0
        for part, take in takes:
            if video is None:
                video = torch.empty((rows, *first["video"].shape[1:]), dtype=first["video"].dtype)
            if not (part is takes[0][0] and video.data_ptr() == first["video"].data_ptr()):
                video[at:at + take].copy_(part.batch["video"][:take])
            for k in whole:
                whole[k] += list(part.batch[k][:take])
            at += take
            if take == len(part):
                self._finished.append((part.worker, part.end))
        whole["video"] = video
        self._parts = left
        return whole


def _widen(video: torch.Tensor, rows: int) -> torch.Tensor | None:
    """``video``, the first rows of a batch buffer, seen with ``rows`` rows: None unless the
    buffer behind it has them."""
    if not video.is_contiguous():
        return None
    if rows <= len(video):
        return video[:rows]
    row = video[0].numel() * video.element_size()
    if video.untyped_storage().nbytes() < video.storage_offset() * video.element_size() + rows * row:
        return None
    return torch.empty(0, dtype=video.dtype).set_(
        video.untyped_storage(), video.storage_offset(), (rows, *video.shape[1:]))


class BufferPool:
    """Main side, for loaders that build batches in the main process (the frame cache): output
    buffers by shape and dtype, handed out (as new aliases) again once only the pool holds
    them. ``keep`` caps how many it holds; beyond that, fresh tensors are handed out."""

    def __init__(self, keep: int = 3):
        self.keep = keep
        self._bufs: list[torch.Tensor] = []

    def take(self, shape, dtype) -> torch.Tensor:
        shape = torch.Size(shape)
        for t in self._bufs:
            if t.shape == shape and t.dtype == dtype and sole_owner(t):
                return t.view(shape)
        t = torch.empty(shape, dtype=dtype)
        if len(self._bufs) < self.keep:
            self._bufs.append(t)
        return t.view(shape)
