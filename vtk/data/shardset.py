"""Resolve what the user calls "shards" into a list of tar paths or URLs.

Accepted: a shard-set folder (its ``*.tar``, sorted), a list of tar paths, or one path or brace
pattern (``shards/train-{000000..000009}.tar``); each may be an fsspec URL instead
(``s3://bucket/prefix`` lists the ``*.tar`` under that prefix; ``vtk.storage``). A shard that
does not exist is a one-line VtkError naming it, before any worker starts; so is a store that
cannot be reached or a bucket that is not there. A folder vtk was building when it was killed
(stats written, no ``index.json``) is refused with the command that finishes it.
"""

from __future__ import annotations

from pathlib import Path

from vtk import storage
from vtk.errors import VtkError
from vtk.shards.integrity import refuse_unfinished


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> three names; ``{x,y}`` lists too (webdataset's syntax)."""
    from webdataset.shardlists import expand_urls

    return list(expand_urls(pattern))


def resolve_shards(shards) -> list[str]:
    """Tar paths (str) in order; raises VtkError when none is found or one is missing."""
    listed = [shards] if isinstance(shards, (str, Path)) else \
        shards if isinstance(shards, (list, tuple)) else []
    if any(isinstance(s, str) and not storage.store(s).local for s in listed):
        return _resolve_urls(shards)
    if isinstance(shards, (str, Path)):
        p = Path(shards)
        if p.is_dir():
            refuse_unfinished(p)  # a killed build's tars look like a smaller whole set
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


def _resolve_urls(shards) -> list[str]:
    if isinstance(shards, str):
        storage.probe(shards)  # an absent bucket would list as empty
        base = shards.rstrip("/")
        if not base.endswith(".tar") and "{" not in base:  # a prefix (an empty one: no tars)
            if storage.isdir(base):
                refuse_unfinished(base)
            paths = storage.glob(storage.join(base, "*.tar")) if storage.isdir(base) else []
            if not paths:
                raise VtkError(f"no .tar shards in {shards}; build some with: vtk shard SOURCE "
                               f"--out {shards}")
            return paths
        paths = expand_braces(shards)
    else:
        paths = [str(s) for s in shards]
        storage.probe(next(p for p in paths if not storage.store(p).local))
    for path in paths:
        if not storage.isfile(path):
            raise VtkError(f"shard not found: {path}")
    return paths


def looks_truncated(tar: str) -> bool:
    """True when a tar does not end like a complete one (whole 512-byte blocks closed by two
    zero blocks). Python's tarfile stops quietly at a cut, so this is checked up front."""
    size = storage.size(tar)
    if size < 1024 or size % 512:
        return True
    return storage.read_bytes(tar, size - 1024, size).count(0) != 1024
