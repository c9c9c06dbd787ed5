"""checkpoint.pt: weights, optimiser, scheduler, scaler, step, data position and RNG states.

Written to a temporary name and renamed, so a run killed while saving keeps its last good
checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from vtk.errors import VtkError


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def load(path: Path, device="cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=False)
