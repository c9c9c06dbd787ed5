"""What every stage of ``vtk.clips`` shares: the clip modes, the limits, :class:`ClipConfig`,
:class:`ClipStats` (what one source cost) and :class:`InputError` (a source that cannot become
clips)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MODES = ("auto", "scenes", "fixed", "whole")
DEFAULT_SIZE = 224  # short side (px) for video files when --size is not given
MAX_FPS = 240.0  # the fastest capture rate phones offer; a higher --fps only multiplies frames
MAX_CLIP_FRAMES = 3600  # frames in one clip (a scene buffer holds two): bounds worker memory



class InputError(Exception):
    """A source that cannot be turned into clips; ``kind`` is a short reason class for the
    stats totals (``empty``, ``unreadable``, ``no-video``, ``truncated``, ``decode-error``,
    ``too-short``...).

    ``clips`` > 0: the source broke part-way, after that many complete clips were yielded;
    those stand, and the error (kind ``<kind>-partial``) covers the rest of the source."""

    def __init__(self, kind: str, reason: str, clips: int = 0):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.clips = clips


@dataclass
class ClipConfig:
    """How sources become clips. Times in seconds, sizes in pixels."""

    mode: str = "auto"
    size: int | None = None  # short side; None: DEFAULT_SIZE for files, native for frames
    fps: float = 8.0  # output frame rate
    min_clip: float = 2.0  # shorter scenes are dropped (InternVid keeps clips of 2 s and more)
    max_clip: float = 30.0  # longer scenes are split
    clip_len: float = 10.0  # window length for mode "fixed"
    threshold: float = 27.0  # ContentDetector threshold (InternVid)
    min_scene_len: int = 15  # source frames between cuts (video2dataset's setting)
    detect_width: int = 256  # width of the copy the detector sees (PySceneDetect's default)
    gop: int | None = None  # output frames between keyframes at most; None: the encoder's

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"clip mode must be one of {MODES}, got {self.mode!r}")
        # Written so that NaN fails too (every comparison with NaN is False).
        if not 0 < self.fps <= MAX_FPS:
            raise ValueError(f"fps {self.fps:g}: need 0 < fps <= {MAX_FPS:g}")
        if not 0 <= self.min_clip < math.inf:
            raise ValueError(f"min_clip {self.min_clip:g}: need a length >= 0 s")
        if self.gop is not None and (isinstance(self.gop, bool) or not isinstance(self.gop, int)
                                     or self.gop < 1):
            raise ValueError(f"gop {self.gop!r}: need a whole number of frames >= 1")
        if not 0 < self.clip_len < math.inf:
            raise ValueError(f"clip_len {self.clip_len:g}: need a length > 0 s")
        if not self.max_clip >= 2 * self.min_clip or self.max_clip <= 0:
            # Splitting a long scene in two must leave both halves >= min_clip.
            raise ValueError(f"max_clip ({self.max_clip:g}) must be above 0 and at least "
                             f"2 x min_clip ({self.min_clip:g})")
        # A clip's frames are held in memory until it is encoded: refuse settings that would
        # hold more than MAX_CLIP_FRAMES (whole and range clips are as long as their source).
        name, length = ("clip_len", self.clip_len) if self.mode == "fixed" else (
            "max_clip", self.max_clip)
        if self.mode != "whole" and length * self.fps > MAX_CLIP_FRAMES:
            raise ValueError(f"{name} {length:g} s at fps {self.fps:g} is "
                             f"{length * self.fps:.0f} frames a clip, more than "
                             f"{MAX_CLIP_FRAMES}: lower fps or {name}")


@dataclass
class ClipStats:
    """What one source cost: filled in while its clips are produced."""

    frames_decoded: int = 0  # source frames
    source_fps: float = 0.0
    duration: float = 0.0  # seconds of source read
    end: float = 0.0  # source time (s) where the last frame read ends
    clips: int = 0
    cuts: int = 0  # scene cuts the detector reported
    bad_packets: int = 0
    extra: dict = field(default_factory=dict)



def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(W, H) with the short side ``short_side`` (rounded to even), aspect kept, both even:
    yuv420p needs even dimensions."""
    scale = short_side / min(width, height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h
