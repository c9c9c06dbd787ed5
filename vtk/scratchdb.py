"""Indexes that grow with the input, on local disk rather than in memory.

A shard writer knows every key and source id of its set, and the source reader every input it
has seen; kept in Python sets they cost about 0.8 KB per input (6 GB for InternVid's 7M
videos). :func:`connect` gives a private SQLite database instead: SQLite's temporary database
(an empty file name), whose file is deleted when the connection closes and, being unlinked as
soon as it is made, by the kernel when the process dies (a SIGKILL leaves nothing behind). Its
pages live in a small page cache and go to the file beyond it, so memory stays flat however
many rows it holds. The file is in SQLite's temporary folder (``SQLITE_TMPDIR``, ``TMPDIR``,
then ``/var/tmp``, ``/tmp``).
"""

from __future__ import annotations

import sqlite3

CACHE_KB = 8192  # SQLite's page cache per database


def connect(*schema: str) -> sqlite3.Connection:
    """A new private database with the tables of ``schema`` (SQL statements). Nothing in it
    outlives the process, so nothing is synced: a crash loses only what a rerun rebuilds."""
    db = sqlite3.connect("", check_same_thread=False)
    for pragma in (f"cache_size=-{CACHE_KB}", "journal_mode=OFF", "synchronous=OFF",
                   "temp_store=FILE"):
        db.execute(f"PRAGMA {pragma}")
    for statement in schema:
        db.execute(statement)
    return db
