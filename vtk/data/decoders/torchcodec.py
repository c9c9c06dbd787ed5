"""torchcodec (needs the system FFmpeg libraries): the fastest CPU decoder measured here.

Only torchcodec 0.12/0.13 are CPU builds that load beside torch 2.13; if it fails to load, the
backend gives the install hint instead.
"""

from __future__ import annotations

import torch

from vtk.data.decoders import Indices, resolve
from vtk.errors import VtkError, require


class TorchCodecDecoder:
    name = "torchcodec"

    def __init__(self, threads: int = 1):
        try:
            self.decoders = require("torchcodec.decoders", extra="torchcodec", package="torchcodec")
        except (OSError, RuntimeError) as e:  # the wheel imports but cannot find libavcodec
            raise VtkError(f"torchcodec cannot load FFmpeg ({str(e).splitlines()[0]}); install "
                           "the system FFmpeg libraries (apt-get install ffmpeg)") from None
        self.threads = threads

    def decode(self, data: bytes, indices: Indices = None) -> tuple[torch.Tensor, int]:
        dec = self.decoders.VideoDecoder(data, dimension_order="NHWC",
                                         num_ffmpeg_threads=self.threads, seek_mode="exact")
        n = int(dec.metadata.num_frames)
        idx = resolve(indices, n)
        if idx is None:
            return dec.get_frames_in_range(0, n).data, n
        return dec.get_frames_at(idx.tolist()).data, n


def make(threads: int = 1) -> TorchCodecDecoder:
    return TorchCodecDecoder(threads)
