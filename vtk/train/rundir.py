"""A run directory: RUN/config.json, metrics.jsonl (one line per logged step), summary.json and
checkpoint.pt, held by one process at a time."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from vtk.fileio import read_json, remove_stale_temps, write_json, write_text_atomic
from vtk.locks import lock_folder


class RunDir:
    """The files of a run. Only rank 0 (``main``) writes; the other ranks' calls do nothing."""

    def __init__(self, path, main: bool):
        self.path, self.main = Path(path), main
        if main:
            self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoint = self.path / "checkpoint.pt"

    @classmethod
    @contextlib.contextmanager
    def held(cls, path, main: bool):
        """The run dir, locked by this process (rank 0 holds it for every rank) for the
        ``with`` block, taken before anything in it is rewritten; the temps of a killed run
        are removed first (vtk.locks, vtk.fileio)."""
        if not main:
            yield cls(path, main)
            return
        with lock_folder(path):
            remove_stale_temps(path)
            (Path(path) / "checkpoint.pt.tmp").unlink(missing_ok=True)  # a save cut off by a kill
            yield cls(path, main)

    def write_json(self, name: str, obj: dict):
        if self.main:
            write_json(self.path / name, obj, indent=2)

    def truncate_metrics(self, step: int):
        """Drop lines logged after the checkpoint a run resumes from (and a last line a kill
        cut short); ``step`` -1 starts a fresh log."""
        f = self.path / "metrics.jsonl"
        if self.main and f.exists():
            keep = []
            for ln in f.read_text().splitlines():
                try:
                    if json.loads(ln)["step"] <= step:
                        keep.append(ln)
                except (ValueError, KeyError, TypeError):
                    continue
            write_text_atomic(f, "".join(ln + "\n" for ln in keep))

    def log(self, row: dict):
        if self.main:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def finished(self, ckpt: dict, clips_per_step: int) -> dict:
        """The summary of a run resumed at or past its last step: nothing is trained or
        written (only a missing summary.json is rebuilt from the checkpoint)."""
        summary = read_json(self.path / "summary.json")
        if not isinstance(summary, dict) or summary.get("steps") != ckpt["step"]:
            summary = {"train_time_s": round(ckpt["train_time_s"], 3), "clips_per_s": None,
                       "peak_mem_bytes": ckpt["peak_mem_bytes"], "steps": ckpt["step"],
                       "complete": True, "world_size": ckpt["world"], "final_loss": None,
                       "clips_seen": ckpt["step"] * clips_per_step * ckpt["world"]}
            self.write_json("summary.json", summary)
        return {**summary, "complete": True, "nothing_to_do": True}
