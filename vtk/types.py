"""The plain values that flow between stages: SourceItem -> Clip -> sample dict."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")

# Extensions FFmpeg commonly reads as video (lower case, with the dot).
VIDEO_EXTS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .asf .flv .mpg .mpeg .ts .m2ts .mts .3gp .3g2 .ogv "
    ".ogg .vob .dv .mxf .y4m .gif .f4v .rm .rmvb .divx .nut .h264 .264 .hevc .265 .ivf".split()
)

# Version of the source-id scheme (stored in a shard set's settings): ids name completed
# sources, so a set resumed under another scheme would redo every source.
# 1: safe_id of the path without its extension, repeats renamed -dup2, -dup3... in input order.
# 2: source_id below: extension kept, a hash where the readable form loses anything.
# caption modes, defined once here (torch-free, so the CLI's click Choices can import them):
# what a training run reads from a sample, and what `vtk shard` writes into one
CAPTION_MODES = ("coarse", "fine", "both", "mixed", "txt")
SHARD_CAPTION_MODES = ("none", "coarse", "fine", "both")
# any other training text is a caption by name: a scale of the json ("vlm"), a caption layer
# ("NAME", vtk caption --as NAME) or one scale of it ("NAME.fine")
_CAPTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\.(coarse|fine|fused))?")


def is_caption_name(mode: str) -> bool:
    """Whether ``mode`` (``--captions``) is a built-in mode or a caption named as above."""
    return mode in CAPTION_MODES or bool(_CAPTION_NAME.fullmatch(mode or ""))

SOURCE_ID_SCHEME = 2
ID_MAX_LEN = 80
HASH_LEN = 12  # hex digits (48 bits) of SHA-1
_PLAIN = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
_ALNUM_RUNS = re.compile(r"[^A-Za-z0-9]+")


def safe_id(text: str, max_len: int = 80) -> str:
    """A source id usable in a WebDataset key: letters, digits and '-' only ('.' and '_' are
    WebDataset's key/extension separators). Lossy: distinct texts can give one id (see
    :func:`source_id` for ids that must not collide)."""
    s = _UNSAFE.sub("-", text).strip("-")
    return (s[:max_len] or "x")


def source_id(text: str) -> str:
    """A key-safe id that is a pure function of ``text`` (a relative path, a manifest's video
    field) and distinct for distinct texts.

    Readable where it can be: a text of letters and digits in runs joined by single '-',
    optionally ending in a video extension, maps to itself with that '.' as '-'
    (``a-b.mp4`` -> ``a-b-mp4``). Anything else (a space, '_', '/', a second '.', non-ASCII,
    over :data:`ID_MAX_LEN` characters) is lossy, and then ``--`` and the first 12 hex digits
    of the text's SHA-1 follow the readable part (``a b.mp4`` -> ``a-b-mp4--3f…``).

    Why distinct: a lossless id never holds ``--``, and one that ends in a video extension
    came from a text with that extension (a dot-free text ending ``-mp4`` counts as lossy);
    lossy ids differ by their hash. Nothing depends on other inputs, so an id never changes
    when a folder grows.
    """
    stem, dot, ext = text.rpartition(".")
    if dot and ("." + ext.lower()) in VIDEO_EXTS and _PLAIN.fullmatch(ext):
        plain = _PLAIN.fullmatch(stem) is not None
        readable = f"{stem}-{ext}"
    else:
        last = text.rsplit("-", 1)[-1]
        plain = _PLAIN.fullmatch(text) is not None and ("." + last.lower()) not in VIDEO_EXTS
        readable = text
    if plain and len(readable) <= ID_MAX_LEN:
        return readable
    # accents dropped rather than replaced: 'café' reads as 'cafe'
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    readable = _ALNUM_RUNS.sub("-", ascii_text).strip("-")[:ID_MAX_LEN - HASH_LEN - 2]
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_LEN]
    return f"{readable.rstrip('-') or 'x'}--{digest}"


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
    url: str | None = None  # where a fetched source came from (``path``: its local copy)

    def describe(self) -> str:
        return self.url or self.path or f"synth:{self.id}"


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
