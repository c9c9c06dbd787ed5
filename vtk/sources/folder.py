"""A folder of videos, searched recursively, in sorted path order.

Any file whose extension FFmpeg commonly reads as video is an input; whether it really decodes
is found out later (a broken ``.mp4`` is a recorded failure, not a crash). A sidecar
``<name>.txt`` next to a video is its caption (video2dataset and many scraped sets ship them).
The id is :func:`vtk.types.source_id` of the path relative to the folder ('/'-separated,
extension kept): stable across machines, and unchanged when files are added beside it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from vtk import storage
from vtk.types import VIDEO_EXTS, SourceItem, source_id

__all__ = ["VIDEO_EXTS", "file_item", "folder_items", "not_regular"]

_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))


def not_regular(path: str) -> str | None:
    """Why ``path`` must not be opened as a file (None for a regular file or a missing one).

    Opening a FIFO for reading blocks until something writes to it, so it is never opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: the reader says so in its own words
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "special file")
    return f"not a regular file ({kind})"


def folder_items(root: str) -> Iterator[SourceItem]:
    """Yield one item per video file under ``root`` (hidden files and folders skipped)."""
    if not storage.store(root).local:
        yield from _listed_items(root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in VIDEO_EXTS:
                continue
            yield file_item(os.path.join(dirpath, name), root)


def _listed_items(root: str) -> Iterator[SourceItem]:
    """The videos of a folder URL from one listing, in the order of a local folder: the
    worker fetches each (and the ``.txt`` caption beside it, named in ``meta["sidecar"]``)."""
    names = storage.walk(root)
    present = set(names)
    for rel in names:
        stem, ext = os.path.splitext(rel)
        if ext.lower() not in VIDEO_EXTS:
            continue
        item = SourceItem(id=source_id(rel), path=storage.join(root, rel))
        if stem + ".txt" in present:
            item.meta["sidecar"] = storage.join(root, stem + ".txt")
        yield item


def file_item(path: str, root: str) -> SourceItem:
    """One video file; its id is its path relative to ``root``, extension kept."""
    if not storage.store(path).local:  # a URL: fetched, and checked, by its worker
        return SourceItem(id=source_id(storage.basename(path)), path=path)
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    item = SourceItem(id=source_id(rel), path=path)
    problem = not_regular(path)
    if problem:
        item.meta["error"] = {"kind": "unreadable", "reason": problem}
        return item
    sidecar = os.path.splitext(path)[0] + ".txt"
    if os.path.isfile(sidecar):  # False for a FIFO: never opened
        raw = open(sidecar, "rb").read()
        try:
            item.meta["caption"] = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            item.meta["error"] = {"kind": "non-utf8",
                                  "reason": f"caption file {sidecar} is not UTF-8 ({e.reason} "
                                            f"at byte {e.start})"}
    return item
