"""A caption cache keyed by clip content and caption settings, so a re-run or ``--resume``
never captions the same clip twice.

One SQLite file in a folder (``captions.sqlite``); safe to share between the worker processes
of one shard writer (WAL journal, busy timeout). Only successful results are stored.

Switching a new file to WAL is not covered by SQLite's busy timeout: workers opening a fresh
cache together got "database is locked" and lost their clips. Set-up therefore runs under an
exclusive lock on a side file, one process at a time (``vtk.fileio.connect_shared_sqlite``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np

from vtk.fileio import connect_shared_sqlite


def clip_hash(frames: np.ndarray, fps: float) -> str:
    """Content hash of a clip: its pixels, their layout and the frame rate."""
    h = hashlib.sha256()
    h.update(f"{frames.dtype}|{frames.shape}|{float(fps):.6f}|".encode())
    h.update(np.ascontiguousarray(frames).data)
    return h.hexdigest()


def settings_key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


class CaptionCache:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "captions.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        # opened lazily so a Captioning object can be built in one process and used in another
        if self._db is None:
            self._db = connect_shared_sqlite(
                self.path, "CREATE TABLE IF NOT EXISTS captions (clip TEXT, settings TEXT, "
                "result TEXT, PRIMARY KEY (clip, settings))")
        return self._db

    def get(self, clip: str, settings: str) -> dict | None:
        row = self.db.execute("SELECT result FROM captions WHERE clip = ? AND settings = ?",
                              (clip, settings)).fetchone()
        return json.loads(row[0]) if row else None

    def put_many(self, rows: list[tuple[str, str, dict]]) -> None:
        if rows:
            self.db.executemany("INSERT OR REPLACE INTO captions VALUES (?, ?, ?)",
                                [(c, s, json.dumps(r)) for c, s, r in rows])
            self.db.commit()

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM captions").fetchone()[0])

    def __getstate__(self):  # picklable for worker processes: reconnect on the other side
        return {"path": self.path, "_db": None}
