"""``EvalConfig``: every option of `vtk eval` beside RUN, with its default, written once. The
click command reads its defaults from here and ``evaluate`` takes these fields as keyword
arguments. Settings left None take the protocol's value (``vtk.eval.protocol``)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from vtk.errors import VtkError, check_keys


@dataclass
class EvalConfig:
    # --bench strings or BenchSpecs; None: synth for a run trained on the synthetic world, a
    # VtkError naming how to give them for any other run (benchmarks.default_benches)
    benches: tuple | None = None
    protocol: str = "plain"  # plain | internvid, or a Protocol
    dsl: bool | None = None
    wise_ft: float | bool | None = None  # False: none, whatever the protocol says
    init: str | None = None  # what WiSE-FT interpolates with; None: the run's --init
    templates: str | list | None = None
    template_average: str | None = None  # similarity | embedding
    crop: str | None = None  # center | full
    one_caption: list | None = None  # benchmarks queried with one caption per video
    clean: str | None = None  # none | internvid
    save_sims: str | None = None  # a folder for each benchmark's similarity matrix
    batch_size: int = 32
    backend: str = "auto"
    device: str = "auto"
    workers: int = 1
    cache: str | None = None  # benchmark shard cache; None: $VTK_CACHE or ~/.cache/vtk

    def __post_init__(self):
        if self.batch_size < 1:
            raise VtkError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.workers < 0:
            raise VtkError(f"--workers {self.workers}: must be at least 0")

    @classmethod
    def from_options(cls, options: dict) -> EvalConfig:
        """From keyword arguments; an unknown one is a VtkError naming the closest field."""
        check_keys(options, [f.name for f in fields(cls)], "vtk eval option")
        return cls(**options)
