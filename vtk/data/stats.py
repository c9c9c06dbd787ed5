"""Loader statistics shared by the main process and its workers (a lock-protected array).

Counts: ``samples`` yielded, ``corrupt`` samples skipped (undecodable mp4, a json that does not
parse or has the wrong shape, unsafe tar members), ``missing`` samples without an mp4,
``tar_errors`` (unreadable tar members or truncated shards), ``oversized`` samples skipped
unread for being over ``max_sample_bytes`` (``vtk.shards.reader``).
"""

from __future__ import annotations

import multiprocessing as mp
import warnings

FIELDS = ("samples", "corrupt", "missing", "tar_errors", "oversized")


class LoaderStats:
    def __init__(self):
        self._counts = mp.Array("q", len(FIELDS))  # lives in shared memory, survives fork

    def add(self, field: str, n: int = 1) -> None:
        with self._counts.get_lock():
            self._counts[FIELDS.index(field)] += n

    def skip(self, field: str, where: str, reason) -> None:
        """Count a skipped sample and warn once with its name and the reason."""
        self.add(field)
        warnings.warn(f"skipped {where}: {reason}", RuntimeWarning, stacklevel=2)

    def as_dict(self) -> dict[str, int]:
        with self._counts.get_lock():
            return dict(zip(FIELDS, self._counts[:]))

    def __getitem__(self, field: str) -> int:
        return self.as_dict()[field]

    def __repr__(self) -> str:
        return f"LoaderStats({self.as_dict()})"
