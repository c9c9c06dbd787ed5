"""Reading a shard's members by offset: its sample list from the ``.idx`` (DALI's wds2idx
format, vtk.shards.wds_index) or from the tar headers, and one member's bytes with one ``pread``.

The 512-byte tar header in front of a member is read with it and must be a valid header (its
checksum right) for a member of that size, so a stale ``.idx`` never serves the wrong bytes; a
listing from an ``.idx`` whose first or last sample fails that check is rebuilt from the
headers. A tar that cannot be read, or is cut short, keeps the samples that could be read and
ends with an error row.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass

from vtk.shards.wds_index import read_index, split_name


class MemberError(Exception):
    """A member's bytes cannot be read where the index says they are."""


@dataclass
class Listing:
    """A shard's samples: ``(key, mp4 offset, mp4 size, json offset, json size)``, -1 for a
    missing member; ``error`` adds one error row after them."""
    entries: list[tuple[str, int, int, int, int]]
    error: str | None = None

    @property
    def rows(self) -> int:
        return len(self.entries) + (self.error is not None)


def header_ok(block: bytes, size: int) -> bool:
    """True when ``block`` is a tar header (checksum right) of a member of ``size`` bytes."""
    if len(block) != 512:
        return False
    try:
        stored = int(block[148:156].replace(b"\0", b" ").strip() or b"x", 8)
    except ValueError:
        return False
    rest = block[:148] + block[156:]
    if stored != sum(rest) + 8 * 32 and stored != sum(rest) + 8 * 32 - 256 * sum(
            b > 127 for b in rest):  # some old writers sum signed bytes
        return False
    field = block[124:136]
    if field[0] & 0x80:  # base-256, for members over 8 GiB
        declared = int.from_bytes(field[1:], "big")
    else:
        try:
            declared = int(field.replace(b"\0", b" ").strip() or b"0", 8)
        except ValueError:
            return False
    return declared == size


def read_member(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of an open tar, checked against the header in front."""
    if offset < 512 or size < 0:
        raise MemberError(f"bad offset {offset}")
    buf = os.pread(fd, size + 512, offset - 512)
    if not header_ok(buf[:512], size):
        raise MemberError(f"no tar header for a {size}-byte member before offset {offset}")
    if len(buf) != size + 512:
        raise MemberError(f"cut short at offset {offset}")
    return buf[512:]


def list_tar(path: str, idx: str | None) -> Listing:
    """The samples of one tar, from ``idx`` when it is given and matches the tar."""
    file = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return Listing([], f"{file}: unreadable ({e})")
    if idx is not None:
        try:
            samples = read_index(idx)
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            samples = None
        if samples is not None:
            listing = _entries(file, samples, size)
            if not listing.error and _idx_matches(path, listing):
                return listing
    # no .idx, or one that does not match its tar (stale, or the tar was cut short): the
    # headers say what the tar holds
    return _scan(path, file, size)


def _idx_matches(path: str, listing: Listing) -> bool:
    """The first and last sample's json headers are where the .idx says."""
    probes = [e for e in (listing.entries[:1] + listing.entries[-1:]) if e[3] >= 0]
    try:
        with open(path, "rb") as f:
            for e in probes:
                read_member(f.fileno(), e[3], e[4])
    except (OSError, MemberError):
        return False
    return True


def _scan(path: str, file: str, size: int) -> Listing:
    members, error = [], None
    try:
        with tarfile.open(path, "r:") as tar:
            while (m := tar.next()) is not None:
                tar.members.clear()  # headers only; none of them is kept
                if m.isreg():
                    members.append((m.name, m.offset_data, m.size))
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        error = f"{file}: unreadable tar ({e})"
    samples: list[list] = []
    last = None
    for name, off, n in members:
        base, ext = split_name(name)
        if not base or base.endswith("/"):
            continue
        if base != last:
            samples.append([])
            last = base
        samples[-1].append((ext, off, n, name))
    listing = _entries(file, samples, size)
    if error and not listing.error:
        listing.error = error + (f" after {len(listing.entries)} samples"
                                 if listing.entries else "")
    elif not listing.entries and not listing.error:
        listing.error = f"{file}: no samples (not a tar?)"
    return listing


def _entries(file: str, samples: list[list], size: int) -> Listing:
    """Listing rows from (ext, offset, size, name) groups; members past the end of the file
    (a tar cut short) end the list with an error row."""
    entries = []
    for sample in samples:
        if any(off + n > size for _, off, n, _ in sample):
            return Listing(entries, f"{file}: cut short at byte {size}: samples from "
                                    f"{len(entries) + 1} on are missing")
        found = {ext.lower(): (off, n) for ext, off, n, _ in reversed(sample)}
        mp4, meta = found.get("mp4", (-1, -1)), found.get("json", (-1, -1))
        entries.append((split_name(sample[0][3])[0], mp4[0], mp4[1], meta[0], meta[1]))
    return Listing(entries)


def poster_jpeg(mp4: bytes, quality: int = 85) -> bytes:
    """The middle frame of a clip as JPEG: decoded with PyAV, encoded with OpenCV."""
    import av
    import cv2

    with av.open(io.BytesIO(mp4)) as c:
        stream = c.streams.video[0]
        count = stream.frames or sum(1 for p in c.demux(stream) if p.size)
    with av.open(io.BytesIO(mp4)) as c:
        image = None
        for k, frame in enumerate(c.decode(c.streams.video[0])):
            image = frame
            if k >= count // 2:
                break
    if image is None:
        raise MemberError("no frames")
    ok, jpeg = cv2.imencode(".jpg", image.to_ndarray(format="bgr24"),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise MemberError("JPEG encoding failed")
    return jpeg.tobytes()
