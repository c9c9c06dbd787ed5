"""What a shard writer knows of its set that grows with it: the stored keys, the sources
completed and the failures recorded, in a private SQLite database (``vtk.scratchdb``), so a
writer's memory, and the Ray driver's that holds one, stays flat in the number of inputs.

It is rebuilt from ``stats/`` at every start (the stats files are the record; this is their
index), and nothing of it outlives the process.
"""

from __future__ import annotations

from collections.abc import Iterable

from vtk import scratchdb

_SCHEMA = (
    # source: the key's source id (keys are SOURCE_CLIP; ids hold no '_')
    "CREATE TABLE keys (key TEXT PRIMARY KEY, source TEXT NOT NULL) WITHOUT ROWID",
    "CREATE INDEX keys_by_source ON keys (source)",
    # every source some shard's stats name as completed; done = 0: to be redone (--retry-failed)
    "CREATE TABLE sources (id TEXT PRIMARY KEY, done INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE failures (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, key TEXT, "
    "input TEXT, kind TEXT, reason TEXT)",
)


def key_source(key: str) -> str:
    return key.rsplit("_", 1)[0]


class SetIndex:
    def __init__(self):
        self.db = scratchdb.connect(*_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def commit(self) -> None:
        self.db.commit()

    # --- keys ----------------------------------------------------------------------------

    def has_key(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM keys WHERE key = ?", (key,)).fetchone() is not None

    def claim_key(self, key: str) -> bool:
        """Store ``key``; False if it was stored already (one statement: a look-up and an
        insert per sample would be two)."""
        return self.db.execute("INSERT OR IGNORE INTO keys VALUES (?, ?)",
                               (key, key_source(key))).rowcount == 1

    def any_key(self, keys: Iterable[str]) -> str | None:
        """One of ``keys`` that is stored, or None."""
        return next((k for k in keys if self.has_key(k)), None)

    def add_keys(self, keys: Iterable[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO keys VALUES (?, ?)",
                            ((k, key_source(k)) for k in keys))

    def num_keys(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM keys").fetchone()[0]

    def partial_keys(self) -> dict[str, list[str]]:
        """Stored keys of sources not completed (cut off by a kill), by source id."""
        out: dict[str, list[str]] = {}
        for key, source in self.db.execute(
                "SELECT k.key, k.source FROM keys k LEFT JOIN sources s ON s.id = k.source "
                "WHERE s.done IS NULL OR s.done = 0 ORDER BY k.key"):
            out.setdefault(source, []).append(key)
        return out

    # --- sources -------------------------------------------------------------------------

    def is_done(self, source: str) -> bool:
        row = self.db.execute("SELECT done FROM sources WHERE id = ?", (source,)).fetchone()
        return bool(row and row[0])

    def add_done(self, sources: Iterable[str]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO sources VALUES (?, 1)",
                            ((s,) for s in sources))

    def redo_failed(self) -> None:
        """Sources with a recorded failure count as not done (``--retry-failed``)."""
        self.db.execute("UPDATE sources SET done = 0 WHERE id IN (SELECT source FROM failures)")

    def num_sources(self) -> int:
        """Sources named completed by some shard (those to be redone included)."""
        return self.db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]

    # --- failures ------------------------------------------------------------------------

    def add_failures(self, failures: Iterable[dict]) -> None:
        self.db.executemany(
            "INSERT INTO failures (source, key, input, kind, reason) VALUES (?, ?, ?, ?, ?)",
            ((f["source"], f.get("key"), f["input"], f["kind"], f["reason"]) for f in failures))

    def standing_failures(self) -> list[dict]:
        """The latest record per input (a source, or one of its clips), in the order inputs
        first failed, leaving out an input that a later retry did write: a clip whose key is
        stored, or a whole-source failure of a source with a stored key."""
        rows = self.db.execute(
            "SELECT f.source, f.key, f.input, f.kind, f.reason FROM failures f JOIN ("
            "  SELECT MAX(seq) AS last, MIN(seq) AS first FROM failures"
            "  GROUP BY source, IFNULL(key, '')) g ON f.seq = g.last "
            "WHERE NOT EXISTS (SELECT 1 FROM keys WHERE keys.key = f.key) "
            "AND NOT (f.key IS NULL AND EXISTS (SELECT 1 FROM keys WHERE keys.source = f.source)) "
            "ORDER BY g.first")
        out = []
        for source, key, input_, kind, reason in rows:
            record = {"source": source, "input": input_, "kind": kind, "reason": reason}
            if key:
                record["key"] = key
            out.append(record)
        return out
