"""Progress that survives a log file: a rich bar on a terminal, a plain line every N seconds
elsewhere (nohup, Slurm, CI), where rich draws nothing until the end and then one bar cut at
80 columns.

Off a terminal a line is printed on the first update, every ``VTK_PROGRESS_EVERY`` seconds
(default 30) and once at the end, e.g.::

    train mask 0.50 loss 3.412 | 120/800 | 94.6 clips/s | elapsed 0:02:07 | ETA 0:12:00
"""

from __future__ import annotations

import math
import os
import sys
import time

from vtk.errors import VtkError

EVERY_ENV = "VTK_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0


def every_s() -> float:
    """Seconds between plain progress lines, from ``VTK_PROGRESS_EVERY``."""
    value = os.environ.get(EVERY_ENV, "").strip()
    if not value:
        return DEFAULT_EVERY_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or not math.isfinite(seconds):
        raise VtkError(f"{EVERY_ENV}={value!r}: not a number of seconds > 0")
    return seconds


def hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class PlainProgress:
    """The part of ``rich.progress.Progress`` vtk uses (a context manager with ``add_task`` and
    ``update``), printing ``line`` (a ``str.format`` template over the task's fields) with the
    count, elapsed time and ETA. The ETA is the rate since the task was added, applied to
    what is left."""

    def __init__(self, line: str, file=None, every: float | None = None, clock=time.monotonic):
        self.line, self.file = line, file or sys.stderr
        self.every = every_s() if every is None else every
        self.clock = clock
        self.tasks: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for task in self.tasks:
            if task["dirty"]:
                self._print(task)
        return False

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields) -> int:
        now = self.clock()
        self.tasks.append({"description": description, "total": total, "completed": completed,
                           "start": completed, "t0": now, "last": None, "dirty": False,
                           "fields": fields})
        return len(self.tasks) - 1

    def update(self, task_id: int, completed: float | None = None, **fields) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task["completed"] = completed
        task["fields"].update(fields)
        task["dirty"] = True
        if task["last"] is None or self.clock() - task["last"] >= self.every:
            self._print(task)

    def _print(self, task: dict) -> None:
        now = self.clock()
        elapsed = now - task["t0"]
        done, total = task["completed"], task["total"]
        eta = None
        if total is not None and done > task["start"]:
            eta = (total - done) * elapsed / (done - task["start"])
        count = f"{done:g}/{total:g}" if total is not None else f"{done:g}"
        text = self.line.format(**task["fields"], completed=done, total=total)
        print(f"{text} | {count} | elapsed {hms(elapsed)} | ETA {hms(eta)}", file=self.file,
              flush=True)
        task["last"], task["dirty"] = now, False


def bar(*columns, line: str, stderr: bool = False, disable: bool = False):
    """A rich ``Progress`` over ``columns`` on a terminal; a ``PlainProgress`` printing
    ``line`` when the stream (stdout, or stderr) is a pipe or a file."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=stderr)
    if disable or console.is_terminal:
        return Progress(*columns, console=console, disable=disable)
    return PlainProgress(line, file=console.file)


def over_shards(todo, work, label: str, line: str, total: int | None, show: bool = True,
                log=None) -> tuple[int, int]:
    """``work(tar, settings, advance)`` for each ``(tar, settings)`` of ``todo`` under one
    progress bar over ``total`` samples (``advance(n)``: n more done), as ``vtk score`` and
    ``vtk caption`` walk a set's shards. Each ``work`` returns {"samples", "errors"}; returns
    their sums. ``log(line)``: told each shard's name as it starts."""
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    done = errors = 0
    with bar(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
             line=line, stderr=True, disable=not show) as pbar:
        task = pbar.add_task(line, total=total or None)
        state = {"n": 0}

        def advance(n):
            state["n"] += n
            pbar.update(task, completed=state["n"])

        for tar, settings in todo:
            if log:
                log(f"{label} {os.path.basename(tar)}")
            got = work(tar, settings, advance)
            done += got["samples"]
            errors += got["errors"]
    return done, errors


class ShardProgress:
    """A rich progress bar over sources (when their number is known), with clips and clips/s;
    a plain line every VTK_PROGRESS_EVERY seconds off a terminal (vtk shard, vtk demo)."""

    def __init__(self, quiet: bool, total: int | None, engine: str = "local"):
        self.quiet, self.total = quiet, total
        # clips/s is the whole cluster's with --engine ray (its tasks report each source)
        self.label = "sharding" if engine == "local" else f"sharding on {engine}"
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.quiet:
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = bar(SpinnerColumn(), TextColumn(f"[bold]{self.label}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("sources"),
                       TextColumn("{task.fields[clips]} clips"),
                       TextColumn("[cyan]{task.fields[rate]:.1f} clips/s"),
                       TextColumn("[red]{task.fields[failed]} failed"),
                       TimeElapsedColumn(), TimeRemainingColumn(),
                       line=self.label + ": {clips} clips, {rate:.1f} clips/s (average), "
                            "{failed} failed | sources", stderr=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("shard", total=self.total, clips=0, rate=0.0, failed=0)
        return self

    def update(self, result, totals) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.t0
        self.bar.update(self.task, completed=totals.sources + totals.skipped_sources,
                        clips=totals.clips, rate=totals.clips / elapsed if elapsed else 0.0,
                        failed=totals.failed_sources)

    def __exit__(self, *exc):
        if not self.quiet:
            self.bar.__exit__(*exc)
        return False
