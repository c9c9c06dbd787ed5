"""What a run costs: wall time, throughput and peak memory, with the device named."""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time

import torch


def device_name(device: torch.device) -> str:
    """e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: AMD EPYC 7B13 (2 cores)'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu: {model} ({cores} cores)"


def reset_peak_memory(device: torch.device):
    """Start a new peak: CUDA's counter, or on Linux the process's RSS high-water mark (so runs
    one after another in one process each get their own peak; what is still resident
    counts)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole process
        pass


def _vm_hwm() -> int | None:
    """Linux's RSS high-water mark (VmHWM) in bytes: reset by clear_refs, and not inherited
    across exec, unlike ru_maxrss (a spawned child starts at its parent's ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_memory_bytes(device: torch.device) -> int:
    """GPU: torch.cuda.max_memory_allocated. CPU: peak RSS of this process since the last
    ``reset_peak_memory`` (loader workers, being separate processes, are not included)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    hwm = _vm_hwm()
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Throughput:
    """Clips per second, smoothed over the last steps (metrics.jsonl's per-step figure; the
    progress bar and summary.json show the running average instead)."""

    def __init__(self, alpha: float = 0.1):
        self.alpha, self.rate, self.t = alpha, None, time.perf_counter()

    def update(self, clips: int) -> float:
        now = time.perf_counter()
        r = clips / max(now - self.t, 1e-9)
        self.t = now
        self.rate = r if self.rate is None else (1 - self.alpha) * self.rate + self.alpha * r
        return self.rate


class NonFiniteLoss(Exception):
    """A step's loss was not finite: ``step`` (1-based) is the first such step."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


class LossLog:
    """The loss of every step: kept on the device as it comes (``add``) and read in one go
    (``read``: one host sync) when a line is logged, a checkpoint written or the run stops;
    with ``every_step`` (the CPU, where reading is free) each step is read at once, so a step
    whose loss is not finite is never applied. ``read`` raises ``NonFiniteLoss`` naming the
    first bad step when any rank saw one (``agree(flag)``: true on every rank if true on any).
    """

    def __init__(self, every_step: bool, agree=bool):
        self.every_step, self.agree = every_step, agree
        self.pending: list[torch.Tensor] = []
        self.values: list[float] = []  # every loss read, in step order
        self.last = math.nan

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())

    def due(self, log_now: bool, save_now: bool) -> bool:
        return log_now or save_now or self.every_step

    def read(self, step: int) -> float:
        """Read the pending losses (those of the steps up to ``step``) -> the last one."""
        values = torch.stack(self.pending).float().tolist()
        self.pending.clear()
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if self.agree(bad is not None):
            raise NonFiniteLoss(step - len(values) + 1 + (bad or 0))
        self.values.extend(values)
        self.last = values[-1]
        return self.last

    def final(self, last: int = 20) -> float | None:
        """The mean of the last ``last`` losses (summary.json's final_loss)."""
        return float(sum(self.values[-last:]) / len(self.values[-last:])) if self.values else None


def _cpu_times() -> list[int] | None:
    """The aggregate ``cpu`` row of /proc/stat (user nice system idle iowait irq softirq steal
    ...), in clock ticks; None where it cannot be read (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return [int(x) for x in fields[1:]] if fields and fields[0] == "cpu" else None
    except (OSError, ValueError):
        return None


def load_snapshot() -> dict:
    """The load average and CPU tick counters now (see ``load_report``)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # not available on this platform
        load = None
    return {"loadavg": load, "cpu_times": _cpu_times(), "time": time.time()}


def load_report(before: dict, after: dict) -> dict:
    """How busy the machine was around a run, for summary.json: the 1/5/15-minute load
    averages before and after, the machine's cores (what the load average counts against), and the share of CPU time the
    hypervisor stole in between (the 8th /proc/stat field, in %; None where unreadable).
    A load above the cores means the run's timings were taken on a contended machine."""
    steal = None
    a, b = before.get("cpu_times"), after.get("cpu_times")
    if a and b and len(a) >= 8 and len(b) >= 8:
        # guest time is already counted in user/nice: only the first 8 fields add up
        total = sum(b[:8]) - sum(a[:8])
        steal = round(100 * (b[7] - a[7]) / total, 2) if total > 0 else None
    return {"loadavg_before": before.get("loadavg"), "loadavg_after": after.get("loadavg"),
            "cores": os.cpu_count(), "cpu_steal_pct": steal}


def versions() -> dict:
    """What shapes a run's numbers: vtk, Python, torch and transformers."""
    from vtk.environment import versions as of

    return of("torch", "transformers")
