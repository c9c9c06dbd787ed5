"""Inputs: turn the SOURCE arguments of `vtk shard` into a stream of SourceItems.

A spec is ``synth:<preset>?k=v`` (the synthetic world), a folder (searched recursively), a
manifest (``.csv .tsv .jsonl .parquet``) or a single video file. Items come out lazily, in a
deterministic order, with unique key-safe ids (a repeated id gets ``-dup2``, ``-dup3``...).

An input that is known to be bad before decoding (a manifest row with bad timestamps, a
missing video, non-UTF-8 text) still comes out, with ``meta["error"] = {"kind", "reason"}``,
so the shard writer records it in ``stats/`` next to the decode failures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from vtk.errors import VtkError
from vtk.types import SourceItem

MANIFEST_EXTS = (".csv", ".tsv", ".jsonl", ".parquet")


def open_sources(specs: Iterable[str], video_root: str | None = None) -> Iterator[SourceItem]:
    """Yield the items of every spec in order; raises VtkError for a spec that names nothing
    usable (missing path, unknown preset, a manifest without a video column)."""
    specs = list(specs)
    for spec in specs:  # fail on a bad argument now, before any work starts
        if spec.startswith("synth:"):
            from vtk.sources.synth import parse_spec

            parse_spec(spec)
        elif not os.path.exists(spec):
            raise VtkError(f"{spec}: no such file, folder or synth: spec")
    return _items(specs, video_root)


def _items(specs: list[str], video_root: str | None) -> Iterator[SourceItem]:
    seen: dict[str, int] = {}
    for spec in specs:
        for item in _open_one(spec, video_root):
            n = seen.get(item.id, 0) + 1
            seen[item.id] = n
            if n > 1:
                item.id = f"{item.id}-dup{n}"
            yield item


def _open_one(spec: str, video_root: str | None) -> Iterator[SourceItem]:
    if spec.startswith("synth:"):
        from vtk.sources.synth import synth_items

        return synth_items(spec)
    if os.path.isdir(spec):
        from vtk.sources.folder import folder_items

        return folder_items(spec)
    if spec.lower().endswith(MANIFEST_EXTS):
        from vtk.sources.manifest import manifest_items

        return manifest_items(spec, video_root=video_root)
    from vtk.sources.folder import file_item

    return iter([file_item(spec, os.path.dirname(spec) or ".")])


def count_sources(specs: Iterable[str]) -> int | None:
    """How many items ``open_sources`` will yield, when that is cheap to know (synth, folders,
    files); None when a manifest is among the specs (rows can expand into several items)."""
    total = 0
    for spec in specs:
        if spec.startswith("synth:"):
            from vtk.sources.synth import parse_spec

            total += parse_spec(spec)[0].n
        elif os.path.isdir(spec):
            from vtk.sources.folder import folder_items

            total += sum(1 for _ in folder_items(spec))
        elif spec.lower().endswith(MANIFEST_EXTS):
            return None
        else:
            total += 1
    return total


def benchmark_card(specs: Iterable[str]) -> dict | None:
    """The ``benchmark`` block for index.json when the sources are one benchmark preset."""
    specs = list(specs)
    if len(specs) != 1 or not specs[0].startswith("synth:"):
        return None
    from vtk.sources.synth import benchmark_card as synth_card

    return synth_card(specs[0])


def is_synthetic(specs: Iterable[str]) -> bool:
    return all(s.startswith("synth:") for s in specs)
