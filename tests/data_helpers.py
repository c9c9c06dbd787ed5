"""Tiny real shard sets for the data tests: frames encoded with PyAV, tars written with
webdataset's TarWriter in the shard format of docs/architecture.md.

Every frame is recognisable: its mean brightness steps with the frame number and a bright
square moves with it, so a wrong frame index shows as a large pixel difference.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import webdataset as wds


def pattern_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 n x h x w x 3: frame i has background level 20 + 200 * i / n and a moving square."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 30, size=(h, w, 3))
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        f = base + int(20 + 200 * i / max(n - 1, 1))
        x = (i * 3) % (w - 8)
        f[8:16, x:x + 8] = 255 - f[8:16, x:x + 8]
        out[i] = np.clip(f, 0, 255)
    return out


def encode(frames: np.ndarray, fps: int = 8, codec: str = "h264") -> bytes:
    """uint8 T x H x W x 3 -> mp4 (H.264) or webm-in-mp4 (VP9) bytes, high quality."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        name = {"h264": "libx264", "vp9": "libvpx-vp9"}[codec]
        s = out.add_stream(name, rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "10"} if codec == "h264" else {"crf": "10", "b": "0"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def sample_meta(i: int, n: int, h: int, w: int, codec: str = "h264") -> dict:
    return {"source": f"src{i}", "start": 0.0, "end": n / 8, "fps": 8, "num_frames": n,
            "width": w, "height": h, "codec": codec, "label": f"class{i % 3}",
            "texts": [f"clip {i}"],
            "captions": {"coarse": f"coarse {i}", "fine": f"fine {i}", "fused": f"both {i}"}}


def write_shards(folder, samples: int = 10, per_shard: int = 4, frames: int = 12,
                 h: int = 48, w: int = 64, codec: str = "h264", corrupt: set[int] = frozenset(),
                 name: str = "test", key=None) -> list[str]:
    """Write ``samples`` clips into tars of ``per_shard``; indices in ``corrupt`` get garbage
    mp4 bytes; ``key(i)`` names sample ``i`` (default ``src{i:03d}_000000``: one clip per
    source). Returns the tar paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s0 in range(0, samples, per_shard):
        path = folder / f"{name}-{s0 // per_shard:06d}.tar"
        with wds.TarWriter(str(path)) as tw:
            for i in range(s0, min(s0 + per_shard, samples)):
                n = frames + (i % 3)
                mp4 = b"\x00garbage" * 50 if i in corrupt else encode(pattern_frames(n, h, w, i), codec=codec)
                meta = sample_meta(i, n, h, w, codec)
                tw.write({"__key__": key(i) if key else f"src{i:03d}_{0:06d}", "mp4": mp4, "txt": f"fine {i}",
                          "json": json.dumps(meta).encode()})
        paths.append(str(path))
    return paths


def decoder_or_skip(name: str):
    """The named decoder, or skip the test when its library is missing or cannot load here
    (torchcodec without the system FFmpeg raises at import, not ImportError)."""
    import pytest

    from vtk.data.decoders import get_decoder
    from vtk.errors import VtkError

    try:
        return get_decoder(name)
    except VtkError as e:
        pytest.skip(str(e))


def write_audio_only_mp4(path) -> None:
    """A real mp4 with one AAC audio stream and no video (an input every stage must reject)."""
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            out.mux(s.encode(f))
        out.mux(s.encode(None))


def write_tar(path, members, format=None) -> str:
    """A tar of ``members``, each ``(TarInfo or name, data)``. ``data`` bytes are stored as
    they are; an int ``n`` writes a header declaring ``n`` bytes and leaves a hole of that size
    (a sparse file), so a tar with a 2 GiB member costs a few KB of disk and no time."""
    import tarfile

    fmt = tarfile.PAX_FORMAT if format is None else format
    with open(path, "wb") as f:
        for info, data in members:
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
            info.size = data if isinstance(data, int) else len(data)
            if not info.isreg():
                info.size = 0
            f.write(info.tobuf(format=fmt, encoding="utf-8", errors="surrogateescape"))
            if isinstance(data, int):
                f.seek(-(-data // 512) * 512, 1)
            elif info.size:
                f.write(data + b"\0" * (-len(data) % 512))
        f.write(b"\0" * 1024)
    return str(path)


def live_children(pid: int) -> list[int]:
    """Live child processes of ``pid``, from /proc (pgrep and psutil may be missing)."""
    import os

    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            state, ppid = stat[stat.rfind(")") + 2:].split()[:2]
            if int(ppid) == pid and state != "Z":
                kids.append(int(d))
    return kids


def is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


class ChildLines:
    """A child's output (a text pipe) read line by line on a thread, so a test waits on what the
    child writes instead of polling: ``wait_for(pred)`` blocks until a line satisfies ``pred``
    and returns it. ``seen`` keeps every line read (for failure messages)."""

    def __init__(self, stream):
        import queue
        import threading

        self.queue, self.seen = queue.Queue(), []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, pred, timeout: float = 120.0) -> str:
        import queue
        import time

        end = time.monotonic() + timeout
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line in {timeout} s:\n{self.text()}") from None
            if line is None:
                raise AssertionError(f"the child's output ended first:\n{self.text()}")
            self.seen.append(line)
            if pred(line):
                return line

    def text(self) -> str:
        return "".join(self.seen[-40:])


def progress_env(**extra) -> dict:
    """The environment for a vtk child whose plain progress lines (stderr is a pipe) come at
    every update, so a test can wait on them."""
    import os

    return {**os.environ, "VTK_PROGRESS_EVERY": "1e-9", **extra}


def clips_at_least(n: int):
    """A ``ChildLines`` predicate: a ``vtk shard`` progress line of ``n`` or more clips."""
    import re

    def pred(line: str) -> bool:
        m = re.search(r": (\d+) clips, ", line)
        return m is not None and int(m.group(1)) >= n

    return pred


def wait_gone(pids, timeout: float) -> list[int]:
    """Block until every process of ``pids`` has ended (woken by each exit through a pidfd,
    no polling), ``timeout`` seconds at most; returns the ones still running."""
    import os
    import select
    import time

    fds = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            pass
    end = time.monotonic() + timeout
    try:
        while fds and (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select(list(fds), [], [], left)
            for fd in ready:
                os.close(fd)
                del fds[fd]
        return sorted(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


def run_cli(args, capsys):
    """(exit code, stderr, stdout) of ``vtk ARGS`` run in-process."""
    from vtk.cli import main

    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err, captured.out


def unwritable_folders(root, full_name: str, *, earlier: str | None = None) -> list:
    """Folders a command cannot write its output to: ``root/full``, whose ``full_name`` is a
    link to /dev/full (writes there fail with ENOSPC, as on a full disk, for root too; an
    ``earlier`` file marks it as an earlier output), and, for a user other than root (root
    writes anywhere), a read-only ``root/ro``."""
    import os

    full = Path(root) / "full"
    full.mkdir()
    (full / full_name).symlink_to("/dev/full")
    if earlier:
        (full / earlier).write_text("")
    out = [full]
    if os.geteuid() != 0:
        ro = Path(root) / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out.append(ro)
    return out
