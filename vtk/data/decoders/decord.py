"""decord (or decord2, which installs the same module): random access by frame index."""

from __future__ import annotations

import io

import torch

from vtk.data.decoders import Indices, get_decoder, resolve
from vtk.errors import require


class DecordDecoder:
    name = "decord"

    def __init__(self, threads: int = 1):
        self.decord = require("decord", extra="decord", package="decord2")
        self.threads = threads

    def decode(self, data: bytes, indices: Indices = None) -> tuple[torch.Tensor, int]:
        vr = self.decord.VideoReader(io.BytesIO(data), ctx=self.decord.cpu(0),
                                     num_threads=self.threads)
        n = len(vr)
        idx = resolve(indices, n)
        try:
            batch = vr.get_batch(list(range(n)) if idx is None else idx.tolist())
        except self.decord.DECORDError as e:
            # decord2 3.3-3.4 pads the rows of frames some widths (32, 48, 96 px, as small
            # synthetic clips have) and then fails its own copy: PyAV decodes those clips
            if "DECORDArrayCopyFromTo" not in str(e):
                raise
            return get_decoder("pyav", self.threads).decode(data, indices)
        return torch.from_numpy(batch.asnumpy()), n


def make(threads: int = 1) -> DecordDecoder:
    return DecordDecoder(threads)
