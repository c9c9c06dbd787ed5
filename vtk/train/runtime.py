"""What a training process sets up around the loop: the stop request (SIGINT / SIGTERM),
mixed precision, and how many threads torch may use."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import torch


class StopRequest:
    """SIGINT / SIGTERM ask the loop to checkpoint and stop after the current step."""

    def __init__(self):
        self.requested, self._old = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def autocast(device: torch.device, amp: str):
    """(a function giving a fresh autocast context, a GradScaler for fp16 or None): bf16 on
    GPUs that have it and fp16 elsewhere for ``auto``; nothing on the CPU or with ``off``."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext, None
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def pick_threads(cores: int, workers: int, omp_num_threads: str | None,
                 procs: int = 1) -> int | None:
    """torch's intra-op threads for a training process: the cores that its loader workers
    leave free (each worker runs one thread: torch's DataLoader sets it), with the node's cores
    shared by its ``procs`` training processes. ``None`` where OMP_NUM_THREADS is set: torch
    already follows the user's choice (torchrun sets 1 for several processes a node). On 2
    cores, 2 workers beside torch's default 2 threads trained 2-3x slower than 1 thread."""
    if omp_num_threads:
        return None
    return max(1, cores // max(1, procs) - workers)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, cgroup cpusets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(workers: int) -> str:
    """Give torch the cores the loader's ``workers`` leave free (once, for the process: the
    workers have their own one); returns where the count came from, for summary.json."""
    threads = pick_threads(available_cores(), workers, os.environ.get("OMP_NUM_THREADS"),
                           int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if threads is None:
        return "OMP_NUM_THREADS"
    torch.set_num_threads(threads)
    return f"{available_cores()} cores - {workers} loader workers"


@contextlib.contextmanager
def threads_beside(workers: int):
    """``set_threads(workers)`` for the duration of the block, then torch's count as it was
    (a library call, as ``vtk.eval.evaluate``, leaves its caller's setting alone)."""
    before = torch.get_num_threads()
    try:
        yield set_threads(workers)
    finally:
        torch.set_num_threads(before)
