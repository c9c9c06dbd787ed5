"""checkpoint.pt: every stateful part of a run (weights, optimiser, scheduler, scaler, RNG
states, each rank's data position) through its ``state_dict()`` / ``load_state_dict()``, with
the run's ``TrainState`` and config; and the run's config.json beside it.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vtk import formats
from vtk.errors import VtkError
from vtk.train import dist


@dataclass
class TrainState:
    """What a run has done so far, saved in checkpoint.pt and restored from it whole: the
    optimiser steps taken, the training seconds and the peak memory (bytes, the largest over
    ranks) of every session."""

    step: int = 0
    train_time_s: float = 0.0
    peak_mem_bytes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> TrainState:
        """The state a checkpoint's dict holds (a KeyError when one is missing)."""
        return cls(step=int(ckpt["step"]), train_time_s=float(ckpt["train_time_s"]),
                   peak_mem_bytes=int(ckpt["peak_mem_bytes"] or 0))


class Checkpointer:
    """checkpoint.pt of a run: every part in ``parts`` (a name -> an object with
    ``state_dict()`` / ``load_state_dict()``, torchdata's Stateful protocol) is saved and
    restored through it, as torchtitan's CheckpointManager does; a new stateful part is one
    more entry. Parts named in ``ranked`` hold a state per rank (the loader's position): every
    rank's is gathered into the file, as ``{"ranks": [...]}``, and each rank gets its own back.
    Rank 0 writes; every rank takes part in the gathers."""

    def __init__(self, path, parts: dict, d: dist.Dist, config: dict, ranked=()):
        self.path, self.d, self.config = Path(path), d, config
        self.parts = {name: part for name, part in parts.items() if part is not None}
        self.ranked = set(ranked)
        self.last_step: int | None = None  # the step of the checkpoint on disk, if any

    def save(self, state: TrainState, **states) -> None:
        """Save ``state`` and every part's state now (or the state given for a part by name:
        the data position before a step that failed)."""
        out = {"world": self.d.world, "config": self.config, **state.as_dict()}
        for name, part in self.parts.items():
            one = states[name] if name in states else part.state_dict()
            out[name] = {"ranks": dist.gather(one, self.d)} if name in self.ranked else one
        if self.d.main:
            save(self.path, out)
        dist.barrier(self.d)
        self.last_step = state.step

    def restore(self, ckpt: dict) -> TrainState:
        """Load a checkpoint's states into the parts -> its TrainState; a VtkError when it
        does not fit this run."""
        try:
            if ckpt["world"] != self.d.world:
                raise VtkError(f"{self.path}: saved by {ckpt['world']} processes, resumed by "
                               f"{self.d.world}; the data position would not match")
            for name, part in self.parts.items():
                one = ckpt[name]
                if name in self.ranked:  # a fresh run saved no rank a position: start anew
                    ranks = one["ranks"]
                    one = ranks[self.d.rank] if self.d.rank < len(ranks) else {}
                part.load_state_dict(one)
            state = TrainState.from_checkpoint(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise VtkError(f"{self.path}: does not fit this run's config.json "
                           f"({type(e).__name__}: {first[:200]})") from None
        self.last_step = state.step
        return state


class Weights:
    """A model's persistent weights as a checkpoint part (a frozen pretrained text tower is
    not saved: it comes back from its package)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict:
        return self.model.persistent_state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_persistent_state_dict(state)


class Rng:
    """Python's, numpy's and torch's (and CUDA's) RNG states as a checkpoint part."""

    def state_dict(self) -> dict:
        return rng_state()

    def load_state_dict(self, state: dict) -> None:
        set_rng_state(state)


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
    """``state`` (plain data and tensors) written whole to ``path``, with this vtk's
    ``format_version``."""
    path = Path(path)
    tmp = path.with_suffix(".pt.tmp")
    try:
        torch.save(formats.stamp("checkpoint", state), tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a short write (a full disk) as a
        tmp.unlink(missing_ok=True)  # RuntimeError: no half checkpoint left taking the space
        reason = getattr(e, "strerror", None) or "the write was cut short (is the disk full?)"
        raise VtkError(f"cannot write {path}: {reason}; the previous checkpoint, if any, "
                       f"is kept") from None


def load(path: Path, device="cpu") -> dict:
    """The checkpoint's dict; a VtkError (one line) for a file that is cut short, is not a
    checkpoint of this vtk's format, or holds anything but tensors and plain data (which is
    refused, not run)."""
    path = Path(path)
    try:
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
    return formats.check("checkpoint", state, path)


def read_config(path: Path) -> dict:
    """A run's config.json as a dict (without its ``format_version``); a VtkError (one line)
    when it is cut short, not one, or of a format this vtk does not read."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise VtkError(f"{path}: cannot read the run's config: {e.strerror or e}") from None
    except ValueError as e:
        raise VtkError(f"{path}: not valid JSON (cut short?): {e}") from None
    if not isinstance(config, dict):
        raise VtkError(f"{path}: not a run config (a JSON object expected)")
    return formats.check("config", config, path)
