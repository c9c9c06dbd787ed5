"""The captioner protocols and the registry that picks a backend by name.

A frame captioner turns pixels into words: ``caption(frames) -> list[str]`` takes uint8 frames
N x H x W x 3 (RGB) and returns one text per frame. A video captioner (``vlm:``, the
``VideoCaptioner`` protocol of ``vtk.captions.vlm``) takes windows of a clip's frames with
their times and returns one text per window. Neither sees anything but pixels.
Backends are loaded lazily and once per process (``get_captioner`` is cached), so a shard
writer's worker pays the model load once however many batches it captions.
"""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

import numpy as np

from vtk.registry import Registry

CAPTIONERS = Registry("caption model")
CAPTIONERS.add("shapes", "vtk.captions.shapes:ShapesCaptioner")
CAPTIONERS.add("tagger", "vtk.captions.tagger:TaggerCaptioner")
CAPTIONERS.add("hf:", "vtk.captions.hf:HFCaptioner", package="transformers",
               param="<hub-id-or-local-path>")
CAPTIONERS.add("vlm:", "vtk.captions.vlm:VLMCaptioner", package="transformers",
               param="<hub-id-or-local-path>")
# the families whose backends are video captioners (a vLLM or OpenAI-endpoint one joins here)
VIDEO_FAMILIES = ("vlm:",)


def is_video_model(name: str | None) -> bool:
    """Whether the captioner called ``name`` takes videos (``vtk.captions.vlm``)."""
    return bool(name) and name.startswith(VIDEO_FAMILIES)


@runtime_checkable
class Captioner(Protocol):
    name: str

    def caption(self, frames: np.ndarray) -> list[str]:
        """frames: N x H x W x 3 uint8 -> N texts, one per frame (batched inside)."""
        ...


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate a frame batch (N x H x W x 3 uint8); a single H x W x 3 frame becomes N = 1."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames N x H x W x 3, got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    return frames


def resolve_device(device: str | None) -> str:
    """The device a caption model runs on, by name (``vtk.environment.pick_device``)."""
    from vtk.environment import pick_device

    return str(pick_device(device))


@functools.cache
def get_captioner(name: str, device: str | None = "auto") -> Captioner:
    """The captioner called ``name`` ('shapes', 'tagger', 'hf:<id-or-path>',
    'vlm:<id-or-path>'), built once."""
    return CAPTIONERS.build(name, device=resolve_device(device))
