"""Files other stages trust: written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary name in the same folder, then rename over ``path``: a reader never
    sees half a file, and a hard link to the old file (a reused run) keeps the old content."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, data, indent: int | None = 1) -> None:
    """``data`` as JSON, atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike, default=None):
    """The JSON in ``path``, or ``default`` if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
