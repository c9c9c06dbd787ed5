"""Video decoders behind one protocol, chosen by name.

Every backend decodes an mp4 held in memory (the ``mp4`` member of a shard sample) at the
frame indices the sampler asks for. Optional libraries are imported inside their backend, and a
missing one is a one-line install hint (``vtk.errors.require``); ``BACKENDS`` is the
``vtk.registry.Registry`` of them.

    >>> dec = get_decoder("pyav")
    >>> frames, n = dec.decode(mp4_bytes, lambda n: eval_indices(n, 8))  # uint8 8xHxWx3, n

``indices`` is a sequence of frame numbers, a callable ``num_frames -> indices`` (the sampler,
when the count comes from the file), or None for every frame. Indices past the end are clamped
to the last frame, so a sample whose json overstates its length still decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from vtk.errors import VtkError
from vtk.registry import Registry

Indices = Sequence[int] | np.ndarray | Callable[[int], Sequence[int]] | None

# speed order on a CPU (fastest first; docs/background.md, decode speed)
BACKENDS = Registry("decoder")
BACKENDS.add("torchcodec", "vtk.data.decoders.torchcodec:make", extra="torchcodec")
BACKENDS.add("decord", "vtk.data.decoders.decord:make", extra="decord")
BACKENDS.add("pyav", "vtk.data.decoders.pyav:make", package="av")


class Decoder(Protocol):
    name: str

    def decode(self, data: bytes, indices: Indices = None) -> tuple[torch.Tensor, int]:
        """mp4 bytes -> (uint8 tensor T x H x W x 3 RGB, number of frames in the clip)."""
        ...


def get_decoder(name: str, threads: int = 1) -> Decoder:
    """The decoder named ``name`` (one decode thread by default: one per loader worker)."""
    return BACKENDS.build(name, threads=threads)


def available_decoders() -> list[str]:
    """Names of the backends whose library imports here, fastest first."""
    out = []
    for name in BACKENDS:
        try:
            get_decoder(name)
        except VtkError:
            continue
        out.append(name)
    return out


def resolve(indices: Indices, num_frames: int) -> np.ndarray | None:
    """Concrete int64 indices clamped to ``[0, num_frames)``, or None for all frames."""
    if indices is None:
        return None
    if callable(indices):
        indices = indices(num_frames)
    idx = np.asarray(indices, dtype=np.int64)
    return np.clip(idx, 0, max(num_frames - 1, 0))
