"""Experiment trackers beside ``metrics.jsonl``: ``vtk train --report-to tensorboard,wandb``.

A tracker gets every row ``RunDir.log`` writes to ``metrics.jsonl`` (the same numbers, the
same steps) and is closed when the run ends. Each is a small module behind ``Tracker``, listed
in ``TRACKERS`` with the extra that provides its library, so a missing one is one line naming
what to install, told before any work starts (``check``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vtk.errors import VtkError
from vtk.registry import Registry

TRACKERS = Registry("tracker")
TRACKERS.add("tensorboard", "vtk.train.trackers.tensorboard:TensorBoard", extra="tensorboard")
TRACKERS.add("wandb", "vtk.train.trackers.wandb:WandB", extra="wandb")


class Tracker(Protocol):
    """Built as ``Tracker(run_dir, config, first_step)``: ``config`` is config.json's dict,
    ``first_step`` the step the run starts from (0, or the checkpoint's on resume: a tracker
    drops what a killed session logged after it, as ``metrics.jsonl`` does). ``requires``:
    (the module it imports, the vtk extra that installs it), imported only when built."""

    requires: tuple[str, str]

    def log(self, row: dict) -> None:
        """One metrics.jsonl row: ``step`` and its figures."""

    def close(self) -> None: ...


def parse(value) -> list[str]:
    """``"tensorboard,wandb"`` (or a list) -> the tracker names, each known; [] for none."""
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names if str(n).strip() and str(n).strip() != "none"]
    for n in names:
        if n not in TRACKERS:
            raise VtkError(f"--report-to {n}: unknown tracker (known: {TRACKERS.known()})")
    return list(dict.fromkeys(names))


def check(names) -> None:
    """Import every tracker's library now: a missing one is a VtkError with its install hint
    before the run writes anything."""
    from vtk.errors import require

    for n in parse(names):
        require(*TRACKERS.load(n)[0].requires)


class Trackers:
    """The run's trackers as one: ``log`` to each, closed by the ``with`` that holds them."""

    def __init__(self, names, run_dir: Path, config: dict, first_step: int):
        self.open = [TRACKERS.build(n, Path(run_dir), config, first_step) for n in parse(names)]

    def log(self, row: dict) -> None:
        for t in self.open:
            t.log(row)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for t in self.open:
            t.close()
        return False


def scalars(row: dict) -> dict[str, float]:
    """A row's numbers (not the step, nor text such as the stage), as trackers plot them."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
