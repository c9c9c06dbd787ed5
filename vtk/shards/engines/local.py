"""The local engine: this machine's process pool (``vtk.shards.build.run_sources``)."""

from __future__ import annotations

import os


class LocalEngine:
    name = "local"

    def __init__(self):
        self.workers: int | None = None

    def run(self, items, writer, cfg, codec, caption_spec, workers=None, on_result=None,
            fetch=None):
        from vtk.shards.build import run_sources

        self.workers = workers or min(os.cpu_count() or 1, 8)
        return run_sources(items, writer, cfg, codec, caption_spec, workers=self.workers,
                           on_result=on_result, fetch=fetch)

    def describe(self) -> dict:
        return {"name": self.name, "nodes": 1, "workers": self.workers}
