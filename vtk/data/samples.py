"""From a shard sample's members to the fields of a batch: caption choice and collation.

Shared by every loader path (streaming, frame cache, DALI) so they all yield the same batch:
``video`` float32 B x T x 3 x S x S, ``text`` list[str], ``key`` list[str], ``label``
list[str|None], ``texts`` list[list[str]], ``meta`` list[dict] (the sample's json).
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import torch

from vtk.errors import VtkError
from vtk.shards.schema import parse_meta
from vtk.types import CAPTION_MODES, is_caption_name  # samples.CAPTION_MODES: the old name

FLIP_MODES = ("swap", "plain", "off")

_MIRROR = {"left": "right", "right": "left", "leftwards": "rightwards",
           "rightwards": "leftwards", "leftward": "rightward", "rightward": "leftward"}
_SIDE_WORDS = re.compile(r"\b(" + "|".join(_MIRROR) + r")\b", re.IGNORECASE)


def mirror_text(text: str) -> str:
    """The caption of the horizontally mirrored clip: left and right trade places.

    A flipped clip of "a red circle moves to the left" shows a circle moving right; flipping
    pixels without the words teaches the model that left and right are the same thing.

    >>> mirror_text("A square in the top left moves Right")
    'A square in the top right moves Left'
    """
    def swap(m: re.Match) -> str:
        word = _MIRROR[m.group(0).lower()]
        return word.capitalize() if m.group(0)[0].isupper() else word

    return _SIDE_WORDS.sub(swap, text)


def draw_flip(mode: str, rng: np.random.Generator) -> bool:
    """Whether this view of a training clip is mirrored (``mode`` off: never)."""
    if mode not in FLIP_MODES:
        raise VtkError(f"unknown flip mode {mode!r}; choose one of {', '.join(FLIP_MODES)}")
    u = rng.random()  # drawn in every mode, so the rest of the view is the same across modes
    return mode != "off" and bool(u < 0.5)


class Uncaptioned(ValueError):
    """The sample's caption of the asked scale failed when it was made (``caption_errors``):
    the loader skips the sample and counts it (``uncaptioned``)."""


def pick_caption(meta: dict, txt: str | None, mode: str, rng: np.random.Generator | None) -> str:
    """The training text of one sample.

    coarse / fine: that caption; both: the fused caption (coarse and fine joined when the shard
    has no fused one); mixed: coarse or fine at random, drawn anew each time the clip is seen;
    txt: the ``txt`` member (``rng`` is used by mixed only: ``caption_rng``); any other name:
    the caption of that name (``vlm``, the scale ``vtk shard --vlm-model`` fills; a caption
    layer ``NAME`` or ``NAME.fine``, merged in by the loader: ``vtk.captions.layer``). A shard
    set without captions (benchmarks, ``--captions none``) falls back to ``txt`` for the
    built-in modes; one whose captions lack the asked part is an error, because an ablation
    arm must never silently train on the wrong captions. A caption that failed when it was
    made (``caption_errors``) raises ``Uncaptioned``: that sample is skipped.
    """
    if not is_caption_name(mode):
        raise VtkError(f"unknown captions mode {mode!r}; choose one of {', '.join(CAPTION_MODES)}"
                       f" or a caption name (a layer of vtk caption --as NAME)")
    caps = meta.get("captions") or {}
    named = mode not in CAPTION_MODES
    if mode == "txt" or not caps and not named:
        return txt or ""
    if mode == "mixed":
        mode = "coarse" if rng.random() < 0.5 else "fine"
    if mode == "both":
        if caps.get("fused"):
            return caps["fused"]
        if caps.get("coarse") and caps.get("fine"):
            return f"{caps['coarse']}. {caps['fine']}"
    elif caps.get(mode):
        return caps[mode]
    failed = caption_failure(meta, mode)
    if failed:
        raise Uncaptioned(failed)
    fix = (f"caption the set into that layer (vtk caption DIR --as {mode.split('.')[0]} ...)"
           if named else "rebuild the shards with --captions both")
    raise VtkError(f"sample {meta.get('source', '?')} has no {mode!r} caption (has "
                   f"{', '.join(sorted(caps)) or 'none'}); {fix}")


def caption_failure(meta: dict, mode: str) -> str | None:
    """Why the sample has no caption for ``mode`` because making it failed (its json's
    ``caption_errors``, a caption layer's failure merged in), None when none did."""
    errors = meta.get("caption_errors") if isinstance(meta.get("caption_errors"), dict) else {}
    parts = {"both": ("coarse", "fine"), "mixed": ("coarse", "fine")}.get(mode, ())
    failed = [k for k in (mode, mode.split(".")[0], *parts) if errors.get(k)]
    return f"its {failed[0]} caption failed: {errors[failed[0]]}" if failed else None


def read_members(sample: dict) -> tuple[dict, str | None]:
    """A raw tar sample's ``json`` (as a dict, {} when absent) and ``txt`` (None when absent).
    ValueError when the json is not an object of the sample format's shape
    (``vtk.shards.schema.parse_meta``): the sample is then corrupt, on every loader path."""
    meta = parse_meta(sample["json"]) if "json" in sample else {}
    txt = sample["txt"].decode("utf-8") if "txt" in sample else None
    return meta, txt


def checked_members(sample: dict) -> tuple[dict, str | None]:
    """``read_members`` of a sample that has an mp4 and nothing wrong with it; ValueError
    naming what is wrong otherwise."""
    from vtk.shards.reader import problem_text

    problem = problem_text(sample)
    if problem:
        raise ValueError(problem)
    meta, txt = read_members(sample)
    if "mp4" not in sample:
        raise ValueError("no mp4 member")
    return meta, txt


def decode_whole(sample: dict, decoder) -> tuple[dict, str | None, torch.Tensor]:
    """A raw tar sample's json, txt and every frame of its clip (uint8 T x H x W x 3, through
    ``decoder``); ValueError naming what is wrong with a sample that is corrupt, has no mp4 or
    an mp4 without frames."""
    meta, txt = checked_members(sample)
    video, n = decoder.decode(sample["mp4"], None)
    if n == 0 or video.shape[0] == 0:
        raise ValueError("the mp4 has no frames")
    return meta, txt, video


def first_members(shards) -> tuple[dict, str | None] | None:
    """``read_members`` of the first sample with a json in the first tar of ``shards`` (a
    folder, URL, pattern or list: ``resolve_shards``); None when there is none or it cannot be
    read (the loader then reports it in its place). What a command checks before it starts."""
    import tarfile
    from contextlib import closing

    from vtk.data.shardset import resolve_shards
    from vtk.shards.reader import read_samples

    try:
        with closing(read_samples(resolve_shards(shards)[0])) as samples:
            return read_members(next(s for s in samples if "json" in s))
    except (StopIteration, ValueError, OSError, tarfile.TarError, VtkError):
        return None


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """Per-sample randomness that depends only on (seed, epoch, key): the same clip gets the
    same crop, frames and caption however the samples are spread over workers and ranks."""
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


def caption_rng(seed: int, epoch: int, key: str, mode: str) -> np.random.Generator | None:
    """The caption draw's own randomness, apart from the frames, crop and flip, so every path
    (streaming, cache, DALI, whose crop and flip are drawn in the graph) picks the same caption
    for the same (seed, epoch, key). None unless ``mode`` draws (mixed): making a Generator
    is not free next to a small clip's loader work (docs/results/timings.md)."""
    if mode != "mixed":
        return None
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode()), 1])


def make_item(key: str, video: torch.Tensor, text: str, meta: dict) -> dict:
    """One sample of a batch (before collation)."""
    texts = meta.get("texts") or []
    return {"video": video, "text": text, "key": key, "label": meta.get("label"),
            "texts": list(texts), "meta": meta}


def item_fields(items: list[dict]) -> dict:
    """Every field of a batch but ``video``, as lists in item order."""
    return {k: [it[k] for it in items] for k in ("text", "key", "label", "texts", "meta")}


def collate(items: list[dict]) -> dict:
    """List of items (``video`` T x 3 x S x S) -> batch dict with ``video`` B x T x 3 x S x S.
    (The streaming loader writes clips into their batch in place, ``vtk.data.batches``.)"""
    return {"video": torch.stack([it["video"] for it in items]), **item_fields(items)}
