"""Training batches over epochs with a resumable position: the data layer's side of an exact
resume (vtk.train checkpoints the position, the loader resumes there without decoding what
it skips)."""

from __future__ import annotations

from vtk.errors import VtkError


class Batches:
    """Endless training batches over epochs, with a resumable position (torchdata's Stateful
    protocol): the loader's own ``state_dict()`` (``vtk.data.loader.VideoLoader``), taken
    before the first batch not yet handed out. Resuming from it costs no decoding: the loader
    skips what was handed out."""

    def __init__(self, loader, batch_size: int, data: str | None = None):
        self.loader, self.batch_size = loader, batch_size
        self.data = data  # named in the error when an epoch gives no full batch
        self._it, self._full, self._clips, self._ready, self._before = None, 0, 0, None, None
        self._fresh = True

    def state_dict(self) -> dict:
        """The first batch not handed out yet (one taken by ``warm`` is not handed out)."""
        if self._ready is not None:
            return self._before
        return self.loader.state_dict()

    def load_state_dict(self, position: dict) -> None:
        """Start at ``position`` (before the first batch is taken; {}: the first epoch)."""
        if self._it is not None or self._ready is not None:
            raise RuntimeError("Batches.load_state_dict after batches were taken")
        if position:
            self.loader.load_state_dict(position)

    def warm(self) -> None:
        """Take the next batch now and hand it out first: the loader's start-up (workers,
        decoding, a frame cache filling) happens here, outside a timed loop."""
        if self._ready is None:
            self._before = self.loader.state_dict()
            self._ready = self._next()

    def __next__(self) -> dict:
        batch, self._ready = (self._ready, None) if self._ready is not None else (None, None)
        return batch if batch is not None else self._next()

    def _next(self) -> dict:
        while True:
            if self._it is None:
                start = self.loader.state_dict()
                # a pass that starts part-way may rightly hold no full batch (its tail only)
                self._fresh = set(start) == {"epoch"}
                self._it = iter(self.loader)
                self._full, self._clips = 0, 0
            try:
                batch = next(self._it)
            except StopIteration:
                if self._full == 0 and self._fresh:
                    raise VtkError(self._no_batch()) from None
                self._it = None
                continue
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
