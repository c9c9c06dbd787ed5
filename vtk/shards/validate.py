"""Check a shard set end to end: every tar readable, every sample complete and decodable.

Used by ``vtk inspect``. A sample is valid when its members are plain files under safe relative
names, together no larger than ``max_bytes`` (``vtk.shards.reader``: checked on the tar headers,
an oversized sample is never read); it has ``mp4``, ``txt`` and ``json``; the json is an object
with the required fields; the mp4 decodes with PyAV to ``num_frames`` frames of
``width x height``. Each tar's ``.idx`` must match the tar, and index.json's counts the tars.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

from vtk import storage
from vtk.shards.reader import MAX_SAMPLE_BYTES, PROBLEMS, read_samples
from vtk.shards.schema import check_sample
from vtk.shards.wds_index import index_entries, index_path, read_index


@dataclass
class ShardReport:
    file: str
    num_samples: int = 0
    problems: list[str] = field(default_factory=list)
    previews: list[dict] = field(default_factory=list)  # first samples: key, json, txt
    caption_errors: dict[str, int] = field(default_factory=dict)  # failed captions per scale


def load_card(folder: str) -> dict:
    """index.json of a shard set (a folder or a URL); FileNotFoundError when there is none."""
    storage.probe(folder)
    return storage.read_json(storage.join(folder, "index.json"))


def decode_info(mp4: bytes) -> tuple[int, int, int]:
    """(frames, width, height) of an encoded clip, decoding every frame."""
    import av

    with av.open(io.BytesIO(mp4)) as c:
        stream = c.streams.video[0]
        n = 0
        w = h = 0
        for frame in c.decode(stream):
            n += 1
            w, h = frame.width, frame.height
    return n, w, h


def check_shard(tar_path: str, decode: bool = True, preview: int = 0,
                max_bytes: int = MAX_SAMPLE_BYTES) -> ShardReport:
    report = ShardReport(storage.basename(tar_path))
    try:
        for sample in read_samples(tar_path, max_bytes):
            report.num_samples += 1
            key = sample["__key__"]
            key = key if key.isprintable() else ascii(key)
            if sample.get(PROBLEMS):  # members left unread: what the loaders skip it for
                report.problems += [f"{key}: {message}" for _, message in sample[PROBLEMS]]
                continue
            members = {k: v for k, v in sample.items() if not k.startswith("__")}
            info, problems = check_sample(key, members)
            failed = (info or {}).get("caption_errors")
            for scale in failed if isinstance(failed, dict) else ():
                report.caption_errors[scale] = report.caption_errors.get(scale, 0) + 1
            if info is not None and decode and "mp4" in members:
                problems += _check_video(key, members["mp4"], info)
            report.problems += problems
            if len(report.previews) < preview and info is not None:
                report.previews.append({"key": key, "json": info,
                                        "txt": members.get("txt", b"").decode("utf-8", "replace")})
    except (tarfile.TarError, OSError, EOFError) as e:
        report.problems.append(f"{report.file}: unreadable tar ({e})")
        return report
    report.problems += _check_idx(tar_path)
    return report


def _check_video(key: str, mp4: bytes, info: dict) -> list[str]:
    try:
        n, w, h = decode_info(mp4)
    except Exception as e:  # any FFmpeg error means the sample is broken
        return [f"{key}: mp4 does not decode ({e})"]
    problems = []
    if n != info.get("num_frames"):
        problems.append(f"{key}: mp4 has {n} frames, json says {info.get('num_frames')}")
    if (w, h) != (info.get("width"), info.get("height")):
        problems.append(f"{key}: mp4 is {w}x{h}, json says {info.get('width')}x"
                        f"{info.get('height')}")
    return problems


def _check_idx(tar_path: str) -> list[str]:
    idx = index_path(tar_path)
    name = storage.basename(idx)
    if not storage.exists(idx):
        return [f"{name}: missing (DALI needs it)"]
    try:
        if read_index(idx) != index_entries(tar_path):
            return [f"{name}: does not match its tar"]
    except (ValueError, IndexError) as e:
        return [f"{name}: unreadable ({e})"]
    return []


def check_card(folder: str, card: dict, reports: list[ShardReport]) -> list[str]:
    """index.json against the tars on disk."""
    problems = [] if reports else [f"{folder}: no shards (every input failed? see stats/)"]
    listed = {s["file"]: s["num_samples"] for s in card.get("shards", [])}
    found = {r.file: r.num_samples for r in reports}
    for f in sorted(set(listed) - set(found)):
        problems.append(f"index.json lists {f}, which is missing")
    for f in sorted(set(found) - set(listed)):
        problems.append(f"{f} is not listed in index.json")
    for f in sorted(set(listed) & set(found)):
        if listed[f] != found[f]:
            problems.append(f"{f}: {found[f]} samples, index.json says {listed[f]}")
    if sum(found.values()) != card.get("num_samples"):
        problems.append(f"index.json says {card.get('num_samples')} samples, tars hold "
                        f"{sum(found.values())}")
    return problems
