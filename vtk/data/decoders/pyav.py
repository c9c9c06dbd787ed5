"""PyAV (bundled FFmpeg): always installed, the default CPU backend.

Clips in shards are short, so decoding forward to the last wanted frame beats seeking; only the
wanted frames are converted to RGB. Untagged or BT.601 limited-range yuv420p frames (what
``vtk shard`` writes) are converted with OpenCV, whose I420 -> RGB matches swscale's BT.601
default to about one grey level (docs/results/timings.md has both costs); every other frame
goes through swscale, which honours the frame's colour matrix and range.
"""

from __future__ import annotations

import bisect
import io

import numpy as np
import torch

from vtk.data.decoders import Indices, resolve
from vtk.errors import require


class PyAVDecoder:
    name = "pyav"

    def __init__(self, threads: int = 1):
        self.av = require("av")
        self.threads = threads

    def decode(self, data: bytes, indices: Indices = None) -> tuple[torch.Tensor, int]:
        with self.av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_count = self.threads
            n = stream.frames  # from the mp4 sample table; 0 when the container does not say
            if n > 0 and indices is not None:
                idx = resolve(indices, n)
                out = self._forward(container, stream, idx)
                if len(out) == len(idx):
                    return _stack(out), n
        # no count in the header, every frame wanted, or a header that overstates the count
        # (an edit list): decode everything and sample again with the true count (a sampler
        # drawing from a generator draws again, so that clip's view differs from decord's)
        return self._decode_all(data, indices)

    def _decode_all(self, data: bytes, indices: Indices) -> tuple[torch.Tensor, int]:
        with self.av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_count = self.threads
            frames = list(container.decode(stream))
        n = len(frames)
        idx = resolve(indices, n)
        return _stack([to_rgb(frames[i]) for i in (range(n) if idx is None else idx)]), n

    @staticmethod
    def _forward(container, stream, idx: np.ndarray) -> list[np.ndarray]:
        """Decode up to max(idx), converting each wanted frame once. A clip much longer than
        the draw is read from the keyframe before each run of wanted frames (``_runs``): the
        frames between a run's last frame and the next run's keyframe are never decoded, which
        a short GOP (``vtk shard --gop``) makes most of the clip."""
        need = sorted(set(idx.tolist()))
        runs = _runs(container, stream, need) if stream.frames >= SPARSE * len(need) else None
        if runs is None:
            runs, rank = [(None, need)], None
        else:
            runs, rank = runs
        wanted: dict[int, np.ndarray] = {}
        for start, run in runs:
            if start is not None:
                container.seek(start, stream=stream, backward=True)
            targets, last = set(run), run[-1]
            for i, frame in enumerate(container.decode(stream)):
                i = i if rank is None else rank.get(frame.pts, -1)
                if i in targets:
                    wanted[i] = to_rgb(frame)
                if i >= last:
                    break
        return [wanted[i] for i in idx.tolist() if i in wanted]


SPARSE = 4  # a clip of at least this many frames per wanted frame is read keyframe-wise


def _runs(container, stream, need: list[int]):
    """([(keyframe pts to seek to, the wanted frames decoded from it)], {pts: frame index}),
    from the packets' headers (a demux pass, no decoding); None for a clip with one keyframe,
    whose runs would all start at its first frame. A wanted frame joins the run before when
    its keyframe comes no later than that run's last frame: decoding on costs no more."""
    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
    order = sorted(p for p, _ in packets)
    rank = {p: i for i, p in enumerate(order)}
    keys = sorted(rank[p] for p, key in packets if key)
    if len(keys) < 2 or keys[0] != 0:
        container.seek(order[0] if order else 0, stream=stream, backward=True)
        return None
    runs: list[tuple[int, list[int]]] = []
    for i in need:
        k = keys[bisect.bisect_right(keys, i) - 1]
        if runs and k <= runs[-1][1][-1]:
            runs[-1][1].append(i)
        else:
            runs.append((k, [i]))
    return [(order[k], run) for k, run in runs], rank


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    if not frames:
        raise ValueError("no video frames decoded")
    return torch.from_numpy(np.stack(frames))


# AVColorSpace: 2 unspecified, 5 BT470BG, 6 SMPTE170M (BT.601); AVColorRange 2: full (JPEG)
_BT601 = (2, 5, 6)


def to_rgb(frame) -> np.ndarray:
    """One decoded frame as uint8 H x W x 3 RGB."""
    if (frame.format.name == "yuv420p" and frame.colorspace in _BT601 and frame.color_range != 2
            and frame.width % 2 == 0 and frame.height % 2 == 0):
        import cv2

        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def make(threads: int = 1) -> PyAVDecoder:
    return PyAVDecoder(threads)
