"""The end of a Ray cluster that `vtk shard --engine ray` started itself: it ends with the
driver, however the driver ends.

``ray.init()`` with no cluster to join starts one on this machine, its processes children of
the driver. Killed with -9, the driver takes the GCS and the raylet with it in seconds, but
Ray's dashboard and runtime-env agents (children of the raylet, ~180 MB) notice the raylet's
death and then wait on the dead GCS for a minute or more before they exit; after a clean
``ray.shutdown()`` too. So once the cluster is up, :class:`Reaper` hands the PIDs of the
driver's descendants (with their start times: a PID reused meanwhile is left alone) to a
small watchdog process (this module run as ``python -m``) that holds a pipe from the driver.
When the driver ends (it closes the pipe, or dies and the kernel closes it), the watchdog
sends SIGTERM to those processes and to their children of the moment (the agents), then
SIGKILL to what is left after ``STOP_S``. It ignores the terminal's signals (a Ctrl-C
reaches the driver's whole process group), so it outlives the driver to do so.

Linux only (it reads ``/proc``); elsewhere there is no watchdog and Ray's own clean-up is all.
Nothing here imports Ray: the watchdog starts in a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

STOP_S = 10.0  # from SIGTERM to SIGKILL


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent PID, start time in clock ticks, state) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[1]), int(fields[19]), fields[0]


def _table() -> dict[int, tuple[int, int, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def descendants(root: int, table: dict | None = None) -> dict[int, int]:
    """{PID: start time} of every live process below ``root``."""
    table = _table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, state) in table.items():
        if state != "Z":
            children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        for kid in children.get(todo.pop(), ()):
            out[kid] = table[kid][1]
            todo.append(kid)
    return out


def own_processes() -> dict[int, int]:
    """This process's descendants now (empty where there is no ``/proc``)."""
    return descendants(os.getpid()) if os.path.isdir("/proc/self") else {}


class Reaper:
    """Started once ``ray.init()`` is back; ``before``: :func:`own_processes` before it, which
    are not the cluster's. :meth:`close` after ``ray.shutdown()``."""

    def __init__(self, before: dict[int, int]):
        self.proc: subprocess.Popen | None = None
        procs = {p: t for p, t in own_processes().items() if before.get(p) != t}
        if not procs:  # ray.init() joined a cluster: not ours to end
            return
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True)
        self.proc.stdin.write(" ".join(f"{pid}:{t}" for pid, t in procs.items()) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """End what is left of the cluster now (the agents), and the watchdog."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.stdin.close()
        try:
            proc.wait(STOP_S + 10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _signal(procs: dict[int, int], sig: int) -> dict[int, int]:
    """Send ``sig`` to each process still the one recorded; returns those."""
    alive = {}
    for pid, start in procs.items():
        st = _stat(pid)
        if st is None or st[1] != start or st[2] == "Z":
            continue
        try:
            os.kill(pid, sig)
        except OSError:
            continue
        alive[pid] = start
    return alive


def watch() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    procs = {int(p): int(t) for p, t in (x.split(":") for x in sys.stdin.readline().split())}
    sys.stdin.read()  # until the driver closes it, or is gone
    table = _table()
    for pid in list(procs):  # the agents: children of the raylet, as they are now
        procs.update(descendants(pid, table))
    alive = _signal(procs, signal.SIGTERM)
    end = time.monotonic() + STOP_S
    while alive and time.monotonic() < end:
        time.sleep(0.1)
        alive = _signal(alive, 0)
    _signal(alive, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(watch())
