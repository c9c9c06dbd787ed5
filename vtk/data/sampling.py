"""Which frames of a clip a model sees: ViCLIP's segment sampling, as pure functions.

A clip of ``n`` frames is cut into ``t`` equal segments ``[floor(i*n/t), floor((i+1)*n/t))``.
Training takes one uniformly random frame in each segment; evaluation takes the middle one
(the lower middle for even-length segments, as ViCLIP's ``(start + end) // 2``). A clip with
fewer than ``t`` frames has empty segments, so its frames are repeated in order instead
(``floor(i*n/t)``: n=3, t=8 -> 0 0 0 1 1 1 2 2).
"""

from __future__ import annotations

import numpy as np


def segment_bounds(num_frames: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) frame of each of ``t`` equal segments."""
    if num_frames < 1 or t < 1:
        raise ValueError(f"need at least one frame and one segment, got n={num_frames}, t={t}")
    edges = (np.arange(t + 1) * num_frames) // t
    return edges[:-1], edges[1:]


def eval_indices(num_frames: int, t: int) -> np.ndarray:
    """The middle frame of each segment: deterministic, ``t`` int64 indices."""
    lo, hi = segment_bounds(num_frames, t)
    if num_frames < t:
        return lo
    return (lo + hi - 1) // 2


def train_indices(num_frames: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random frame in each segment: ``t`` int64 indices, non-decreasing."""
    lo, hi = segment_bounds(num_frames, t)
    if num_frames < t:
        return lo
    return rng.integers(lo, hi)


def frame_indices(num_frames: int, t: int, train: bool, rng: np.random.Generator | None = None):
    """``train_indices`` or ``eval_indices``; a training call needs ``rng``."""
    if train:
        if rng is None:
            raise ValueError("training frame sampling needs an rng")
        return train_indices(num_frames, t, rng)
    return eval_indices(num_frames, t)
