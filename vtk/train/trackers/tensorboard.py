"""``--report-to tensorboard``: RUN/tensorboard/ event files (``tensorboard --logdir RUN``)."""

from __future__ import annotations

import json
from pathlib import Path

from vtk.errors import require
from vtk.train.trackers import scalars


class TensorBoard:
    requires = ("tensorboard", "tensorboard")  # (module, extra)

    def __init__(self, run_dir: Path, config: dict, first_step: int):
        require(*self.requires)
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the events a killed session wrote after the checkpoint
        # this session resumes from, so each step is drawn once
        self.writer = SummaryWriter(str(run_dir / "tensorboard"),
                                    purge_step=first_step + 1 if first_step else None)
        if not first_step:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", 0)

    def log(self, row: dict) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(f"train/{name}", value, row["step"])

    def close(self) -> None:
        self.writer.close()
