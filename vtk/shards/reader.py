"""Reading shard tars without trusting them: the samples of a tar, judged by each member's
header before any of its data is read.

webdataset's reader (``webdataset.tariterators.tar_file_iterator``) reads every regular member
whole before anyone can look at it, so a member whose header declares 2 GiB cost 2 GiB of
memory. Here a sample whose members together would pass ``max_bytes`` is skipped unread (the
reader seeks past its data), and a member that is not a plain file under a safe relative name
(absolute, ``..``, a NUL byte; a symlink, hard link, device or FIFO) is not read either. Both
come back with the sample as problems, so ``vtk inspect`` reports them and the loaders record
and skip the sample instead of losing it quietly.

A tar at a URL (``s3://...``, any fsspec URL: ``vtk.storage``) is read in one pass through a
buffered file object, with tarfile's streaming mode: data skipped (an oversized sample) is
read past, never kept.

Samples are grouped as webdataset groups them: consecutive members whose names share the part
before the first dot of the file name; extensions are lower-cased.
"""

from __future__ import annotations

import contextlib
import re
import tarfile
from collections.abc import Iterator

from vtk import storage
from vtk.shards.wds_index import split_name

# The default cap on one sample's bytes (its members together). A shard clip is seconds of
# re-encoded video, a few MB; 256 MiB leaves room for long or high-bitrate clips while keeping
# a worker's worst case bounded.
MAX_SAMPLE_BYTES = 256 * 2**20

OVERSIZED, UNSAFE = "oversized", "unsafe"  # the kinds of problem a sample can carry
PROBLEMS = "__problems__"  # sample field: [(kind, message), ...] when something was not read


def name_problem(name: str) -> str | None:
    """Why a member name is unsafe to extract, or None. Backslashes count as separators too,
    as they are where such a tar may be unpacked."""
    if "\0" in name:
        return "has a NUL byte in its name"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", name):
        return "is an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "has '..' in its path (extracted, it would land outside the folder)"
    if not name:
        return "has an empty name"
    return None


def type_problem(m: tarfile.TarInfo) -> str | None:
    """Why a member is not a plain file, or None (directories are harmless and skipped)."""
    if m.isreg() or m.isdir():
        return None
    if m.issym():
        return f"is a symlink (to {m.linkname!r}), not a file"
    if m.islnk():
        return f"is a hard link (to {m.linkname!r}), not a file"
    if m.ischr() or m.isblk():
        return "is a device file, not a file"
    if m.isfifo():
        return "is a FIFO, not a file"
    return f"is not a regular file (tar type {m.type!r})"


def member_events(tar: tarfile.TarFile, max_bytes: int = MAX_SAMPLE_BYTES) -> Iterator[tuple]:
    """What becomes of each member of ``tar``, judged on its header, in order: the one place
    where members are grouped into samples and checked. Events:

    - ``("sample", key)``: a new sample starts;
    - ``("problem", kind, message, drop)``: the sample gets a problem; ``drop``: forget its
      members so far (it is oversized: none of its data is kept);
    - ``("member", m, ext)``: read member ``m`` as the sample's ``ext``.
    """
    key_now, size, exts, oversized = None, 0, set(), False
    while True:
        m = tar.next()
        if m is None:
            return
        tar.members.clear()  # TarFile keeps every header it has seen; we need none of them
        problem = name_problem(m.name) or type_problem(m)
        if m.isdir() and problem is None:
            continue
        key, ext = split_name(m.name)
        if not key or key.endswith("/"):  # hidden files, e.g. ".DS_Store" (as the .idx)
            if problem is None:
                continue
            key = m.name  # an unsafe one is still reported, as a sample of its own
        if key != key_now:
            key_now, size, exts, oversized = key, 0, set(), False
            yield ("sample", key)
        if problem is not None:
            yield ("problem", UNSAFE, f"member {m.name!r} {problem}", False)
            continue
        size += m.size
        if size > max_bytes:  # checked on the header: the data is never read
            if not oversized:
                oversized = True
                yield ("problem", OVERSIZED, f"over the {max_bytes} bytes of "
                       f"--max-sample-bytes (member {m.name!r} declares {m.size}); skipped "
                       "unread", True)
            continue
        if oversized:
            continue
        ext = ext.lower()
        if ext in exts:
            yield ("problem", UNSAFE, f"member {m.name!r} repeats .{ext}", False)
            continue
        exts.add(ext)
        yield ("member", m, ext)


def read_samples(path: str, max_bytes: int = MAX_SAMPLE_BYTES) -> Iterator[dict]:
    """The samples of one tar, in order: ``{"__key__", "__url__", ext: bytes, ...}``. A sample
    with members that were not read also has ``PROBLEMS``: ``[(kind, message), ...]`` with
    kind ``OVERSIZED`` (then none of its data is kept) or ``UNSAFE`` (that member is left out).

    Errors of the tar itself (cut short, not a tar) propagate; the sample being assembled when
    one happens is dropped, being incomplete."""
    sample: dict | None = None
    with open_tar(path) as tar:
        for event in member_events(tar, max_bytes):
            if event[0] == "sample":
                if sample is not None:
                    yield sample
                sample = {"__key__": event[1], "__url__": path}
            elif event[0] == "problem":
                _, kind, message, drop = event
                if drop:
                    for k in [k for k in sample if not k.startswith("__")]:
                        del sample[k]
                _add_problem(sample, kind, message)
            else:
                _, m, ext = event
                sample[ext] = tar.extractfile(m).read()
    if sample is not None:
        yield sample


@contextlib.contextmanager
def open_tar(path: str):
    """A TarFile to read members in order: random access for a local file, one streaming
    pass (``r|*``) over a buffered fsspec file for a URL. Store failures (endpoint, bucket,
    credentials) are one VtkError line; a missing key is FileNotFoundError, as locally."""
    if storage.store(path).local:
        with tarfile.open(path, "r:*") as tar:
            yield tar
        return
    with storage.open(path, "rb") as f, storage.errors(path), \
            tarfile.open(fileobj=f, mode="r|*") as tar:
        yield tar


def _add_problem(sample: dict, kind: str, message: str) -> None:
    sample.setdefault(PROBLEMS, []).append((kind, message))


def _oversized(sample: dict) -> bool:
    return any(kind == OVERSIZED for kind, _ in sample.get(PROBLEMS, ()))


def skip_kind(sample: dict) -> str | None:
    """The loader's count for a sample it must skip (``oversized``, or ``corrupt`` for unsafe
    members), or None when every member was read."""
    problems = sample.get(PROBLEMS)
    if not problems:
        return None
    return OVERSIZED if _oversized(sample) else "corrupt"


def problem_text(sample: dict) -> str:
    """The sample's problems as one line."""
    return "; ".join(message for _, message in sample.get(PROBLEMS, ()))
