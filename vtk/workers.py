"""Worker processes that end with their parent.

A worker whose parent is killed (SIGKILL, the OOM killer) is re-parented to PID 1 and, blocked
on a task queue that nobody will feed, waits forever: a SIGKILLed ``vtk train`` left its loader
workers (~340 MB each) and its frame-cache decoders behind, a ``vtk shard`` killed in its
first half second its workers and multiprocessing's resource tracker. Every worker vtk starts
calls :func:`exit_with_parent` first thing.

On Linux the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` kills the worker the moment
the thread that started it ends (vtk starts its workers from the main thread, which lives as
long as the process). Elsewhere a daemon thread polls the parent's PID twice a second.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5


def exit_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """End this process when ``parent`` (the PID that started it, passed from the parent:
    asking ``os.getppid()`` here would name PID 1 if it had died already) is gone, by ``sig``
    (SIGTERM for a process that should stop cleanly, as a training run checkpointing)."""
    armed = sys.platform.startswith("linux") and _pdeathsig(sig)
    # The parent may have died before the signal was armed (a worker is slow to start: a
    # spawned one imports vtk first); the kernel does not send it for a death in the past.
    served = os.getppid() != parent
    if served and not _alive(parent):
        os.kill(os.getpid(), sig)
        os._exit(1)  # a signal this process handles: it is still gone
    if served:  # started by a server process (forkserver): the signal follows the server,
        # so the process that asked for this worker is watched as well
        threading.Thread(target=_watch_pid, args=(parent, sig), daemon=True,
                         name="vtk-parent-watch").start()
    elif not armed:
        threading.Thread(target=_watch, args=(parent, sig), daemon=True,
                         name="vtk-parent-watch").start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now: ours is gone
        return False
    return True


def _watch_pid(pid: int, sig: int) -> None:
    while _alive(pid):
        time.sleep(POLL_S)
    os.kill(os.getpid(), sig)


def _pdeathsig(sig: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc prctl (musl without it, a sandbox)
        return False


def _watch(parent: int, sig: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), sig)
