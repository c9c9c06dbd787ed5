"""One writer per output folder: an exclusive lock that a killed process cannot leave behind.

Two ``vtk shard`` runs into one folder mixed their samples into one tar, a ``--resume`` started
beside a live run deleted that run's temporary files, and two ``vtk train`` runs into one
folder left one run's config beside the other's checkpoint. So every command that writes a
shard set, a run directory or a frame cache first takes ``FOLDER/.lock`` with ``flock``:

- hidden, so loaders that glob ``*.tar`` and folder checks that look for a run never see it;
- it holds the holder's PID, which the refused process names;
- the kernel drops a ``flock`` when its holder exits or is killed, so a lock file left behind
  blocks nobody: only a live process does (the file itself is kept: deleting it would let a
  process that has it open lock a file nobody else can find).

Within one process a folder's lock is shared (counted): the process orders its own writers,
and a writer dropped by an exception must not lock its own process out.
"""

from __future__ import annotations

import os
import weakref

from vtk.errors import VtkError

LOCK_NAME = ".lock"

_HELD: dict[str, list] = {}  # lock path -> [fd, holders], of this process (pid-checked)
_HELD_BY = os.getpid()


def _held() -> dict[str, list]:
    global _HELD_BY
    if _HELD_BY != os.getpid():  # a forked child holds nothing of its parent's
        _HELD.clear()
        _HELD_BY = os.getpid()
    return _HELD


class FolderLock:
    """A held lock on ``folder``: ``release()`` it, use it as a context manager, or drop it
    (the lock goes with the last reference)."""

    def __init__(self, folder: str, path: str):
        self.folder, self.path = folder, path
        self._finalizer = weakref.finalize(self, _drop, path, os.getpid())

    def release(self) -> None:
        self._finalizer()

    def check(self) -> None:
        """Nothing to check: the kernel holds a ``flock`` until its holder lets go (a
        ``vtk.storage.RemoteLock``, whose lease can be taken over, checks here)."""

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _drop(path: str, pid: int) -> None:
    if pid != os.getpid():
        return
    entry = _held().get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _HELD[path]
    if entry[1] == 0 and entry[0] is not None:
        import fcntl

        # LOCK_UN before close: a forked child (a loader worker) that inherited the descriptor
        # would otherwise keep the lock for as long as it lives
        fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])


def holder(path: str) -> str:
    """Who holds the lock file ``path``, in words, from the PID written in it."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            pid = f.read(32).strip()
    except OSError:
        pid = ""
    return f"vtk process {pid}" if pid.isdigit() else "another vtk process"


def lock_folder(folder, wait: bool = False, on_wait=None) -> FolderLock:
    """Take the exclusive lock on ``folder`` (made if missing) for this process.

    Held by another process: a VtkError naming its PID, at once; with ``wait``, block until
    it is free instead (``on_wait(holder)`` is called first, to say so). Off POSIX (no
    ``fcntl``) nothing is locked."""
    lock = _acquire(folder, block=wait, on_wait=on_wait)
    if lock is None:
        path = os.path.join(os.fspath(folder), LOCK_NAME)
        raise VtkError(f"{os.fspath(folder)} is in use by {holder(path)} (lock {path}); wait "
                       f"for it or stop it")
    return lock


def try_lock_folder(folder) -> FolderLock | None:
    """The lock on ``folder`` if no other process holds it, else None (never waits)."""
    return _acquire(folder, block=False)


def _acquire(folder, block: bool, on_wait=None) -> FolderLock | None:
    folder = os.fspath(folder)
    path = os.path.join(folder, LOCK_NAME)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise VtkError(f"cannot create {folder}: {e.strerror or e}") from None
    key = os.path.realpath(path)
    held = _held()
    if key in held:
        held[key][1] += 1
        return FolderLock(folder, key)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock
        held[key] = [None, 1]
        return FolderLock(folder, key)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise VtkError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not block:
                os.close(fd)
                return None
            if on_wait is not None:
                on_wait(holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:
        os.close(fd)
        raise VtkError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        os.close(fd)
        raise
    held[key] = [fd, 1]
    return FolderLock(folder, key)
