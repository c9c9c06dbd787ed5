"""Files other stages trust: written whole or not at all."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_TEMP = re.compile(r"\..+\.tmp-(\d+)")  # write_text_atomic's temporary names


def replace_atomic(path: str | os.PathLike, write) -> None:
    """``write(tmp)`` to a temporary name in the same folder, then a rename over ``path``: a
    reader never sees half a file, and a hard link to the old file (a reused run) keeps the old
    content. The temporary name is the one ``remove_stale_temps`` sweeps after a kill."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a kill by exception: no half-written temp left
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    replace_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    replace_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_text(data, indent: int | None = 1) -> str:
    """How vtk writes JSON: UTF-8 as it is, anything else as its str, a final newline."""
    return json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n"


def write_json(path: str | os.PathLike, data, indent: int | None = 1) -> None:
    """``data`` as JSON, atomically (see ``replace_atomic``); ``vtk.storage.write_json`` for a
    path that may be a URL."""
    write_text_atomic(path, json_text(data, indent))


def read_json(path: str | os.PathLike, default=None):
    """The JSON in ``path``, or ``default`` if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_regular(path: str | os.PathLike) -> bytes:
    """The bytes of ``path`` when it is a regular file; an OSError for anything else. A FIFO
    or a device named like a set's file (``stats/x.json``) would block a plain ``open`` for
    ever: it is opened without blocking and refused."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {os.fspath(path)}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files of ``write_text_atomic`` that a killed writer left in
    ``folder`` (``.index.json.tmp-PID``), and return their names. Call it holding the folder's
    lock (``vtk.locks``), so no live writer of ours is writing them; a file whose PID is still
    alive is kept all the same (a lockless writer, or the PID reused: the next run looks again)."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.fullmatch(name)
        path = os.path.join(folder, name)
        if m is None or pid_alive(int(m.group(1))) or not os.path.isfile(path):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (hex), read in chunks (checkpoints are gigabytes)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_root() -> Path:
    """The folder of vtk's caches that outlive a run: ``$VTK_CACHE``, default ``~/.cache/vtk``."""
    return Path(os.environ.get("VTK_CACHE") or Path.home() / ".cache" / "vtk").expanduser()


def connect_shared_sqlite(path: str | os.PathLike, *schema: str):
    """An SQLite connection in WAL mode that several processes may share (busy timeout),
    after ``schema``'s statements. Switching a new file to WAL is not covered by SQLite's busy
    timeout (processes opening a fresh file together got "database is locked"), so the set-up
    runs under an exclusive lock on a side file, one process at a time."""
    import fcntl
    import sqlite3

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        db = sqlite3.connect(path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            for statement in schema:
                db.execute(statement)
            db.commit()
        except BaseException:
            db.close()
            raise
    return db
