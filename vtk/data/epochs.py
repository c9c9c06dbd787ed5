"""Training batches over epochs with a resumable position: the data layer's side of an exact
resume (vtk.train checkpoints the position, ``Batches`` replays to it)."""

from __future__ import annotations

from vtk.errors import VtkError


class Batches:
    """Endless training batches over epochs, with a resumable position: (epoch, batches taken
    in that epoch). The loader is deterministic for a (seed, epoch), so a resumed run replays
    the epoch up to the saved offset and goes on with exactly the batches it would have seen."""

    def __init__(self, loader, batch_size: int, epoch: int = 0, offset: int = 0,
                 data: str | None = None):
        self.loader, self.batch_size, self.epoch, self.offset = loader, batch_size, epoch, offset
        self.data = data  # named in the error when an epoch gives no full batch
        self._it, self._full, self._clips, self._ready = None, 0, 0, None

    def position(self) -> dict:
        """The first batch not handed out yet (one taken by ``warm`` is not handed out)."""
        return {"epoch": self.epoch, "offset": self.offset - (self._ready is not None)}

    def warm(self) -> None:
        """Take the next batch now and hand it out first: the loader's start-up (workers,
        decoding, a frame cache filling) happens here, outside a timed loop."""
        if self._ready is None:
            self._ready = self._next()

    def __next__(self) -> dict:
        batch, self._ready = (self._ready, None) if self._ready is not None else (None, None)
        return batch if batch is not None else self._next()

    def _next(self) -> dict:
        while True:
            if self._it is None:
                self.loader.epoch = self.epoch
                self._it = iter(self.loader)
                for _ in range(self.offset):  # replay up to the saved position
                    next(self._it)
                self._full, self._clips = self.offset, 0
            try:
                batch = next(self._it)
            except StopIteration:
                if self._full == 0:
                    raise VtkError(self._no_batch()) from None
                self.epoch, self.offset, self._it, self._full = self.epoch + 1, 0, None, 0
                continue
            self.offset += 1
            self._clips += len(batch["text"])
            # A short batch (an epoch's tail) is skipped: under DDP every rank must gather
            # the same number of features, and a step's size should not vary.
            if len(batch["text"]) == self.batch_size:
                self._full += 1
                return batch

    def _no_batch(self) -> str:
        """Why an epoch gave no full batch: the clips this rank got against --batch-size, and
        the samples the loader skipped (the real cause when there were none to batch)."""
        where = self.data or "the shard set"
        stats = getattr(self.loader, "stats", None)
        counts = stats.as_dict() if stats is not None else {}
        skipped = "; ".join(what.format(counts[k]) for k, what in (
            ("corrupt", "{} samples skipped as corrupt (undecodable mp4 or json)"),
            ("missing", "{} samples without an mp4"),
            ("tar_errors", "{} unreadable tar members")) if counts.get(k))
        if self._clips == 0:
            return f"no decodable clip in {where} on this rank: {skipped or 'it holds no sample'}"
        return (f"{where} gave this rank {self._clips} clips, fewer than --batch-size "
                f"{self.batch_size}{f' ({skipped})' if skipped else ''}: lower --batch-size to "
                f"{self._clips} or less")
