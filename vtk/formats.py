"""The versions of the files vtk writes and reads back: a shard set's ``index.json``, a run's
``config.json`` and ``checkpoint.pt``. Each carries ``format_version``; ``check`` is the one
place that refuses a version this vtk does not read (a file without one predates the field).
A change that older readers would misread bumps the kind's version here."""

from __future__ import annotations

from vtk.errors import VtkError

VERSIONS = {"index": 1, "config": 1, "checkpoint": 1}
NAMES = {"index": "shard set card", "config": "run config", "checkpoint": "checkpoint"}


def stamp(kind: str, data: dict) -> dict:
    """``data`` with this vtk's ``format_version`` of ``kind`` first."""
    return {"format_version": VERSIONS[kind], **{k: v for k, v in data.items()
                                                 if k != "format_version"}}


def check(kind: str, data: dict, where) -> dict:
    """``data`` without its ``format_version``, when it is the one this vtk reads; a VtkError
    naming ``where`` otherwise."""
    found = data.get("format_version")
    want = VERSIONS[kind]
    if found != want:
        what = "no format_version" if found is None else f"format_version {found!r}"
        newer = isinstance(found, int) and found > want
        raise VtkError(f"{where}: a {NAMES[kind]} of {what}, and this vtk reads version {want}: "
                       + ("upgrade vtk to read it" if newer else
                          "it was written by another vtk; rebuild it with this one"))
    return {k: v for k, v in data.items() if k != "format_version"}
