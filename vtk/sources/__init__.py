"""Inputs: turn the SOURCE arguments of `vtk shard` into a stream of SourceItems.

A spec is ``synth:<preset>?k=v`` (the synthetic world), a folder (searched recursively), a
manifest (``.csv .tsv .jsonl .parquet``) or a single video file. Items come out lazily, in a
deterministic order, with key-safe ids that depend on each input alone (its path relative to
its folder, its manifest row: :func:`vtk.types.source_id`), so they stay the same when inputs
are added and a ``--resume`` skips exactly what it did before.

The same input twice (one file, or the same video and range, reached by two SOURCES or two
manifest rows) comes out once; the others are counted in ``Sources.duplicates``. Two
*different* inputs with one id (``a/x.mp4`` and ``b/x.mp4`` given as the folders ``a`` and
``b``) is a VtkError: numbering them in input order would give ids that change when a folder
grows, which loses one source and doubles another on resume.

An input that is known to be bad before decoding (a manifest row with bad timestamps, a
missing video, non-UTF-8 text) still comes out, with ``meta["error"] = {"kind", "reason"}``,
so the shard writer records it in ``stats/`` next to the decode failures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

from vtk import scratchdb
from vtk.errors import VtkError
from vtk.types import SourceItem

MANIFEST_EXTS = (".csv", ".tsv", ".jsonl", ".parquet")


def open_sources(specs: Iterable[str], video_root: str | None = None) -> Sources:
    """The items of every spec in order; raises VtkError for a spec that names nothing
    usable (missing path, unknown preset, a manifest that is not a regular file or has no
    video column), and for two files of the folders and files given with one id."""
    specs = list(specs)
    for spec in specs:  # fail on a bad argument now, before any work starts
        if spec.startswith("synth:"):
            from vtk.sources.synth import parse_spec

            parse_spec(spec)
        elif not os.path.exists(spec):
            raise VtkError(f"{spec}: no such file, folder or synth: spec")
        elif not os.path.isdir(spec) and spec.lower().endswith(MANIFEST_EXTS):
            from vtk.sources.folder import not_regular

            problem = not_regular(spec)  # a FIFO would block the open() forever
            if problem:
                raise VtkError(f"{spec}: {problem}; give the manifest as a file")
    files = [s for s in specs if not s.startswith("synth:") and (
        os.path.isdir(s) or not s.lower().endswith(MANIFEST_EXTS))]
    if len(files) > 1:  # the common clash (two folders, one layout): say so before any work
        sources = Sources(files, video_root)
        for _ in sources:
            pass
    return Sources(specs, video_root)


class Sources:
    """An iterator over the items of some specs, each input once.

    ``duplicates``: inputs skipped because an earlier item was the same input (same file, or
    same video and same start/end); ``duplicate_example``: the first of them, for a warning.
    """

    def __init__(self, specs: list[str], video_root: str | None):
        self.duplicates = 0
        self.duplicate_example: str | None = None
        self._items = self._unique(specs, video_root)

    def __iter__(self) -> Sources:
        return self

    def __next__(self) -> SourceItem:
        return next(self._items)

    def _unique(self, specs: list[str], video_root: str | None) -> Iterator[SourceItem]:
        # every input seen, on disk (vtk.scratchdb): memory stays flat however many there are
        seen = scratchdb.connect(
            "CREATE TABLE ids (id TEXT PRIMARY KEY, input TEXT) WITHOUT ROWID",
            "CREATE TABLE identities (identity TEXT PRIMARY KEY) WITHOUT ROWID")
        try:
            for n, item in enumerate(i for spec in specs for i in _open_one(spec, video_root)):
                identity, where = json.dumps(_identity(item)), _where(item)
                if seen.execute("SELECT 1 FROM identities WHERE identity = ?",
                                (identity,)).fetchone():
                    self.duplicates += 1
                    self.duplicate_example = self.duplicate_example or where
                    continue
                held = seen.execute("SELECT input FROM ids WHERE id = ?", (item.id,)).fetchone()
                if held:
                    raise VtkError(f"{where} and {held[0]} have the same source id {item.id!r} "
                                   f"(ids are paths relative to the folder given): give their "
                                   f"common parent folder as one SOURCE")
                seen.execute("INSERT INTO ids VALUES (?, ?)", (item.id, where))
                seen.execute("INSERT INTO identities VALUES (?)", (identity,))
                if n % 4096 == 0:
                    seen.commit()
                yield item
        finally:
            seen.close()


def _where(item: SourceItem) -> str:
    return item.meta.get("input") or item.describe()


def _identity(item: SourceItem) -> tuple:
    """What makes two items the same input: the file (symlinks and ./ resolved) and the range
    at the id's precision (ms); for items without a readable file (synth, rows that already
    failed) the id itself."""
    ms = tuple(None if t is None else round(t * 1000) for t in (item.start, item.end))
    if item.path is not None and "error" not in item.meta:
        return os.path.realpath(item.path), *ms
    return None, item.id, *ms


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
