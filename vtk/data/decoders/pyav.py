"""PyAV (bundled FFmpeg): always installed, the default CPU backend.

Clips in shards are short, so decoding forward to the last wanted frame beats seeking; only the
wanted frames are converted to RGB.
"""

from __future__ import annotations

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
            if n <= 0 or indices is None:
                frames = list(container.decode(stream))
                n = len(frames)
                idx = resolve(indices, n)
                pick = range(n) if idx is None else idx
                out = [frames[i].to_ndarray(format="rgb24") for i in pick]
            else:
                idx = resolve(indices, n)
                out = self._forward(container, stream, idx)
                if len(out) < len(idx):  # the header overstated the count: redo from a full decode
                    return self.decode(data, [min(i, len(out) - 1) for i in idx] if out else None)
        if not out:
            raise ValueError("no video frames decoded")
        return torch.from_numpy(np.stack(out)), n

    @staticmethod
    def _forward(container, stream, idx: np.ndarray) -> list[np.ndarray]:
        """Decode from the start up to max(idx), converting each wanted frame once."""
        wanted: dict[int, np.ndarray] = {}
        need = set(idx.tolist())
        last = int(idx.max())
        for i, frame in enumerate(container.decode(stream)):
            if i in need:
                wanted[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
        return [wanted[i] for i in idx.tolist() if i in wanted]


def make(threads: int = 1) -> PyAVDecoder:
    return PyAVDecoder(threads)
