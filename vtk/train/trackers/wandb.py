"""``--report-to wandb``: a Weights & Biases run (its project from WANDB_PROJECT, default vtk;
offline with WANDB_MODE=offline). A resumed vtk run continues the same wandb run: its id is
kept in RUN/wandb-id."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from vtk.errors import require
from vtk.train.trackers import scalars


class WandB:
    requires = ("wandb", "wandb")  # (module, extra)

    def __init__(self, run_dir: Path, config: dict, first_step: int):
        wandb = require(*self.requires)
        id_file = run_dir / "wandb-id"
        run_id = id_file.read_text().strip() if id_file.is_file() and first_step else None
        if run_id is None:
            run_id = secrets.token_hex(8)  # wandb's ids: letters and digits
            id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vtk"), id=run_id,
                              name=run_dir.resolve().name, dir=str(run_dir), config=config,
                              resume="allow")

    def log(self, row: dict) -> None:
        self.run.log({f"train/{k}": v for k, v in scalars(row).items()}, step=row["step"])

    def close(self) -> None:
        self.run.finish()
