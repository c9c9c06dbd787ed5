"""From a shard sample's members to the fields of a batch: caption choice and collation.

Shared by every loader path (streaming, frame cache, DALI) so they all yield the same batch:
``video`` float32 B x T x 3 x S x S, ``text`` list[str], ``key`` list[str], ``label``
list[str|None], ``texts`` list[list[str]], ``meta`` list[dict] (the sample's json).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from vtk.errors import VtkError

CAPTION_MODES = ("coarse", "fine", "both", "mixed", "txt")


def pick_caption(meta: dict, txt: str | None, mode: str, rng: np.random.Generator) -> str:
    """The training text of one sample.

    coarse / fine: that caption; both: the fused caption (coarse and fine joined when the shard
    has no fused one); mixed: coarse or fine at random, drawn anew each time the clip is seen;
    txt: the ``txt`` member. A shard set without captions (benchmarks, ``--captions none``)
    falls back to ``txt``; one whose captions lack the asked part is an error, because an
    ablation arm must never silently train on the wrong captions.
    """
    if mode not in CAPTION_MODES:
        raise VtkError(f"unknown captions mode {mode!r}; choose one of {', '.join(CAPTION_MODES)}")
    caps = meta.get("captions") or {}
    if mode == "txt" or not caps:
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
    raise VtkError(f"sample {meta.get('source', '?')} has no {mode!r} caption (has "
                   f"{', '.join(sorted(caps)) or 'none'}); rebuild the shards with --captions both")


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """Per-sample randomness that depends only on (seed, epoch, key): the same clip gets the
    same crop, frames and caption however the samples are spread over workers and ranks."""
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


def make_item(key: str, video: torch.Tensor, text: str, meta: dict) -> dict:
    """One sample of a batch (before collation)."""
    texts = meta.get("texts") or []
    return {"video": video, "text": text, "key": key, "label": meta.get("label"),
            "texts": list(texts), "meta": meta}


def stack_contiguous(videos: list[torch.Tensor]) -> torch.Tensor:
    """Stack into one contiguous tensor with a single copy. The crops are channels-last, and
    a strided batch would make the main process's float conversion 3x slower; torch.stack
    followed by .contiguous() would copy twice."""
    out = torch.empty((len(videos), *videos[0].shape), dtype=videos[0].dtype)
    for o, v in zip(out, videos):
        o.copy_(v)
    return out


def collate(items: list[dict]) -> dict:
    """List of items (``video`` uint8 T x 3 x S x S) -> batch dict with ``video`` uint8
    B x T x 3 x S x S. Batches cross from the workers in uint8 (a quarter of the bytes of
    float32); ``VideoLoader`` normalises them in the main process."""
    return {
        "video": stack_contiguous([it["video"] for it in items]),
        "text": [it["text"] for it in items],
        "key": [it["key"] for it in items],
        "label": [it["label"] for it in items],
        "texts": [it["texts"] for it in items],
        "meta": [it["meta"] for it in items],
    }
