"""The plain values that flow between stages: SourceItem -> Clip -> sample dict."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def safe_id(text: str, max_len: int = 80) -> str:
    """A source id usable in a WebDataset key: letters, digits and '-' only ('.' and '_' are
    WebDataset's key/extension separators)."""
    s = _UNSAFE.sub("-", text).strip("-")
    return (s[:max_len] or "x")


@dataclass
class SourceItem:
    """One input: a video file (``path``) or in-memory frames (``frames``, the synthetic world).

    ``start``/``end`` are seconds in the source (manifest timestamps); ``None`` means "let the
    clip splitter decide". ``meta`` carries everything that goes into the sample's ``json``
    besides the technical fields: ``caption``, ``label``, ``texts``, ``scores``, extra manifest
    columns, and for synthetic clips the generator's ground truth under ``synth`` (captioners
    never see it; it is there to measure them).
    """

    id: str
    path: str | None = None
    frames: np.ndarray | None = None  # T x H x W x 3 uint8
    fps: float | None = None
    start: float | None = None
    end: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return self.path or f"synth:{self.id}"


@dataclass
class Clip:
    """A cut of one source, at the output frame rate and size.

    frames: T x H x W x 3 uint8 (RGB). start/end: seconds in the source.
    """

    source_id: str
    index: int
    frames: np.ndarray
    fps: float
    start: float
    end: float
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.source_id}_{self.index:06d}"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])
