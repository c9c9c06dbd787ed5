"""Resolve what the user calls "shards" into a list of local tar paths.

Accepted: a shard-set folder (its ``*.tar``, sorted), a list of tar paths, or one path or brace
pattern (``shards/train-{000000..000009}.tar``). A shard that does not exist is a one-line
VtkError naming it, before any worker starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from vtk.errors import VtkError


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> three names; ``{x,y}`` lists too (webdataset's syntax)."""
    from webdataset.shardlists import expand_urls

    return list(expand_urls(pattern))


def resolve_shards(shards) -> list[str]:
    """Tar paths (str) in order; raises VtkError when none is found or one is missing."""
    if isinstance(shards, (str, Path)):
        p = Path(shards)
        if p.is_dir():
            paths = sorted(str(t) for t in p.glob("*.tar"))
            if not paths:
                raise VtkError(f"no .tar shards in {p}; build some with: vtk shard SOURCE --out {p}")
            return paths
        paths = expand_braces(str(shards))
    else:
        paths = [str(s) for s in shards]
    if not paths:
        raise VtkError("no shards given")
    for path in paths:
        if not Path(path).is_file():
            raise VtkError(f"shard not found: {path}")
    return paths


def looks_truncated(tar: str) -> bool:
    """True when a tar does not end like a complete one (whole 512-byte blocks closed by two
    zero blocks). Python's tarfile stops quietly at a cut, so this is checked up front."""
    size = os.path.getsize(tar)
    if size < 1024 or size % 512:
        return True
    with open(tar, "rb") as f:
        f.seek(-1024, os.SEEK_END)
        return f.read(1024).count(0) != 1024
