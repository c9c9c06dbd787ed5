"""Perceptual hashes of a clip's frames, for ``vtk filter --dedup frames``.

Each of ``K`` frames at fixed *relative* times (the middles of K equal segments of the clip)
gets a 64-bit DCT pHash (Zauner 2010, "Implementation and benchmarking of perceptual image hash
functions"): grey, scaled to 32 x 32, 2-D DCT, the 8 x 8 lowest frequencies, each bit = above
their median. The low frequencies are what survives re-encoding at a lower bitrate, scaling
and mild colour shifts; relative times make a copy at another frame rate sample the same
moments. Two clips are near-duplicates when the mean Hamming distance of their K hashes is at
most ``THRESHOLD`` bits of 64 (figures for the choice in docs/curation.md).

Not caught: a copy cut at another start (the sampled moments differ), mirrored or cropped
copies; ``--dedup embed:T`` compares what the model sees and catches those it still matches.
"""

from __future__ import annotations

import numpy as np

K = 4  # frames hashed per clip
THRESHOLD = 10.0  # mean Hamming bits (of 64) at or below which two clips are duplicates


def frame_indices(num_frames: int, k: int = K) -> np.ndarray:
    """The middle frame of each of ``k`` equal segments (fewer frames: every frame)."""
    if num_frames <= k:
        return np.arange(num_frames)
    return ((np.arange(k) + 0.5) * num_frames / k).astype(int)


def phash(frame: np.ndarray) -> int:
    """64-bit DCT perceptual hash of one uint8 RGB (or grey) frame."""
    import cv2

    img = np.ascontiguousarray(frame)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term is left out of the median (pHash)
    return int(np.packbits(bits).view(">u8")[0])


def clip_hashes(frames, k: int = K) -> np.ndarray:
    """uint64 array of the pHashes of ``k`` frames of a clip (T x H x W x 3)."""
    frames = np.asarray(frames)
    return np.array([phash(frames[i]) for i in frame_indices(len(frames), k)], dtype=np.uint64)


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, as uint8 (numpy 2's bitwise_count, else a byte table: the
    numpy 1.24 floor)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


def sum_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Summed Hamming distance of the K hashes of each pair of clips: ``a`` N x K and ``b``
    M x K uint64 -> N x M uint16. One N x M slab per hash, accumulated in place: 6x faster
    than a N x M x K array and a float mean (1.9e7 pairs/s on one core, docs/curation.md)."""
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    d = np.zeros((len(a), len(b)), np.uint16)
    for k in range(a.shape[1]):
        d += popcount(a[:, k, None] ^ b[None, :, k])
    return d


def mean_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean Hamming distance between clips (N x K, M x K uint64) -> N x M float."""
    return sum_hamming(a, b) / max(1, a.shape[1])
