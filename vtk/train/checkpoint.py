"""checkpoint.pt: weights, optimiser, scheduler, scaler, step, data position and RNG states;
and the run's config.json beside it.

Written to a temporary name and renamed, so a run killed while saving keeps its last good
checkpoint. It holds tensors and plain data only (dicts, lists, tuples, numbers, strings), and
is read with ``torch.load(weights_only=True)``: unpickling anything else can run code, so a
crafted checkpoint.pt is refused instead of executed.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vtk.errors import VtkError

STATE_KEYS = ("step", "data", "train_time_s", "peak_mem_bytes")


@dataclass
class TrainState:
    """What a run has done so far, saved in checkpoint.pt and restored from it whole: the
    optimiser steps taken, the data position (the first batch not yet trained on), the
    training seconds and the peak memory (bytes, the largest over ranks) of every session."""

    step: int = 0
    data: dict = field(default_factory=lambda: {"ranks": []})
    train_time_s: float = 0.0
    peak_mem_bytes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> TrainState:
        """The state a checkpoint's dict holds (a KeyError when one is missing)."""
        return cls(step=int(ckpt["step"]), data=dict(ckpt["data"]),
                   train_time_s=float(ckpt["train_time_s"]),
                   peak_mem_bytes=int(ckpt["peak_mem_bytes"] or 0))


def rng_state() -> dict:
    # numpy's state is a tuple around an ndarray: stored as a list of ints, so that nothing
    # but plain data has to be unpickled
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"python": random.getstate(),
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    """random.setstate wants tuples all the way down."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save(path: Path, state: dict):
    path = Path(path)
    tmp = path.with_suffix(".pt.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a short write (a full disk) as a
        tmp.unlink(missing_ok=True)  # RuntimeError: no half checkpoint left taking the space
        reason = getattr(e, "strerror", None) or "the write was cut short (is the disk full?)"
        raise VtkError(f"cannot write {path}: {reason}; the previous checkpoint, if any, "
                       f"is kept") from None


def _legacy_numpy_globals() -> list:
    """What a checkpoint written before the RNG state became plain data needs: numpy's array
    reconstruction (its RNG state held a uint32 ndarray). Arrays rebuild from bytes; any
    object inside one would still need its own allow-listed class."""
    reconstruct = np.empty(0).__reduce__()[0]
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load(path: Path, device="cpu") -> dict:
    """The checkpoint's dict; a VtkError (one line) for a file that is cut short, is not a
    checkpoint, or holds anything but tensors and plain data (which is refused, not run)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise VtkError(f"{path}: refused: it holds {found.group(1)}, not only tensors and "
                           "plain data as a vtk checkpoint does; loading it could run code") from None
        if isinstance(e, OSError):
            raise VtkError(f"{path}: cannot read the checkpoint: {e.strerror or e}") from None
        raise VtkError(f"{path}: unreadable checkpoint: cut short or not a torch file "
                       f"({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise VtkError(f"{path}: not a vtk checkpoint (no model weights in it)")
    return state


def read_config(path: Path) -> dict:
    """A run's config.json as a dict; a VtkError (one line) when it is cut short or not one.
    An ``out`` saved by an older vtk is dropped: a run folder may have been moved, so where it
    is comes from the caller (``--out``), never from the folder itself."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise VtkError(f"{path}: cannot read the run's config: {e.strerror or e}") from None
    except ValueError as e:
        raise VtkError(f"{path}: not valid JSON (cut short?): {e}") from None
    if not isinstance(config, dict):
        raise VtkError(f"{path}: not a run config (a JSON object expected)")
    config.pop("out", None)
    return config
