"""DALI's WebDataset index (the ``.idx`` that DALI's ``wds2idx`` tool writes), without DALI.

``fn.readers.webdataset(paths=..., index_paths=...)`` reads this text format, version v1.2::

    v1.2 <number of samples>
    <ext> <data offset> <size> <member name> [<ext> <offset> <size> <name> ...]   one line/sample

Offsets are byte positions of each member's data (just past its 512-byte header) in the tar;
a sample is a run of consecutive members whose names share the part before the first dot
of the file name; entries that are not regular files and hidden names are skipped.
"""

from __future__ import annotations

import contextlib
import os
import tarfile

INDEX_VERSION = "v1.2"


def split_name(name: str) -> tuple[str, str]:
    """'dir/key.seg.mp4' -> ('dir/key', 'seg.mp4'): WebDataset splits at the first dot of the
    file name."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1:]


def index_entries(tar_path: str) -> list[list[tuple[str, int, int, str]]]:
    """Samples of a tar: each a list of (ext, data offset, size, member name)."""
    samples: list[list[tuple[str, int, int, str]]] = []
    last = None
    from vtk import storage

    if not storage.store(tar_path).local:  # one streaming pass; offsets are the same
        opened = contextlib.ExitStack()
        f = opened.enter_context(storage.open(tar_path, "rb"))
        opened.enter_context(storage.errors(tar_path))
        tar = opened.enter_context(tarfile.open(fileobj=f, mode="r|"))
    else:
        opened = tar = tarfile.open(tar_path, "r:")
    with opened:
        for m in tar:
            if not m.isreg():
                continue
            base, ext = split_name(m.name)
            if not base or base.endswith("/"):  # hidden files, e.g. ".DS_Store"
                continue
            entry = (ext, m.offset_data, m.size, m.name)
            if base != last:
                samples.append([entry])
                last = base
            else:
                samples[-1].append(entry)
    return samples


def format_index(samples) -> str:
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    lines += [" ".join(f"{e} {o} {s} {n}" for e, o, s, n in sample) for sample in samples]
    return "\n".join(lines) + "\n"


def index_path(tar: str) -> str:
    """The DALI (wds2idx format) index beside a tar: ``NAME.tar`` -> ``NAME.idx`` (a URL's
    too)."""
    tar = str(tar)
    return (tar[:-4] if tar.endswith(".tar") else os.path.splitext(tar)[0]) + ".idx"


def write_index(tar_path: str, idx_path: str | None = None) -> str:
    """Write ``idx_path`` (default: the tar's path with ``.idx``) atomically; returns its path."""
    idx_path = idx_path or index_path(tar_path)
    samples = index_entries(tar_path)
    if not samples:
        raise ValueError(f"{tar_path}: no samples to index")
    tmp = idx_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(format_index(samples))
    os.replace(tmp, idx_path)
    return idx_path


def read_index(idx_path: str) -> list[list[tuple[str, int, int, str]]]:
    """Parse an index file (a path or a URL) back into samples (for validation)."""
    from vtk import storage

    with storage.open(idx_path, "rt") as f:
        version, count = f.readline().split()
        if version != INDEX_VERSION:
            raise ValueError(f"{idx_path}: index version {version}, expected {INDEX_VERSION}")
        samples = []
        for line in f:
            parts = line.split()
            samples.append([(parts[i], int(parts[i + 1]), int(parts[i + 2]), parts[i + 3])
                            for i in range(0, len(parts), 4)])
    if len(samples) != int(count):
        raise ValueError(f"{idx_path}: header says {count} samples, found {len(samples)}")
    return samples
