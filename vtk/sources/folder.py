"""A folder of videos, searched recursively, in sorted path order.

Any file whose extension FFmpeg commonly reads as video is an input; whether it really decodes
is found out later (a broken ``.mp4`` is a recorded failure, not a crash). A sidecar
``<name>.txt`` next to a video is its caption (video2dataset and many scraped sets ship them).
The id is the path relative to the folder, made key-safe, so it is stable across machines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from vtk.types import SourceItem, safe_id

VIDEO_EXTS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .asf .flv .mpg .mpeg .ts .m2ts .mts .3gp .3g2 .ogv "
    ".ogg .vob .dv .mxf .y4m .gif .f4v .rm .rmvb .divx .nut .h264 .264 .hevc .265 .ivf".split()
)


def folder_items(root: str) -> Iterator[SourceItem]:
    """Yield one item per video file under ``root`` (hidden files and folders skipped)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in VIDEO_EXTS:
                continue
            yield file_item(os.path.join(dirpath, name), root)


def file_item(path: str, root: str) -> SourceItem:
    """One video file; its id is its path relative to ``root`` without the extension."""
    rel = os.path.splitext(os.path.relpath(path, root))[0]
    item = SourceItem(id=safe_id(rel), path=path)
    sidecar = os.path.splitext(path)[0] + ".txt"
    if os.path.isfile(sidecar):
        raw = open(sidecar, "rb").read()
        try:
            item.meta["caption"] = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            item.meta["error"] = {"kind": "non-utf8",
                                  "reason": f"caption file {sidecar} is not UTF-8 ({e.reason} "
                                            f"at byte {e.start})"}
    return item
