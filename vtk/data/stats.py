"""Loader statistics shared by the main process and its workers (a shared tensor).

Counts: ``samples`` yielded, ``corrupt`` samples skipped (undecodable mp4, a json that does not
parse or has the wrong shape, unsafe tar members), ``missing`` samples without an mp4,
``tar_errors`` (unreadable tar members or truncated shards), ``oversized`` samples skipped
unread for being over ``max_sample_bytes`` (``vtk.shards.reader``), ``uncaptioned`` samples
whose caption of the asked scale failed when it was made (``vtk.data.samples.Uncaptioned``).
"""

from __future__ import annotations

import warnings

import torch

FIELDS = ("samples", "corrupt", "missing", "tar_errors", "oversized", "uncaptioned")


class LoaderStats:
    """Counts in shared memory, one row per process (the main one and each loader worker), so
    no lock is needed and any start method (fork, spawn, forkserver) can carry them to the
    workers: a shared tensor pickles as a handle. The totals are the rows' sums."""

    def __init__(self, workers: int = 16):
        self._counts = torch.zeros((workers + 1, len(FIELDS)), dtype=torch.int64).share_memory_()

    def add(self, field: str, n: int = 1) -> None:
        info = torch.utils.data.get_worker_info()
        row = 0 if info is None else 1 + info.id % (len(self._counts) - 1)
        self._counts[row, FIELDS.index(field)] += n

    def skip(self, field: str, where: str, reason) -> None:
        """Count a skipped sample and warn once with its name and the reason."""
        self.add(field)
        warnings.warn(f"skipped {where}: {reason}", RuntimeWarning, stacklevel=2)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(FIELDS, (int(v) for v in self._counts.sum(0))))

    def __getitem__(self, field: str) -> int:
        return self.as_dict()[field]

    def __repr__(self) -> str:
        return f"LoaderStats({self.as_dict()})"
