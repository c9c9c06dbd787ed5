"""Shard engines: who runs the costly per-source work of `vtk shard` (decode, scene detection,
captioning, encoding) and how complete shards reach the set.

One protocol, two engines, chosen by ``--engine`` and registered like every other backend
(``vtk.registry``), so ``import vtk`` never imports Ray:

- ``local`` (``vtk.shards.engines.local``): a process pool on this machine; the parent writes
  every sample, in input order (``vtk.shards.build.run_sources``).
- ``ray`` (``vtk.shards.engines.ray_engine``): tasks on a Ray cluster write whole shards; the
  driver only plans, tracks and commits them (the ``ray`` extra).

An engine is built with its options (``make_engine(name, **options)``) and has:

``run(items, writer, cfg, codec, caption_spec, workers=None, on_result=None, fetch=None)
-> Totals``
    every item not yet done in ``writer`` (a ``ShardWriter``, resumed or new) processed and in
    the set when it returns; ``on_result(result, totals)`` is called as work completes
    (``result`` may be None where the engine sees only totals); ``fetch``: how the workers
    download sources at URLs (``vtk.sources.fetch.FetchConfig``);
``describe() -> dict``
    what index.json records as ``engine``: its name and the size of what ran the work.

Both write the same kind of records (``stats/`` per shard, sources completed, failures), so a
set begun by one engine can be resumed by the other.
"""

from __future__ import annotations

from vtk.errors import VtkError
from vtk.registry import Registry

ENGINES = Registry("shard engine")
ENGINES.add("local", "vtk.shards.engines.local:LocalEngine")
ENGINES.add("ray", "vtk.shards.engines.ray_engine:RayEngine", extra="ray")


def make_engine(name: str = "local", ray_address: str | None = None,
                captioners: int | None = None, captioner_gpus: float | None = None,
                **options):
    """The engine ``name`` with its options; a Ray option given to the local engine is a
    one-line VtkError rather than silently ignored."""
    ray_only = {"--ray-address": ray_address, "--captioners": captioners,
                "--captioner-gpus": captioner_gpus}
    if name != "ray":
        given = [flag for flag, value in ray_only.items() if value is not None]
        if given:
            raise VtkError(f"{given[0]} goes with --engine ray")
        return ENGINES.build(name, **options)
    return ENGINES.build(name, address=ray_address, captioners=captioners,
                         captioner_gpus=captioner_gpus, **options)
