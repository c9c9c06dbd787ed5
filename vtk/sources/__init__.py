"""Inputs: turn the SOURCE arguments of `vtk shard` into a stream of SourceItems.

A spec is ``synth:<preset>?k=v`` (the synthetic world), a folder (searched recursively), a
manifest (``.csv .tsv .jsonl .parquet``) or a single video file; folders, manifests and files
may be local or at any fsspec URL (``s3://bucket/raw/``, listed as a local folder is), and a
file or a manifest row's video may be an ``http(s)://`` URL. The driver never reads a remote
video: the worker that decodes it fetches it (``vtk.sources.fetch``). Items come out lazily, in a
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

from vtk import scratchdb, storage
from vtk.errors import VtkError
from vtk.types import SourceItem

MANIFEST_EXTS = (".csv", ".tsv", ".jsonl", ".parquet")
HTTP = ("http", "https")


def open_sources(specs: Iterable[str], video_root: str | None = None) -> Sources:
    """The items of every spec in order; raises VtkError for a spec that names nothing
    usable (missing path, unknown preset, a manifest that is not a regular file or has no
    video column), and for two files of the folders and files given with one id."""
    specs = list(specs)
    kinds = {spec: spec_kind(spec) for spec in specs}  # a bad argument fails now, before work
    files = [s for s in specs if kinds[s] in ("folder", "file")]
    if len(files) > 1:  # the common clash (two folders, one layout): say so before any work
        sources = Sources(files, video_root, kinds)
        for _ in sources:
            pass
    return Sources(specs, video_root, kinds)


def spec_kind(spec: str) -> str:
    """What a SOURCE is: synth, folder, manifest or file (a video); a local path or a URL
    (``s3://bucket/raw/``, ``https://host/v.mp4``). VtkError for one that is not there."""
    if spec.startswith("synth:"):
        from vtk.sources.synth import parse_spec

        parse_spec(spec)
        return "synth"
    manifest = spec.lower().split("?", 1)[0].endswith(MANIFEST_EXTS)
    if storage.protocol(spec) in HTTP:  # no listing over plain http: a file or a manifest
        return "manifest" if manifest else "file"
    if storage.isdir(spec):
        return "folder"
    if not storage.exists(spec):
        raise VtkError(f"{spec}: no such file, folder or synth: spec")
    if manifest and storage.store(spec).local:
        from vtk.sources.folder import not_regular

        problem = not_regular(spec)  # a FIFO would block the open() forever
        if problem:
            raise VtkError(f"{spec}: {problem}; give the manifest as a file")
    return "manifest" if manifest else "file"


class Sources:
    """An iterator over the items of some specs, each input once.

    ``duplicates``: inputs skipped because an earlier item was the same input (same file, or
    same video and same start/end); ``duplicate_example``: the first of them, for a warning.
    """

    def __init__(self, specs: list[str], video_root: str | None, kinds: dict[str, str]):
        self.duplicates = 0
        self.duplicate_example: str | None = None
        self._items = self._unique(specs, video_root, kinds)

    def __iter__(self) -> Sources:
        return self

    def __next__(self) -> SourceItem:
        return next(self._items)

    def _unique(self, specs: list[str], video_root: str | None,
                kinds: dict[str, str]) -> Iterator[SourceItem]:
        # every input seen, on disk (vtk.scratchdb): memory stays flat however many there are
        seen = scratchdb.connect(
            "CREATE TABLE ids (id TEXT PRIMARY KEY, input BLOB) WITHOUT ROWID",
            "CREATE TABLE identities (identity TEXT PRIMARY KEY) WITHOUT ROWID")
        try:
            for n, item in enumerate(i for spec in specs
                                     for i in _open_one(spec, kinds[spec], video_root)):
                identity, where = json.dumps(_identity(item)), _where(item)
                if not seen.execute("INSERT OR IGNORE INTO identities VALUES (?)",
                                    (identity,)).rowcount:
                    self.duplicates += 1
                    self.duplicate_example = self.duplicate_example or where
                    continue
                # as bytes: a file name that is not UTF-8 holds lone surrogates, which SQLite's
                # text cannot
                if not seen.execute("INSERT OR IGNORE INTO ids VALUES (?, ?)",
                                    (item.id, where.encode("utf-8", "surrogateescape"))).rowcount:
                    held = seen.execute("SELECT input FROM ids WHERE id = ?", (item.id,))
                    other = held.fetchone()[0].decode("utf-8", "surrogateescape")
                    raise VtkError(f"{where} and {other} have the same source id {item.id!r} "
                                   f"(ids are paths relative to the folder given): give their "
                                   f"common parent folder as one SOURCE")
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
        local = storage.store(item.path).local  # a URL is its own identity
        return os.path.realpath(item.path) if local else item.path, *ms
    return None, item.id, *ms


def _open_one(spec: str, kind: str, video_root: str | None) -> Iterator[SourceItem]:
    if kind == "synth":
        from vtk.sources.synth import synth_items

        return synth_items(spec)
    if kind == "folder":
        from vtk.sources.folder import folder_items

        return folder_items(spec)
    if kind == "manifest":
        from vtk.sources.manifest import manifest_items

        return manifest_items(spec, video_root=video_root)
    from vtk.sources.folder import file_item

    return iter([file_item(spec, storage.parent(spec) or ".")])


def count_sources(specs: Iterable[str]) -> int | None:
    """How many items ``open_sources`` will yield, when that is cheap to know (synth, local
    folders, files); None when a manifest or a folder URL (a second listing) is among them."""
    total = 0
    for spec in specs:
        if spec.startswith("synth:"):
            from vtk.sources.synth import parse_spec

            total += parse_spec(spec)[0].n
        elif spec.lower().endswith(MANIFEST_EXTS) or not storage.store(spec).local:
            return None
        elif os.path.isdir(spec):
            from vtk.sources.folder import folder_items

            total += sum(1 for _ in folder_items(spec))
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
